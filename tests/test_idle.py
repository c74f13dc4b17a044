"""Idle GPU detection against moto in-process, with metrics put at known times."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.cloudwatch.models import CloudWatchBackend
from moto.ec2.models import ec2_backends

from finops import idle
from finops.idle import (
    CPU_METRIC,
    GPU_METRIC,
    LOOKBACK_HOURS,
    MAX_QUERIES_PER_CALL,
    IdleFinding,
    scan_idle,
)
from finops.scope import ScanScope, single_account_scope
from mlp import pricing
from mlp.errors import UserError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ACCOUNT = "123456789012"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def metric_data_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts GetMetricData calls as moto's backend receives them, with their query counts."""
    calls: list[int] = []
    original = CloudWatchBackend.get_metric_data

    def counting(self: CloudWatchBackend, queries: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(queries))
        return original(self, queries, *args, **kwargs)

    monkeypatch.setattr(CloudWatchBackend, "get_metric_data", counting)
    return calls


def launch(
    count: int = 1,
    *,
    instance_type: str = "g5.xlarge",
    age_hours: float = 30,
    spot: bool = False,
    tags: dict[str, str] | None = None,
    region: str = "us-east-1",
) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region)
    request: dict[str, Any] = {
        "ImageId": "ami-12c6146b",
        "MinCount": count,
        "MaxCount": count,
        "InstanceType": instance_type,
    }
    if spot:
        request["InstanceMarketOptions"] = {"MarketType": "spot"}
    if tags:
        request["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    ids = [instance["InstanceId"] for instance in ec2.run_instances(**request)["Instances"]]
    launched = (NOW - timedelta(hours=age_hours)).replace(tzinfo=None)
    for instance_id in ids:
        ec2_backends[ACCOUNT][region].get_instance(instance_id).launch_time = launched
    return ids


def put(
    metric: tuple[str, str],
    instance_ids: list[str],
    samples: list[tuple[float, float]],
    region: str = "us-east-1",
) -> None:
    """Samples as (hours before NOW, value) for each instance."""
    namespace, name = metric
    data = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": NOW - timedelta(hours=hours_ago),
            "Value": value,
        }
        for instance_id in instance_ids
        for hours_ago, value in samples
    ]
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    for start in range(0, len(data), 1000):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 1000])


def idle_samples(value: float = 1.0, hours: int = 30) -> list[tuple[float, float]]:
    return [(hour + 0.5, value) for hour in range(hours)]


def scope_of(*regions: str) -> ScanScope:
    return single_account_scope(regions, ACCOUNT)


def by_id(findings: list[IdleFinding]) -> dict[str, IdleFinding]:
    return {finding.resource_id: finding for finding in findings}


def test_1200_instances_take_three_metric_calls(aws: None, metric_data_calls: list[int]) -> None:
    ids = launch(1200)
    put(GPU_METRIC, ids, [(2.0, 1.0)])

    scan = scan_idle(scope_of("us-east-1"), now=NOW)

    assert len(metric_data_calls) == 3 == scan.cloudwatch_calls
    assert max(metric_data_calls) <= MAX_QUERIES_PER_CALL
    assert sum(metric_data_calls) == 1200
    assert {finding.resource_id for finding in scan.findings} == set(ids)
    assert scan.instances_scanned == 1200


@pytest.mark.parametrize("count", [1, 500, 501])
def test_calls_grow_with_instances_over_500(aws: None, metric_data_calls: list[int], count: int) -> None:
    launch(count)  # no metrics at all: one GPU pass, then one CPU pass over every instance

    scan = scan_idle(scope_of("us-east-1"), now=NOW)

    assert len(metric_data_calls) == scan.cloudwatch_calls == 2 * math.ceil(count / MAX_QUERIES_PER_CALL)
    assert scan.findings == []
    assert len(scan.not_judged) == count


def test_gpu_idle_is_judged_on_gpu_even_when_cpu_is_busy(aws: None) -> None:
    [instance_id] = launch()
    put(GPU_METRIC, [instance_id], idle_samples(2.0))
    put(CPU_METRIC, [instance_id], idle_samples(80.0))

    [finding] = scan_idle(scope_of("us-east-1"), now=NOW).findings

    assert finding.resource_id == instance_id
    assert finding.telemetry == "gpu"
    assert finding.gpu_util_max == 2.0
    assert finding.cpu_util_max is None


