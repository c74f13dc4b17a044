"""`mlp`: one console script; each command only parses its options and delegates.

Commands live beside this file by area (infra, train, finops). Every error meant for the user is a
`UserError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import sys

import typer

from mlp.errors import UserError

app = typer.Typer(
    name="mlp",
    help="ml-platform: tagged spot GPU infrastructure on AWS and the FinOps loop that keeps it cheap.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """ml-platform: tagged spot GPU infrastructure on AWS and the FinOps loop that keeps it cheap."""


# Imported for their side effect of registering commands on `app`.
from mlp.cli import infra_cmds, policy_cmds, reap_cmds, report_cmds, scan_cmds, train_cmds  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except UserError as exc:
        print(f"mlp: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
