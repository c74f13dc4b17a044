"""The nightly report: spend, idle GPUs and untagged resources assembled into the report's files.

`run_nightly` is the job (Cost Explorer, then the scans, then the files); `analyze_spend` and
`build_report` are pure over a FOCUS frame, so the report of a million cost rows is built without AWS.
Money follows Cost Explorer's UnblendedCost (FOCUS BilledCost, what the invoice says); the amortized
total is reported beside it.

The report is made of parts: each Cost Explorer view, and each region's idle scan and untagged scan,
and the expired-run leftovers. A part that fails (after retries) is named in `missing` and every
other part is still written: the Cost Explorer requests are paid for by then.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import botocore.exceptions
import botocore.parsers
import pandas as pd

from finops import costs, focus, inventory
from finops.costs import (
    NO_INSTANCE_TYPE,
    PURCHASE_VIEW,
    REQUEST_PRICE_USD,
    SERVICE_REGION_VIEW,
    UNTAGGED_LABEL,
    UNTAGGED_VIEW,
    MissingPart,
    Spend,
)
from finops.dashboard import render_dashboard
from finops.focus_file import FOCUS_FILE_NAMES, focus_dataset, write_focus_files
from finops.idle import IdleFinding, scan_idle
from finops.reaper import expired_run_leftovers
from finops.untagged import UntaggedFinding, scan_untagged
from mlp import aws, pricing
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS, ENVIRONMENT, TEAM

TOP_MOVERS = 8
RUN_RATE_DAYS = 7
MAX_DAYS = 180  # the previous period is read too, and Cost Explorer keeps 13 months

REPORT_FILES = ("index.html", "report.md", *FOCUS_FILE_NAMES, "findings.json")
NO_LIST_PRICE = "no list price"

# The scans of the report, by the key `ScanMissing.scan` carries.
IDLE_SCAN = "idle"
UNTAGGED_SCAN = "untagged"
LEFTOVERS_SCAN = "leftovers"
SCAN_TITLES = {
    IDLE_SCAN: "idle GPUs",
    UNTAGGED_SCAN: "untagged resources",
    LEFTOVERS_SCAN: "expired training-run leftovers",
}

Finding = TypeVar("Finding")


@dataclass(frozen=True)
class ScanMissing(MissingPart):
    """One scan's part that is missing, for one region ("" when the whole scan is)."""

    scan: str = ""
    region: str = ""
    # A word or two for a dashboard tile: "unreachable", "access denied", "failed".
    status: str = "failed"

    def to_json(self) -> dict[str, str]:
        payload = super().to_json()
        payload["scan"] = self.scan
        if self.region:
            payload["region"] = self.region
        return payload

    @property
    def short(self) -> str:
        """ "us-west-2 unreachable", or "scan failed" when no region is involved."""
        return f"{self.region} {self.status}" if self.region else f"scan {self.status}"


