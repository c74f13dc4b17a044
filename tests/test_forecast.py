"""The month-end forecast: the month of the last billed day, Cost Explorer's forecast or the stated run rate.

Spend comes from the sandbox's Cost Explorer emulator over line items made in `tests.test_budgets`;
Cost Explorer's forecast from that emulator (which answers GetCostForecast from the same line items)
or from a botocore Stubber where the exact answer matters. Every expected dollar is summed by hand
from the line items.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber
from moto import mock_aws

import mlp.aws
from finops import focus, report
from finops.analysis import RUN_RATE_DAYS, Forecast, analyze_spend, report_period
from finops.cost_source import CostExplorerSource, FocusExportSource
from finops.forecast import (
    COST_EXPLORER_METHOD,
    PREDICTION_INTERVAL_PCT,
    RUN_RATE_METHOD,
    CostExplorerForecast,
    ForecastUnavailable,
    cost_explorer_forecast,
    month_end,
    request_forecast,
)
from finops.sandbox.cost_explorer import CostExplorerEmulator, CostExplorerError, LineItem
from finops.scope import single_account_scope
from tests.test_budgets import (
    ACCOUNT_ID,
    DAYS,
    FINANCE_STACKS,
    VISION_DEV,
    finance_line_items,
    line_item,
    make_project,
    read_items,
    spend_of,
)
from tests.test_costs import TODAY, SleepRecorder

FIRST = date(2026, 12, 1)  # the report run on the 1st closes November
EVERYTHING: dict[str, str] = {}  # no tag asked: every line item
NOVEMBER, DECEMBER, OCTOBER = date(2026, 11, 1), date(2026, 12, 1), date(2026, 10, 1)


def forecast_of(items: list[LineItem], today: date, cost_explorer: Any = None, **read: Any) -> Forecast:
    spend = read_items(items, today, **read)
    forecast = analyze_spend(spend, report_period(DAYS, today), cost_explorer).forecast
    assert forecast is not None
    return forecast


def daily_sums(items: list[LineItem], start: date, end: date) -> list[dict[str, Any]]:
    days = sorted({item.day for item in items if start <= item.day < end})
    return [
        {"date": day.isoformat(), "usd": round(spend_of(items, EVERYTHING, day, day + timedelta(days=1)), 2)}
        for day in days
    ]


# --- the month --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "end"),
    [
        (date(2026, 11, 23), date(2026, 12, 1)),
        (date(2026, 11, 30), date(2026, 12, 1)),
        (date(2026, 12, 1), date(2027, 1, 1)),
        (date(2026, 12, 31), date(2027, 1, 1)),
        (date(2028, 2, 29), date(2028, 3, 1)),
    ],
)
def test_month_end_is_the_first_of_the_next_month(day: date, end: date) -> None:
    assert month_end(day) == end


@pytest.mark.parametrize(
    ("today", "month_start", "previous_month_start", "fetch_start"),
    [
        # Mid-month: the month under way; the read reaches the previous month's first day.
        (date(2026, 11, 23), NOVEMBER, OCTOBER, OCTOBER),
        # On the 1st the last billed day is the month before's last: that month, whole.
        (FIRST, NOVEMBER, OCTOBER, OCTOBER),
        (date(2027, 1, 1), date(2026, 12, 1), NOVEMBER, NOVEMBER),
        (date(2026, 11, 2), NOVEMBER, OCTOBER, OCTOBER),
    ],
)
def test_the_month_is_the_last_billed_days(
    today: date, month_start: date, previous_month_start: date, fetch_start: date
) -> None:
    period = report_period(DAYS, today)
    assert period.last_day == today - timedelta(days=1)
    assert (period.month_start, period.previous_month_start) == (month_start, previous_month_start)
    # The previous period starts later (28 days back) than the previous month in every case here.
    assert period.previous.start > fetch_start
    assert period.fetch_start == fetch_start


def test_on_the_first_the_forecast_is_the_closed_month() -> None:
    items = finance_line_items(FIRST, days=75)
    # Even a Cost Explorer forecast in hand changes nothing: no day is left to forecast.
    ignored = CostExplorerForecast(FIRST, FIRST, 999.0, 900.0, 1100.0)
    for cost_explorer in (None, ignored):
        forecast = forecast_of(items, FIRST, cost_explorer)

        november = spend_of(items, EVERYTHING, NOVEMBER, DECEMBER)
        assert (forecast["month"], forecast["month_label"]) == ("2026-11", "November 2026")
        assert forecast["days_left"] == 0
        assert forecast["month_to_date_usd"] == pytest.approx(november, abs=0.006)
        assert forecast["forecast_usd"] == forecast["month_to_date_usd"]
        assert (forecast["lower_usd"], forecast["upper_usd"]) == (None, None)
        assert forecast["method"] == RUN_RATE_METHOD
        assert forecast["method_note"] == "November 2026 is complete: no day left"
        assert forecast["daily"] == daily_sums(items, NOVEMBER, DECEMBER)
        assert len(forecast["daily"]) == 30
        assert forecast["previous_month"] == {
            "month": "2026-10",
            "month_label": "October 2026",
            "usd": round(spend_of(items, EVERYTHING, OCTOBER, NOVEMBER), 2),
        }


# --- Cost Explorer's forecast ---------------------------------------------------------------------------


def forecast_answer(mean: str, *bounds: tuple[str, str] | None, periods: list[tuple[str, str]]) -> dict:
    rows = []
    for (start, end), bound in zip(periods, bounds, strict=True):
        row: dict[str, Any] = {"TimePeriod": {"Start": start, "End": end}, "MeanValue": mean}
        if bound is not None:
            row["PredictionIntervalLowerBound"], row["PredictionIntervalUpperBound"] = bound
        rows.append(row)
    return {"Total": {"Amount": mean, "Unit": "USD"}, "ForecastResultsByTime": rows}


def stubbed_cost_explorer() -> tuple[Any, Stubber]:
    client = boto3.client("ce", region_name="us-east-1")
    return client, Stubber(client)


FORECAST_REQUEST = {
    "TimePeriod": {"Start": "2026-11-23", "End": "2026-12-01"},
    "Metric": "UNBLENDED_COST",
    "Granularity": "MONTHLY",
    "PredictionIntervalLevel": PREDICTION_INTERVAL_PCT,
}


def test_one_request_for_the_days_left_with_its_prediction_interval() -> None:
    client, stubber = stubbed_cost_explorer()
    stubber.add_response(
        "get_cost_forecast",
        forecast_answer("240.5", ("200.25", "281.75"), periods=[("2026-11-23", "2026-12-01")]),
        FORECAST_REQUEST,  # the Stubber also checks the request against Cost Explorer's model
    )
    with stubber:
        answer = request_forecast(client, TODAY, month_end(TODAY))
        stubber.assert_no_pending_responses()
    assert answer == CostExplorerForecast(TODAY, DECEMBER, 240.5, 200.25, 281.75)


def test_bounds_are_summed_over_periods_and_none_when_one_lacks_them() -> None:
    periods = [("2026-11-23", "2026-11-30"), ("2026-11-30", "2026-12-01")]
    client, stubber = stubbed_cost_explorer()
    stubber.add_response(
        "get_cost_forecast", forecast_answer("80", ("10", "20"), ("1.5", "2.5"), periods=periods)
    )
    stubber.add_response("get_cost_forecast", forecast_answer("80", ("10", "20"), None, periods=periods))
    with stubber:
        both = request_forecast(client, TODAY, DECEMBER)
        one = request_forecast(client, TODAY, DECEMBER)
    assert (both.mean_usd, both.lower_usd, both.upper_usd) == (80.0, 11.5, 22.5)
    assert (one.mean_usd, one.lower_usd, one.upper_usd) == (80.0, None, None)


def test_mid_month_forecast_is_month_to_date_plus_cost_explorers_mean() -> None:
    items = finance_line_items()
    days_left = (DECEMBER - TODAY).days
    cost_explorer = CostExplorerForecast(TODAY, DECEMBER, 812.5, 700.0, 930.25)
    forecast = forecast_of(items, TODAY, cost_explorer)

    month_to_date = spend_of(items, EVERYTHING, NOVEMBER, TODAY)
    assert days_left == forecast["days_left"] == 8
    assert forecast["month_to_date_usd"] == pytest.approx(month_to_date, abs=0.006)
    assert forecast["forecast_usd"] == pytest.approx(month_to_date + 812.5, abs=0.006)
    assert forecast["lower_usd"] == pytest.approx(month_to_date + 700.0, abs=0.006)
    assert forecast["upper_usd"] == pytest.approx(month_to_date + 930.25, abs=0.006)
    assert forecast["method"] == COST_EXPLORER_METHOD
    assert "8 days left" in forecast["method_note"] and "80% prediction interval" in forecast["method_note"]
    assert forecast["daily"] == daily_sums(items, NOVEMBER, TODAY)
    assert forecast["previous_month"] == {
        "month": "2026-10",
        "month_label": "October 2026",
        "usd": round(spend_of(items, EVERYTHING, OCTOBER, NOVEMBER), 2),
    }


def test_a_forecast_without_bounds_has_none() -> None:
    forecast = forecast_of(
        finance_line_items(), TODAY, CostExplorerForecast(TODAY, DECEMBER, 10.0, None, None)
    )
    assert forecast["method"] == COST_EXPLORER_METHOD
    assert (forecast["lower_usd"], forecast["upper_usd"]) == (None, None)


@pytest.mark.parametrize("code", ["DataUnavailableException", "ValidationException"])
def test_no_forecast_for_the_account_is_forecast_unavailable(code: str) -> None:
    client, stubber = stubbed_cost_explorer()
    stubber.add_client_error(
        "get_cost_forecast", service_error_code=code, service_message="Insufficient amount of historical data"
    )
    with stubber:
        answer = request_forecast(client, TODAY, DECEMBER)
    assert answer == ForecastUnavailable(f"{code}: Insufficient amount of historical data")


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("LimitExceededException", "LimitExceededException"),
        ("AccessDeniedException", "access denied (GetCostForecast)"),
        ("UnrecognizedClientException", "rejected the credentials"),
    ],
)
def test_any_other_cost_explorer_error_is_forecast_unavailable_never_fatal(code: str, said: str) -> None:
    client, stubber = stubbed_cost_explorer()
    stubber.add_client_error("get_cost_forecast", service_error_code=code, service_message="refused")
    with stubber:
        answer = cost_explorer_forecast(TODAY, DECEMBER, client)
        stubber.assert_no_pending_responses()
    assert isinstance(answer, ForecastUnavailable)
    assert said in answer.reason


def test_asked_directly_any_other_error_is_raised() -> None:
    client, stubber = stubbed_cost_explorer()
    stubber.add_client_error("get_cost_forecast", service_error_code="LimitExceededException")
    with stubber, pytest.raises(botocore.exceptions.ClientError, match="LimitExceededException"):
        request_forecast(client, TODAY, DECEMBER)


# --- the run rate ---------------------------------------------------------------------------------------


def sparse_items() -> list[LineItem]:
    """$1/day from the 1st to the 15th, then spend on 3 of the last 7 days only: 70, 35 and 14."""
    items = [line_item(NOVEMBER + timedelta(days=offset), VISION_DEV, 1.0) for offset in range(15)]
    items += [line_item(date(2026, 10, 20), VISION_DEV, 50.0)]
    items += [
        line_item(date(2026, 11, 16), VISION_DEV, 70.0),
        line_item(date(2026, 11, 20), VISION_DEV, 35.0),
        line_item(date(2026, 11, 22), VISION_DEV, 14.0),
    ]
    return items


def test_without_cost_explorer_the_run_rate_counts_days_without_spend_as_zero() -> None:
    forecast = forecast_of(sparse_items(), TODAY)

    run_rate = (70 + 35 + 14) / RUN_RATE_DAYS  # 17.00, not the 39.67 of the 3 days with spend
    month_to_date = 15 * 1.0 + 70 + 35 + 14
    assert forecast["daily_run_rate_usd"] == pytest.approx(run_rate, abs=0.006)
    assert forecast["month_to_date_usd"] == pytest.approx(month_to_date, abs=0.006)
    assert forecast["forecast_usd"] == pytest.approx(month_to_date + run_rate * 8, abs=0.006)
    assert forecast["method"] == RUN_RATE_METHOD
    assert forecast["method_note"] == (
        "the month to date plus the last 7 days' average ($17.00) for each of the 8 days left"
    )
    assert (forecast["lower_usd"], forecast["upper_usd"]) == (None, None)
    assert forecast["previous_month"] == {"month": "2026-10", "month_label": "October 2026", "usd": 50.0}


def test_forecast_unavailable_falls_back_to_the_run_rate_and_says_why() -> None:
    reason = "DataUnavailableException: Insufficient amount of historical data"
    forecast = forecast_of(sparse_items(), TODAY, ForecastUnavailable(reason))

    month_to_date = 15 * 1.0 + 70 + 35 + 14
    assert forecast["method"] == RUN_RATE_METHOD
    assert forecast["forecast_usd"] == pytest.approx(month_to_date + (70 + 35 + 14) / 7 * 8, abs=0.006)
    assert forecast["method_note"].startswith("the month to date plus the last 7 days' average ($17.00)")
    assert forecast["method_note"].endswith(f"(Cost Explorer gave no forecast: {reason})")


def test_previous_month_is_none_when_the_read_does_not_cover_it() -> None:
    forecast = forecast_of(sparse_items(), TODAY, start=NOVEMBER)
    assert forecast["previous_month"] is None
    assert forecast["month_to_date_usd"] == pytest.approx(15 * 1.0 + 70 + 35 + 14, abs=0.006)


# --- the sources' forecast, and the nightly job -----------------------------------------------------------


class RecordingCostExplorer:
    """A boto3-shaped Cost Explorer answering from the sandbox's emulator; records every request."""

    def __init__(self, items: list[LineItem], now: datetime) -> None:
        self.emulator = CostExplorerEmulator(page_size=40)
        self.emulator.load(items, now)
        self.operations: list[str] = []
        self.forecasts: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def _answer(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.operations.append(operation)
        try:
            return self.emulator.handle(operation, copy.deepcopy(request))
        except CostExplorerError as exc:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": exc.code, "Message": exc.message},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                operation,
            ) from None

    def get_cost_and_usage(self, **request: Any) -> dict[str, Any]:
        return self._answer("GetCostAndUsage", request)

    def get_cost_forecast(self, **request: Any) -> dict[str, Any]:
        answer = self._answer("GetCostForecast", request)
        self.forecasts.append((request, answer))
        return answer