def test_cpu_is_the_fallback_without_gpu_telemetry(aws: None, metric_data_calls: list[int]) -> None:
    idle_cpu, busy_cpu, with_gpu = launch(3)
    put(CPU_METRIC, [idle_cpu], idle_samples(3.0))
    put(CPU_METRIC, [busy_cpu], idle_samples(40.0))
    put(GPU_METRIC, [with_gpu], idle_samples(50.0))

    scan = scan_idle(scope_of("us-east-1"), now=NOW)

    [finding] = scan.findings
    assert finding.resource_id == idle_cpu
    assert (finding.telemetry, finding.gpu_util_max, finding.cpu_util_max) == ("cpu", None, 3.0)
    # GPU for all three, CPU only for the two without GPU data.
    assert metric_data_calls == [3, 2]


def test_instances_younger_than_the_window_are_not_judged(aws: None) -> None:
    [young] = launch(age_hours=2)
    [old] = launch(age_hours=7)
    put(GPU_METRIC, [young, old], idle_samples(0.0, hours=2))

    scan = scan_idle(scope_of("us-east-1"), window_hours=6, now=NOW)

    assert [finding.resource_id for finding in scan.findings] == [old]
    assert [skipped["resource_id"] for skipped in scan.not_judged] == [young]


def test_threshold_is_strict(aws: None) -> None:
    at_threshold, under = launch(2)
    put(GPU_METRIC, [at_threshold], [*idle_samples(1.0), (1.0, 5.0)])
    put(GPU_METRIC, [under], [*idle_samples(1.0), (1.0, 4.99)])

    scan = scan_idle(scope_of("us-east-1"), threshold_pct=5.0, now=NOW)

    assert [finding.resource_id for finding in scan.findings] == [under]


def test_a_busy_hour_inside_the_window_means_not_idle(aws: None) -> None:
    [instance_id] = launch()
    put(GPU_METRIC, [instance_id], [*idle_samples(1.0), (5.5, 60.0)])

    assert scan_idle(scope_of("us-east-1"), window_hours=6, now=NOW).findings == []
    assert scan_idle(scope_of("us-east-1"), window_hours=5, now=NOW).findings != []


def test_idle_hours_run_back_to_the_last_busy_hour_the_launch_or_the_lookback(aws: None) -> None:
    [after_busy] = launch(age_hours=30)
    [since_launch] = launch(age_hours=8)
    [since_lookback] = launch(age_hours=48)
    put(GPU_METRIC, [after_busy], [*idle_samples(1.0), (10.5, 90.0)])
    put(GPU_METRIC, [since_launch], idle_samples(1.0, hours=8))
    put(GPU_METRIC, [since_lookback], idle_samples(1.0))

    findings = by_id(scan_idle(scope_of("us-east-1"), now=NOW).findings)

    # The busy sample falls in the hourly period ending 10 h before NOW.
    assert findings[after_busy].idle_hours == 10.0
    assert findings[since_launch].idle_hours == 8.0
    assert findings[since_lookback].idle_hours == LOOKBACK_HOURS


def test_a_window_longer_than_the_lookback_extends_it(aws: None) -> None:
    [instance_id] = launch(age_hours=60)
    put(GPU_METRIC, [instance_id], idle_samples(1.0, hours=60))

    [finding] = scan_idle(scope_of("us-east-1"), window_hours=48, now=NOW).findings

    assert finding.idle_hours == 48.0


def test_prices_spot_and_on_demand_and_waste(aws: None) -> None:
    [spot] = launch(spot=True, instance_type="g6.12xlarge")
    [on_demand] = launch(instance_type="p4d.24xlarge")
    put(GPU_METRIC, [spot, on_demand], idle_samples(1.0))

    scan = scan_idle(scope_of("us-east-1"), now=NOW)
    findings = by_id(scan.findings)

    assert findings[spot].hourly_cost_usd == pricing.spot_hourly("g6.12xlarge")
    assert findings[on_demand].hourly_cost_usd == pricing.on_demand_hourly("p4d.24xlarge")
    for finding in findings.values():
        assert finding.wasted_usd == pytest.approx(finding.idle_hours * finding.hourly_cost_usd, abs=0.005)
    # Biggest waste first.
    assert [finding.resource_id for finding in scan.findings] == [on_demand, spot]
    assert scan.wasted_usd == pytest.approx(sum(f.wasted_usd for f in scan.findings))


