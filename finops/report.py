"""The nightly job: spend, idle GPUs and untagged resources assembled into the report's files.

`run_nightly` is the job: read spend from a `CostSource`, scan every account and region of a
`ScanScope`, `build_report`, then `write_report`. Where each part lives: the cost sources in `finops.cost_source`, the figures in
`finops.analysis`, the typed findings (and `Report`) in `finops.findings`, the pages (index.html,
report.md, from jinja templates) in `finops.dashboard`, the FOCUS files in `finops.focus_file`.

The report is made of parts: each cost view, and each account-region's idle scan, untagged scan and
expired-run leftovers. A part that fails (after retries; a gap of the scan's scope) is named in
`missing` and every other part is still written: the Cost Explorer requests are paid for by then.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from finops import costs
from finops.analysis import (
    LineItems,
    Period,
    analyze_line_items,
    analyze_spend,
    daily_spend,
    join_untagged,
    month_spend,
    report_period,
    rows_with_tags,
    tag_view_rows,
)
from finops.budgets import Budget, BudgetStatus, budget_statuses, load_budgets
from finops.cost_source import CostSource
from finops.costs import MissingPart, Spend
from finops.dashboard import render_dashboard, render_markdown
from finops.delivery import S3Target, read_history
from finops.findings import (
    IDLE_SCAN,
    LEFTOVERS_SCAN,
    RUNS_SCAN,
    SCAN_TITLES,
    UNTAGGED_SCAN,
    Report,
    ScanMissing,
)
from finops.focus_file import FOCUS_FILE_NAMES, focus_dataset, write_focus_files
from finops.forecast import CostExplorerForecast, ForecastUnavailable, month_end
from finops.idle import IdleFinding, scan_idle
from finops.inventory import Scope
from finops.reaper import scan_expired_run_leftovers
from finops.run_costs import Period as RunPeriod
from finops.run_costs import RunCosts, run_costs
from finops.scope import DEFAULT_CONCURRENCY, Gap, ScanScope
from finops.showback import stack_team_owners
from finops.untagged import UntaggedFinding, scan_untagged
from mlp import aws
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS

REPORT_FILES = ("index.html", "report.md", *FOCUS_FILE_NAMES, "findings.json")


@dataclass(frozen=True)
class Step:
    """One long step of the nightly job, numbered from 1 out of `total`, for a progress display."""

    description: str
    number: int
    total: int


def build_report(
    spend: Spend,
    period: Period,
    *,
    idle: Sequence[IdleFinding] | None,
    untagged: Sequence[UntaggedFinding] | None,
    leftovers: Sequence[dict[str, Any]] | None = None,
    required_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    scan_missing: Sequence[MissingPart] = (),
    generated_at: datetime | None = None,
    scope: ScanScope | None = None,
    history: Sequence[dict[str, Any]] | None = None,
    budgets: Sequence[Budget] | None = None,
    budgets_note: str | None = None,
    runs: RunCosts | None = None,
    stack_team_owners: Mapping[str, str] | None = None,
    cost_explorer_forecast: CostExplorerForecast | ForecastUnavailable | None = None,
) -> Report:
    """Assemble the report; `idle`/`untagged` are None when their scan failed (named in `scan_missing`).

    `scope` is what the scans covered; `history` the delivered nights before tonight (None: not delivered);
    `budgets` the environments' and teams' monthly limits; `runs` the training runs of the period.
    """
    analysis = analyze_spend(spend, period, cost_explorer_forecast)
    analysis.missing += scan_missing
    idle_list, untagged_list = list(idle or []), list(untagged or [])
    statuses, budgets_note = _budget_statuses(spend, period, budgets, budgets_note)
    if analysis.forecast is not None and statuses:
        environments = [status["limit_usd"] for status in statuses if status["kind"] == "environment"]
        analysis.forecast["budget_usd"] = round(sum(environments), 2) if environments else None
    return Report(
        analysis=analysis,
        spend=spend,
        idle=idle_list,
        untagged=untagged_list,
        untagged_joined=join_untagged(untagged_list, analysis.untagged_by_service_region),
        leftovers=list(leftovers or []),
        required_tags=tuple(required_tags),
        generated_at=generated_at or datetime.now(UTC),
        line_items=None
        if spend.line_items is None
        else analyze_line_items(spend.line_items, period, idle=idle_list, untagged=untagged_list),
        scope=scope,
        history=None if history is None else list(history),
        budgets=statuses,
        budgets_note=budgets_note,
        runs=runs,
        stack_team_owners=dict(stack_team_owners or {}),
    )


def _budget_statuses(
    spend: Spend, period: Period, budgets: Sequence[Budget] | None, note: str | None
) -> tuple[list[BudgetStatus] | None, str | None]:
    """Each budget beside the month's spend carrying its tags; none when that spend is missing."""
    if not budgets:
        return None, note
    keys = sorted({key for budget in budgets for key in budget.tags})
    rows = tag_view_rows(spend, keys)
    if rows is None:
        # A budget shown at $0 would read as "on track": without the spend there is no comparison.
        return None, f"spend by {' and '.join(keys)} is missing, so no budget can be compared"
    statuses = budget_statuses(
        budgets, lambda tags: month_spend(daily_spend(rows_with_tags(rows, tags)), period)
    )
    return statuses, note


