"""What a scan covers: which accounts and regions, with which credentials, and what could not be reached.

The scans (`mlp idle`, `mlp untagged`, the report's, the reaper's) run over *targets*, one per account
and region (`inventory.Scope`). The scope comes from the options every scanning command takes:

- accounts: the caller's own account by default; `--accounts FILE` (YAML in the shape Cloud Custodian's
  c7n-org uses: `accounts: [{account_id, name, role, regions}]`, `role` an ARN or a role name), or
  `--org-role NAME` (every ACTIVE account of the organization, from Organizations' ListAccounts in
  the payer account, each assumed as `arn:aws:iam::<id>:role/NAME`; the payer itself with the caller's
  own credentials);
- regions: every region enabled for the account (DescribeRegions with opt-in status) by default;
  `--regions r1,r2` narrows, `--regions all` says the default out loud. An account's own `regions` in
  the accounts file narrow further.

An account whose role cannot be assumed, or whose regions cannot be listed, is a named gap of the
scope and every other account is still scanned. A region not enabled for an account is skipped and
said so; a region asked for by name that the account has not enabled is skipped the same way.
Targets run concurrently in a bounded pool (`run_targets`); a target that fails is a gap too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import boto3
import botocore.exceptions
import botocore.parsers
import yaml

from finops.inventory import Scope
from mlp import aws, progress
from mlp.errors import UserError

T = TypeVar("T")

ALL_REGIONS = "all"
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
# What CloudTrail shows for every call the scans make in a member account.
SESSION_NAME = "ml-platform-finops-scan"
ENABLED_OPT_IN_STATUSES = frozenset({"opt-in-not-required", "opted-in"})
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_ROLE_NAME = re.compile(r"[\w+=,.@/-]{1,512}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):role/[\w+=,.@/-]{1,512}")
# What an account or target may fail with and still leave the rest of the scan standing: AWS's
# refusals, botocore's transport and parsing errors (an endpoint answering something else), and the
# one-line errors mlp.aws makes of them.
AWS_FAILURES: tuple[type[Exception], ...] = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    botocore.parsers.ResponseParserError,
    UserError,
)
# Organizations' account state that can still hold resources.
ACTIVE = "ACTIVE"


@dataclass(frozen=True)
class Account:
    """An account to scan; `role_arn` None means the caller's own credentials act in it."""

    account_id: str
    name: str = ""
    role_arn: str | None = None
    # Narrows the regions of this account (the accounts file's `regions`); None: the scope's regions.
    regions: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.account_id} ({self.name})" if self.name else self.account_id


@dataclass(frozen=True)
class Gap:
    """An account or account-region the scope could not cover, and why."""

    account_id: str
    account_name: str
    region: str
    reason: str

    @property
    def part(self) -> str:
        where = f"account {self.account_id}" + (f" ({self.account_name})" if self.account_name else "")
        return f"{where} {self.region}" if self.region else where

    def to_json(self) -> dict[str, str]:
        payload = {"account_id": self.account_id, "account_name": self.account_name, "reason": self.reason}
        if self.region:
            payload["region"] = self.region
        return payload


@dataclass(frozen=True)
class Skipped:
    """A region left out on purpose: not enabled for the account."""

    account_id: str
    region: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"account_id": self.account_id, "region": self.region, "reason": self.reason}


@dataclass
class ScanScope:
    """The targets a scan runs over, and what it leaves out (gaps: failures; skipped: by design)."""

    targets: list[Scope]
    accounts: list[Account]
    gaps: list[Gap] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def regions(self) -> list[str]:
        return sorted({target.region for target in self.targets})

    def regions_of(self, account_id: str) -> list[str]:
        return [target.region for target in self.targets if target.account_id == account_id]

    def first_region_of(self, target: Scope) -> bool:
        """Whether `target` is its account's first: global types (IAM) are enumerated there only."""
        return self.regions_of(target.account_id)[:1] == [target.region]

    def to_json(self) -> dict[str, Any]:
        """The `scope` block every JSON output carries."""
        return {
            "accounts": [
                {
                    "account_id": account.account_id,
                    "name": account.name,
                    "regions": self.regions_of(account.account_id),
                }
                for account in self.accounts
            ],
            "regions": self.regions,
            "gaps": [gap.to_json() for gap in self.gaps],
            "skipped": [skipped.to_json() for skipped in self.skipped],
        }

    def describe(self) -> str:
        """One line for text outputs: what was scanned, and what was not."""
        accounts = len({target.account_id for target in self.targets})
        line = f"scanned {accounts} account{'s' if accounts != 1 else ''} x {len(self.regions)} region"
        line += f"{'s' if len(self.regions) != 1 else ''} ({', '.join(self.regions)})"
        if self.gaps:
            line += "; not scanned: " + "; ".join(f"{gap.part}: {gap.reason}" for gap in self.gaps)
        return line