@pytest.fixture
def cost_explorer_of(monkeypatch: pytest.MonkeyPatch):
    """Route the caller's Cost Explorer client (`mlp.aws.client("ce")`) to a recording emulator."""
    real_client = mlp.aws.client

    def install(items: list[LineItem], now: datetime) -> RecordingCostExplorer:
        recording = RecordingCostExplorer(items, now)

        def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
            return recording if service == "ce" else real_client(service, region, **kwargs)

        monkeypatch.setattr(mlp.aws, "client", client)
        return recording

    return install


def test_cost_explorer_source_counts_the_forecast_within_its_request_budget(cost_explorer_of) -> None:
    now = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    items = finance_line_items()
    recording = cost_explorer_of(items, now)
    spend = read_items(items)
    read_requests = spend.requests
    source = CostExplorerSource(use_cache=False, max_requests=read_requests + 1)

    first = source.forecast(TODAY, DECEMBER, spend)
    second = source.forecast(TODAY, DECEMBER, spend)

    assert isinstance(first, CostExplorerForecast)
    # The emulator's forecast: the 14 days before today's average, for each of the 8 days left.
    assert first.mean_usd == pytest.approx(
        spend_of(items, EVERYTHING, TODAY - timedelta(days=14), TODAY) / 14 * 8
    )
    assert first.lower_usd is not None and first.upper_usd is not None
    assert first.lower_usd <= first.mean_usd <= first.upper_usd
    assert second == ForecastUnavailable(f"the budget of {read_requests + 1} Cost Explorer requests is spent")
    assert spend.requests == read_requests + 1
    assert recording.operations == ["GetCostForecast"]  # the read was not through this client