@dataclass(frozen=True)
class Period:
    """The report's days [start, end) (end exclusive, like Cost Explorer and FOCUS)."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def previous(self) -> Period:
        return Period(self.start - timedelta(days=self.days), self.start)

    @property
    def month_start(self) -> date:
        return self.end.replace(day=1)

    @property
    def fetch_start(self) -> date:
        """The first day the report needs: the previous period's, or the month's for the forecast."""
        return min(self.previous.start, self.month_start)

    def label(self) -> str:
        last = self.end - timedelta(days=1)
        return f"{self.start:%d %b %Y} to {last:%d %b %Y} ({self.days} days)"

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def report_period(days: int, today: date) -> Period:
    """The `days` full days before today; today is still being billed."""
    if not 1 <= days <= MAX_DAYS:
        raise UserError(f"--days {days}: use a number of days between 1 and {MAX_DAYS}")
    return Period(today - timedelta(days=days), today)


@dataclass
class SpendAnalysis:
    """Every spend figure of the report, `None` where the Cost Explorer part behind it is missing."""

    period: Period
    total_usd: float | None
    total_effective_usd: float | None
    by_team: dict[str, float] | None
    by_environment: dict[str, float] | None
    by_service: dict[str, float] | None
    by_region: dict[str, float] | None
    untagged_usd: float | None
    untagged_by_tag: dict[str, float]
    spot_usd: float | None
    spot_share: float | None
    spot_savings_usd: float | None
    spot_unpriced_instance_types: list[str]
    daily_total: pd.Series | None
    daily_by_team: pd.DataFrame | None
    daily_by_environment: pd.DataFrame | None
    daily_by_pricing: pd.DataFrame | None
    daily_untagged: pd.Series | None
    untagged_by_service_region: pd.DataFrame | None
    top_movers: list[dict[str, Any]]
    forecast: dict[str, Any] | None
    missing: list[MissingPart] = field(default_factory=list)

    @property
    def no_spend(self) -> bool:
        """Cost Explorer answered, with nothing: a new account, or Cost Explorer only just enabled."""
        return self.total_usd is not None and self.daily_total is not None and not self.daily_total.any()

    def no_spend_notice(self) -> str:
        return (
            f"Cost Explorer reports no spend for {self.period.label()}: a new account, or Cost Explorer "
            "enabled less than a day ago (enable it in the Billing console, data appears within 24 hours)."
        )


def _view(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["x_CostView"] == name]


def _between(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    starts = frame["ChargePeriodStart"]
    return frame[(starts >= pd.Timestamp(start, tz=UTC)) & (starts < pd.Timestamp(end, tz=UTC))]


def _sums(frame: pd.DataFrame, column: str) -> dict[str, float]:
    labels = frame[column].fillna("").replace("", UNTAGGED_LABEL)
    totals = frame.groupby(labels, sort=False)["BilledCost"].sum().sort_values(ascending=False)
    return {str(label): float(value) for label, value in totals.items()}


def _daily(frame: pd.DataFrame, period: Period, column: str | None = None) -> pd.Series | pd.DataFrame:
    """Daily BilledCost over every day of the period (0 on days without spend), split by `column`."""
    days = pd.date_range(pd.Timestamp(period.start, tz=UTC), periods=period.days, freq="D")
    if column is None:
        return frame.groupby("ChargePeriodStart")["BilledCost"].sum().reindex(days, fill_value=0.0)
    labels = frame[column].fillna("").replace("", UNTAGGED_LABEL)
    table = frame.pivot_table(index="ChargePeriodStart", columns=labels, values="BilledCost", aggfunc="sum")
    table = table.reindex(days).fillna(0.0)
    return table[table.sum().sort_values(ascending=False).index]


def _tag_view_name(spend: Spend, key: str) -> str | None:
    for view in costs.plan_views(spend.mandatory_tags):
        if key in view.tag_keys and view.name in spend.complete_views:
            return view.name
    return None


def _total_view_name(spend: Spend) -> str | None:
    """Any complete view but the untagged one sums to the account's spend."""
    candidates = [
        SERVICE_REGION_VIEW,
        PURCHASE_VIEW,
        *(v.name for v in costs.plan_views(spend.mandatory_tags)),
    ]
    return next((name for name in candidates if name in spend.complete_views and name != UNTAGGED_VIEW), None)


def _spot(purchase: pd.DataFrame) -> tuple[float, float | None, float, list[str]]:
    """Spot spend, its share of instance spend, savings versus on demand, instance types without a price."""
    spot = purchase[purchase["PricingCategory"] == "Dynamic"]
    instance_spend = purchase.loc[purchase["x_InstanceType"] != NO_INSTANCE_TYPE, "BilledCost"].sum()
    spot_usd = float(spot["BilledCost"].sum())
    share = spot_usd / instance_spend if instance_spend > 0 else None
    by_type = spot.groupby("x_InstanceType")[["ConsumedQuantity", "BilledCost"]].sum()
    priced = by_type.index.isin(list(pricing.EC2))
    hourly = by_type.index[priced].map(pricing.on_demand_hourly).to_numpy(dtype=float)
    on_demand_equivalent = float((by_type.loc[priced, "ConsumedQuantity"].to_numpy() * hourly).sum())
    savings = on_demand_equivalent - float(by_type.loc[priced, "BilledCost"].sum())
    unpriced = sorted(str(name) for name in by_type.index[~priced] if name != NO_INSTANCE_TYPE)
    return spot_usd, share, savings, unpriced


