"""Cost Explorer answered from seeded line items, because moto's only replays queued canned results.

Covers what finops reads: GetCostAndUsage with TimePeriod (end exclusive), DAILY/MONTHLY granularity,
the cost and usage metrics, up to two GroupBy keys (TAG as `key$value`, `key$` for untagged spend;
DIMENSION), Filter expressions (Tags incl. ABSENT, Dimensions, And/Or/Not), the `Estimated` flag on
the most recent days and NextPageToken paging; GetCostForecast from the recent daily average.
Errors have the codes AWS uses, so client code meets the same exceptions it will meet in production.
"""

from __future__ import annotations

import base64
import json
import math
import statistics
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

TARGET_PREFIX = "AWSInsightsIndexService."
NO_INSTANCE_TYPE = "NoInstanceType"
# AWS marks the last days as estimated until the bill settles.
ESTIMATED_DAYS = 2
DEFAULT_PAGE_SIZE = 50
FORECAST_HISTORY_DAYS = 14
MAX_GROUP_BY = 2

# PURCHASE_TYPE dimension values.
ON_DEMAND, SPOT, SAVINGS_PLANS = "On Demand Instances", "Spot Instances", "Savings Plans"


@dataclass(frozen=True)
class LineItem:
    """One day of spend of one service/region/purchase type/instance type with one tag set."""

    day: date
    service: str
    region: str
    purchase_type: str
    instance_type: str | None
    linked_account: str
    tags: Mapping[str, str]
    unblended_cost: float
    amortized_cost: float
    usage_quantity: float

    def dimension(self, key: str) -> str:
        return _DIMENSIONS[key](self)


_DIMENSIONS: dict[str, Callable[[LineItem], str]] = {
    "SERVICE": lambda item: item.service,
    "REGION": lambda item: item.region,
    "PURCHASE_TYPE": lambda item: item.purchase_type,
    "INSTANCE_TYPE": lambda item: item.instance_type or NO_INSTANCE_TYPE,
    "LINKED_ACCOUNT": lambda item: item.linked_account,
    "RECORD_TYPE": lambda item: "Usage",
}

# Blended and net costs equal unblended/amortized here: the sandbox account has no credits or
# consolidated-billing blending.
_METRICS: dict[str, Callable[[LineItem], float]] = {
    "UnblendedCost": lambda item: item.unblended_cost,
    "BlendedCost": lambda item: item.unblended_cost,
    "NetUnblendedCost": lambda item: item.unblended_cost,
    "AmortizedCost": lambda item: item.amortized_cost,
    "NetAmortizedCost": lambda item: item.amortized_cost,
    "UsageQuantity": lambda item: item.usage_quantity,
}


