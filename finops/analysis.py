"""The report's figures over either cost source: the period, the spend analysis, the untagged join.

`analyze_spend` reads the Cost Explorer views (`Spend.frame`, which the FOCUS export answers too);
`analyze_line_items` reads what only the export has, its own line items (`Spend.line_items`): dollars
per resource, per account, per charge category and billed beside effective cost. Money follows
UnblendedCost (FOCUS BilledCost, what the invoice says); the amortized (effective) cost is beside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any, Protocol, TypedDict

import pandas as pd

from finops import costs, inventory
from finops.costs import (
    ACCOUNT_VIEW,
    NO_INSTANCE_TYPE,
    PURCHASE_VIEW,
    SERVICE_REGION_VIEW,
    UNTAGGED_LABEL,
    UNTAGGED_VIEW,
    MissingPart,
    Spend,
)
from finops.forecast import (
    COST_EXPLORER_METHOD,
    PREDICTION_INTERVAL_PCT,
    RUN_RATE_METHOD,
    CostExplorerForecast,
    ForecastUnavailable,
    month_end,
)
from finops.idle import IdleFinding
from finops.untagged import UntaggedFinding
from mlp import aws, pricing
from mlp.errors import UserError
from mlp.tags import COST_CENTER, ENVIRONMENT, TEAM

TOP_MOVERS = 8
RUN_RATE_DAYS = 7
MAX_DAYS = 180  # the previous period is read too, and Cost Explorer keeps 13 months


class Mover(TypedDict):
    """One name's change against the previous period of the same length."""

    dimension: str
    name: str
    previous_usd: float
    current_usd: float
    change_usd: float
    change_pct: float | None


class DaySpend(TypedDict):
    date: str
    usd: float


class MonthTotal(TypedDict):
    month: str
    month_label: str
    usd: float


class Forecast(TypedDict):
    """The month of the last billed day: its spend so far and where it ends (see `finops.forecast`)."""

    month: str
    month_label: str
    month_to_date_usd: float
    daily_run_rate_usd: float
    days_left: int
    forecast_usd: float
    lower_usd: float | None
    upper_usd: float | None
    method: str  # "cost-explorer" | "run-rate"
    method_note: str
    daily: list[DaySpend]
    # The month before, whole; None when the spend read does not cover it.
    previous_month: MonthTotal | None
    # The environment budgets' sum, once the report knows its budgets.
    budget_usd: float | None


class UntaggedServiceRow(TypedDict):
    """A Cost Explorer service and region: its untagged dollars beside the untagged resources found."""

    service: str
    region: str
    untagged_usd: float | None
    resources: int
    resource_types: dict[str, int]


class AccountShare(TypedDict):
    """One account's spend of the period (UnblendedCost) and its share of the accounts' total."""

    account_id: str
    account_name: str
    usd: float
    share: float | None


class RegionSpend(TypedDict):
    """Spend in a region the scans did not cover."""

    region: str
    usd: float


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
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def month_start(self) -> date:
        """The first day of the month of the last billed day: the month the forecast is for."""
        return self.last_day.replace(day=1)

    @property
    def previous_month_start(self) -> date:
        return (self.month_start - timedelta(days=1)).replace(day=1)

    @property
    def fetch_start(self) -> date:
        """The first day the report needs: the previous period's, or the previous month's for the forecast."""
        return min(self.previous.start, self.previous_month_start)

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
    # The same days before the period (its `previous`): what "this period vs the previous" compares.
    previous_total_usd: float | None
    by_team: dict[str, float] | None
    by_environment: dict[str, float] | None
    by_cost_center: dict[str, float] | None
    by_service: dict[str, float] | None
    by_region: dict[str, float] | None
    by_account: list[AccountShare] | None
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
    top_movers: list[Mover]
    forecast: Forecast | None
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


def tag_view_rows(spend: Spend, keys: Sequence[str]) -> pd.DataFrame | None:
    """The rows of the whole read (every day) of the complete tag view that holds all `keys`."""
    for view in costs.plan_views(spend.mandatory_tags):
        if set(keys) <= set(view.tag_keys) and view.name in spend.complete_views:
            return _view(spend.frame, view.name)
    return None


