"""The nightly job: spend, idle GPUs and untagged resources assembled into the report's files.

`run_nightly` is the job: read spend from a `CostSource`, scan the regions, `build_report`, then
`write_report`. Where each part lives: the cost sources in `finops.cost_source`, the figures in
`finops.analysis`, the typed findings (and `Report`) in `finops.findings`, the pages (index.html,
report.md, from jinja templates) in `finops.dashboard`, the FOCUS files in `finops.focus_file`.

The report is made of parts: each cost view, and each region's idle scan and untagged scan, and the
expired-run leftovers. A part that fails (after retries) is named in `missing` and every other part is
still written: the Cost Explorer requests are paid for by then.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import botocore.exceptions
import botocore.parsers

from finops import costs
from finops.analysis import Period, analyze_line_items, analyze_spend, join_untagged, report_period
from finops.cost_source import CostSource
from finops.costs import MissingPart, Spend
from finops.dashboard import render_dashboard, render_markdown
from finops.findings import IDLE_SCAN, LEFTOVERS_SCAN, SCAN_TITLES, UNTAGGED_SCAN, Report, ScanMissing
from finops.focus_file import FOCUS_FILE_NAMES, focus_dataset, write_focus_files
from finops.idle import IdleFinding, scan_idle
from finops.reaper import expired_run_leftovers
from finops.untagged import UntaggedFinding, scan_untagged
from mlp import aws
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS

REPORT_FILES = ("index.html", "report.md", *FOCUS_FILE_NAMES, "findings.json")

Finding = TypeVar("Finding")


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
) -> Report:
    """Assemble the report; `idle`/`untagged` are None when their scan failed (named in `scan_missing`)."""
    analysis = analyze_spend(spend, period)
    analysis.missing += scan_missing
    idle_list, untagged_list = list(idle or []), list(untagged or [])
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
    )


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


# What a scan may fail with that is AWS's or the network's, not a bug: the part goes missing.
SCAN_FAILURES: tuple[type[Exception], ...] = (
    UserError,
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
    botocore.parsers.ResponseParserError,
)
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def _failure(exc: Exception) -> tuple[str, str]:
    """The reason a part is missing, and its short status for the dashboard."""
    cause = exc.__cause__ if isinstance(exc, UserError) and exc.__cause__ is not None else exc
    down = exc if isinstance(exc, aws.AwsUnreachable) else aws.unreachable(cause)
    if down is not None:
        return down.reason, down.status
    if isinstance(cause, botocore.exceptions.ClientError):
        code = cause.response.get("Error", {}).get("Code", "")
        status = "access denied" if code in ACCESS_DENIED_CODES else "failed"
        return f"the scan failed: {' '.join(str(cause).split())}", status
    return f"the scan failed: {' '.join(str(exc).split())}", "failed"


def guarded_scan(
    what: str, scan: Callable[[], Sequence[Finding]], *, kind: str = "", region: str = ""
) -> tuple[list[Finding] | None, list[MissingPart]]:
    """Run one scan part; AWS and network failures (after retries) leave that part missing, named."""
    try:
        return list(scan()), []
    except SCAN_FAILURES as exc:
        reason, status = _failure(exc)
        return None, [ScanMissing(what, reason, scan=kind, region=region, status=status)]


@dataclass
class ScanResults:
    """The scans of every region; a region that failed is in `missing`, its findings absent."""

    idle: list[IdleFinding] = field(default_factory=list)
    untagged: list[UntaggedFinding] = field(default_factory=list)
    leftovers: list[dict[str, Any]] = field(default_factory=list)
    missing: list[MissingPart] = field(default_factory=list)


def scan_regions(
    regions: Sequence[str],
    moment: datetime,
    *,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    on_step: Callable[[str], None] = lambda description: None,
) -> ScanResults:
    """Idle and untagged scans region by region, then the leftovers of every region that answered."""
    results = ScanResults()
    unreachable: list[str] = []
    for region in regions:
        on_step(f"Idle GPUs in {region}")
        idle, lost = guarded_scan(
            f"{SCAN_TITLES[IDLE_SCAN]} in {region}",
            lambda region=region: scan_idle([region], now=moment).findings,
            kind=IDLE_SCAN,
            region=region,
        )
        results.idle += idle or []
        results.missing += lost
        on_step(f"Untagged resources in {region}")
        untagged, lost_too = guarded_scan(
            f"{SCAN_TITLES[UNTAGGED_SCAN]} in {region}",
            lambda region=region: scan_untagged([region], required_tags=tuple(mandatory_tags)).findings,
            kind=UNTAGGED_SCAN,
            region=region,
        )
        results.untagged += untagged or []
        results.missing += lost_too
        if any(isinstance(part, ScanMissing) and part.status == "unreachable" for part in [*lost, *lost_too]):
            unreachable.append(region)
    results.idle.sort(key=lambda finding: (-(finding.wasted_usd or 0.0), finding.resource_id))
    results.untagged.sort(key=lambda finding: (finding.region, finding.resource_type, finding.arn))

    # A run's resources are grouped across regions, so the leftovers are one scan over the regions
    # that answered; an unreachable region's share is named missing instead of waiting on it again.
    reachable = [region for region in regions if region not in unreachable]
    for region in unreachable:
        results.missing.append(
            ScanMissing(
                f"{SCAN_TITLES[LEFTOVERS_SCAN]} in {region}",
                f"not scanned: {region} did not answer the scans above",
                scan=LEFTOVERS_SCAN,
                region=region,
                status="unreachable",
            )
        )
    if reachable:
        on_step(f"Expired training runs in {', '.join(reachable)}")
        leftovers, lost = guarded_scan(
            SCAN_TITLES[LEFTOVERS_SCAN],
            lambda: expired_run_leftovers(reachable, moment),
            kind=LEFTOVERS_SCAN,
        )
        results.leftovers = leftovers or []
        results.missing += lost
    return results


def run_nightly(
    days: int,
    out_dir: Path,
    *,
    regions: Sequence[str],
    source: CostSource,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    now: datetime | None = None,
    on_step: Callable[[Step], None] = lambda step: None,
) -> Report:
    """The nightly job: read spend from `source`, scan idle GPUs and untagged resources, write the files.

    `on_step` hears of each long step as it starts. `mlp report` runs `mlp.preflight.check_report`
    first, so flags are checked before any request.
    """
    moment = now or datetime.now(UTC)
    period = report_period(days, moment.date())
    make_out_dir(out_dir)  # before the long steps: a bad --out must not cost a whole run
    with aws.aws_errors("reading the account the report is for"):
        # Cost Explorer answers for the caller's account: the FOCUS file's BillingAccountId.
        billing_account_id = aws.caller_account_id(regions[0])
    total = len(costs.plan_views(mandatory_tags)) + 2 * len(regions) + 2
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
        scans = scan_regions(regions, moment, mandatory_tags=mandatory_tags, on_step=step)
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
        )
        write_report(report, out_dir, billing_account_id=billing_account_id)
    finally:
        # Line items over DuckDB hold a connection and a scratch directory until closed; a frame has none.
        close = getattr(spend.line_items, "close", None)
        if close is not None:
            close()
    return report