def test_the_focus_export_has_no_forecast_and_the_run_rate_says_so_plainly() -> None:
    spend = read_items(sparse_items())
    source = FocusExportSource(focus.FocusSource("s3://focus-exports/ml-platform/"))
    assert source.forecast(TODAY, DECEMBER, spend) is None
    forecast = analyze_spend(spend, report_period(DAYS, TODAY), None).forecast
    assert forecast is not None
    assert "Cost Explorer" not in forecast["method_note"]


def nightly(cost_explorer_of, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: datetime):
    items = finance_line_items(now.date(), days=75)
    recording = cost_explorer_of(items, now)
    # The project the job runs in: its stacks give the budgets (AWS Budgets is empty) and team owners.
    monkeypatch.chdir(make_project(tmp_path / "project", FINANCE_STACKS))
    with mock_aws():
        built = report.run_nightly(
            DAYS,
            tmp_path / "out",
            scope=single_account_scope(["us-east-1"], ACCOUNT_ID),
            source=CostExplorerSource(use_cache=False, sleep=SleepRecorder()),
            now=now,
        )
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    return items, recording, built, findings


def test_nightly_on_the_first_asks_cost_explorer_for_no_forecast(
    cost_explorer_of, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, recording, built, findings = nightly(
        cost_explorer_of, tmp_path, monkeypatch, datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    )

    assert "GetCostForecast" not in recording.operations
    assert findings["cost_explorer_requests"] == len(recording.operations) == built.spend.requests
    forecast = findings["spend"]["forecast"]
    assert (forecast["month"], forecast["days_left"], forecast["method"]) == ("2026-11", 0, RUN_RATE_METHOD)
    november = spend_of(items, EVERYTHING, NOVEMBER, DECEMBER)
    assert forecast["forecast_usd"] == forecast["month_to_date_usd"] == pytest.approx(november, abs=0.006)
    # AWS Budgets (moto's) is empty: the project's stacks give the limits, and the note says so.
    assert findings["spend"]["budgets_note"] == (
        "AWS Budgets holds no environment or team budget; limits from the stacks' config"
    )
    assert forecast["budget_usd"] == 1000.0 + 2000.0


def test_nightly_mid_month_asks_cost_explorer_once_for_the_days_left(
    cost_explorer_of, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, recording, built, findings = nightly(
        cost_explorer_of, tmp_path, monkeypatch, datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    )

    assert recording.operations.count("GetCostForecast") == 1
    [(request, answer)] = recording.forecasts
    assert request["TimePeriod"] == {"Start": "2026-11-23", "End": "2026-12-01"}
    # Counted with the read's requests, and paid for like them.
    assert findings["cost_explorer_requests"] == len(recording.operations) == built.spend.requests
    assert findings["cost_explorer_usd"] == pytest.approx(0.01 * len(recording.operations))

    forecast = findings["spend"]["forecast"]
    month_to_date = spend_of(items, EVERYTHING, NOVEMBER, TODAY)
    mean = spend_of(items, EVERYTHING, TODAY - timedelta(days=14), TODAY) / 14 * 8
    [period] = answer["ForecastResultsByTime"]
    assert forecast["method"] == COST_EXPLORER_METHOD
    assert forecast["month_to_date_usd"] == pytest.approx(month_to_date, abs=0.006)
    assert forecast["forecast_usd"] == pytest.approx(month_to_date + mean, abs=0.006)
    assert forecast["lower_usd"] == pytest.approx(
        month_to_date + float(period["PredictionIntervalLowerBound"]), abs=0.006
    )
    assert forecast["upper_usd"] == pytest.approx(
        month_to_date + float(period["PredictionIntervalUpperBound"]), abs=0.006
    )
    assert forecast["lower_usd"] < forecast["forecast_usd"] < forecast["upper_usd"]
