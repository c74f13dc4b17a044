"""A stand-in trainer for the user-data script's tests, following the trainer contract.

It resumes from MLP_RESUME_FROM, writes numbered checkpoints into CHECKPOINT_DIR atomically, writes
one at once on SIGUSR1, and exits after --steps steps. Every event goes as a JSON line to --events,
which is how the tests see what the trainer saw, the feature store's FEATURE_STORE_* variables too. With --hold-until it waits for that file to exist
before exiting, so a test decides when the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

STEP_SECONDS = 0.01


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--hold-until", type=Path)
    parser.add_argument("--exit-code", type=int, default=0)
    args = parser.parse_args()

    def record(event: str, **fields: object) -> None:
        with args.events.open("a") as events:
            events.write(json.dumps({"event": event, **fields}) + "\n")

    checkpoint_dir = Path(os.environ["CHECKPOINT_DIR"])
    resume_from = os.environ["MLP_RESUME_FROM"]
    first_step = json.loads(Path(resume_from).read_text())["step"] + 1 if resume_from else 0
    feature_store = {name: value for name, value in os.environ.items() if name.startswith("FEATURE_STORE_")}
    record(
        "start",
        resume_from=resume_from,
        first_step=first_step,
        run_id=os.environ["RUN_ID"],
        feature_store=feature_store,
    )

    signals_pending = 0

    def on_checkpoint_signal(signum: int, frame: object) -> None:
        nonlocal signals_pending
        signals_pending += 1

    signal.signal(signal.SIGUSR1, on_checkpoint_signal)
    written = 0

    def checkpoint(step: int) -> None:
        nonlocal written
        written += 1
        path = checkpoint_dir / f"ckpt-{step:06d}-{written:03d}.json"
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps({"step": step, "run_id": os.environ["RUN_ID"]}))
        os.replace(partial, path)
        record("checkpoint", path=str(path), step=step)

    def answer_signals(step: int) -> None:
        nonlocal signals_pending
        while signals_pending:
            signals_pending -= 1
            record("sigusr1", step=step)
            checkpoint(step)

    step = first_step
    for step in range(first_step, args.steps):
        answer_signals(step)
        time.sleep(STEP_SECONDS)  # the "work" of one step
        if (step + 1) % args.checkpoint_every == 0:
            checkpoint(step)
    while args.hold_until and not args.hold_until.exists():
        answer_signals(step)
        time.sleep(STEP_SECONDS)
    answer_signals(step)
    record("exit", code=args.exit_code)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
