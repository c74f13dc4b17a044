"""Cost Explorer reading: views, paging, untagged buckets, Estimated days, retries, cache, request counts.

(Faults of Cost Explorer itself, the request budget and restatements: tests/test_costs_faults.py.)

Cost Explorer is the sandbox's emulator (the one the demo serves over HTTP) behind a boto3-shaped
client, over line items made here, so every expectation is a sum over those line items.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from finops import costs
from finops.analysis import Period, analyze_spend
from finops.sandbox.cost_explorer import CostExplorerEmulator, CostExplorerError, LineItem
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
TODAY = NOW.date()
# Days before this one are final (before the previous billing month of TODAY): the only ones cached.
FIRST_UNSETTLED = date(2026, 10, 1)
SERVICES = ("Amazon Elastic Compute Cloud - Compute", "Amazon Simple Storage Service")
REGIONS = ("us-east-1", "us-west-2")
PURCHASES = (
    ("On Demand Instances", "g5.xlarge"),
    ("Spot Instances", "g5.2xlarge"),
    ("Savings Plans", "m6i.xlarge"),
)


def full_tags(team: str, environment: str) -> dict[str, str]:
    return {
        "team": team,
        "project": f"{team}-project",
        "environment": environment,
        "cost-center": f"cc-{team}",
        "owner": f"{team}@example.com",
        "managed-by": "pulumi",
    }


TAG_SETS: tuple[dict[str, str], ...] = (
    full_tags("vision", "dev"),
    full_tags("nlp", "prod"),
    full_tags("recsys", "prod"),
    {"team": "nlp", "environment": "dev"},  # partly tagged
    {},  # never tagged
)


def make_line_items(days: int = 40, seed: int = 7) -> list[LineItem]:
    """Daily spend of every service x region x purchase type x tag set, with seeded amounts."""
    rng = random.Random(seed)
    items = []
    for offset in range(1, days + 1):
        day = TODAY - timedelta(days=offset)
        for service in SERVICES:
            for region in REGIONS:
                for purchase_type, instance_type in PURCHASES:
                    for tag_set in TAG_SETS:
                        if rng.random() < 0.3:
                            continue
                        compute = service.endswith("Compute")
                        cost = round(rng.uniform(0.5, 40.0), 4)
                        items.append(
                            LineItem(
                                day=day,
                                service=service,
                                region=region,
                                purchase_type=purchase_type if compute else "On Demand Instances",
                                instance_type=instance_type if compute else None,
                                linked_account="123456789012",
                                tags=tag_set,
                                unblended_cost=cost,
                                amortized_cost=round(cost * 0.9, 4),
                                usage_quantity=round(rng.uniform(1, 24), 3),
                            )
                        )
    return items


class EmulatedCostExplorer:
    """A boto3-shaped Cost Explorer client answering from the sandbox's emulator; records requests."""

    def __init__(self, emulator: CostExplorerEmulator) -> None:
        self.emulator = emulator
        self.calls: list[dict[str, Any]] = []

    def get_cost_and_usage(self, **request: Any) -> dict[str, Any]:
        self.calls.append(copy.deepcopy(request))
        try:
            return self.emulator.handle("GetCostAndUsage", request)
        except CostExplorerError as exc:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": exc.code, "Message": exc.message},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "GetCostAndUsage",
            ) from None


@pytest.fixture
def line_items() -> list[LineItem]:
    return make_line_items()


def emulated_client(line_items: list[LineItem]) -> EmulatedCostExplorer:
    emulator = CostExplorerEmulator(page_size=23)
    emulator.load(line_items, NOW)
    return EmulatedCostExplorer(emulator)


@pytest.fixture
def client(line_items: list[LineItem]) -> EmulatedCostExplorer:
    return emulated_client(line_items)


