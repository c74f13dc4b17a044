"""Cost Explorer misbehaving: endless or repeated page tokens, throttling, a failing page, restated days.

Cost Explorer charges $0.01 a request, so every test counts the requests exactly: the request
budget must hold whatever Cost Explorer answers, and the cache must never keep a day Cost Explorer
may still restate (the current and previous billing month) nor anything of a view read half-way.
"""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from finops import costs
from tests.test_costs import NOW, SleepRecorder

TODAY = NOW.date()  # 2026-11-23: October and November may still be restated
FIRST_UNSETTLED = date(2026, 10, 1)
VIEWS = costs.plan_views()
TEAM_VIEW = VIEWS[0]  # tags:team+environment
OTHER_VIEWS = VIEWS[1:]

Answer = dict[str, Any] | BaseException | Callable[[dict[str, Any]], dict[str, Any]]


def view_of(request: dict[str, Any]) -> costs.CostView:
    query = {key: value for key, value in request.items() if key not in ("TimePeriod", "NextPageToken")}
    [view] = [view for view in VIEWS if view.request() == query]
    return view


def requested_days(request: dict[str, Any]) -> list[date]:
    period = request["TimePeriod"]
    return costs.days_between(date.fromisoformat(period["Start"]), date.fromisoformat(period["End"]))


def day_result(
    request: dict[str, Any], day: date, amount: float, *, estimated: bool = False
) -> dict[str, Any]:
    """One day of one group, keys shaped like Cost Explorer's (`team$value` for tags)."""
    keys = [f"{g['Key']}$x" if g["Type"] == "TAG" else f"{g['Key']}-x" for g in request["GroupBy"]]
    metrics = {metric: {"Amount": str(amount), "Unit": "USD"} for metric in request["Metrics"]}
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Groups": [{"Keys": keys, "Metrics": metrics}],
        "Estimated": estimated,
    }


class Ledger:
    """Answers every day asked with `amounts[day]` (1.0 by default), on one page; mutable to restate."""

    def __init__(self, amounts: dict[date, float] | None = None, estimated: Iterable[date] = ()) -> None:
        self.amounts = dict(amounts or {})
        self.estimated = set(estimated)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "ResultsByTime": [
                day_result(request, day, self.amounts.get(day, 1.0), estimated=day in self.estimated)
                for day in requested_days(request)
            ]
        }