def _movers(
    current: pd.DataFrame, previous: pd.DataFrame, dimension: str, column: str
) -> list[dict[str, Any]]:
    now = pd.Series(_sums(current, column), dtype=float)
    before = pd.Series(_sums(previous, column), dtype=float)
    both = pd.concat({"current": now, "previous": before}, axis=1).fillna(0.0)
    return [
        {
            "dimension": dimension,
            "name": str(name),
            "previous_usd": round(float(row.previous), 2),
            "current_usd": round(float(row.current), 2),
            "change_usd": round(float(row.current - row.previous), 2),
            "change_pct": round(float((row.current - row.previous) / row.previous * 100), 1)
            if row.previous
            else None,
        }
        for name, row in both.iterrows()
    ]


def _forecast(daily_total_all: pd.Series, period: Period) -> dict[str, Any]:
    """Month-end spend: month to date plus the last days' average for every day left in the month."""
    month_start = pd.Timestamp(period.month_start, tz=UTC)
    end = pd.Timestamp(period.end, tz=UTC)
    month_to_date = float(
        daily_total_all[(daily_total_all.index >= month_start) & (daily_total_all.index < end)].sum()
    )
    recent = daily_total_all[
        (daily_total_all.index >= end - pd.Timedelta(days=RUN_RATE_DAYS)) & (daily_total_all.index < end)
    ]
    run_rate = float(recent.mean()) if len(recent) else 0.0
    days_in_month = calendar.monthrange(period.end.year, period.end.month)[1]
    days_left = days_in_month - (period.end.day - 1)
    return {
        "month": f"{period.end:%Y-%m}",
        "month_to_date_usd": round(month_to_date, 2),
        "daily_run_rate_usd": round(run_rate, 2),
        "days_left": days_left,
        "forecast_usd": round(month_to_date + run_rate * days_left, 2),
    }


def analyze_spend(spend: Spend, period: Period) -> SpendAnalysis:
    """Figures of the report period from a spend frame that covers `period.fetch_start` onwards."""
    frame = spend.frame
    current = _between(frame, period.start, period.end)
    previous = _between(frame, period.previous.start, period.previous.end)
    missing = list(spend.missing)

    total_view = _total_view_name(spend)
    if total_view is None:
        missing.append(MissingPart("total spend", "no Cost Explorer view could be read"))
    total_rows = _view(current, total_view) if total_view else None

    def by_tag(key: str) -> tuple[dict[str, float] | None, pd.DataFrame | None]:
        name = _tag_view_name(spend, key)
        if name is None:
            return None, None
        rows = _view(current, name)
        return _sums(rows, costs.tag_column(key)), _daily(rows, period, costs.tag_column(key))

    by_team, daily_by_team = by_tag(TEAM)
    by_environment, daily_by_environment = by_tag(ENVIRONMENT)

    untagged_by_tag = {}
    for key in spend.tag_keys:
        name = _tag_view_name(spend, key)
        if name is not None:
            rows = _view(current, name)
            untagged_by_tag[key] = float(rows.loc[rows[costs.tag_column(key)] == "", "BilledCost"].sum())

    services = _view(current, SERVICE_REGION_VIEW) if SERVICE_REGION_VIEW in spend.complete_views else None
    purchase = _view(current, PURCHASE_VIEW) if PURCHASE_VIEW in spend.complete_views else None
    untagged = _view(current, UNTAGGED_VIEW) if UNTAGGED_VIEW in spend.complete_views else None
    spot_usd = spot_share = spot_savings = None
    unpriced: list[str] = []
    if purchase is not None:
        spot_usd, spot_share, spot_savings, unpriced = _spot(purchase)

    movers: list[dict[str, Any]] = []
    if total_view is not None:
        for dimension, view_name, column in (
            (TEAM, _tag_view_name(spend, TEAM), costs.tag_column(TEAM)),
            (ENVIRONMENT, _tag_view_name(spend, ENVIRONMENT), costs.tag_column(ENVIRONMENT)),
            ("service", SERVICE_REGION_VIEW if services is not None else None, "ServiceName"),
        ):
            if view_name is not None:
                movers += _movers(_view(current, view_name), _view(previous, view_name), dimension, column)
    movers.sort(key=lambda mover: abs(mover["change_usd"]), reverse=True)

    forecast = None
    if total_view is not None:
        whole = _view(frame, total_view)
        daily_all = whole.groupby("ChargePeriodStart")["BilledCost"].sum()
        forecast = _forecast(daily_all, period)

    untagged_by_service_region = None
    if untagged is not None:
        untagged_by_service_region = (
            untagged.groupby(["ServiceName", "RegionId"], as_index=False)["BilledCost"]
            .sum()
            .rename(columns={"BilledCost": "untagged_usd"})
        )

    return SpendAnalysis(
        period=period,
        total_usd=float(total_rows["BilledCost"].sum()) if total_rows is not None else None,
        total_effective_usd=float(total_rows["EffectiveCost"].sum()) if total_rows is not None else None,
        by_team=by_team,
        by_environment=by_environment,
        by_service=_sums(services, "ServiceName") if services is not None else None,
        by_region=_sums(services, "RegionId") if services is not None else None,
        untagged_usd=float(untagged["BilledCost"].sum()) if untagged is not None else None,
        untagged_by_tag=untagged_by_tag,
        spot_usd=spot_usd,
        spot_share=spot_share,
        spot_savings_usd=spot_savings,
        spot_unpriced_instance_types=unpriced,
        daily_total=_daily(total_rows, period) if total_rows is not None else None,
        daily_by_team=daily_by_team,
        daily_by_environment=daily_by_environment,
        daily_by_pricing=_daily(purchase, period, "PricingCategory") if purchase is not None else None,
        daily_untagged=_daily(untagged, period) if untagged is not None else None,
        untagged_by_service_region=untagged_by_service_region,
        top_movers=movers[:TOP_MOVERS],
        forecast=forecast,
        missing=missing,
    )


