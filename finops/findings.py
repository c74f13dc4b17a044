"""What the report found, typed: the scans' missing parts, the `Report`, and findings.json from its parts.

findings.json's shape is the contract in docs/findings-json.md; `FindingsDocument` is that shape.
A figure whose source is missing is None (null), never zero.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, NotRequired, TypedDict

from finops.analysis import (
    AccountShare,
    Forecast,
    LineItemFindings,
    Mover,
    Period,
    RegionSpend,
    SpendAnalysis,
    UntaggedServiceRow,
    unscanned_spend,
)
from finops.budgets import BudgetStatus
from finops.costs import MissingPart, Spend
from finops.delivery import HISTORY_NIGHTS, history_line
from finops.focus import COST_EXPLORER_SOURCE
from finops.idle import DEFAULT_THRESHOLD_PCT, DEFAULT_WINDOW_HOURS, IdleFinding
from finops.run_costs import RunCosts
from finops.scope import ScanScope
from finops.showback import ActionItem, IdleRate, Showback, actions, idle_rate, showback, team_owners
from finops.untagged import UntaggedFinding
from mlp.pricing import HOURS_PER_MONTH

NO_LIST_PRICE = "no list price"

# The scans of the report, by the key `ScanMissing.scan` carries.
IDLE_SCAN = "idle"
UNTAGGED_SCAN = "untagged"
LEFTOVERS_SCAN = "leftovers"
RUNS_SCAN = "runs"
SCAN_TITLES = {
    IDLE_SCAN: "idle GPUs",
    UNTAGGED_SCAN: "untagged resources",
    LEFTOVERS_SCAN: "expired training-run leftovers",
    RUNS_SCAN: "training runs",
}


@dataclass(frozen=True)
class ScanMissing(MissingPart):
    """One scan's part that is missing: one account-region, a whole account (no region), or the scan."""

    scan: str = ""
    region: str = ""
    # A word or two for a dashboard tile: "unreachable", "access denied", "failed".
    status: str = "failed"
    account_id: str = ""
    account_name: str = ""
    # Where, as a tile says it: "us-west-2", "ml-team-a us-west-2" (several accounts), "account ml-team-b".
    place: str = ""

    def to_json(self) -> dict[str, str]:
        payload = super().to_json()
        payload["scan"] = self.scan
        if self.account_id:
            payload["account_id"] = self.account_id
            payload["account_name"] = self.account_name
        if self.region:
            payload["region"] = self.region
        return payload

    @property
    def short(self) -> str:
        """ "us-west-2 unreachable", or "scan failed" when nothing narrower is involved."""
        return f"{self.place} {self.status}" if self.place else f"scan {self.status}"


class SpendFindings(TypedDict):
    total_usd: float | None
    total_effective_usd: float | None
    previous_total_usd: float | None
    by_team: dict[str, float] | None
    by_environment: dict[str, float] | None
    by_cost_center: dict[str, float] | None
    by_service: dict[str, float] | None
    by_region: dict[str, float] | None
    by_account: list[AccountShare] | None
    untagged_usd: float | None
    untagged_share: float | None
    untagged_by_tag: dict[str, float]
    untagged_by_service: list[UntaggedServiceRow]
    spot_usd: float | None
    spot_share: float | None
    spot_savings_usd: float | None
    top_movers: list[Mover]
    forecast: Forecast | None
    # Month to date against each environment's and team's budget; null when no budget is known.
    budgets: list[BudgetStatus] | None
    budgets_note: str | None


class Recovered(TypedDict):
    """Expired training runs whose instances have all ended: the reaper's work, and what it stopped."""

    runs: int
    hourly_usd: float
    monthly_usd: float


class FindingsDocument(TypedDict):
    period: dict[str, str]
    # What the scans covered (`ScanScope.to_json`); null for a report built without a scope.
    scope: dict[str, Any] | None
    # Spend in regions the scans did not cover; null when spend by region or the scope is missing.
    unscanned_spend: list[RegionSpend] | None
    spend: SpendFindings
    # Only a cost source with line items (the FOCUS export read by DuckDB) has these; else null.
    line_items: LineItemFindings | None
    idle: list[dict[str, Any]]
    idle_rate: IdleRate
    untagged: list[dict[str, Any]]
    reap: list[dict[str, Any]]
    showback: dict[str, Any]
    actions: list[dict[str, Any]]
    # The training runs of the period (docs/run-costs-json.md's run rows); null when they were not read.
    runs: list[dict[str, Any]] | None
    runs_totals: dict[str, Any] | None
    recovered: Recovered | None
    cost_source: str
    cost_explorer_requests: int
    cost_explorer_usd: float
    missing: NotRequired[list[dict[str, str]]]


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(amount, 2) for key, amount in values.items()}