@pytest.fixture
def history_client() -> EmulatedCostExplorer:
    """Spend back to September: some days before FIRST_UNSETTLED, so final and cached."""
    return emulated_client(make_line_items(days=75))


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def read(
    client: Any, start: date, end: date, cache_dir: Path | None = None, **reader_options: Any
) -> costs.Spend:
    cache = costs.SpendCache(cache_dir, "test-account") if cache_dir is not None else None
    reader_options.setdefault("today", TODAY)
    reader = costs.CostExplorerReader(client, cache=cache, sleep=SleepRecorder(), **reader_options)
    return costs.read_spend(reader, start, end)


def view_rows(spend: costs.Spend, name: str):
    return spend.frame[spend.frame["x_CostView"] == name]


def in_period(items: list[LineItem], start: date, end: date) -> list[LineItem]:
    return [item for item in items if start <= item.day < end]


def test_views_cover_every_breakdown_with_at_most_two_group_by_keys() -> None:
    views = costs.plan_views(DEFAULT_MANDATORY_TAGS)
    assert all(1 <= len(view.request()["GroupBy"]) <= costs.MAX_GROUP_BY for view in views)
    tag_keys = [key for view in views if view.filter is None for key in view.tag_keys]
    assert sorted(tag_keys) == sorted(DEFAULT_MANDATORY_TAGS)  # each mandatory key in exactly one view
    assert views[0].tag_keys == ("team", "environment")
    dimensions = {key for view in views for kind, key in view.group_by if kind == "DIMENSION"}
    assert {"SERVICE", "REGION", "PURCHASE_TYPE", "INSTANCE_TYPE"} <= dimensions
    assert len({view.cache_key for view in views}) == len(views)


def test_report_keeps_team_and_environment_even_when_not_mandatory() -> None:
    assert costs.report_tag_keys(["owner"]) == ("team", "environment", "owner")
    views = {view.name: view for view in costs.plan_views(["owner"])}
    assert "tags:team+environment" in views
    # Untagged spend is spend missing a *mandatory* tag: only `owner` here.
    assert views[costs.UNTAGGED_VIEW].filter == costs.untagged_filter(["owner"])


def test_untagged_filter_is_valid_for_one_and_several_keys() -> None:
    assert costs.untagged_filter(["team"]) == {"Tags": {"Key": "team", "MatchOptions": ["ABSENT"]}}
    assert len(costs.untagged_filter(["team", "owner"])["Or"]) == 2


def test_spend_by_tag_keeps_the_untagged_bucket(
    client: EmulatedCostExplorer, line_items: list[LineItem]
) -> None:
    start, end = TODAY - timedelta(days=30), TODAY
    spend = read(client, start, end)

    assert spend.missing == []
    rows = view_rows(spend, "tags:team+environment")
    got = rows.groupby(costs.tag_column("team"))["BilledCost"].sum().to_dict()
    expected: dict[str, float] = defaultdict(float)
    for item in in_period(line_items, start, end):
        expected[item.tags.get("team", "")] += item.unblended_cost
    assert got.keys() == expected.keys()
    assert "" in got  # the `team$` bucket: spend without the tag
    for team, amount in expected.items():
        assert got[team] == pytest.approx(amount)
    untagged_rows = rows[rows[costs.tag_column("team")] == ""]
    assert (untagged_rows["Tags"].map(lambda tags: "team" not in tags)).all()


def test_every_view_but_untagged_sums_to_the_total(
    client: EmulatedCostExplorer, line_items: list[LineItem]
) -> None:
    start, end = TODAY - timedelta(days=30), TODAY
    spend = read(client, start, end)
    total = sum(item.unblended_cost for item in in_period(line_items, start, end))
    amortized = sum(item.amortized_cost for item in in_period(line_items, start, end))
    for view in costs.plan_views(spend.mandatory_tags):
        rows = view_rows(spend, view.name)
        if view.name == costs.UNTAGGED_VIEW:
            continue
        assert rows["BilledCost"].sum() == pytest.approx(total), view.name
        assert rows["EffectiveCost"].sum() == pytest.approx(amortized), view.name