def join_untagged(
    untagged_resources: Sequence[UntaggedFinding], untagged_spend: pd.DataFrame | None
) -> list[dict[str, Any]]:
    """Untagged resources per Cost Explorer service and region, beside that service's untagged dollars."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    if untagged_spend is not None:
        for record in untagged_spend.itertuples(index=False):
            rows[(record.ServiceName, record.RegionId)] = {
                "service": record.ServiceName,
                "region": record.RegionId,
                "untagged_usd": round(float(record.untagged_usd), 2),
                "resources": 0,
                "resource_types": {},
            }
    for resource in untagged_resources:
        # A kind whose spend shows under no Cost Explorer service still gets a row, under its own name.
        service = inventory.resource_type(resource.resource_type).cost_service or resource.resource_type
        row = rows.setdefault(
            (service, resource.region),
            {
                "service": service,
                "region": resource.region,
                "untagged_usd": 0.0 if untagged_spend is not None else None,
                "resources": 0,
                "resource_types": {},
            },
        )
        row["resources"] += 1
        types = row["resource_types"]
        types[resource.resource_type] = types.get(resource.resource_type, 0) + 1
    return sorted(rows.values(), key=lambda row: (-(row["untagged_usd"] or 0.0), -row["resources"]))


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _money_map(values: dict[str, float] | None) -> dict[str, float] | None:
    return None if values is None else {key: round(amount, 2) for key, amount in values.items()}


@dataclass
class Report:
    """Everything the report's files show; `findings` is findings.json."""

    analysis: SpendAnalysis
    spend: Spend
    idle: list[IdleFinding]
    untagged: list[UntaggedFinding]
    untagged_joined: list[dict[str, Any]]
    # Training runs past expiry that still own resources (the reaper's work, or a leak).
    leftovers: list[dict[str, Any]]
    required_tags: tuple[str, ...]
    generated_at: datetime
    findings: dict[str, Any]

    @property
    def period(self) -> Period:
        return self.analysis.period

    @property
    def idle_wasted_usd(self) -> float:
        """Dollars wasted by the idle GPUs that have a list price (the others are counted apart)."""
        return float(sum(finding.wasted_usd for finding in self.idle if finding.wasted_usd is not None))

    @property
    def idle_unpriced(self) -> int:
        """Idle GPUs of an instance type without a list price: in the report, not in the dollars."""
        return sum(1 for finding in self.idle if finding.wasted_usd is None)

    def scan_gaps(self, scan: str) -> list[ScanMissing]:
        """The missing parts of one scan (`IDLE_SCAN`, ...): failed regions, or the whole scan."""
        return [part for part in self.analysis.missing if isinstance(part, ScanMissing) and part.scan == scan]

    def scan_note(self, scan: str) -> str | None:
        """ "n/a: us-west-2 unreachable" when part of the scan is missing, else None."""
        gaps = self.scan_gaps(scan)
        return "n/a: " + ", ".join(part.short for part in gaps) if gaps else None


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
    untagged_list = list(untagged or [])
    joined = join_untagged(untagged_list, analysis.untagged_by_service_region)
    total = analysis.total_usd
    untagged_share = (
        analysis.untagged_usd / total if analysis.untagged_usd is not None and total and total > 0 else None
    )
    findings: dict[str, Any] = {
        "period": period.to_json(),
        "spend": {
            "total_usd": _money(total),
            "total_effective_usd": _money(analysis.total_effective_usd),
            "by_team": _money_map(analysis.by_team),
            "by_environment": _money_map(analysis.by_environment),
            "by_service": _money_map(analysis.by_service),
            "by_region": _money_map(analysis.by_region),
            "untagged_usd": _money(analysis.untagged_usd),
            "untagged_share": None if untagged_share is None else round(untagged_share, 4),
            "untagged_by_tag": _money_map(analysis.untagged_by_tag),
            "untagged_by_service": joined,
            "spot_usd": _money(analysis.spot_usd),
            "spot_share": None if analysis.spot_share is None else round(analysis.spot_share, 4),
            "spot_savings_usd": _money(analysis.spot_savings_usd),
            "top_movers": analysis.top_movers,
            "forecast": analysis.forecast,
        },
        "idle": [finding.to_json() for finding in idle or []],
        "untagged": [finding.to_json() for finding in untagged_list],
        "reap": list(leftovers or []),
        "cost_source": spend.source,
        "cost_explorer_requests": spend.requests,
        "cost_explorer_usd": spend.cost_usd,
    }
    if analysis.missing:
        findings["missing"] = [part.to_json() for part in analysis.missing]
    return Report(
        analysis=analysis,
        spend=spend,
        idle=list(idle or []),
        untagged=untagged_list,
        untagged_joined=joined,
        leftovers=list(leftovers or []),
        required_tags=tuple(required_tags),
        generated_at=generated_at or datetime.now(UTC),
        findings=findings,
    )