def page(token: str | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A page with every day asked and, unless None, `token` as the next page's."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        response = Ledger()(request)
        if token is not None:
            response["NextPageToken"] = token
        return response

    return answer


def client_error(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetCostAndUsage",
    )


class ScriptedCostExplorer:
    """A boto3-shaped Cost Explorer client: each view answers from its scripted sequence, then `default`.

    A script entry is a response, an exception to raise or a callable of the request; every call is
    recorded (as sent) in `calls`.
    """

    def __init__(
        self,
        scripts: dict[str, Iterable[Answer]] | None = None,
        default: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.scripts: dict[str, Iterator[Answer]] = {
            name: iter(script) for name, script in (scripts or {}).items()
        }
        self.default = default or Ledger()
        self.calls: list[dict[str, Any]] = []

    def get_cost_and_usage(self, **request: Any) -> dict[str, Any]:
        self.calls.append(copy.deepcopy(request))
        answer = next(self.scripts.get(view_of(request).name, iter(())), self.default)
        if isinstance(answer, BaseException):
            raise answer
        return answer(request) if callable(answer) else answer

    def calls_of(self, view: costs.CostView) -> list[dict[str, Any]]:
        return [call for call in self.calls if view_of(call) == view]


def reader(
    client: ScriptedCostExplorer, cache_dir: Path | None = None, **options: Any
) -> costs.CostExplorerReader:
    cache = costs.SpendCache(cache_dir, "test-account") if cache_dir is not None else None
    options.setdefault("sleep", SleepRecorder())
    return costs.CostExplorerReader(client, cache=cache, today=TODAY, **options)


def read(client: ScriptedCostExplorer, start: date, end: date, **options: Any) -> costs.Spend:
    return costs.read_spend(reader(client, **options), start, end)


def missing_reasons(spend: costs.Spend) -> dict[str, str]:
    return {part.part: part.reason for part in spend.missing}


def cached_days(cache_dir: Path) -> dict[str, list[str]]:
    """What the cache directory holds: view cache key -> sorted day files (nothing else may be there)."""
    root = cache_dir / "test-account"
    if not root.exists():
        return {}
    assert all(path.suffix == ".json" for path in root.rglob("*") if path.is_file())
    return {folder.name: sorted(path.stem for path in folder.iterdir()) for folder in sorted(root.iterdir())}


def iso_days(start: date, end: date) -> list[str]:
    return [day.isoformat() for day in costs.days_between(start, end)]


RECENT = (TODAY - timedelta(days=3), TODAY)


# --- page tokens and the request budget ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "requests_on_view"),
    [
        (itertools.repeat("same-token"), 2),  # page 2 hands back page 1's token
        (itertools.cycle(["token-a", "token-b"]), 3),  # a -> b -> a
    ],
)
def test_a_repeated_page_token_stops_that_view_only(tokens: Iterator[str], requests_on_view: int) -> None:
    client = ScriptedCostExplorer({TEAM_VIEW.name: (page(token) for token in tokens)})

    spend = read(client, *RECENT)

    assert len(client.calls_of(TEAM_VIEW)) == requests_on_view
    assert spend.requests == len(client.calls) == requests_on_view + len(OTHER_VIEWS)
    cost = f"${requests_on_view / 100:.2f}"
    reason = f"Cost Explorer repeated a page token; stopped after {requests_on_view} requests ({cost}) on this view"
    assert missing_reasons(spend) == {"spend by team": reason, "spend by environment": reason}
    assert spend.complete_views == {view.name for view in OTHER_VIEWS}
    assert set(spend.frame["x_CostView"]) == {view.name for view in OTHER_VIEWS}


def test_paging_that_never_ends_stops_at_the_budget_and_the_other_views_are_named_too() -> None:
    endless = (page(f"token-{n}") for n in itertools.count(1))
    client = ScriptedCostExplorer({TEAM_VIEW.name: endless})

    spend = read(client, *RECENT, max_requests=10)

    assert len(client.calls) == spend.requests == 10
    assert len(client.calls_of(TEAM_VIEW)) == 10
    assert spend.cost_usd == 0.10
    reasons = missing_reasons(spend)
    assert reasons["spend by team"] == (
        "request budget of 10 reached (10 requests ($0.10) in all, 10 requests ($0.10) on this view); "
        "raise --max-ce-requests to read it"
    )
    # Nothing was left for the other views: each is named, none was asked.
    assert reasons["spend by service"] == (
        "request budget of 10 reached (10 requests ($0.10) in all, 0 requests ($0.00) on this view); "
        "raise --max-ce-requests to read it"
    )
    assert set(reasons) == {part for view in VIEWS for part in view.parts}
    assert spend.complete_views == set()
    assert spend.frame.empty


def test_the_budget_reads_the_views_it_can_and_names_the_rest() -> None:
    client = ScriptedCostExplorer()  # every view is one page here

    spend = read(client, *RECENT, max_requests=3)

    assert len(client.calls) == spend.requests == 3
    assert spend.complete_views == {view.name for view in VIEWS[:3]}
    assert set(missing_reasons(spend)) == {part for view in VIEWS[3:] for part in view.parts}


def test_views_in_the_cache_are_still_read_when_the_budget_is_spent(tmp_path: Path) -> None:
    start, end = date(2026, 8, 1), date(2026, 8, 8)  # final days: cached after one read
    read(ScriptedCostExplorer(), start, end, cache_dir=tmp_path)
    for path in (tmp_path / "test-account" / TEAM_VIEW.cache_key).iterdir():
        path.unlink()
    client = ScriptedCostExplorer({TEAM_VIEW.name: (page(f"token-{n}") for n in itertools.count(1))})

    spend = read(client, start, end, cache_dir=tmp_path, max_requests=5)

    assert len(client.calls) == spend.requests == 5
    assert set(missing_reasons(spend)) == set(TEAM_VIEW.parts)
    assert spend.complete_views == {view.name for view in OTHER_VIEWS}
    assert spend.cached_view_days == 7 * len(OTHER_VIEWS)


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_requests"):
        costs.CostExplorerReader(ScriptedCostExplorer(), max_requests=0)
    assert costs.validate_max_requests(1) == 1


# --- throttling and failures ---------------------------------------------------------------------


def test_throttling_then_success_is_retried_and_every_attempt_counts() -> None:
    throttled = [client_error("LimitExceededException"), client_error("LimitExceededException")]
    client = ScriptedCostExplorer({TEAM_VIEW.name: throttled})
    sleep = SleepRecorder()

    spend = read(client, *RECENT, sleep=sleep, backoff_seconds=0.5)

    assert spend.missing == []
    assert sleep.delays == [0.5, 1.0]
    assert spend.retries == 2
    assert len(client.calls_of(TEAM_VIEW)) == 3
    assert spend.requests == len(client.calls) == 2 + len(VIEWS)


def test_throttling_spends_the_budget_too() -> None:
    client = ScriptedCostExplorer({TEAM_VIEW.name: itertools.repeat(client_error("ThrottlingException"))})

    spend = read(client, *RECENT, max_requests=4, max_attempts=6)

    assert len(client.calls) == spend.requests == 4
    assert missing_reasons(spend)["spend by team"].startswith("request budget of 4 reached")
    assert spend.retries == 3  # the fourth failure was not waited on: no request left to retry with


def test_a_view_failing_on_page_2_is_missing_and_nothing_of_it_is_cached(tmp_path: Path) -> None:
    start, end = date(2026, 8, 1), date(2026, 8, 4)  # final days: cached if read in full
    script = [
        page("page-2"),
        client_error("ServiceUnavailable", 503),
        client_error("ServiceUnavailable", 503),
    ]
    client = ScriptedCostExplorer({TEAM_VIEW.name: script})

    spend = read(client, start, end, cache_dir=tmp_path, max_attempts=2)

    assert len(client.calls_of(TEAM_VIEW)) == 3  # page 1, then page 2 twice
    assert client.calls_of(TEAM_VIEW)[-1]["NextPageToken"] == "page-2"
    assert spend.requests == len(client.calls) == 3 + len(OTHER_VIEWS)
    reason = "Cost Explorer kept failing (ServiceUnavailable) after 2 attempts"
    assert missing_reasons(spend) == {"spend by team": reason, "spend by environment": reason}
    assert TEAM_VIEW.name not in set(spend.frame["x_CostView"])
    assert cached_days(tmp_path) == {view.cache_key: iso_days(start, end) for view in OTHER_VIEWS}


# --- restatements and the cache ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "first_unsettled"),
    [
        (date(2026, 11, 23), date(2026, 10, 1)),
        (date(2026, 12, 1), date(2026, 11, 1)),
        (date(2027, 1, 5), date(2026, 12, 1)),
        (date(2027, 3, 31), date(2027, 2, 1)),
    ],
)
def test_the_current_and_previous_month_are_unsettled(today: date, first_unsettled: date) -> None:
    assert costs.first_unsettled_day(today) == first_unsettled