def test_untagged_view_is_spend_missing_any_mandatory_tag(
    client: EmulatedCostExplorer, line_items: list[LineItem]
) -> None:
    start, end = TODAY - timedelta(days=30), TODAY
    spend = read(client, start, end)
    expected = sum(
        item.unblended_cost
        for item in in_period(line_items, start, end)
        if any(not item.tags.get(key) for key in DEFAULT_MANDATORY_TAGS)
    )
    assert view_rows(spend, costs.UNTAGGED_VIEW)["BilledCost"].sum() == pytest.approx(expected)


def test_focus_columns_and_pricing_categories(client: EmulatedCostExplorer) -> None:
    spend = read(client, TODAY - timedelta(days=5), TODAY)
    frame = spend.frame
    assert list(frame.columns[: len(costs.FOCUS_COLUMNS)]) == list(costs.FOCUS_COLUMNS)
    assert (frame["ChargePeriodEnd"] - frame["ChargePeriodStart"] == timedelta(days=1)).all()
    assert str(frame["ChargePeriodStart"].dt.tz) == "UTC"
    purchase = view_rows(spend, costs.PURCHASE_VIEW)
    categories = dict(zip(purchase["x_PurchaseType"], purchase["PricingCategory"], strict=True))
    assert categories == {
        "On Demand Instances": "Standard",
        "Spot Instances": "Dynamic",
        "Savings Plans": "Committed",
    }
    assert purchase["ConsumedQuantity"].notna().all()
    assert view_rows(spend, costs.SERVICE_REGION_VIEW)["ConsumedQuantity"].isna().all()


@pytest.mark.parametrize(
    ("purchase_type", "category"),
    [
        ("On Demand Instances", "Standard"),
        ("Spot Instances", "Dynamic"),
        ("Savings Plans", "Committed"),
        ("Standard Reserved Instances", "Committed"),
        ("Dedicated Host Usage", "Other"),
    ],
)
def test_pricing_category(purchase_type: str, category: str) -> None:
    assert costs.pricing_category(purchase_type) == category


def test_every_page_is_followed_and_counted(client: EmulatedCostExplorer, line_items: list[LineItem]) -> None:
    start, end = TODAY - timedelta(days=30), TODAY
    spend = read(client, start, end)

    assert spend.requests == len(client.calls)
    assert len(client.calls) > len(costs.plan_views(spend.mandatory_tags))  # the page size forced paging
    follow_ups = [call for call in client.calls if "NextPageToken" in call]
    assert follow_ups, "no request passed a NextPageToken"
    # One frame row per (day, team, environment) present in the line items: nothing lost between pages.
    groups = {
        (item.day, item.tags.get("team", ""), item.tags.get("environment", ""))
        for item in in_period(line_items, start, end)
    }
    assert len(view_rows(spend, "tags:team+environment")) == len(groups)


def test_estimated_days_are_flagged(client: EmulatedCostExplorer) -> None:
    spend = read(client, TODAY - timedelta(days=10), TODAY)
    estimated_days = set(spend.frame.loc[spend.frame["x_Estimated"], "ChargePeriodStart"].dt.date)
    first_estimated = TODAY - timedelta(days=2)  # the emulator, like AWS, estimates the last days
    assert estimated_days == {first_estimated, first_estimated + timedelta(days=1)}


def test_second_run_asks_only_for_days_not_cached(
    history_client: EmulatedCostExplorer, tmp_path: Path
) -> None:
    client = history_client
    start, end = TODAY - timedelta(days=70), TODAY
    first = read(client, start, end, cache_dir=tmp_path)
    first_calls = len(client.calls)
    client.calls.clear()

    second = read(client, start, end, cache_dir=tmp_path)

    assert second.requests < first.requests
    assert second.requests == len(client.calls)
    # Final days come from the cache; October and November may still be restated, so are asked again.
    asked_from = {date.fromisoformat(call["TimePeriod"]["Start"]) for call in client.calls}
    assert asked_from == {FIRST_UNSETTLED}
    assert second.cached_view_days == (FIRST_UNSETTLED - start).days * len(
        costs.plan_views(first.mandatory_tags)
    )
    columns = ["x_CostView", "ChargePeriodStart", "BilledCost", "Tags"]
    ordered = sorted(first.frame[columns].itertuples(index=False))
    assert sorted(second.frame[columns].itertuples(index=False)) == ordered
    assert first_calls == first.requests


