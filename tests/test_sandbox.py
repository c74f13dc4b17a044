"""The sandbox's Cost Explorer answers equal sums computed from the seeded line items."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest

from finops import inventory
from finops.sandbox import LineItem, Sandbox, SeedManifest, seed_account
from finops.untagged import scan_untagged
from mlp import aws
from mlp.tags import DEFAULT_MANDATORY_TAGS, RUN_ID
from tests.sandbox_fixtures import sandbox_fixture  # noqa: F401

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def manifest(sandbox: Sandbox) -> SeedManifest:
    return seed_account(sandbox, now=NOW)


@pytest.fixture
def ce(sandbox: Sandbox, manifest: SeedManifest) -> Any:
    return sandbox.client("ce")


def fetch(ce: Any, **request: Any) -> tuple[list[dict[str, Any]], int]:
    """All ResultsByTime of a request, following NextPageToken; returns (results, pages)."""
    results: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = ce.get_cost_and_usage(**request)
        pages += 1
        results.extend(page["ResultsByTime"])
        if not page.get("NextPageToken"):
            return results, pages
        request["NextPageToken"] = page["NextPageToken"]


def grouped(results: list[dict[str, Any]], metric: str) -> dict[tuple[str, tuple[str, ...]], float]:
    sums: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
    for result in results:
        for group in result["Groups"]:
            sums[(result["TimePeriod"]["Start"], tuple(group["Keys"]))] += float(
                group["Metrics"][metric]["Amount"]
            )
    return dict(sums)


def expected(
    items: list[LineItem],
    period_start: Callable[[date], date],
    keys: Callable[[LineItem], tuple[str, ...]],
    value: Callable[[LineItem], float],
    start: date,
    end: date,
) -> dict[tuple[str, tuple[str, ...]], float]:
    sums: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
    for item in items:
        if start <= item.day < end:
            sums[(period_start(item.day).isoformat(), keys(item))] += value(item)
    return dict(sums)


def assert_sums_equal(actual: dict[Any, float], wanted: dict[Any, float]) -> None:
    assert set(actual) == set(wanted)
    for key, amount in wanted.items():
        assert actual[key] == pytest.approx(amount, rel=1e-6, abs=1e-6), key


def test_daily_spend_by_team_tag_pages_and_untagged_bucket(ce: Any, manifest: SeedManifest) -> None:
    start, end = NOW.date() - timedelta(days=30), NOW.date()
    results, pages = fetch(
        ce,
        TimePeriod={"Start": start.isoformat(), "End": end.isoformat()},
        Granularity="DAILY",
        Metrics=["UnblendedCost"],
        GroupBy=[{"Type": "TAG", "Key": "team"}],
    )

    wanted = expected(
        manifest.line_items,
        lambda d: d,
        lambda i: (f"team${i.tags.get('team', '')}",),
        lambda i: i.unblended_cost,
        start,
        end,
    )
    assert_sums_equal(grouped(results, "UnblendedCost"), wanted)
    assert pages > 1
    untagged = [amount for (_, keys), amount in wanted.items() if keys == ("team$",)]
    assert untagged and sum(untagged) > 0


def test_monthly_by_service_and_environment_amortized(ce: Any, manifest: SeedManifest) -> None:
    first, last = manifest.spend_days
    start, end = first, last + timedelta(days=1)
    results, _ = fetch(
        ce,
        TimePeriod={"Start": start.isoformat(), "End": end.isoformat()},
        Granularity="MONTHLY",
        Metrics=["AmortizedCost", "UsageQuantity"],
        GroupBy=[{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "TAG", "Key": "environment"}],
    )

    def month_start(day: date) -> date:
        return max(day.replace(day=1), start)

    def keys(item: LineItem) -> tuple[str, ...]:
        return (item.service, f"environment${item.tags.get('environment', '')}")

    assert_sums_equal(
        grouped(results, "AmortizedCost"),
        expected(manifest.line_items, month_start, keys, lambda i: i.amortized_cost, start, end),
    )
    assert_sums_equal(
        grouped(results, "UsageQuantity"),
        expected(manifest.line_items, month_start, keys, lambda i: i.usage_quantity, start, end),
    )
    assert [r["TimePeriod"]["Start"] for r in results] == sorted({r["TimePeriod"]["Start"] for r in results})


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ({"Tags": {"Key": "team", "MatchOptions": ["ABSENT"]}}, lambda i: not i.tags.get("team")),
        (
            {"Dimensions": {"Key": "PURCHASE_TYPE", "Values": ["Spot Instances"]}},
            lambda i: i.purchase_type == "Spot Instances",
        ),
        (
            {
                "And": [
                    {"Dimensions": {"Key": "REGION", "Values": ["us-west-2"]}},
                    {"Not": {"Tags": {"Key": "environment", "Values": ["prod"]}}},
                ]
            },
            lambda i: i.region == "us-west-2" and i.tags.get("environment") != "prod",
        ),
        (
            {
                "Or": [
                    {"Tags": {"Key": "team", "Values": ["vision"]}},
                    {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Simple Storage Service"]}},
                ]
            },
            lambda i: i.tags.get("team") == "vision" or i.service == "Amazon Simple Storage Service",
        ),
        (
            {"Tags": {"Key": RUN_ID, "Values": ["nlp-"], "MatchOptions": ["STARTS_WITH"]}},
            lambda i: i.tags.get(RUN_ID, "").startswith("nlp-"),
        ),
    ],
)
def test_filters(
    ce: Any, manifest: SeedManifest, expression: dict[str, Any], selected: Callable[[LineItem], bool]
) -> None:
    first, last = manifest.spend_days
    results, _ = fetch(
        ce,
        TimePeriod={"Start": first.isoformat(), "End": (last + timedelta(days=1)).isoformat()},
        Granularity="DAILY",
        Metrics=["UnblendedCost"],
        Filter=expression,
    )

    actual = {r["TimePeriod"]["Start"]: float(r["Total"]["UnblendedCost"]["Amount"]) for r in results}
    wanted: dict[str, float] = defaultdict(float)
    for item in manifest.line_items:
        wanted[item.day.isoformat()] += item.unblended_cost if selected(item) else 0.0
    assert sum(wanted.values()) > 0
    assert actual == pytest.approx(dict(wanted), rel=1e-6, abs=1e-6)


def test_instance_type_and_linked_account_dimensions(ce: Any, manifest: SeedManifest) -> None:
    first, last = manifest.spend_days
    end = last + timedelta(days=1)
    results, _ = fetch(
        ce,
        TimePeriod={"Start": first.isoformat(), "End": end.isoformat()},
        Granularity="MONTHLY",
        Metrics=["UnblendedCost"],
        GroupBy=[
            {"Type": "DIMENSION", "Key": "INSTANCE_TYPE"},
            {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"},
        ],
    )

    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for (_, keys), amount in grouped(results, "UnblendedCost").items():
        totals[keys] += amount
    wanted: dict[tuple[str, ...], float] = defaultdict(float)
    for item in manifest.line_items:
        wanted[(item.instance_type or "NoInstanceType", item.linked_account)] += item.unblended_cost
    assert totals == pytest.approx(dict(wanted), rel=1e-6)
    assert ("NoInstanceType", manifest.account_id) in totals


def test_end_date_is_exclusive_and_recent_days_are_estimated(ce: Any, manifest: SeedManifest) -> None:
    first, last = manifest.spend_days
    day = last - timedelta(days=5)
    [single], _ = fetch(
        ce,
        TimePeriod={"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        Granularity="DAILY",
        Metrics=["UnblendedCost"],
    )
    assert float(single["Total"]["UnblendedCost"]["Amount"]) == pytest.approx(
        sum(item.unblended_cost for item in manifest.line_items if item.day == day)
    )

    results, _ = fetch(
        ce,
        TimePeriod={"Start": first.isoformat(), "End": (last + timedelta(days=1)).isoformat()},
        Granularity="DAILY",
        Metrics=["UnblendedCost"],
    )
    estimated = [r["TimePeriod"]["Start"] for r in results if r["Estimated"]]
    assert estimated == [(last - timedelta(days=1)).isoformat(), last.isoformat()]
    assert last == manifest.now.date() - timedelta(days=1)


@pytest.mark.parametrize(
    "change",
    [
        {"GroupBy": [{"Type": "TAG", "Key": k} for k in ("team", "project", "environment")]},
        {"TimePeriod": {"Start": "2026-11-10", "End": "2026-11-10"}},
        {"TimePeriod": {"Start": "2026-11-10", "End": "10/11/2026"}},
        {"Granularity": "HOURLY"},
        {"Metrics": ["Dollars"]},
        {"Filter": {"And": [{"Tags": {"Key": "team", "Values": ["nlp"]}}]}},
        {
            "Filter": {
                "Tags": {"Key": "team", "Values": ["nlp"]},
                "Dimensions": {"Key": "REGION", "Values": ["x"]},
            }
        },
        {"NextPageToken": "not-a-token"},
    ],
)
def test_invalid_requests_are_validation_errors(ce: Any, change: dict[str, Any]) -> None:
    request = {
        "TimePeriod": {"Start": "2026-11-01", "End": "2026-11-10"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        **change,
    }
    with pytest.raises(botocore.exceptions.ClientError) as error:
        ce.get_cost_and_usage(**request)
    assert error.value.response["Error"]["Code"] == "ValidationException"


def test_throttling_then_retries(
    sandbox: Sandbox, manifest: SeedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {
        "TimePeriod": {"Start": "2026-11-01", "End": "2026-11-03"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
    }
    sandbox.cost_explorer.throttle_next(1)
    with pytest.raises(botocore.exceptions.ClientError) as error:
        sandbox.client("ce", max_attempts=1).get_cost_and_usage(**request)
    assert error.value.response["Error"]["Code"] == "LimitExceededException"

    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    before = sandbox.cost_explorer.requests
    sandbox.cost_explorer.throttle_next(2)
    answer = aws.client("ce", aws.COST_EXPLORER_REGION).get_cost_and_usage(**request)
    assert len(answer["ResultsByTime"]) == 2
    assert sandbox.cost_explorer.requests - before == 3


def test_forecast_is_the_recent_daily_average(ce: Any, manifest: SeedManifest) -> None:
    today = manifest.now.date()
    end = today + timedelta(days=10)
    answer = ce.get_cost_forecast(
        TimePeriod={"Start": today.isoformat(), "End": end.isoformat()},
        Metric="UNBLENDED_COST",
        Granularity="DAILY",
    )
    recent = sum(i.unblended_cost for i in manifest.line_items if today - timedelta(days=14) <= i.day < today)
    assert float(answer["Total"]["Amount"]) == pytest.approx(recent / 14 * 10, rel=1e-6)
    assert len(answer["ForecastResultsByTime"]) == 10


def test_seeded_spend_is_consistent_with_the_account(manifest: SeedManifest) -> None:
    first, last = manifest.spend_days
    assert (last - first).days + 1 == 60
    assert {item.tags.get("team") for item in manifest.line_items} >= {*manifest.teams, None}
    assert {item.tags.get("environment") for item in manifest.line_items} >= set(manifest.environments)
    assert {item.region for item in manifest.line_items} == set(manifest.regions)
    assert {item.purchase_type for item in manifest.line_items} == {
        "On Demand Instances",
        "Spot Instances",
        "Savings Plans",
    }
    # Some spend is untagged, some only partly tagged.
    assert any(not item.tags for item in manifest.line_items)
    assert any(0 < len(set(item.tags) & set(DEFAULT_MANDATORY_TAGS)) < 6 for item in manifest.line_items)
    # The finished run left spend and its volumes behind, all carrying its run-id.
    assert any(item.tags.get(RUN_ID) == manifest.finished_run_id for item in manifest.line_items)
    assert manifest.leftover_volumes
    assert all(volume.tags[RUN_ID] == manifest.finished_run_id for volume in manifest.leftover_volumes)
    # Every running GPU instance older than a day has spend under its own tags yesterday.
    yesterday = manifest.now.date() - timedelta(days=1)
    for instance in manifest.instances:
        if instance.state == "running" and instance.launched_at.date() < yesterday:
            assert any(
                item.day == yesterday
                and item.instance_type == instance.instance_type
                and item.tags == instance.tags
                for item in manifest.line_items
            ), instance.name


def test_the_seed_covers_every_kind_the_untagged_scan_checks(
    sandbox: Sandbox, manifest: SeedManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    regions = list(manifest.regions)
    reported = {finding.arn for finding in scan_untagged(regions).findings}

    for resource_type in inventory.untagged_scan_types():
        kind = resource_type.kind
        seeded = {r.arn for r in manifest.resources if r.resource_type == kind}
        untagged = {r.arn for r in manifest.untagged if r.resource_type == kind}
        assert seeded and untagged, f"finops/sandbox/seed.py seeds no untagged {kind}"
        found = {r.arn for r in inventory.scan([kind], regions, manifest.account_id)}
        assert seeded <= found, kind
        assert untagged <= reported, kind


def test_indexed_metric_data_answers_exactly_like_moto(manifest: SeedManifest) -> None:
    from moto.cloudwatch.models import cloudwatch_backends

    from finops.sandbox import metric_index

    backend = cloudwatch_backends[manifest.account_id]["us-east-1"]
    end = manifest.now.replace(tzinfo=None)
    start = end - timedelta(hours=24)

    def query(number: int, namespace: str, name: str, instance_id: str | None, stat: str) -> dict[str, Any]:
        dimensions = [{"Name": "InstanceId", "Value": instance_id}] if instance_id else []
        metric = {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions}
        return {"Id": f"q{number}", "MetricStat": {"Metric": metric, "Period": 3600, "Stat": stat}}

    instance_ids = [i.instance_id for i in manifest.instances if i.region == "us-east-1"] + ["i-absent"]
    queries = [
        query(n, namespace, name, instance_id, stat)
        for n, (namespace, name, instance_id, stat) in enumerate(
            [
                (namespace, name, instance_id, stat)
                for instance_id in instance_ids
                for namespace, name in (
                    ("CWAgent", "nvidia_smi_utilization_gpu"),
                    ("AWS/EC2", "CPUUtilization"),
                )
                for stat in ("Maximum", "Average")
            ]
            + [("CWAgent", "nvidia_smi_utilization_gpu", None, "Maximum")]
        )
    ]

    indexed = metric_index._indexed_get_metric_data(backend, queries, start, end)
    original = metric_index._original_get_metric_data(backend, queries, start, end)

    assert indexed == original
    assert sum(len(result["values"]) for result in original) > 0