def rows_with_tags(rows: pd.DataFrame, tags: Mapping[str, str]) -> pd.DataFrame:
    """The rows whose tag columns hold every given value."""
    selected = pd.Series(True, index=rows.index)
    for key, value in tags.items():
        selected &= rows[costs.tag_column(key)].fillna("") == value
    return rows[selected]


def daily_spend(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("ChargePeriodStart")["BilledCost"].sum()


def month_spend(daily: pd.Series, period: Period) -> tuple[float, float]:
    """(month to date, month-end forecast at the last days' run rate) of one daily series."""
    month_to_date = _month_to_date(daily, period)
    return month_to_date, month_to_date + _run_rate(daily, period) * _days_left(period)


def period_spend(daily: pd.Series, period: Period) -> float:
    return float(
        daily[
            (daily.index >= pd.Timestamp(period.start, tz=UTC))
            & (daily.index < pd.Timestamp(period.end, tz=UTC))
        ].sum()
    )


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


def _by_account(rows: pd.DataFrame) -> list[AccountShare]:
    """Biggest first; an account's name is its latest day's (a renamed account is one row, not two)."""
    latest = rows.sort_values("ChargePeriodStart", kind="stable")
    accounts = latest.groupby("SubAccountId", sort=False).agg(
        account_name=("SubAccountName", "last"), usd=("BilledCost", "sum")
    )
    accounts = accounts.reset_index().sort_values(["usd", "SubAccountId"], ascending=[False, True])
    total = float(accounts["usd"].sum())
    return [
        AccountShare(
            account_id=str(row.SubAccountId),
            account_name=str(row.account_name),
            usd=round(float(row.usd), 2),
            share=round(float(row.usd) / total, 4) if total > 0 else None,
        )
        for row in accounts.itertuples(index=False)
    ]


def _movers(current: pd.DataFrame, previous: pd.DataFrame, dimension: str, column: str) -> list[Mover]:
    now = pd.Series(_sums(current, column), dtype=float)
    before = pd.Series(_sums(previous, column), dtype=float)
    both = pd.concat({"current": now, "previous": before}, axis=1).fillna(0.0)
    return [
        Mover(
            dimension=dimension,
            name=str(name),
            previous_usd=round(float(row.previous), 2),
            current_usd=round(float(row.current), 2),
            change_usd=round(float(row.current - row.previous), 2),
            change_pct=round(float((row.current - row.previous) / row.previous * 100), 1)
            if row.previous
            else None,
        )
        for name, row in both.iterrows()
    ]


def month_label(day: date) -> str:
    return f"{day:%B %Y}"


def _run_rate(daily: pd.Series, period: Period) -> float:
    """The average day of the last `RUN_RATE_DAYS` billed days (0 for days without spend)."""
    end = pd.Timestamp(period.end, tz=UTC)
    days = pd.date_range(end - pd.Timedelta(days=RUN_RATE_DAYS), periods=RUN_RATE_DAYS, freq="D")
    return float(daily.reindex(days, fill_value=0.0).mean())


def _days_left(period: Period) -> int:
    """Days from the report's end (today, unbilled) to the month's end, today included."""
    return (month_end(period.last_day) - period.end).days


def _month_to_date(daily: pd.Series, period: Period) -> float:
    month = daily[
        (daily.index >= pd.Timestamp(period.month_start, tz=UTC))
        & (daily.index < pd.Timestamp(period.end, tz=UTC))
    ]
    return float(month.sum())


def _forecast(
    daily_total_all: pd.Series,
    period: Period,
    frame_start: date,
    cost_explorer: CostExplorerForecast | ForecastUnavailable | None,
) -> Forecast:
    """Month-end spend: month to date plus Cost Explorer's forecast of the days left, or the run rate's."""
    month_to_date = _month_to_date(daily_total_all, period)
    run_rate = _run_rate(daily_total_all, period)
    days_left = _days_left(period)
    lower = upper = None
    if days_left == 0:
        method, note, rest = (
            RUN_RATE_METHOD,
            f"{month_label(period.month_start)} is complete: no day left",
            0.0,
        )
    elif isinstance(cost_explorer, CostExplorerForecast):
        method, rest = COST_EXPLORER_METHOD, cost_explorer.mean_usd
        note = (
            f"Cost Explorer's forecast of the {days_left} days left "
            f"({PREDICTION_INTERVAL_PCT}% prediction interval), added to the month to date"
        )
        if cost_explorer.lower_usd is not None and cost_explorer.upper_usd is not None:
            lower, upper = month_to_date + cost_explorer.lower_usd, month_to_date + cost_explorer.upper_usd
    else:
        method, rest = RUN_RATE_METHOD, run_rate * days_left
        note = f"the month to date plus the last {RUN_RATE_DAYS} days' average (${run_rate:,.2f}) for each of the {days_left} days left"
        if isinstance(cost_explorer, ForecastUnavailable):
            note += f" (Cost Explorer gave no forecast: {cost_explorer.reason})"
    month_days = daily_total_all[
        (daily_total_all.index >= pd.Timestamp(period.month_start, tz=UTC))
        & (daily_total_all.index < pd.Timestamp(period.end, tz=UTC))
    ]
    previous_start = period.previous_month_start
    previous = None
    if frame_start <= previous_start:
        in_previous = daily_total_all[
            (daily_total_all.index >= pd.Timestamp(previous_start, tz=UTC))
            & (daily_total_all.index < pd.Timestamp(period.month_start, tz=UTC))
        ]
        previous = MonthTotal(
            month=f"{previous_start:%Y-%m}",
            month_label=month_label(previous_start),
            usd=round(float(in_previous.sum()), 2),
        )
    return Forecast(
        month=f"{period.month_start:%Y-%m}",
        month_label=month_label(period.month_start),
        month_to_date_usd=round(month_to_date, 2),
        daily_run_rate_usd=round(run_rate, 2),
        days_left=days_left,
        forecast_usd=round(month_to_date + rest, 2),
        lower_usd=None if lower is None else round(lower, 2),
        upper_usd=None if upper is None else round(upper, 2),
        method=method,
        method_note=note,
        daily=[DaySpend(date=f"{day:%Y-%m-%d}", usd=round(float(usd), 2)) for day, usd in month_days.items()],
        previous_month=previous,
        budget_usd=None,
    )


def analyze_spend(
    spend: Spend,
    period: Period,
    cost_explorer_forecast: CostExplorerForecast | ForecastUnavailable | None = None,
) -> SpendAnalysis:
    """Figures of the report period from a spend frame that covers `period.fetch_start` onwards.

    `cost_explorer_forecast` is Cost Explorer's forecast of the month's days left, when it was asked.
    """
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
    by_cost_center, _ = by_tag(COST_CENTER)

    untagged_by_tag = {}
    for key in spend.tag_keys:
        name = _tag_view_name(spend, key)
        if name is not None:
            rows = _view(current, name)
            untagged_by_tag[key] = float(rows.loc[rows[costs.tag_column(key)] == "", "BilledCost"].sum())

    services = _view(current, SERVICE_REGION_VIEW) if SERVICE_REGION_VIEW in spend.complete_views else None
    purchase = _view(current, PURCHASE_VIEW) if PURCHASE_VIEW in spend.complete_views else None
    untagged = _view(current, UNTAGGED_VIEW) if UNTAGGED_VIEW in spend.complete_views else None
    accounts = _view(current, ACCOUNT_VIEW) if ACCOUNT_VIEW in spend.complete_views else None
    spot_usd = spot_share = spot_savings = None
    unpriced: list[str] = []
    if purchase is not None:
        spot_usd, spot_share, spot_savings, unpriced = _spot(purchase)

    movers: list[Mover] = []
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
        forecast = _forecast(daily_all, period, spend.start, cost_explorer_forecast)

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
        previous_total_usd=float(_view(previous, total_view)["BilledCost"].sum())
        if total_view is not None and spend.start <= period.previous.start
        else None,
        by_team=by_team,
        by_environment=by_environment,
        by_cost_center=by_cost_center,
        by_service=_sums(services, "ServiceName") if services is not None else None,
        by_region=_sums(services, "RegionId") if services is not None else None,
        by_account=_by_account(accounts) if accounts is not None else None,
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


def unscanned_spend(by_region: dict[str, float] | None, scanned: Sequence[str]) -> list[RegionSpend] | None:
    """Regions with spend that are not among `scanned`, biggest first; None when spend by region is missing.

    Global and NoRegion spend (IAM, Route 53, support, tax) belong to no region a scan could cover.
    """
    if by_region is None:
        return None
    rows = [
        RegionSpend(region=region, usd=round(amount, 2))
        for region, amount in by_region.items()
        if aws.REGION_NAME.fullmatch(region) and region not in scanned and round(amount, 2) > 0
    ]
    return sorted(rows, key=lambda row: (-row["usd"], row["region"]))


def join_untagged(
    untagged_resources: Sequence[UntaggedFinding], untagged_spend: pd.DataFrame | None
) -> list[UntaggedServiceRow]:
    """Untagged resources per Cost Explorer service and region, beside that service's untagged dollars."""
    rows: dict[tuple[str, str], UntaggedServiceRow] = {}
    if untagged_spend is not None:
        for record in untagged_spend.itertuples(index=False):
            rows[(record.ServiceName, record.RegionId)] = UntaggedServiceRow(
                service=record.ServiceName,
                region=record.RegionId,
                untagged_usd=round(float(record.untagged_usd), 2),
                resources=0,
                resource_types={},
            )
    for resource in untagged_resources:
        # A kind whose spend shows under no Cost Explorer service still gets a row, under its own name.
        service = inventory.resource_type(resource.resource_type).cost_service or resource.resource_type
        row = rows.setdefault(
            (service, resource.region),
            UntaggedServiceRow(
                service=service,
                region=resource.region,
                untagged_usd=0.0 if untagged_spend is not None else None,
                resources=0,
                resource_types={},
            ),
        )
        row["resources"] += 1
        types = row["resource_types"]
        types[resource.resource_type] = types.get(resource.resource_type, 0) + 1
    return sorted(rows.values(), key=lambda row: (-(row["untagged_usd"] or 0.0), -row["resources"]))


# --- What only the FOCUS export's line items give --------------------------------------------------

LINE_ITEMS_RELATION = "line_items"
# FOCUS 1.2's ChargeCategory values, in the order the report lists them.
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
# An instance's running hours, as FOCUS exports name the unit (AWS's pricing unit is "Hrs").
INSTANCE_HOUR_UNITS = ("Hours", "Hrs")
BILLED_BASIS = "billed"
LIST_PRICE_BASIS = "list price"
# The resource id inside an ARN, after its resource type ("instance/i-0abc" gives "i-0abc"; an S3
# bucket's ARN holds just its name). The export's ResourceId is an ARN for some services and an id for
# others; DuckDB (RE2) and Python read this pattern alike, so both sides of the match use it.
ARN_RESOURCE_ID = r"^arn:[^:]+:[^:]+:[^:]*:[^:]*:(?:[^/:]+[/:])?(.+)$"


class LineItems(Protocol):
    """The export's line items, answering DuckDB SQL over one relation named `line_items`."""

    def aggregate(self, sql: str) -> pd.DataFrame: ...


class FrameLineItems:
    """Line items held as a pandas frame, which DuckDB reads in place."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def aggregate(self, sql: str) -> pd.DataFrame:
        import duckdb

        with duckdb.connect() as connection:
            connection.execute("SET TimeZone = 'UTC'")
            connection.register(LINE_ITEMS_RELATION, self.frame)
            return connection.execute(sql).df()


def queryable(line_items: pd.DataFrame | LineItems) -> LineItems:
    """`Spend.line_items` as something to aggregate, whether a pandas frame or already queryable."""
    return FrameLineItems(line_items) if isinstance(line_items, pd.DataFrame) else line_items


class CostPair(TypedDict):
    billed_usd: float
    effective_usd: float


class AccountSpend(CostPair):
    account_id: str
    account_name: str


class ServiceCosts(CostPair):
    service: str


class ChargeCategorySpend(CostPair):
    category: str


class ResourceSpend(CostPair):
    """An untagged resource with its own dollars in the period."""

    arn: str
    resource_type: str
    region: str
    # The export's ResourceIds that matched (its ARN or its id); empty when nothing was billed to it.
    billed_as: list[str]


class IdleWaste(TypedDict):
    """An idle GPU instance's waste at its own billed hourly cost, or at list price without line items."""

    resource_id: str
    region: str
    instance_type: str
    idle_hours: float
    hourly_cost_usd: float | None
    wasted_usd: float | None
    cost_basis: str  # BILLED_BASIS or LIST_PRICE_BASIS


class LineItemFindings(TypedDict):
    total: CostPair
    by_account: list[AccountSpend]
    by_service: list[ServiceCosts]
    by_charge_category: list[ChargeCategorySpend]
    untagged_resources: list[ResourceSpend]
    idle_waste: list[IdleWaste]
    idle_wasted_usd: float


def arn_resource_id(arn: str) -> str | None:
    match = re.match(ARN_RESOURCE_ID, arn)
    return match.group(1) if match else None


def sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in_period_sql(period: Period) -> str:
    return (
        f"ChargePeriodStart >= TIMESTAMPTZ '{period.start.isoformat()} 00:00:00+00' "
        f"AND ChargePeriodStart < TIMESTAMPTZ '{period.end.isoformat()} 00:00:00+00'"
    )


def resource_key_sql() -> str:
    return f"regexp_extract(ResourceId, {sql_text(ARN_RESOURCE_ID)}, 1)"


def of_resources_sql(keys: Sequence[str]) -> str:
    """Line items whose ResourceId, or the id inside it when it is an ARN, is one of `keys`."""
    listed = ", ".join(sql_text(key) for key in sorted(keys))
    return f"(ResourceId IN ({listed}) OR {resource_key_sql()} IN ({listed}))"


def _costs_by(items: LineItems, period: Period, groups: dict[str, str], where: str = "") -> pd.DataFrame:
    """BilledCost and EffectiveCost of the period's line items by `groups` (alias: SQL), biggest first."""
    keys = ", ".join(f"{sql} AS {alias}" for alias, sql in groups.items())
    ordinals = ", ".join(str(index) for index in range(1, len(groups) + 1))
    condition = _in_period_sql(period) + (f" AND {where}" if where else "")
    return items.aggregate(
        f"SELECT {keys}, SUM(BilledCost) AS billed_usd, SUM(EffectiveCost) AS effective_usd "
        f"FROM {LINE_ITEMS_RELATION} WHERE {condition} GROUP BY {ordinals} "
        f"ORDER BY billed_usd DESC, {ordinals}"
    )


def _pair(billed: float, effective: float) -> CostPair:
    return CostPair(billed_usd=round(float(billed), 2), effective_usd=round(float(effective), 2))


def resource_targets(keys_by_target: dict[int, list[str]]) -> dict[str, int]:
    """Each key's target; a key two targets share (one bucket named like another's id) matches neither."""
    owners: dict[str, set[int]] = {}
    for target, keys in keys_by_target.items():
        for key in keys:
            owners.setdefault(key, set()).add(target)
    return {key: next(iter(targets)) for key, targets in owners.items() if len(targets) == 1}


def matched_target(row: Any, targets: dict[str, int]) -> int | None:
    target = targets.get(row.resource_id)
    return target if target is not None else targets.get(row.resource_key)


def _untagged_resource_spend(
    items: LineItems, period: Period, untagged: Sequence[UntaggedFinding]
) -> list[ResourceSpend]:
    keys = {
        index: [key for key in (finding.arn, arn_resource_id(finding.arn)) if key]
        for index, finding in enumerate(untagged)
    }
    targets = resource_targets(keys)
    billed, effective = [0.0] * len(untagged), [0.0] * len(untagged)
    billed_as: list[set[str]] = [set() for _ in untagged]
    if targets:
        costs_frame = _costs_by(
            items,
            period,
            {"resource_id": "ResourceId", "resource_key": resource_key_sql()},
            where=of_resources_sql(list(targets)),
        )
        for row in costs_frame.itertuples(index=False):
            target = matched_target(row, targets)
            if target is not None:
                billed[target] += row.billed_usd
                effective[target] += row.effective_usd
                billed_as[target].add(row.resource_id)
    rows = [
        ResourceSpend(
            arn=finding.arn,
            resource_type=finding.resource_type,
            region=finding.region,
            billed_as=sorted(billed_as[index]),
            **_pair(billed[index], effective[index]),
        )
        for index, finding in enumerate(untagged)
    ]
    return sorted(rows, key=lambda row: (-row["billed_usd"], row["arn"]))


def _billed_hourly_costs(items: LineItems, period: Period, instance_ids: Sequence[str]) -> dict[str, float]:
    """Each instance's billed cost per running hour on the last day of the period it ran."""
    if not instance_ids:
        return {}
    units = ", ".join(sql_text(unit) for unit in INSTANCE_HOUR_UNITS)
    answer = items.aggregate(
        "SELECT resource_id, resource_key, arg_max(billed / hours, day) AS hourly_usd FROM ("
        f"SELECT ResourceId AS resource_id, {resource_key_sql()} AS resource_key, "
        "ChargePeriodStart AS day, SUM(BilledCost) AS billed, SUM(ConsumedQuantity) AS hours "
        f"FROM {LINE_ITEMS_RELATION} WHERE {_in_period_sql(period)} AND ChargeCategory = 'Usage' "
        f"AND ConsumedUnit IN ({units}) AND {of_resources_sql(instance_ids)} "
        "GROUP BY 1, 2, 3 HAVING SUM(ConsumedQuantity) > 0) GROUP BY 1, 2 ORDER BY 1"
    )
    targets = {instance_id: index for index, instance_id in enumerate(instance_ids)}
    hourly: dict[str, float] = {}
    for row in answer.itertuples(index=False):
        target = matched_target(row, targets)
        if target is not None:
            hourly.setdefault(instance_ids[target], float(row.hourly_usd))
    return hourly


def _idle_waste(items: LineItems, period: Period, idle: Sequence[IdleFinding]) -> list[IdleWaste]:
    hourly = _billed_hourly_costs(items, period, sorted({finding.resource_id for finding in idle}))
    rows = []
    for finding in idle:
        billed = hourly.get(finding.resource_id)
        rows.append(
            IdleWaste(
                resource_id=finding.resource_id,
                region=finding.region,
                instance_type=finding.instance_type,
                idle_hours=finding.idle_hours,
                hourly_cost_usd=finding.hourly_cost_usd if billed is None else round(billed, 4),
                wasted_usd=finding.wasted_usd if billed is None else round(billed * finding.idle_hours, 2),
                cost_basis=LIST_PRICE_BASIS if billed is None else BILLED_BASIS,
            )
        )
    return sorted(rows, key=lambda row: (-(row["wasted_usd"] or 0.0), row["resource_id"]))


def analyze_line_items(
    line_items: pd.DataFrame | LineItems,
    period: Period,
    *,
    idle: Sequence[IdleFinding],
    untagged: Sequence[UntaggedFinding],
) -> LineItemFindings:
    """What the export's line items add: dollars per account, service, charge category and resource."""
    items = queryable(line_items)
    by_account = _costs_by(
        items,
        period,
        {"account_id": "COALESCE(SubAccountId, '')", "account_name": "COALESCE(SubAccountName, '')"},
    )
    by_service = _costs_by(items, period, {"service": "ServiceName"})
    by_category = _costs_by(items, period, {"category": "ChargeCategory"})
    categories = {str(row.category): row for row in by_category.itertuples(index=False)}
    listed = [*CHARGE_CATEGORIES, *sorted(set(categories) - set(CHARGE_CATEGORIES))]
    idle_waste = _idle_waste(items, period, idle)
    return LineItemFindings(
        total=_pair(by_service["billed_usd"].sum(), by_service["effective_usd"].sum()),
        by_account=[
            AccountSpend(
                account_id=row.account_id,
                account_name=row.account_name,
                **_pair(row.billed_usd, row.effective_usd),
            )
            for row in by_account.itertuples(index=False)
        ],
        by_service=[
            ServiceCosts(service=row.service, **_pair(row.billed_usd, row.effective_usd))
            for row in by_service.itertuples(index=False)
        ],
        by_charge_category=[
            ChargeCategorySpend(
                category=name,
                **(
                    _pair(categories[name].billed_usd, categories[name].effective_usd)
                    if name in categories
                    else _pair(0.0, 0.0)
                ),
            )
            for name in listed
        ],
        untagged_resources=_untagged_resource_spend(items, period, untagged),
        idle_waste=idle_waste,
        idle_wasted_usd=round(sum(row["wasted_usd"] or 0.0 for row in idle_waste), 2),
    )