def test_unreadable_cache_file_is_asked_again(history_client: EmulatedCostExplorer, tmp_path: Path) -> None:
    client = history_client
    start, end = FIRST_UNSETTLED - timedelta(days=6), FIRST_UNSETTLED - timedelta(days=3)
    read(client, start, end, cache_dir=tmp_path)
    corrupted = sorted(tmp_path.rglob(f"{start.isoformat()}.json"))
    assert corrupted
    for path in corrupted:
        path.write_text("{not json")
    client.calls.clear()

    again = read(client, start, end, cache_dir=tmp_path)

    assert {call["TimePeriod"]["Start"] for call in client.calls} == {start.isoformat()}
    assert {call["TimePeriod"]["End"] for call in client.calls} == {(start + timedelta(days=1)).isoformat()}
    assert again.missing == []


def test_throttling_is_retried_with_exponential_backoff(client: EmulatedCostExplorer) -> None:
    client.emulator.throttle_next(3)
    sleep = SleepRecorder()
    reader = costs.CostExplorerReader(client, sleep=sleep, backoff_seconds=0.5, today=TODAY)
    spend = costs.read_spend(reader, TODAY - timedelta(days=3), TODAY)

    assert spend.missing == []
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert spend.retries == 3
    # Throttled attempts count too: the request budget bounds every call that may be billed.
    assert spend.requests == len(client.calls) == len(costs.plan_views()) + 3


def test_a_view_still_failing_after_retries_is_named_missing(client: EmulatedCostExplorer) -> None:
    client.emulator.throttle_next(4)  # exactly the attempts of the first view's first page
    spend = read(client, TODAY - timedelta(days=3), TODAY, max_attempts=4)

    assert [part.part for part in spend.missing] == ["spend by team", "spend by environment"]
    assert "LimitExceededException" in spend.missing[0].reason
    assert "tags:team+environment" not in spend.complete_views
    assert not (spend.frame["x_CostView"] == "tags:team+environment").any()
    assert costs.SERVICE_REGION_VIEW in spend.complete_views  # the other views were still read


def test_a_refused_request_is_not_retried(client: EmulatedCostExplorer) -> None:
    def refuse(**request: Any) -> dict[str, Any]:
        client.calls.append(request)
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "DataUnavailableException", "Message": "Data is not available"}},
            "GetCostAndUsage",
        )

    client.get_cost_and_usage = refuse  # type: ignore[method-assign]
    spend = read(client, TODAY - timedelta(days=3), TODAY)

    assert len(client.calls) == len(costs.plan_views(spend.mandatory_tags))
    assert spend.retries == 0
    assert {part.part for part in spend.missing} >= {"spend by team", "untagged spend", "spend by service"}
    assert all("DataUnavailableException" in part.reason for part in spend.missing)
    assert spend.frame.empty


def test_read_timeouts_are_retried(client: EmulatedCostExplorer) -> None:
    answer = client.get_cost_and_usage
    failures = iter([True, True])

    def flaky(**request: Any) -> dict[str, Any]:
        if next(failures, False):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://ce.us-east-1.amazonaws.com")
        return answer(**request)

    client.get_cost_and_usage = flaky  # type: ignore[method-assign]
    spend = read(client, TODAY - timedelta(days=2), TODAY)
    assert spend.missing == []
    assert spend.retries == 2


def test_rejected_credentials_are_a_user_error(client: EmulatedCostExplorer) -> None:
    def reject(**request: Any) -> dict[str, Any]:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "UnrecognizedClientException", "Message": "bad token"}}, "GetCostAndUsage"
        )

    client.get_cost_and_usage = reject  # type: ignore[method-assign]
    with pytest.raises(UserError, match="rejected the credentials"):
        read(client, TODAY - timedelta(days=2), TODAY)