def _money_map(values: dict[str, float] | None) -> dict[str, float] | None:
    return None if values is None else _rounded(values)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class Report:
    """Everything the report's files show; `findings` is findings.json."""

    analysis: SpendAnalysis
    spend: Spend
    idle: list[IdleFinding]
    untagged: list[UntaggedFinding]
    untagged_joined: list[UntaggedServiceRow]
    # Training runs past expiry that still own resources (the reaper's work, or a leak).
    leftovers: list[dict[str, Any]]
    required_tags: tuple[str, ...]
    generated_at: datetime
    line_items: LineItemFindings | None = None
    # The accounts and regions scanned, with gaps merged from every scan; None when not known.
    scope: ScanScope | None = None
    # The nights already in the delivery's history.jsonl; None when the report is not delivered.
    history: list[dict[str, Any]] | None = None
    budgets: list[BudgetStatus] | None = None
    # Why the budgets come from where they do (a fallback), or why there are none.
    budgets_note: str | None = None
    runs: RunCosts | None = None
    # Each team's owner as the environment stacks tag it: whom to ask when an item has no owner tag.
    stack_team_owners: dict[str, str] = field(default_factory=dict)
    idle_window_hours: float = DEFAULT_WINDOW_HOURS
    idle_threshold_pct: float = DEFAULT_THRESHOLD_PCT

    @property
    def period(self) -> Period:
        return self.analysis.period

    @property
    def unscanned_spend(self) -> list[RegionSpend] | None:
        if self.scope is None:
            return None
        return unscanned_spend(self.analysis.by_region, self.scope.regions)

    def scope_lines(self) -> list[str]:
        """What was scanned (and its gaps), then each reason regions were skipped for, with the regions."""
        if self.scope is None:
            return []
        described = self.scope.describe()
        lines = [described[:1].upper() + described[1:]]
        skipped: dict[str, list[str]] = defaultdict(list)
        for region in self.scope.skipped:
            skipped[f"account {region.account_id} ({region.reason})"].append(region.region)
        lines += [f"Skipped in {where}: {', '.join(regions)}" for where, regions in skipped.items()]
        return lines

    def unscanned_spend_lines(self) -> list[str]:
        """ "$260.12 in us-west-2, not scanned" for each region with spend outside the scope."""
        return [f"${row['usd']:,.2f} in {row['region']}, not scanned" for row in self.unscanned_spend or []]

    @property
    def trend(self) -> list[dict[str, Any]]:
        """The delivered nights and tonight's, as history.jsonl will hold them, oldest first (up to 90).

        Tonight's line is `delivery.history_line` of these findings: the line the delivery writes.
        """
        if self.history is None:
            return []
        tonight = history_line(self.findings)
        earlier = [night for night in self.history if night["date"] != tonight["date"]]
        return sorted([*earlier, tonight], key=lambda night: night["date"])[-HISTORY_NIGHTS:]

    @property
    def amounts_basis(self) -> str:
        """Which cost the dollars are: what the invoice says, as the source names it."""
        return (
            "Cost Explorer UnblendedCost" if self.spend.source == COST_EXPLORER_SOURCE else "FOCUS BilledCost"
        )

    @property
    def idle_by_waste(self) -> list[IdleFinding]:
        return sorted(self.idle, key=lambda finding: -(finding.wasted_usd or 0.0))

    @property
    def idle_wasted_usd(self) -> float:
        """Dollars wasted by the idle GPUs that have a list price (the others are counted apart)."""
        return float(sum(finding.wasted_usd for finding in self.idle if finding.wasted_usd is not None))

    @property
    def idle_unpriced(self) -> int:
        """Idle GPUs of an instance type without a list price: in the report, not in the dollars."""
        return sum(1 for finding in self.idle if finding.wasted_usd is None)

    def idle_summary(self) -> str:
        """ "3 instances, $12.34 wasted while idle (1 with no list price, not in the total)"."""
        text = f"{len(self.idle)} instances, ${self.idle_wasted_usd:,.2f} wasted while idle"
        if self.idle_unpriced:
            text += f" ({self.idle_unpriced} with {NO_LIST_PRICE}, not in the total)"
        note = self.scan_note(IDLE_SCAN)
        if note:
            text += f"; {note}"
        return text

    @property
    def untagged_share(self) -> float | None:
        """Untagged dollars over the total; None when either is missing or there is no spend."""
        untagged, total = self.analysis.untagged_usd, self.analysis.total_usd
        return untagged / total if untagged is not None and total and total > 0 else None

    @cached_property
    def showback(self) -> Showback:
        return showback(self.spend, self.period)

    @property
    def idle_rate(self) -> IdleRate:
        return idle_rate(self.idle, self.idle_window_hours, self.idle_threshold_pct)

    @cached_property
    def actions(self) -> list[ActionItem]:
        """Every idle GPU, untagged resource and leftover, with whom to ask and what it costs a month."""
        seen = [finding.tags for finding in self.idle] + [finding.tags for finding in self.untagged]
        return actions(
            self.idle,
            self.untagged,
            self.leftovers,
            owners=team_owners(seen, self.stack_team_owners),
            untagged_spend=self.line_items["untagged_resources"] if self.line_items else (),
            period_days=self.period.days,
        )

    @property
    def recovered(self) -> Recovered | None:
        """Expired runs of the period that no longer bill: each at its average hourly cost when it ran."""
        if self.runs is None:
            return None
        ended = [run for run in self.runs.runs if run.status == "expired" and run.end is not None]
        hourly = sum(run.instance_cost_usd / run.wall_hours for run in ended if run.wall_hours > 0)
        return Recovered(
            runs=len(ended), hourly_usd=round(hourly, 4), monthly_usd=round(hourly * HOURS_PER_MONTH, 2)
        )

    def scan_gaps(self, scan: str) -> list[ScanMissing]:
        """The missing parts of one scan (`IDLE_SCAN`, ...): failed regions, or the whole scan."""
        return [part for part in self.analysis.missing if isinstance(part, ScanMissing) and part.scan == scan]

    def scan_note(self, scan: str) -> str | None:
        """ "n/a: us-west-2 unreachable" when part of the scan is missing, else None."""
        gaps = self.scan_gaps(scan)
        return "n/a: " + ", ".join(part.short for part in gaps) if gaps else None

    @cached_property
    def findings(self) -> FindingsDocument:
        """findings.json, built once from the report's parts."""
        analysis = self.analysis
        runs = None if self.runs is None else self.runs.to_json()
        document = FindingsDocument(
            period=self.period.to_json(),
            scope=None if self.scope is None else self.scope.to_json(),
            unscanned_spend=self.unscanned_spend,
            spend=SpendFindings(
                total_usd=_money(analysis.total_usd),
                total_effective_usd=_money(analysis.total_effective_usd),
                previous_total_usd=_money(analysis.previous_total_usd),
                by_team=_money_map(analysis.by_team),
                by_environment=_money_map(analysis.by_environment),
                by_cost_center=_money_map(analysis.by_cost_center),
                by_service=_money_map(analysis.by_service),
                by_region=_money_map(analysis.by_region),
                by_account=analysis.by_account,
                untagged_usd=_money(analysis.untagged_usd),
                untagged_share=_share(self.untagged_share),
                untagged_by_tag=_rounded(analysis.untagged_by_tag),
                untagged_by_service=self.untagged_joined,
                spot_usd=_money(analysis.spot_usd),
                spot_share=_share(analysis.spot_share),
                spot_savings_usd=_money(analysis.spot_savings_usd),
                top_movers=analysis.top_movers,
                forecast=analysis.forecast,
                budgets=self.budgets,
                budgets_note=self.budgets_note,
            ),
            line_items=self.line_items,
            idle=[finding.to_json() for finding in self.idle],
            idle_rate=self.idle_rate,
            untagged=[finding.to_json() for finding in self.untagged],
            reap=self.leftovers,
            showback=self.showback.to_json(),
            actions=[item.to_json() for item in self.actions],
            runs=None if runs is None else runs["runs"],
            runs_totals=None if runs is None else runs["totals"],
            recovered=self.recovered,
            cost_source=self.spend.source,
            cost_explorer_requests=self.spend.requests,
            cost_explorer_usd=self.spend.cost_usd,
        )
        if analysis.missing:
            document["missing"] = [part.to_json() for part in analysis.missing]
        return document
