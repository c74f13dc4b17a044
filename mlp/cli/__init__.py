"""`mlp`: one console script; each command only parses its options and delegates.

Commands live beside this file by area (infra, train, finops). Exit codes, for every command:

0  done, nothing to report against (findings of `mlp idle`/`mlp untagged` are information)
1  the command's verdict: policy violations, leaks or failed teardowns, a report with missing parts
2  the user's to fix: a flag, a config value, credentials, an endpoint (one line on stderr);
   also the usage errors (an unknown option, a missing or malformed value), one line too
3  a bug in mlp: one line naming the log file that holds the traceback (`mlp --debug` prints it)

docs/cli.md is the user's reference for these conventions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from mlp.cli import common
from mlp.errors import UserError

INTERNAL_ERROR_EXIT = 3
USER_ERROR_EXIT = 2

app = common.Typer(
    name="mlp",
    help="ml-platform: tagged spot GPU infrastructure on AWS and the FinOps loop that keeps it cheap.",
)


@app.callback()
def _root(version: common.VersionOption = False, debug: common.DebugOption = False) -> None:
    """ml-platform: tagged spot GPU infrastructure on AWS and the FinOps loop that keeps it cheap."""
    # Both options act in their callbacks as they are read; `debug` reaches every command (common.Group).


# Imported for their side effect of registering commands on `app`.
from mlp.cli import infra_cmds, policy_cmds, reap_cmds, report_cmds, runs_cmds, scan_cmds, train_cmds  # noqa: E402,F401


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run one command and exit with the code of the contract above."""
    from mlp.aws import PROFILE_ENV, describe_aws_error

    args = list(sys.argv[1:] if argv is None else argv)
    common.set_debug(False)  # per run: main may be called more than once in one process
    try:
        # `--profile` sets AWS_PROFILE for this command (and the processes it starts), no longer.
        with common.environment_kept(PROFILE_ENV):
            code = app(args=args, prog_name="mlp", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: an unknown option, a missing or malformed value
        message = " ".join(exc.format_message().split()).rstrip(".")
        if message:  # empty for a group run bare: typer printed its help instead
            ctx = getattr(exc, "ctx", None)
            hint = f"; see `{ctx.command_path} -h`" if ctx is not None else ""
            print(f"mlp: error: {message}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except UserError as exc:
        if common.debug_enabled():
            common.print_traceback(exc)
        print(f"mlp: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: no traceback reaches the user by accident
        line = describe_aws_error(exc)
        if line is not None:
            if common.debug_enabled():
                common.print_traceback(exc)
            # An endpoint or region error no command wrapped is still the user's to fix.
            print(f"mlp: error: {line}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        print(common.internal_error(exc, args), file=sys.stderr)
        sys.exit(INTERNAL_ERROR_EXIT)
    finally:
        common.set_debug(False)
    sys.exit(code or 0)