def test_requests_are_valid_for_the_real_client_and_follow_page_tokens() -> None:
    """botocore validates every parameter against the Cost Explorer model, NextPageToken included."""
    ce = boto3.client("ce", region_name="us-east-1")
    view = costs.plan_views()[-1]  # the filtered one: the most complex request
    start, end = TODAY - timedelta(days=2), TODAY
    base = {**view.request(), "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()}}

    def day_result(day: date, amount: str) -> dict[str, Any]:
        metrics = {metric: {"Amount": amount, "Unit": "USD"} for metric in costs.COST_METRICS}
        return {
            "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
            "Groups": [{"Keys": [SERVICES[0], "us-east-1"], "Metrics": metrics}],
            "Estimated": False,
        }

    with Stubber(ce) as stubber:
        stubber.add_response(
            "get_cost_and_usage",
            {"ResultsByTime": [day_result(start, "1.5")], "NextPageToken": "page-2"},
            base,
        )
        stubber.add_response(
            "get_cost_and_usage",
            {"ResultsByTime": [day_result(start + timedelta(days=1), "2.25")]},
            {**base, "NextPageToken": "page-2"},
        )
        reader = costs.CostExplorerReader(ce, sleep=SleepRecorder())
        results = reader.read_view(view, start, end)
        stubber.assert_no_pending_responses()

    assert reader.requests == 2
    assert sorted(results) == [start, start + timedelta(days=1)]


def test_cost_of_one_tag_value(client: EmulatedCostExplorer, line_items: list[LineItem]) -> None:
    start, end = TODAY - timedelta(days=20), TODAY
    expected = sum(
        item.unblended_cost for item in in_period(line_items, start, end) if item.tags.get("team") == "nlp"
    )
    cost = costs.tag_value_cost_usd("team", "nlp", start, end, client=client, sleep=SleepRecorder())
    assert cost == pytest.approx(expected, abs=0.006)
    assert costs.tag_value_cost_usd("team", "nobody", start, end, client=client) is None
    client.emulator.throttle_next(100)
    assert costs.tag_value_cost_usd("team", "nlp", start, end, client=client, sleep=SleepRecorder()) is None


class TwoAccountsCostExplorer:
    """Answers the account+service view only, naming one account of two in DimensionValueAttributes."""

    GROUPS = {
        "2026-11-19": [("222222222222", "Amazon EC2", 100.0)],  # the previous period's
        "2026-11-20": [("111111111111", "Amazon EC2", 10.0), ("222222222222", "Amazon S3", 2.5)],
        "2026-11-21": [("111111111111", "Amazon S3", 5.0)],
    }

    def get_cost_and_usage(self, **request: Any) -> dict[str, Any]:
        if [group["Key"] for group in request["GroupBy"]] != ["LINKED_ACCOUNT", "SERVICE"]:
            return {"ResultsByTime": []}
        return {
            "ResultsByTime": [
                {
                    "TimePeriod": {"Start": day, "End": day},
                    "Groups": [
                        {
                            "Keys": [account, service],
                            "Metrics": {
                                "UnblendedCost": {"Amount": str(usd), "Unit": "USD"},
                                "AmortizedCost": {"Amount": str(usd), "Unit": "USD"},
                            },
                        }
                        for account, service, usd in groups
                    ],
                }
                for day, groups in self.GROUPS.items()
            ],
            "DimensionValueAttributes": [
                {"Value": "111111111111", "Attributes": {"description": "research"}},
            ],
        }


def test_spend_by_account_from_cost_explorer_names_accounts_it_describes() -> None:
    period = Period(date(2026, 11, 20), date(2026, 11, 22))
    reader = costs.CostExplorerReader(TwoAccountsCostExplorer(), today=TODAY)
    spend = costs.read_spend(reader, period.fetch_start, period.end)
    # $15.00 + $2.50 in the period; the $100 of the day before is the previous period's.
    assert analyze_spend(spend, period).by_account == [
        {"account_id": "111111111111", "account_name": "research", "usd": 15.0, "share": 0.8571},
        {"account_id": "222222222222", "account_name": "222222222222", "usd": 2.5, "share": 0.1429},
    ]