class CostExplorerError(Exception):
    """An error answered to the client with AWS's code (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _validation(message: str) -> CostExplorerError:
    return CostExplorerError("ValidationException", message)


def _parse_day(value: Any, field_name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise _validation(f"{field_name} {value!r} is not a date in the format YYYY-MM-DD") from None


def _time_period(request: Mapping[str, Any]) -> tuple[date, date]:
    period = request.get("TimePeriod")
    if not isinstance(period, Mapping) or "Start" not in period or "End" not in period:
        raise _validation("TimePeriod with Start and End is required")
    start = _parse_day(period["Start"], "Start")
    end = _parse_day(period["End"], "End")
    if start >= end:
        raise _validation(f"Start date {start} must be before end date {end}")
    return start, end


def _periods(start: date, end: date, granularity: str) -> list[tuple[date, date]]:
    if granularity == "DAILY":
        return [(start + timedelta(days=n), start + timedelta(days=n + 1)) for n in range((end - start).days)]
    periods = []
    cursor = start
    while cursor < end:
        next_month = (cursor.replace(day=1) + timedelta(days=32)).replace(day=1)
        periods.append((cursor, min(next_month, end)))
        cursor = next_month
    return periods


def _text_matcher(values: Iterable[str], options: Iterable[str]) -> Callable[[str], bool]:
    options = set(options)
    fold = "CASE_INSENSITIVE" in options
    wanted = [value.lower() if fold else value for value in values]

    def compare(actual: str) -> bool:
        text = actual.lower() if fold else actual
        if "STARTS_WITH" in options:
            return any(text.startswith(value) for value in wanted)
        if "ENDS_WITH" in options:
            return any(text.endswith(value) for value in wanted)
        if "CONTAINS" in options:
            return any(value in text for value in wanted)
        return text in wanted

    return compare


def compile_filter(expression: Mapping[str, Any]) -> Callable[[LineItem], bool]:
    """A Cost Explorer `Expression` as a predicate over line items (raises ValidationException)."""
    operators = [
        key for key in ("And", "Or", "Not", "Dimensions", "Tags", "CostCategories") if key in expression
    ]
    if len(operators) != 1:
        raise _validation(
            "Expression must have exactly one of And, Or, Not, Dimensions, Tags, CostCategories"
        )
    operator = operators[0]
    if operator in ("And", "Or"):
        operands = expression[operator]
        if not isinstance(operands, list) or len(operands) < 2:
            raise _validation(f"{operator} expression must have at least 2 operands")
        compiled = [compile_filter(operand) for operand in operands]
        combine = all if operator == "And" else any
        return lambda item: combine(predicate(item) for predicate in compiled)
    if operator == "Not":
        inner = compile_filter(expression["Not"])
        return lambda item: not inner(item)
    if operator == "CostCategories":
        raise _validation("CostCategories filters are not supported by the sandbox; use Tags or Dimensions")
    spec = expression[operator]
    key = spec.get("Key")
    options = spec.get("MatchOptions") or ["EQUALS"]
    values = spec.get("Values") or []
    if operator == "Dimensions":
        if key not in _DIMENSIONS:
            raise _validation(f"Dimension {key!r} is not supported; use one of {', '.join(_DIMENSIONS)}")
        if not values:
            raise _validation(f"Dimensions filter on {key} needs Values")
        matches = _text_matcher(values, options)
        return lambda item: matches(item.dimension(key))
    if not key:
        raise _validation("Tags filter needs a Key")
    if "ABSENT" in options:
        return lambda item: not item.tags.get(key)
    matches = _text_matcher(values, options)
    return lambda item: bool(item.tags.get(key)) and matches(item.tags[key])


def _group_key_function(group_by: list[Mapping[str, Any]]) -> Callable[[LineItem], tuple[str, ...]]:
    if len(group_by) > MAX_GROUP_BY:
        raise _validation(f"GroupBy can have at most {MAX_GROUP_BY} keys, got {len(group_by)}")
    extractors: list[Callable[[LineItem], str]] = []
    for definition in group_by:
        kind, key = definition.get("Type"), definition.get("Key")
        if kind == "DIMENSION":
            if key not in _DIMENSIONS:
                raise _validation(
                    f"GroupBy dimension {key!r} is not supported; use one of {', '.join(_DIMENSIONS)}"
                )
            extractors.append(lambda item, key=key: item.dimension(key))
        elif kind == "TAG":
            if not key:
                raise _validation("GroupBy of type TAG needs a Key")
            extractors.append(lambda item, key=key: f"{key}${item.tags.get(key, '')}")
        else:
            raise _validation(f"GroupBy type {kind!r} is not supported; use DIMENSION or TAG")
    return lambda item: tuple(extract(item) for extract in extractors)


def _amounts(metrics: list[str], totals: Mapping[str, float]) -> dict[str, dict[str, str]]:
    return {
        metric: {
            "Amount": f"{totals.get(metric, 0.0):.10g}",
            "Unit": "N/A" if metric == "UsageQuantity" else "USD",
        }
        for metric in metrics
    }


@dataclass
class CostExplorerEmulator:
    """The Cost Explorer of the sandbox account; thread-safe, counts every request."""

    line_items: list[LineItem] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    page_size: int = DEFAULT_PAGE_SIZE
    requests: int = 0
    _throttle_remaining: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self, line_items: Iterable[LineItem], now: datetime) -> None:
        with self._lock:
            self.line_items = list(line_items)
            self.now = now

    def throttle_next(self, calls: int) -> None:
        """Make the next `calls` requests answer LimitExceededException, as AWS does under load."""
        with self._lock:
            self._throttle_remaining = calls

    def handle(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one API call; raises CostExplorerError for anything AWS would refuse."""
        with self._lock:
            self.requests += 1
            if self._throttle_remaining > 0:
                self._throttle_remaining -= 1
                raise CostExplorerError("LimitExceededException", "Rate exceeded")
        if operation == "GetCostAndUsage":
            return self.get_cost_and_usage(request)
        if operation == "GetCostForecast":
            return self.get_cost_forecast(request)
        raise CostExplorerError(
            "UnknownOperationException", f"{operation} is not emulated by the sandbox's Cost Explorer"
        )

    def _is_estimated(self, end: date) -> bool:
        first_estimated = self.now.astimezone(UTC).date() - timedelta(days=ESTIMATED_DAYS)
        return end > first_estimated

    def get_cost_and_usage(self, request: Mapping[str, Any]) -> dict[str, Any]:
        start, end = _time_period(request)
        granularity = request.get("Granularity")
        if granularity not in ("DAILY", "MONTHLY"):
            raise _validation(f"Granularity {granularity!r} is not supported; use DAILY or MONTHLY")
        metrics = request.get("Metrics") or []
        if not metrics:
            raise _validation("Metrics is required")
        unknown = [metric for metric in metrics if metric not in _METRICS]
        if unknown:
            raise _validation(f"Metrics {unknown} are not valid; use {', '.join(_METRICS)}")
        group_by = list(request.get("GroupBy") or [])
        group_key = _group_key_function(group_by)
        selected = compile_filter(request["Filter"]) if request.get("Filter") else (lambda item: True)

        periods = _periods(start, end, granularity)
        period_of_day = {
            period_start + timedelta(days=offset): (period_start, period_end)
            for period_start, period_end in periods
            for offset in range((period_end - period_start).days)
        }
        sums: dict[tuple[date, date], dict[tuple[str, ...], dict[str, float]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(float))
        )
        for item in self.line_items:
            period = period_of_day.get(item.day)
            if period is None or not selected(item):
                continue
            bucket = sums[period][group_key(item)]
            for metric in metrics:
                bucket[metric] += _METRICS[metric](item)

        # Paging runs over (period, group) entries, so a period's groups may span pages as on AWS.
        entries: list[tuple[tuple[date, date], tuple[str, ...] | None]] = []
        for period in periods:
            groups = sorted(sums[period]) if group_by else []
            if groups:
                entries.extend((period, keys) for keys in groups)
            else:
                entries.append((period, None))
        offset = _decode_token(request.get("NextPageToken"), len(entries))
        page = entries[offset : offset + self.page_size]

        results: list[dict[str, Any]] = []
        for period, keys in page:
            if not results or results[-1]["_period"] != period:
                results.append(
                    {
                        "_period": period,
                        "TimePeriod": {"Start": period[0].isoformat(), "End": period[1].isoformat()},
                        "Total": {},
                        "Groups": [],
                        "Estimated": self._is_estimated(period[1]),
                    }
                )
            if not group_by:
                totals = sums[period].get((), {})
                results[-1]["Total"] = _amounts(metrics, totals)
            elif keys is not None:
                results[-1]["Groups"].append(
                    {"Keys": list(keys), "Metrics": _amounts(metrics, sums[period][keys])}
                )
        for result in results:
            del result["_period"]
        response: dict[str, Any] = {
            "GroupDefinitions": [{"Type": g.get("Type"), "Key": g.get("Key")} for g in group_by],
            "ResultsByTime": results,
            "DimensionValueAttributes": [],
        }
        if offset + self.page_size < len(entries):
            response["NextPageToken"] = _encode_token(offset + self.page_size)
        return response

    def get_cost_forecast(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Forecast = average daily spend of the last 14 days before today, per day of the period."""
        start, end = _time_period(request)
        today = self.now.astimezone(UTC).date()
        if start < today:
            raise _validation(f"Start date {start} must be today ({today}) or later for a forecast")
        metric_name = {"UNBLENDED_COST": "UnblendedCost", "AMORTIZED_COST": "AmortizedCost"}.get(
            request.get("Metric", "")
        )
        if metric_name is None:
            raise _validation("Metric must be UNBLENDED_COST or AMORTIZED_COST")
        granularity = request.get("Granularity")
        if granularity not in ("DAILY", "MONTHLY"):
            raise _validation(f"Granularity {granularity!r} is not supported; use DAILY or MONTHLY")
        selected = compile_filter(request["Filter"]) if request.get("Filter") else (lambda item: True)
        history = [today - timedelta(days=offset) for offset in range(FORECAST_HISTORY_DAYS, 0, -1)]
        per_day = dict.fromkeys(history, 0.0)
        for item in self.line_items:
            if item.day in per_day and selected(item):
                per_day[item.day] += _METRICS[metric_name](item)
        daily = statistics.fmean(per_day.values())
        spread = statistics.pstdev(per_day.values())
        level = request.get("PredictionIntervalLevel")
        # A normal interval of the daily spend's spread; Cost Explorer answers bounds only when asked.
        z = statistics.NormalDist().inv_cdf(0.5 + int(level) / 200) if level else None
        by_time = []
        for period_start, period_end in _periods(start, end, granularity):
            days = (period_end - period_start).days
            amount = daily * days
            row = {
                "TimePeriod": {"Start": period_start.isoformat(), "End": period_end.isoformat()},
                "MeanValue": f"{amount:.10g}",
            }
            if z is not None:
                half = z * spread * math.sqrt(days)
                row["PredictionIntervalLowerBound"] = f"{max(amount - half, 0.0):.10g}"
                row["PredictionIntervalUpperBound"] = f"{amount + half:.10g}"
            by_time.append(row)
        total = daily * (end - start).days
        return {"Total": {"Amount": f"{total:.10g}", "Unit": "USD"}, "ForecastResultsByTime": by_time}


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str | None, entries: int) -> int:
    if not token:
        return 0
    try:
        offset = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise _validation(
            "NextPageToken is invalid; pass back the token of the previous page unchanged"
        ) from None
    if not 0 <= offset < entries:
        raise _validation("NextPageToken is invalid; pass back the token of the previous page unchanged")
    return offset