def make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--out {out_dir}: cannot create the directory ({exc.strerror}); choose another"
        ) from exc


def write_report(report: Report, out_dir: Path, *, billing_account_id: str | None = None) -> list[Path]:
    """Write the report's files (`REPORT_FILES`) into `out_dir` (created if needed); returns their paths.

    findings.json goes first: the machine-read file is the one a half-full disk must not lose.
    `billing_account_id` is the FOCUS file's BillingAccountId when Cost Explorer is the source (the
    FOCUS export's line items carry their own); without it that column is null, not FOCUS.
    """
    make_out_dir(out_dir)
    html, markdown, findings = out_dir / "index.html", out_dir / "report.md", out_dir / "findings.json"
    focus_rows = focus_dataset(
        report.spend, report.period.start, report.period.end, billing_account_id=billing_account_id
    )
    writers: list[tuple[str, Callable[[], object]]] = [
        (
            findings.name,
            lambda: findings.write_text(
                json.dumps(report.findings, indent=2, default=str) + "\n", encoding="utf-8"
            ),
        ),
        (markdown.name, lambda: markdown.write_text(render_markdown(report), encoding="utf-8")),
        (" and ".join(FOCUS_FILE_NAMES), lambda: write_focus_files(focus_rows, out_dir)),
        (html.name, lambda: html.write_text(render_dashboard(report), encoding="utf-8")),
    ]
    for name, write in writers:
        try:
            write()
        except OSError as exc:
            raise UserError(
                f"--out {out_dir}: writing {name} failed ({exc.strerror or exc}); free space or "
                "choose another directory"
            ) from exc
    return [out_dir / name for name in REPORT_FILES]


ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
# The openings of `mlp.aws.unreachable`'s reasons: the endpoint (or proxy, TLS) did not answer.
UNREACHABLE_REASONS = ("endpoint unreachable", "proxy unreachable", "TLS failed", "not an AWS answer")


def gap_status(gap: Gap) -> str:
    """A gap's word for a dashboard tile, from its reason (`Code: message` for an AWS refusal)."""
    if gap.reason.startswith(UNREACHABLE_REASONS):
        return "unreachable"
    if gap.reason.split(":", 1)[0] in ACCESS_DENIED_CODES:
        return "access denied"
    return "failed"


def _where(gap: Gap, name_accounts: bool) -> str:
    """ "us-west-2" in a one-account report, "account 111111111111 (payer) us-west-2" in a wider one."""
    return gap.part if name_accounts or not gap.region else gap.region