def single_account_scope(regions: Sequence[str], account_id: str | None = None) -> ScanScope:
    """`regions` of one account (the caller's when None) as a scope, taken as given: no DescribeRegions.

    For callers that chose and checked their regions already (`mlp report`, `mlp reap`).
    """
    if account_id is None:
        with aws.aws_errors("reading the caller's account"):
            account_id = aws.caller_account_id(regions[0])
    return ScanScope(
        targets=[Scope(region, account_id) for region in regions],
        accounts=[Account(account_id)],
    )


def parse_regions_option(value: str | None) -> list[str] | None:
    """`--regions`: None (or `all`) means every enabled region; else the named regions, validated."""
    if value is None or value.strip() == ALL_REGIONS:
        return None
    return aws.parse_regions(value)


def validate_concurrency(value: int) -> int:
    if not 1 <= value <= MAX_CONCURRENCY:
        raise UserError(
            f"--concurrency {value}: use a number of parallel scans between 1 and {MAX_CONCURRENCY}"
        )
    return value


def _role_arn(account_id: str, role: str, where: str) -> str:
    """An ARN as given, or the ARN of role name `role` in `account_id`."""
    match = _ROLE_ARN.fullmatch(role)
    if match:
        if match.group(1) != account_id:
            raise UserError(
                f"{where}: role {role} is in account {match.group(1)}, not {account_id}; fix the ARN"
            )
        return role
    if not _ROLE_NAME.fullmatch(role) or role.startswith("arn:"):
        raise UserError(f"{where}: role {role!r} is neither a role ARN nor a role name like FinOpsReadOnly")
    return f"arn:aws:iam::{account_id}:role/{role.strip('/')}"


def load_accounts_file(path: Path) -> list[Account]:
    """The accounts of a c7n-org style YAML file, validated; a bad file is one line naming the entry."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(
            f"--accounts {path}: cannot read it ({exc.strerror}); pass an existing YAML file"
        ) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"--accounts {path}: not valid YAML ({type(exc).__name__}); fix the file") from exc
    entries = document.get("accounts") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"--accounts {path}: needs a top-level 'accounts:' list with at least one account")
    accounts: list[Account] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"--accounts {path}: accounts[{index}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: each account is a mapping with account_id (and name, role, regions)")
        unknown = sorted(set(entry) - {"account_id", "name", "role", "regions", "tags", "vars"})
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r}; use account_id, name, role, regions")
        account_id = str(entry.get("account_id", "")).strip()
        if not _ACCOUNT_ID.fullmatch(account_id):
            raise UserError(
                f"{where}: account_id {entry.get('account_id')!r} is not a 12-digit AWS account id"
            )
        if account_id in seen:
            raise UserError(f"{where}: account {account_id} is listed twice; keep one entry")
        seen.add(account_id)
        role = entry.get("role")
        if role is not None and not isinstance(role, str):
            raise UserError(f"{where}: role must be a role ARN or name")
        regions = entry.get("regions")
        if regions is not None and (
            not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions)
        ):
            raise UserError(f"{where}: regions must be a list of region names like [us-east-1, eu-west-1]")
        accounts.append(
            Account(
                account_id=account_id,
                name=str(entry.get("name") or ""),
                role_arn=_role_arn(account_id, role, where) if role else None,
                regions=tuple(aws.parse_regions(",".join(regions))) if regions else None,
            )
        )
    return accounts


def organization_accounts(org_role: str, caller_account_id: str) -> list[Account]:
    """Every ACTIVE account of the caller's organization; members through `org_role`, the caller's own directly."""
    if not _ROLE_NAME.fullmatch(org_role) or org_role.startswith("arn:"):
        raise UserError(
            f"--org-role {org_role!r}: give the role's name (the same in every account), e.g. FinOpsReadOnly"
        )
    organizations = aws.client("organizations", aws.DEFAULT_REGION)
    with aws.aws_errors("listing the organization's accounts (run from the payer account)"):
        listed = [
            account
            for page in organizations.get_paginator("list_accounts").paginate()
            for account in page["Accounts"]
            if account.get("Status", ACTIVE) == ACTIVE
        ]
    return [
        Account(
            account_id=account["Id"],
            name=account.get("Name", ""),
            role_arn=None
            if account["Id"] == caller_account_id
            else _role_arn(account["Id"], org_role, "--org-role"),
        )
        for account in sorted(listed, key=lambda account: (account["Id"] != caller_account_id, account["Id"]))
    ]


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, aws.AwsUnreachable):
        return exc.reason
    if isinstance(exc, UserError):
        return str(exc)
    found = aws.unreachable(exc)
    return found.reason if found is not None else f"{type(exc).__name__}: {exc}"


def enabled_regions(session: boto3.session.Session | None) -> tuple[list[str], list[str]]:
    """(enabled, not enabled) regions of the session's account, from DescribeRegions with opt-in status."""
    home = aws.default_region()
    ec2 = aws.client("ec2", home, session=session)
    # One partition per scan: credentials of the commercial partition do not work in China or GovCloud,
    # whatever an emulator lists.
    partition_of = boto3.session.Session().get_partition_for_region
    partition = partition_of(home)
    regions = [
        region
        for region in ec2.describe_regions(AllRegions=True)["Regions"]
        if partition_of(region["RegionName"]) == partition
    ]
    enabled = sorted(
        r["RegionName"]
        for r in regions
        if r.get("OptInStatus", "opt-in-not-required") in ENABLED_OPT_IN_STATUSES
    )
    disabled = sorted(r["RegionName"] for r in regions if r["RegionName"] not in enabled)
    return enabled, disabled