def test_a_restated_day_of_the_previous_month_reaches_the_next_run(tmp_path: Path) -> None:
    start, end = date(2026, 8, 30), date(2026, 10, 3)
    three_months_back, previous_month = date(2026, 8, 31), date(2026, 10, 2)
    ledger = Ledger({three_months_back: 5.0, previous_month: 7.0})
    client = ScriptedCostExplorer(default=ledger)

    first = read(client, start, end, cache_dir=tmp_path)

    assert first.requests == len(client.calls) == len(VIEWS)
    # Only final days are kept: August and September, not October.
    final = iso_days(start, FIRST_UNSETTLED)
    assert cached_days(tmp_path) == {view.cache_key: final for view in VIEWS}

    ledger.amounts = {three_months_back: 50.0, previous_month: 70.0}  # Cost Explorer restates both
    client.calls.clear()
    second = read(client, start, end, cache_dir=tmp_path)

    assert second.requests == len(client.calls) == len(VIEWS)
    assert {tuple(call["TimePeriod"].values()) for call in client.calls} == {("2026-10-01", "2026-10-03")}
    assert second.cached_view_days == len(final) * len(VIEWS)
    rows = second.frame[second.frame["x_CostView"] == costs.SERVICE_REGION_VIEW]
    billed = dict(zip(rows["ChargePeriodStart"].dt.date, rows["BilledCost"], strict=True))
    assert billed[previous_month] == 70.0  # re-read: the restatement is in the report
    assert billed[three_months_back] == 5.0  # final: served from the cache
    assert cached_days(tmp_path) == {view.cache_key: final for view in VIEWS}

    client.calls.clear()
    third = read(client, three_months_back, three_months_back + timedelta(days=1), cache_dir=tmp_path)
    assert client.calls == [] and third.requests == 0
    assert third.missing == []