def missing_parts(
    scan: str, gaps: Sequence[Gap], *, name_accounts: bool, status: str | None = None
) -> list[ScanMissing]:
    """Each gap of one scan as a missing part; `name_accounts` when the report covers several accounts."""
    parts = []
    for gap in gaps:
        account = gap.account_name or gap.account_id
        if not gap.region:
            place = f"account {account}"
        else:
            place = f"{account} {gap.region}" if name_accounts else gap.region
        parts.append(
            ScanMissing(
                f"{SCAN_TITLES[scan]} in {_where(gap, name_accounts)}",
                gap.reason,
                scan=scan,
                region=gap.region,
                status=status or gap_status(gap),
                account_id=gap.account_id,
                account_name=gap.account_name,
                place=place,
            )
        )
    return parts


@dataclass
class ScanResults:
    """The scans of a scope; what could not be scanned is in `missing`, its findings absent."""

    scope: ScanScope
    idle: list[IdleFinding] = field(default_factory=list)
    untagged: list[UntaggedFinding] = field(default_factory=list)
    leftovers: list[dict[str, Any]] = field(default_factory=list)
    missing: list[MissingPart] = field(default_factory=list)
    # The training runs of `runs_period` and their costs; None when not asked for, or unreadable.
    runs: RunCosts | None = None


def _merged_gaps(*scopes: ScanScope) -> list[Gap]:
    """Every account and account-region some scan could not cover, once each (its first reason)."""
    merged: dict[tuple[str, str], Gap] = {}
    for scope in scopes:
        for gap in scope.gaps:
            merged.setdefault((gap.account_id, gap.region), gap)
    return list(merged.values())


def run_scans(
    scope: ScanScope,
    moment: datetime,
    *,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_step: Callable[[str], None] = lambda description: None,
    runs_period: RunPeriod | None = None,
    line_items: LineItems | None = None,
) -> ScanResults:
    """Idle and untagged scans over every target of `scope`, then the leftovers of every target that answered.

    With `runs_period`, the training runs of those targets too, their billed dollars from `line_items`
    (the FOCUS export's) when given, else Cost Explorer's by run-id tag.
    """
    name_accounts = len(scope.accounts) > 1
    count = len(scope.targets)

    def progress(what: str) -> Callable[[Scope, bool], None]:
        done = itertools.count(1)
        return lambda target, succeeded: on_step(f"{what}: {next(done)} of {count} account-regions")

    on_step(f"Idle GPUs in {count} account-regions")
    idle = scan_idle(scope, now=moment, concurrency=concurrency, on_done=progress("Idle GPUs"))
    on_step(f"Untagged resources in {count} account-regions")
    untagged = scan_untagged(
        scope, tuple(mandatory_tags), concurrency=concurrency, on_done=progress("Untagged resources")
    )
    missing: list[MissingPart] = [
        *missing_parts(IDLE_SCAN, idle.gaps, name_accounts=name_accounts),
        *missing_parts(UNTAGGED_SCAN, untagged.gaps, name_accounts=name_accounts),
    ]

    # A run's resources are grouped across regions, so the leftovers are one scan over the targets
    # that answered; an unreachable target's share is named missing instead of waiting on it again.
    unreachable = {
        (gap.account_id, gap.region): gap
        for gap in [*idle.gaps, *untagged.gaps]
        if gap.region and gap_status(gap) == "unreachable"
    }
    answered = replace(
        scope,
        targets=[target for target in scope.targets if (target.account_id, target.region) not in unreachable],
    )
    on_step(f"Expired training runs in {len(answered.targets)} account-regions")
    found = scan_expired_run_leftovers(answered, moment, concurrency=concurrency)
    missing += missing_parts(LEFTOVERS_SCAN, found.scope.gaps, name_accounts=name_accounts)
    not_asked = [
        replace(gap, reason=f"not scanned: {_where(gap, name_accounts)} did not answer the scans above")
        for gap in unreachable.values()
    ]
    missing += missing_parts(LEFTOVERS_SCAN, not_asked, name_accounts=name_accounts, status="unreachable")
    runs, covered = None, [idle.scope, untagged.scope, found.scope]
    if runs_period is not None:
        on_step(f"Training runs in {len(answered.targets)} account-regions")
        try:
            runs = run_costs(answered, runs_period, line_items=line_items, concurrency=concurrency)
        except (UserError, BotoCoreError, ClientError) as error:
            # The rest of the report is paid for by now: the runs are one missing part, not the night.
            missing.append(ScanMissing(SCAN_TITLES[RUNS_SCAN], str(error), scan=RUNS_SCAN))
        else:
            covered.append(runs.scope)
            missing += missing_parts(RUNS_SCAN, runs.scope.gaps, name_accounts=name_accounts)
            missing += missing_parts(RUNS_SCAN, not_asked, name_accounts=name_accounts, status="unreachable")
    return ScanResults(
        scope=replace(scope, gaps=_merged_gaps(*covered)),
        idle=idle.findings,
        untagged=untagged.findings,
        leftovers=found.leftovers,
        missing=missing,
        runs=runs,
    )


