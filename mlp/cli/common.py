"""Options and output helpers shared by every command, and the classes that give every command the same
habits: -h, the shared --debug, usage lines without typer's noise (docs/cli.md)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS, invalid_tag

DISTRIBUTION = "ml-platform"
HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
# Root options that every command also takes after its name (`mlp report --debug`).
EVERY_COMMAND_OPTIONS = ("debug",)


def _without_flag_types(params: list[Any]) -> list[Any]:
    """A flag takes no value, so its help shows no type (typer would print `<bool>`)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


def _usage_name(argument: TyperArgument) -> str:
    name = argument.metavar or (argument.name or "").upper()
    name = name if argument.required else f"[{name}]"
    return f"{name}..." if argument.nargs != 1 else name


class Command(TyperCommand):
    """A command whose usage line reads as Unix tools write it: `mlp train status [OPTIONS] RUN_ID`."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        arguments = [param for param in self.get_params(ctx) if isinstance(param, TyperArgument)]
        return [self.options_metavar or "[OPTIONS]", *(_usage_name(argument) for argument in arguments)]

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    """A command group; the root's shared options (EVERY_COMMAND_OPTIONS) reach every command below it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shared = [param for param in self.params if param.name in EVERY_COMMAND_OPTIONS]
        for command in _descendants(self):
            command.params.extend(param for param in shared if param not in command.params)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


def _descendants(group: TyperGroup) -> Iterator[Any]:
    for command in group.commands.values():
        yield command
        if isinstance(command, TyperGroup):
            yield from _descendants(command)


class Typer(typer.Typer):
    """An app or sub-app of `mlp`: -h/--help, and every command a `Command` (see its usage line)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            cls=Group,
            context_settings=HELP_SETTINGS,
            no_args_is_help=True,
            add_completion=False,
            pretty_exceptions_enable=False,
            **kwargs,
        )

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Any:
        return super().command(name, cls=cls or Command, **kwargs)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="text for people; json on stdout for machines (logs go to stderr)."),
]
STACK_FLAGS = ("--stack", "-s")
RegionsOption = Annotated[
    str | None,
    typer.Option(
        "--regions",
        help="Comma-separated AWS regions to scan, or 'all' (default: every region enabled for each account).",
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option("--region", metavar="<region>", help="One AWS region: the same as --regions REGION."),
]


def pick_regions(regions: str | None, region: str | None) -> str | None:
    """The `--regions` value the two region options give: `--region R` is `--regions R`, never both."""
    if region is None:
        return regions
    if regions is not None:
        raise UserError(
            f"--region {region} and --regions {regions} both choose the regions; pass one of them"
        )
    region = region.strip()
    if "," in region:
        raise UserError(f"--region {region}: takes one region; use --regions {region} for several")
    from mlp.preflight import check_regions

    check_regions([region], flag="--region")
    return region


@contextmanager
def environment_kept(name: str) -> Iterator[None]:
    """The environment variable `name` as it was before the block, whatever the block set."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _use_profile(name: str | None) -> None:
    if name is not None:
        from mlp import aws

        aws.use_profile(name)


ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="<name>",
        # Applied as the option is read, before any flag check talks to AWS; the command never sees it.
        callback=_use_profile,
        expose_value=False,
        help="AWS CLI profile to use (credentials, region, endpoint of ~/.aws/config); default $AWS_PROFILE.",
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


BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        metavar="<url>",
        help="State backend (file://DIR or s3://bucket/prefix); default $MLP_BACKEND_URL, then "
        "$PULUMI_BACKEND_URL, then file://~/.ml-platform/state.",
    ),
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
# Flags whose value is a secret: kept out of the log file.
SECRET_FLAGS = ("--slack-webhook",)
_debug = False
_botocore_handler: logging.Handler | None = None


def set_debug(enabled: bool) -> None:
    """Tracebacks on stderr, and botocore's request-by-request log there too (or neither)."""
    global _debug, _botocore_handler
    _debug = enabled
    botocore_log = logging.getLogger("botocore")
    if _botocore_handler is not None:
        botocore_log.removeHandler(_botocore_handler)
        _botocore_handler = None
    if enabled:
        _botocore_handler = logging.StreamHandler(sys.stderr)
        _botocore_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s [%(levelname)s] %(message)s"))
        botocore_log.addHandler(_botocore_handler)
        botocore_log.setLevel(logging.DEBUG)
    else:
        botocore_log.setLevel(logging.NOTSET)


def _enable_debug(enabled: bool) -> None:
    if enabled:
        set_debug(True)


DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar=DEBUG_ENV,
        show_envvar=True,
        # Eager, so a traceback is printed even for an error raised while the other options are read.
        is_eager=True,
        callback=_enable_debug,
        expose_value=False,
        help="Print tracebacks (not only a log file) and botocore's log of every AWS request, on stderr.",
    ),
]


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"mlp {importlib.metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        is_eager=True,
        callback=_print_version,
        expose_value=False,
        help="Print mlp's version and exit.",
    ),
]


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
