"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS, invalid_tag


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="text for people; json on stdout for machines (logs go to stderr)."),
]
RegionsOption = Annotated[
    str | None,
    typer.Option(
        "--regions",
        help="Comma-separated AWS regions to scan, or 'all' (default: every region enabled for each account).",
    ),
]
AccountsOption = Annotated[
    Path | None,
    typer.Option(
        "--accounts",
        help="YAML file of accounts to scan (c7n-org shape: accounts: [{account_id, name, role, regions}]).",
    ),
]
OrgRoleOption = Annotated[
    str | None,
    typer.Option(
        "--org-role",
        help="Scan every account of the organization (from the payer account), assuming this role name in each.",
    ),
]
ExternalIdOption = Annotated[
    str | None,
    typer.Option(
        "--external-id", envvar="MLP_EXTERNAL_ID", help="External id the member-account roles require."
    ),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option("--concurrency", help="Account-region scans run at once (1-64)."),
]


RequiredTagsOption = Annotated[
    str | None,
    typer.Option(
        "--required-tags", help="Comma-separated tag keys every resource must carry (default: mandatory)."
    ),
]


def parse_required_tags(value: str | None) -> list[str]:
    """`--required-tags a,b` as a list of valid tag keys; the mandatory keys when absent."""
    if value is None:
        return list(DEFAULT_MANDATORY_TAGS)
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:
        raise UserError("--required-tags is empty; pass tag keys like --required-tags team,project")
    for key in keys:
        problem = invalid_tag(key, "")
        if problem:
            raise UserError(f"--required-tags: {problem}")
    return keys


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def log(message: str) -> None:
    """Progress and diagnostics: always stderr, so stdout stays parseable."""
    print(message, file=sys.stderr)


DEBUG_ENV = "MLP_DEBUG"
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar=DEBUG_ENV,
        show_envvar=True,
        help="On an internal error, print the traceback instead of writing it to a log file.",
    ),
]
# Flags whose value is a secret: kept out of the log file.
SECRET_FLAGS = ("--slack-webhook",)
_debug = False


def set_debug(enabled: bool) -> None:
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    """`--debug`, or MLP_DEBUG set to a true value (read directly too: errors can precede parsing)."""
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def log_directory() -> Path:
    """Where internal-error logs go: $XDG_CACHE_HOME (or ~/.cache)/ml-platform/logs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ml-platform" / "logs"


def redact_args(args: Sequence[str]) -> list[str]:
    redacted: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            redacted.append("<redacted>")
            hide_next = False
        elif arg in SECRET_FLAGS:
            redacted.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{flag}=" for flag in SECRET_FLAGS)):
            redacted.append(arg.split("=", 1)[0] + "=<redacted>")
        else:
            redacted.append(arg)
    return redacted


def write_error_log(error: BaseException, args: Sequence[str]) -> Path | None:
    """The traceback in a new log file; a temporary directory when the cache is not writable."""
    moment = datetime.now(UTC)
    name = f"mlp-{moment:%Y%m%dT%H%M%S}-{os.getpid()}.log"
    text = f"mlp {' '.join(redact_args(args))}\nat {moment.isoformat()} in {os.getcwd()}\n\n" + "".join(
        traceback.format_exception(error)
    )
    for directory in (log_directory(), Path(tempfile.gettempdir()) / "ml-platform-logs"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def print_traceback(error: BaseException) -> None:
    traceback.print_exception(error, file=sys.stderr)


def internal_error(error: BaseException, args: Sequence[str]) -> str:
    """The one line for a bug: its type and message, and where the traceback is (or the traceback)."""
    from mlp.errors import describe

    if debug_enabled():
        print_traceback(error)
        return f"mlp: internal error (a bug): {describe(error)}"
    path = write_error_log(error, args)
    where = f"traceback in {path}" if path else "no log could be written; rerun with --debug"
    return f"mlp: internal error (a bug): {describe(error)}; {where}"


def scope_from_options(
    accounts: Path | None,
    org_role: str | None,
    regions: str | None,
    external_id: str | None,
) -> Any:
    """The `finops.scope.ScanScope` the scope options describe (imported late: the CLI starts fast)."""
    from finops import scope
    from mlp import aws

    if accounts is not None and org_role is not None:
        raise UserError("--accounts and --org-role both choose the accounts; pass one of them")
    region_list = scope.parse_regions_option(regions)
    if accounts is not None:
        targets = scope.load_accounts_file(accounts)
    elif org_role is not None:
        with aws.aws_errors("reading the caller's account"):
            caller = aws.caller_account_id()
        targets = scope.organization_accounts(org_role, caller)
    else:
        targets = None
    return scope.resolve_scope(targets, region_list, external_id=external_id)