def test_a_recent_day_cached_by_an_older_rule_is_dropped_and_asked_again(tmp_path: Path) -> None:
    day = date(2026, 10, 15)
    cache = costs.SpendCache(tmp_path, "test-account")
    view = costs.plan_views()[-2]
    cache.store(view, day, costs.DayResult(groups=[], estimated=False))
    client = ScriptedCostExplorer(default=Ledger({day: 3.0}))

    spend = read(client, day, day + timedelta(days=1), cache_dir=tmp_path)

    assert spend.requests == len(client.calls) == len(VIEWS)
    assert spend.cached_view_days == 0
    assert cached_days(tmp_path) == {view.cache_key: []}  # the stale day is gone
    rows = spend.frame[spend.frame["x_CostView"] == view.name]
    assert rows["BilledCost"].tolist() == [3.0]


def test_an_estimated_day_is_not_cached_nor_any_day_after_it(tmp_path: Path) -> None:
    start, end = date(2026, 9, 26), date(2026, 10, 1)
    estimated = date(2026, 9, 28)  # final by its date, but Cost Explorer still estimates it
    client = ScriptedCostExplorer(default=Ledger(estimated={estimated}))

    read(client, start, end, cache_dir=tmp_path)

    assert cached_days(tmp_path) == {view.cache_key: iso_days(start, estimated) for view in VIEWS}


# --- CLI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_budget_that_is_not_positive_fails_fast_with_one_line(value: str, tmp_path: Path) -> None:
    # A closed local port as the endpoint: any AWS call would fail at once, never reach AWS.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "MLP_COST_CACHE_DIR": str(tmp_path / "cache"),
    }
    mlp = Path(sys.executable).parent / "mlp"
    result = subprocess.run(
        [str(mlp), "report", "--out", str(tmp_path / "out"), "--max-ce-requests", value],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mlp: error: --max-ce-requests {value}: ")
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_an_unreachable_endpoint_is_that_view_missing_and_the_others_are_read() -> None:
    unreachable = botocore.exceptions.EndpointConnectionError(
        endpoint_url="https://ce.us-east-1.amazonaws.com"
    )
    client = ScriptedCostExplorer({TEAM_VIEW.name: [unreachable]})

    spend = read(client, *RECENT)

    # The environment breakdown is read from the same team+environment view.
    assert set(missing_reasons(spend)) == {"spend by team", "spend by environment"}
    assert "unreachable" in missing_reasons(spend)["spend by team"]
    assert len(client.calls_of(TEAM_VIEW)) == 1  # botocore already retried the connection
    assert spend.requests == len(VIEWS)


def test_credentials_expiring_mid_run_keep_what_was_read() -> None:
    expired = itertools.repeat(client_error("ExpiredTokenException"))
    client = ScriptedCostExplorer({view.name: expired for view in OTHER_VIEWS})

    spend = read(client, *RECENT)

    reasons = missing_reasons(spend)
    assert "spend by team" not in reasons and len(spend.frame) > 0
    assert reasons and all(
        "AWS rejected the credentials (ExpiredTokenException)" in why for why in reasons.values()
    )
    assert spend.requests == len(client.calls) == len(VIEWS)  # each refused view asked once, never retried