def _usd(value: float | None) -> str:
    return "n/a (missing)" if value is None else f"${value:,.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _price(value: float | None, unit: str = "") -> str:
    """A finding's dollars; an instance type without a list price says so instead of "$0"."""
    return NO_LIST_PRICE if value is None else f"${value:,.2f}{unit}"


def idle_summary(count: int, wasted_usd: float, unpriced: int, note: str | None = None) -> str:
    """ "3 instances, $12.34 wasted while idle (1 with no list price, not in the total)"."""
    text = f"{count} instances, ${wasted_usd:,.2f} wasted while idle"
    if unpriced:
        text += f" ({unpriced} with {NO_LIST_PRICE}, not in the total)"
    if note:
        text += f"; {note}"
    return text


def _idle_summary(report: Report) -> str:
    return idle_summary(
        len(report.idle), report.idle_wasted_usd, report.idle_unpriced, report.scan_note(IDLE_SCAN)
    )


def _gap_lines(report: Report, scan: str) -> list[str]:
    """A section's warning when part of its scan is missing: its rows are not the whole picture."""
    gaps = report.scan_gaps(scan)
    if not gaps:
        return []
    named = "; ".join(f"{part.part} ({part.reason})" for part in gaps)
    return [f"**Missing: {named}**; the rows below leave it out.", ""]