def test_unpriced_gpu_types_are_reported_without_dollars(aws: None) -> None:
    [instance_id] = launch(instance_type="g4ad.xlarge")
    put(GPU_METRIC, [instance_id], idle_samples(1.0))

    [finding] = scan_idle(scope_of("us-east-1"), now=NOW).findings

    assert (finding.hourly_cost_usd, finding.wasted_usd) == (None, None)


def test_training_tags_are_surfaced(aws: None) -> None:
    tags = {"team": "nlp", "run-id": "nlp-r7", "pulumi-stack": "train-nlp-r7"}
    [tagged] = launch(tags=tags)
    [untagged] = launch()
    put(GPU_METRIC, [tagged, untagged], idle_samples(1.0))

    findings = by_id(scan_idle(scope_of("us-east-1"), now=NOW).findings)

    assert findings[tagged].tags == tags
    assert (findings[tagged].run_id, findings[tagged].pulumi_stack) == ("nlp-r7", "train-nlp-r7")
    assert "run_id" not in findings[untagged].to_json() and findings[untagged].tags == {}


def test_only_running_gpu_instances_in_every_region_are_scanned(aws: None) -> None:
    [cpu_box] = launch(instance_type="m6i.large")
    [stopped] = launch()
    boto3.client("ec2", region_name="us-east-1").stop_instances(InstanceIds=[stopped])
    [west] = launch(region="us-west-2", instance_type="trn1.2xlarge")
    put(CPU_METRIC, [cpu_box, stopped], idle_samples(1.0))
    put(GPU_METRIC, [west], idle_samples(1.0), region="us-west-2")

    scan = scan_idle(scope_of("us-east-1", "us-west-2"), now=NOW)

    assert [(f.resource_id, f.region) for f in scan.findings] == [(west, "us-west-2")]
    assert scan.instances_scanned == 1


def test_json_shape(aws: None) -> None:
    [instance_id] = launch()
    put(GPU_METRIC, [instance_id], idle_samples(1.0))

    payload = scan_idle(scope_of("us-east-1"), window_hours=6, threshold_pct=5, now=NOW).to_json()

    assert set(payload) == {"scope", "window_hours", "threshold_pct", "findings"}
    assert payload["scope"]["accounts"] == [{"account_id": ACCOUNT, "name": "", "regions": ["us-east-1"]}]
    assert set(payload["findings"][0]) == {
        "resource_id",
        "account_id",
        "account_name",
        "region",
        "instance_type",
        "telemetry",
        "gpu_util_max",
        "cpu_util_max",
        "idle_hours",
        "hourly_cost_usd",
        "wasted_usd",
        "tags",
    }


@pytest.mark.parametrize(
    ("window_hours", "threshold_pct", "flag"),
    [
        (0, 5, "--window-hours"),
        (-1, 5, "--window-hours"),
        (6, 0, "--threshold-pct"),
        (6, 101, "--threshold-pct"),
    ],
)
def test_bad_thresholds_are_user_errors(window_hours: float, threshold_pct: float, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        scan_idle(scope_of("us-east-1"), window_hours=window_hours, threshold_pct=threshold_pct, now=NOW)


def test_a_list_of_regions_scans_the_callers_account_and_raises_on_failure(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    [instance_id] = launch()
    put(GPU_METRIC, [instance_id], idle_samples(1.0))

    scan = scan_idle(["us-east-1"], now=NOW)

    assert [(f.resource_id, f.account_id) for f in scan.findings] == [(instance_id, ACCOUNT)]
    assert scan.gaps == []

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DescribeInstances")

    monkeypatch.setattr(idle, "running_gpu_instances", refused)
    # The callers that pass regions (report, reaper) turn the raised error into their own verdict.
    with pytest.raises(UserError, match="access denied"):
        scan_idle(["us-east-1"], now=NOW)
