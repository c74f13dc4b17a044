"""A training run's life: deploy its stack, follow it to completion or expiry, destroy it.

Pure decisions over an injected `StackBackend`, S3 client, clock and sleep, so the whole state
machine runs in tests without the Pulumi CLI, AWS or real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from infra.training.automation import StackBackend, StackExists, StackSummary
from infra.training.checkpoints import read_completion
from infra.training.request import STACK_PREFIX, RunRequest, stack_name, validate_run_id
from mlp.aws import default_region
from mlp.errors import UserError
from mlp.tags import ENVIRONMENT, RUN_ID, is_ephemeral, normalize_tags

if TYPE_CHECKING:
    from finops.teardown import Receipt
    from infra.training.state import StackReader

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
Log = Callable[[str], None]


class RunEnd(StrEnum):
    completed = "completed"
    expired = "expired"


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    stack: str
    outputs: dict[str, Any]
    end: RunEnd | None
    why: str
    # Set once the run ended and its stack was taken down.
    receipt: Receipt | None

    @property
    def destroyed(self) -> bool:
        return self.receipt is not None


def empty_program() -> None:
    """Destroying needs no resources declared: the state says what exists."""


def wait_for_end(
    *,
    s3: Any,
    bucket: str,
    run_id: str,
    expires_at: datetime,
    clock: Clock,
    sleep: Sleep,
    poll_seconds: float,
    log: Log,
) -> tuple[RunEnd, str]:
    """Poll the run's `_COMPLETE` marker until it is verified or the run expires."""
    reported_unverified = ""
    while True:
        completion = read_completion(s3, bucket, run_id)
        if completion is not None and completion.verified:
            return RunEnd.completed, completion.why
        if completion is not None and completion.why != reported_unverified:
            log(f"run {run_id}: marker found but not trusted yet: {completion.why}")
            reported_unverified = completion.why
        now = clock()
        if now >= expires_at:
            return RunEnd.expired, f"no verified _COMPLETE by expires-at {expires_at.isoformat()}"
        sleep(min(poll_seconds, (expires_at - now).total_seconds()))


def launch(
    request: RunRequest,
    program: Callable[[], None],
    backend: StackBackend,
    *,
    s3: Any,
    wait: bool,
    clock: Clock,
    sleep: Sleep,
    log: Log,
    teardown: Callable[[], Receipt],
    poll_seconds: float = 60.0,
) -> LaunchResult:
    """Deploy the run's new stack; with `wait`, follow it to its end, then `teardown()` (destroy + receipt).

    The stack must not exist yet (`deploy` refuses one that does), so the failure path below only
    ever destroys what this invocation created.
    """
    try:
        outputs = backend.deploy(
            request.stack,
            program,
            config={"aws:region": request.environment.region},
            tags=dict(request.tags),
            on_output=log,
        )
    except StackExists:
        raise
    except Exception as error:
        # A half-created fleet would keep billing: take down whatever the failed update left.
        log(f"pulumi up failed for {request.stack}: {error}; destroying what it created")
        backend.destroy(request.stack, empty_program, on_output=log)
        backend.remove(request.stack)
        raise UserError(
            f"deploying {request.stack} failed ({type(error).__name__}); nothing was left running"
        ) from error
    if not wait:
        return LaunchResult(request.run_id, request.stack, outputs, None, "launched; not waiting", None)
    end, why = wait_for_end(
        s3=s3,
        bucket=outputs["checkpointBucket"],
        run_id=request.run_id,
        expires_at=request.expires_at,
        clock=clock,
        sleep=sleep,
        poll_seconds=poll_seconds,
        log=log,
    )
    log(
        f"run {request.run_id} {end.value}: {why}; destroying {request.stack} (checkpoints stay in the bucket)"
    )
    return LaunchResult(request.run_id, request.stack, outputs, end, why, teardown())


def training_stacks(backend: StackReader) -> list[StackSummary]:
    return sorted((s for s in backend.list_stacks() if s.name.startswith(STACK_PREFIX)), key=lambda s: s.name)


def find_run(backend: StackReader, run_id: str) -> StackSummary:
    validate_run_id(run_id)
    for summary in training_stacks(backend):
        if summary.name == stack_name(run_id):
            return summary
    raise UserError(f"no stack {stack_name(run_id)} on this backend; `mlp train list` shows the runs")


def destroy_run(
    stacks: StackReader, run_id: str, *, apply: bool, teardown: Callable[[str], Receipt]
) -> tuple[str, Receipt | None]:
    """Destroy and remove a run's stack (`teardown(stack)`), only when its tags prove it is this ephemeral run."""
    summary = find_run(stacks, run_id)
    tags = normalize_tags(summary.tags)
    if not is_ephemeral(tags) or tags.get(RUN_ID) != run_id:
        raise UserError(
            f"{summary.name} is not tagged ephemeral=true with run-id={run_id}; refusing to destroy it (use pulumi destroy by hand)"
        )
    what = (
        f"{summary.name} (environment {tags.get(ENVIRONMENT, '?')}, {summary.resource_count or 0} resources)"
    )
    if not apply:
        message = (
            f"would destroy and remove {what}; checkpoints stay in the bucket. Re-run with --apply to do it."
        )
        return message, None
    receipt = teardown(summary.name)
    return f"destroyed and removed {what}; checkpoints stay in the bucket", receipt


def run_regions(stacks: StackReader, stack: str, explicit: list[str] | None) -> list[str]:
    """Where a run's resources are: the regions asked for, else the region its stack recorded."""
    if explicit:
        return explicit
    region = stacks.outputs(stack).get("region")
    return [region] if isinstance(region, str) and region else [default_region()]