def run_nightly(
    days: int,
    out_dir: Path,
    *,
    scope: ScanScope,
    source: CostSource,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    concurrency: int = DEFAULT_CONCURRENCY,
    history_target: S3Target | None = None,
    now: datetime | None = None,
    on_step: Callable[[Step], None] = lambda step: None,
) -> Report:
    """The nightly job: read spend from `source`, scan idle GPUs and untagged resources of `scope`, write the files.

    With `history_target` (where the report will be delivered) its history.jsonl is read first, so the
    dashboard draws the nights before tonight's. `on_step` hears of each long step as it starts.
    `mlp report` runs `mlp.preflight.check_report` first, so flags are checked before any request.
    """
    moment = now or datetime.now(UTC)
    period = report_period(days, moment.date())
    make_out_dir(out_dir)  # before the long steps: a bad --out must not cost a whole run
    history = None if history_target is None else read_history(history_target)
    with aws.aws_errors("reading the account the report is for"):
        # Cost Explorer answers for the caller's account: the FOCUS file's BillingAccountId.
        billing_account_id = aws.caller_account_id()
    # The views, each scan's start and targets, the leftovers, and the writing.
    total = len(costs.plan_views(mandatory_tags)) + 2 * (1 + len(scope.targets)) + 3
    numbers = itertools.count(1)

    def step(description: str) -> None:
        on_step(Step(description, next(numbers), total))

    spend = source.read(
        period.fetch_start,
        period.end,
        mandatory_tags=mandatory_tags,
        on_view=lambda view: step(f"{source.name}: {view.name}"),
    )
    try:
        forecast = None
        if period.end < month_end(period.last_day):
            forecast = source.forecast(period.end, month_end(period.last_day), spend)
        budgets, budgets_note = load_budgets(billing_account_id)
        scans = run_scans(
            scope,
            moment,
            mandatory_tags=mandatory_tags,
            concurrency=concurrency,
            on_step=step,
            runs_period=RunPeriod.last_days(days, moment),
            line_items=spend.line_items,
        )
        step("Writing the report")
        report = build_report(
            spend,
            period,
            idle=scans.idle,
            untagged=scans.untagged,
            leftovers=scans.leftovers,
            required_tags=mandatory_tags,
            scan_missing=scans.missing,
            generated_at=moment,
            scope=scans.scope,
            history=history,
            budgets=budgets,
            budgets_note=budgets_note,
            runs=scans.runs,
            stack_team_owners=stack_team_owners(),
            cost_explorer_forecast=forecast,
        )
        write_report(report, out_dir, billing_account_id=billing_account_id)
    finally:
        # Line items over DuckDB hold a connection and a scratch directory until closed; a frame has none.
        close = getattr(spend.line_items, "close", None)
        if close is not None:
            close()
    return report