def account_session(account: Account, external_id: str | None) -> boto3.session.Session | None:
    if account.role_arn is None:
        return None
    return aws.assumed_role_session(account.role_arn, session_name=SESSION_NAME, external_id=external_id)


def resolve_scope(
    accounts: Sequence[Account] | None,
    regions: Sequence[str] | None,
    *,
    external_id: str | None = None,
    caller_account_id: str | None = None,
) -> ScanScope:
    """The targets of `accounts` (None: the caller's own) x their regions (None: every enabled one)."""
    if accounts is None:
        with aws.aws_errors("reading the caller's account"):
            caller_account_id = caller_account_id or aws.caller_account_id()
        accounts = [Account(account_id=caller_account_id)]
    scope = ScanScope(targets=[], accounts=list(accounts))
    for account in accounts:
        try:
            session = account_session(account, external_id)
            enabled, disabled = enabled_regions(session)
        except AWS_FAILURES as exc:
            scope.gaps.append(Gap(account.account_id, account.name, "", _error_reason(exc)))
            continue
        wanted = list(account.regions or regions or enabled)
        if regions is not None and account.regions is not None:
            wanted = [region for region in account.regions if region in regions]
        for region in wanted:
            if region in enabled:
                scope.targets.append(Scope(region, account.account_id, account.name, session))
            else:
                reason = (
                    "not enabled for the account" if region in disabled else "not a region of this partition"
                )
                scope.skipped.append(Skipped(account.account_id, region, reason))
        if regions is None and account.regions is None:
            scope.skipped.extend(
                Skipped(account.account_id, region, "not enabled for the account") for region in disabled
            )
    return scope


@dataclass
class TargetResults(Generic[T]):
    """What `run_targets` gathered: each target's result, and the targets that failed as gaps."""

    results: list[tuple[Scope, T]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


def run_targets(
    scope: ScanScope,
    work: Callable[[Scope], T],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[Scope, bool], None] | None = None,
) -> TargetResults[T]:
    """`work` on every target of `scope`, at most `concurrency` at a time, results in target order.

    A target whose work raises an AWS error (access denied, throttled past retries, unreachable) is a
    gap naming its account and region; the others still run. Other exceptions are bugs and propagate.
    The command's progress display, if it opened one, counts the targets done.
    """
    gathered: TargetResults[T] = TargetResults()
    outcomes: dict[int, T] = {}
    failures: dict[int, Gap] = {}
    with (
        progress.task("account-regions", total=len(scope.targets)) as shown,
        ThreadPoolExecutor(max_workers=validate_concurrency(concurrency)) as pool,
    ):
        futures = {pool.submit(work, target): index for index, target in enumerate(scope.targets)}
        for future in as_completed(futures):
            index = futures[future]
            target = scope.targets[index]
            try:
                outcomes[index] = future.result()
            except AWS_FAILURES as exc:
                failures[index] = Gap(
                    target.account_id, target.account_name, target.region, _error_reason(exc)
                )
            shown.advance(detail=f"{target.account_name or target.account_id} {target.region}")
            if on_done is not None:
                on_done(target, index not in failures)
    for index, target in enumerate(scope.targets):
        if index in outcomes:
            gathered.results.append((target, outcomes[index]))
        else:
            gathered.gaps.append(failures[index])
    return gathered
