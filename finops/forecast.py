"""The month-end forecast: Cost Explorer's own (`GetCostForecast`), or a stated run-rate method.

The month is the one of the last billed day: the report runs after midnight on day D and holds the days
before D, so on the 1st it closes the previous month (nothing left to forecast) and on any other day it
forecasts the month under way. Cost Explorer forecasts from today to the month's end; the month to date
comes from the report's own spend. The FOCUS export has no forecast API, so there the forecast is the
month to date plus the last days' average for each day left, and the dashboard says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import botocore.exceptions

import mlp.aws
from mlp.errors import UserError

COST_EXPLORER_METHOD = "cost-explorer"
RUN_RATE_METHOD = "run-rate"
PREDICTION_INTERVAL_PCT = 80
# Cost Explorer cannot forecast an account with too little history; the report then uses the run rate.
NO_FORECAST_CODES = frozenset({"DataUnavailableException", "ValidationException"})


@dataclass(frozen=True)
class CostExplorerForecast:
    """Cost Explorer's forecast of [start, end): its mean and prediction interval, in USD."""

    start: date
    end: date
    mean_usd: float
    lower_usd: float | None
    upper_usd: float | None


@dataclass(frozen=True)
class ForecastUnavailable:
    """Why Cost Explorer gave no forecast (the report falls back to the run rate and says why)."""

    reason: str


def month_end(day: date) -> date:
    """The first day of the month after `day`'s (exclusive end, like Cost Explorer's)."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def request_forecast(client: Any, start: date, end: date) -> CostExplorerForecast | ForecastUnavailable:
    """One GetCostForecast request ($0.01) for [start, end) of UnblendedCost, the report's basis."""
    try:
        answer = client.get_cost_forecast(
            TimePeriod={"Start": start.isoformat(), "End": end.isoformat()},
            Metric="UNBLENDED_COST",
            Granularity="MONTHLY",
            PredictionIntervalLevel=PREDICTION_INTERVAL_PCT,
        )
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in NO_FORECAST_CODES:
            return ForecastUnavailable(
                f"{code}: {error.response.get('Error', {}).get('Message', '')}".strip()
            )
        raise
    periods = answer.get("ForecastResultsByTime", [])

    def bound(name: str) -> float | None:
        values = [period.get(name) for period in periods]
        return sum(float(value) for value in values) if values and None not in values else None

    return CostExplorerForecast(
        start=start,
        end=end,
        mean_usd=float(answer["Total"]["Amount"]),
        lower_usd=bound("PredictionIntervalLowerBound"),
        upper_usd=bound("PredictionIntervalUpperBound"),
    )


def cost_explorer_forecast(
    start: date, end: date, client: Any | None = None
) -> CostExplorerForecast | ForecastUnavailable:
    """The forecast from the caller's Cost Explorer; an AWS error is a `ForecastUnavailable`, never fatal."""
    try:
        with mlp.aws.aws_errors("forecasting the month with Cost Explorer"):
            return request_forecast(client or mlp.aws.client("ce", mlp.aws.COST_EXPLORER_REGION), start, end)
    # The forecast is one card: its failure must not cost the report the rest is paid for. An emulated
    # endpoint without GetCostForecast (moto's in-process one) raises NotImplementedError.
    except (
        UserError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
        NotImplementedError,
    ) as error:
        return ForecastUnavailable(str(error))