def render_markdown(report: Report) -> str:
    """report.md: the figures of the dashboard as text (also what goes to Slack)."""
    analysis, spend = report.analysis, report.findings["spend"]
    lines = [
        f"# Nightly cost report — {report.period.label()}",
        "",
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC. "
        "Amounts are Cost Explorer UnblendedCost in USD.",
        "",
        f"Cost source: {report.spend.source}.",
        "",
    ]
    if analysis.missing:
        lines += ["## Missing from this report", ""]
        lines += [f"- **{part.part}**: {part.reason}" for part in analysis.missing]
        lines.append("")
    if analysis.no_spend:
        lines += [f"**{analysis.no_spend_notice()}**", ""]
    forecast = analysis.forecast
    lines += [
        "## Summary",
        "",
        f"- Total spend: **{_usd(analysis.total_usd)}** (amortized {_usd(analysis.total_effective_usd)})",
        f"- Untagged spend: {_usd(analysis.untagged_usd)} ({_pct(spend['untagged_share'])} of the total); "
        f"{len(report.untagged)} resources missing mandatory tags",
        f"- Spot: {_usd(analysis.spot_usd)} ({_pct(analysis.spot_share)} of instance spend), "
        f"saving {_usd(analysis.spot_savings_usd)} against on-demand prices",
        f"- Idle GPUs: {_idle_summary(report)}",
    ]
    if forecast is not None:
        lines.append(
            f"- Month-end forecast for {forecast['month']}: **{_usd(forecast['forecast_usd'])}** "
            f"({_usd(forecast['month_to_date_usd'])} so far, {_usd(forecast['daily_run_rate_usd'])}/day "
            f"over the last {RUN_RATE_DAYS} days)"
        )
    requests = report.spend.requests
    lines.append(
        f"- Cost Explorer: {requests} requests (${requests * REQUEST_PRICE_USD:.2f}), "
        f"{report.spend.cached_view_days} view-days from the cache"
    )
    if analysis.spot_unpriced_instance_types:
        lines.append(
            "- Spot savings leave out instance types without a list price: "
            + ", ".join(analysis.spot_unpriced_instance_types)
        )
    lines.append("")
    for title, values in (
        ("Spend by team", analysis.by_team),
        ("Spend by environment", analysis.by_environment),
        ("Spend by service", analysis.by_service),
        ("Spend by region", analysis.by_region),
    ):
        lines += [f"## {title}", ""]
        if values is None:
            lines += ["Missing: Cost Explorer could not be read for this part.", ""]
            continue
        if not values:
            lines += ["No spend.", ""]
            continue
        total = sum(values.values())
        rows = [
            (name, _usd(amount), _pct(amount / total if total else None)) for name, amount in values.items()
        ]
        lines += [*_table(("Name", "Spend", "Share"), rows), ""]
    if analysis.top_movers:
        lines += [f"## Top movers versus the previous {report.period.days} days", ""]
        rows = [
            (
                mover["dimension"],
                mover["name"],
                _usd(mover["previous_usd"]),
                _usd(mover["current_usd"]),
                f"{mover['change_usd']:+,.2f}",
            )
            for mover in analysis.top_movers
        ]
        lines += [*_table(("Dimension", "Name", "Previous", "Current", "Change"), rows), ""]
    lines += ["## Untagged spend and resources by service", ""]
    lines += _gap_lines(report, UNTAGGED_SCAN)
    if report.untagged_joined:
        rows = [
            (
                row["service"],
                row["region"],
                _usd(row["untagged_usd"]),
                row["resources"],
                ", ".join(f"{kind} x {count}" for kind, count in sorted(row["resource_types"].items()))
                or "—",
            )
            for row in report.untagged_joined
        ]
        lines += [*_table(("Service", "Region", "Untagged spend", "Resources", "Resource types"), rows), ""]
    else:
        lines += ["Nothing untagged.", ""]
    lines += ["## Idle GPU instances", ""]
    lines += _gap_lines(report, IDLE_SCAN)
    if report.idle:
        rows = [
            (
                finding.resource_id,
                finding.region,
                finding.instance_type,
                finding.tags.get(TEAM, UNTAGGED_LABEL),
                finding.telemetry,
                f"{finding.idle_hours:.1f}",
                _price(finding.hourly_cost_usd, "/h"),
                _price(finding.wasted_usd),
            )
            for finding in sorted(report.idle, key=lambda item: -(item.wasted_usd or 0.0))
        ]
        headers = ("Instance", "Region", "Type", "Team", "Telemetry", "Idle hours", "Cost", "Wasted")
        lines += [*_table(headers, rows), ""]
    else:
        lines += ["No idle GPU instances.", ""]
    lines += ["## Training runs left billing after expiry", ""]
    lines += _gap_lines(report, LEFTOVERS_SCAN)
    if report.leftovers:
        rows = [
            (
                run["stack"],
                run["run_id"],
                len(run["resources"]),
                f"${run['hourly_cost_usd']:,.4f}/h",
                run["why"],
            )
            for run in report.leftovers
        ]
        lines += [*_table(("Stack", "Run", "Resources", "Cost", "Why"), rows), ""]
        lines += ["`mlp reap --apply` destroys them (dry run without `--apply`).", ""]
    else:
        lines += ["No expired training run owns anything.", ""]
    lines += ["## Resources missing mandatory tags", ""]
    lines += _gap_lines(report, UNTAGGED_SCAN)
    if report.untagged:
        rows = [
            (finding.arn, finding.resource_type, finding.region, ", ".join(finding.missing_tags))
            for finding in report.untagged
        ]
        lines += [*_table(("ARN", "Type", "Region", "Missing tags"), rows), ""]
    else:
        lines += ["Every resource carries the mandatory tags.", ""]
    return "\n".join(lines)


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


class Steps:
    """A progress display for the long steps: rich on a terminal, nothing otherwise."""

    def __init__(self, show: bool, total: int) -> None:
        self._progress: Any = None
        self._started = False
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("", total=total)

    def __enter__(self) -> Steps:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def step(self, description: str) -> None:
        """Start the next step (the previous one counts as done)."""
        if self._progress is None:
            return
        if self._started:
            self._progress.advance(self._task)
        self._started = True
        self._progress.update(self._task, description=description)


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
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    show_progress: bool = False,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_ce_requests: int = costs.DEFAULT_MAX_REQUESTS,
    focus_source: focus.FocusSource | None = None,
) -> Report:
    """The nightly job: read spend, scan idle GPUs and untagged resources, write the report files.

    Spend comes from Cost Explorer, or from the FOCUS export when `focus_source` is given.
    `mlp report` runs `mlp.preflight.check_report` first, so flags are checked before any request.
    """
    moment = now or datetime.now(UTC)
    period = report_period(days, moment.date())
    make_out_dir(out_dir)  # before the long steps: a bad --out must not cost a whole run
    with aws.aws_errors("reading the account the report is for"):
        # Cost Explorer answers for the caller's account: the FOCUS file's BillingAccountId.
        billing_account_id = aws.caller_account_id(regions[0])
    views = costs.plan_views(mandatory_tags)
    with Steps(show_progress, total=len(views) + 2 * len(regions) + 2) as steps:
        if focus_source is not None:
            spend = focus.read_focus_spend(
                focus_source,
                period.fetch_start,
                period.end,
                mandatory_tags=mandatory_tags,
                engine=focus.make_engine(focus_source, sleep=sleep),
                on_view=lambda view: steps.step(f"FOCUS export: {view.name}"),
            )
        else:
            spend = costs.fetch_spend(
                period.fetch_start,
                period.end,
                mandatory_tags=mandatory_tags,
                cache_dir=cache_dir,
                use_cache=use_cache,
                sleep=sleep,
                on_view=lambda view: steps.step(f"Cost Explorer: {view.name}"),
                max_requests=max_ce_requests,
                today=moment.date(),
            )
        scans = scan_regions(regions, moment, mandatory_tags=mandatory_tags, on_step=steps.step)
        steps.step("Writing the report")
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
    return report
