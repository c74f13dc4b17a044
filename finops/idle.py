"""Idle GPU instances: running GPU instances whose utilization stayed under a threshold for a window.

GPU utilization is the CloudWatch agent's `nvidia_smi_utilization_gpu` (namespace CWAgent, single
dimension InstanceId — the fleets' contract); instances that publish no GPU metric are judged on
EC2's CPUUtilization instead. Metrics come hourly (Maximum) from GetMetricData, up to 500 queries per
call, so the number of CloudWatch calls grows with instances/500 in each account-region (a target of
`finops.scope`; targets are scanned concurrently).

Idle hours reach back past the window to the last hour the instance was busy, bounded by its launch
and by the lookback fetched (the larger of the window and LOOKBACK_HOURS).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from finops import inventory
from finops.scope import DEFAULT_CONCURRENCY, Gap, ScanScope, run_targets, single_account_scope
from mlp import aws, gpu_metrics, pricing
from mlp.errors import UserError
from mlp.tags import PULUMI_STACK, RUN_ID

GPU_METRIC = (gpu_metrics.NAMESPACE, gpu_metrics.GPU_UTILIZATION_METRIC)
CPU_METRIC = ("AWS/EC2", "CPUUtilization")
MAX_QUERIES_PER_CALL = 500
PERIOD = timedelta(hours=1)
LOOKBACK_HOURS = 24.0

DEFAULT_WINDOW_HOURS = 6.0
DEFAULT_THRESHOLD_PCT = 5.0


@dataclass(frozen=True)
class GpuInstance:
    instance_id: str
    region: str
    account_id: str
    account_name: str
    instance_type: str
    launched_at: datetime
    tags: dict[str, str]
    # As the registry prices it (spot at the documented discount); None for an unpriced type.
    hourly_cost_usd: float | None


@dataclass(frozen=True)
class IdleFinding:
    """One idle GPU instance; `gpu_util_max` or `cpu_util_max` is set, after the telemetry judged on."""

    resource_id: str
    region: str
    instance_type: str
    telemetry: str  # "gpu" or "cpu"
    gpu_util_max: float | None
    cpu_util_max: float | None
    idle_hours: float
    hourly_cost_usd: float | None
    # Unknown instance types have no list price: reported, but with no dollar figure.
    wasted_usd: float | None
    tags: Mapping[str, str]
    account_id: str = ""
    account_name: str = ""

    @property
    def run_id(self) -> str | None:
        return self.tags.get(RUN_ID) or None

    @property
    def pulumi_stack(self) -> str | None:
        return self.tags.get(PULUMI_STACK) or None

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "resource_id": self.resource_id,
            "account_id": self.account_id,
            "account_name": self.account_name,
            "region": self.region,
            "instance_type": self.instance_type,
            "telemetry": self.telemetry,
            "gpu_util_max": self.gpu_util_max,
            "cpu_util_max": self.cpu_util_max,
            "idle_hours": self.idle_hours,
            "hourly_cost_usd": self.hourly_cost_usd,
            "wasted_usd": self.wasted_usd,
            "tags": dict(self.tags),
        }
        # Only training instances carry these; the JSON leaves them out rather than null.
        if self.run_id:
            payload["run_id"] = self.run_id
        if self.pulumi_stack:
            payload["pulumi_stack"] = self.pulumi_stack
        return payload


@dataclass
class TargetIdle:
    """What one account-region's scan found."""

    findings: list[IdleFinding] = field(default_factory=list)
    # Instances not judged, with why: too young for the window, or no telemetry at all.
    not_judged: list[dict[str, str]] = field(default_factory=list)
    cloudwatch_calls: int = 0
    instances_scanned: int = 0


@dataclass
class IdleScan:
    """The idle scan of a scope; `scope.gaps` names the accounts and account-regions not scanned."""

    window_hours: float
    threshold_pct: float
    findings: list[IdleFinding] = field(default_factory=list)
    not_judged: list[dict[str, str]] = field(default_factory=list)
    cloudwatch_calls: int = 0
    instances_scanned: int = 0
    scope: ScanScope = field(default_factory=lambda: ScanScope(targets=[], accounts=[]))

    @property
    def gaps(self) -> list[Gap]:
        return self.scope.gaps

    @property
    def wasted_usd(self) -> float:
        return round(sum(finding.wasted_usd or 0.0 for finding in self.findings), 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.to_json(),
            "window_hours": self.window_hours,
            "threshold_pct": self.threshold_pct,
            "findings": [finding.to_json() for finding in self.findings],
        }


@dataclass(frozen=True)
class Window:
    """The hours judged (`start` to `end`) and the longer stretch fetched to date idle hours."""

    hours: float
    end: datetime
    start: datetime
    lookback_start: datetime

    @classmethod
    def ending(cls, now: datetime | None, window_hours: float) -> Window:
        # Whole minutes: CloudWatch answers period timestamps at second precision, so an aligned end
        # keeps idle hours exact instead of off by the sub-second part of `now`.
        end = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
        return cls(
            hours=window_hours,
            end=end,
            start=end - timedelta(hours=window_hours),
            lookback_start=end - timedelta(hours=max(window_hours, LOOKBACK_HOURS)),
        )


Series = dict[str, list[tuple[datetime, float]]]


def validate_thresholds(window_hours: float, threshold_pct: float) -> None:
    if not window_hours > 0:
        raise UserError(
            f"--window-hours must be a positive number of hours, got {window_hours}; e.g. --window-hours 6"
        )
    if not 0 < threshold_pct <= 100:
        raise UserError(
            f"--threshold-pct must be a percentage in (0, 100], got {threshold_pct}; e.g. --threshold-pct 5"
        )


def scan_idle(
    scope: ScanScope | Sequence[str],
    *,
    window_hours: float = DEFAULT_WINDOW_HOURS,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    now: datetime | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[inventory.Scope, bool], None] | None = None,
    on_calls: Callable[[int], None] | None = None,
) -> IdleScan:
    """Running GPU instances of every target of `scope` idle (max utilization < threshold) over the window.

    Targets run `concurrency` at a time; one that fails is a gap of the result's scope, the others'
    findings stay. `on_done(target, succeeded)` follows the targets, `on_calls(n)` the GetMetricData
    calls as they are made. A list of regions instead of a scope scans those regions of the caller's
    account one by one, and a failure raises, as the callers that still pass regions expect.
    """
    validate_thresholds(window_hours, threshold_pct)
    window = Window.ending(now, window_hours)

    def scan_target(target: inventory.Scope) -> TargetIdle:
        return idle_in_target(target, window, threshold_pct, on_calls=on_calls)

    if isinstance(scope, ScanScope):
        gathered = run_targets(scope, scan_target, concurrency=concurrency, on_done=on_done)
        parts = [part for _, part in gathered.results]
        covered = replace(scope, gaps=[*scope.gaps, *gathered.gaps])
    else:
        covered = single_account_scope(scope)
        parts = []
        for target in covered.targets:
            with aws.aws_errors(f"scanning GPU instances in {target.region}"):
                parts.append(scan_target(target))
    scan = IdleScan(window_hours=window_hours, threshold_pct=threshold_pct, scope=covered)
    for part in parts:
        scan.findings += part.findings
        scan.not_judged += part.not_judged
        scan.cloudwatch_calls += part.cloudwatch_calls
        scan.instances_scanned += part.instances_scanned
    scan.findings.sort(
        key=lambda finding: (-(finding.wasted_usd or 0.0), finding.account_id, finding.resource_id)
    )
    return scan


def idle_in_target(
    target: inventory.Scope,
    window: Window,
    threshold_pct: float,
    *,
    on_calls: Callable[[int], None] | None = None,
) -> TargetIdle:
    """The idle GPU instances of one account and region; AWS errors raise."""
    found = TargetIdle()
    instances = list(running_gpu_instances(target))
    found.instances_scanned = len(instances)
    judged = []
    for instance in instances:
        if instance.launched_at > window.start:
            found.not_judged.append(_not_judged(instance, f"launched less than {window.hours:g} h ago"))
        else:
            judged.append(instance)
    cloudwatch = target.client("cloudwatch")
    gpu, calls = fetch_hourly_max(
        cloudwatch, GPU_METRIC, [i.instance_id for i in judged], window.lookback_start, window.end, on_calls
    )
    found.cloudwatch_calls += calls
    without_gpu = [i for i in judged if not _in_window(gpu.get(i.instance_id, []), window.start)]
    cpu, calls = fetch_hourly_max(
        cloudwatch,
        CPU_METRIC,
        [i.instance_id for i in without_gpu],
        window.lookback_start,
        window.end,
        on_calls,
    )
    found.cloudwatch_calls += calls
    for instance in judged:
        telemetry, series = "gpu", gpu.get(instance.instance_id, [])
        if not _in_window(series, window.start):
            telemetry, series = "cpu", cpu.get(instance.instance_id, [])
        recent = _in_window(series, window.start)
        if not recent:
            found.not_judged.append(_not_judged(instance, "no GPU or CPU metrics in the window"))
            continue
        util_max = max(recent)
        if util_max < threshold_pct:
            found.findings.append(_finding(instance, telemetry, util_max, series, threshold_pct, window))
    return found


def running_gpu_instances(target: inventory.Scope) -> Iterator[GpuInstance]:
    """The running GPU instances of one account and region, as the inventory registry enumerates them."""
    for resource in inventory.scan_scope(["ec2:instance"], target, with_global=False):
        facts = resource.attributes
        if facts["State"]["Name"] != "running" or not pricing.is_gpu_instance_type(facts["InstanceType"]):
            continue
        yield GpuInstance(
            instance_id=resource.resource_id,
            region=resource.region,
            account_id=target.account_id,
            account_name=target.account_name,
            instance_type=facts["InstanceType"],
            launched_at=facts["LaunchTime"].astimezone(UTC),
            tags=dict(resource.tags),
            hourly_cost_usd=resource.hourly_cost_usd,
        )


def fetch_hourly_max(
    cloudwatch: Any,
    metric: tuple[str, str],
    instance_ids: Sequence[str],
    start: datetime,
    end: datetime,
    on_calls: Callable[[int], None] | None = None,
) -> tuple[Series, int]:
    """Hourly Maximum of `metric` per instance, ≤ 500 queries per GetMetricData; returns (series, calls)."""
    namespace, name = metric
    series: Series = defaultdict(list)
    calls = 0
    paginator = cloudwatch.get_paginator("get_metric_data")
    for batch_start in range(0, len(instance_ids), MAX_QUERIES_PER_CALL):
        batch = instance_ids[batch_start : batch_start + MAX_QUERIES_PER_CALL]
        query_ids = {f"q{number}": instance_id for number, instance_id in enumerate(batch)}
        queries = [
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": gpu_metrics.DIMENSION, "Value": instance_id}],
                    },
                    "Period": int(PERIOD.total_seconds()),
                    "Stat": "Maximum",
                },
                "ReturnData": True,
            }
            for query_id, instance_id in query_ids.items()
        ]
        pages = paginator.paginate(
            MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
        )
        for page in pages:
            calls += 1
            if on_calls is not None:
                on_calls(1)
            for result in page.get("MetricDataResults", []):
                points = zip(result.get("Timestamps", []), result.get("Values", []), strict=True)
                series[query_ids[result["Id"]]].extend(
                    (moment.astimezone(UTC), value) for moment, value in points
                )
    for points in series.values():
        points.sort()
    return series, calls


def _in_window(series: list[tuple[datetime, float]], window_start: datetime) -> list[float]:
    """Values of the hourly periods that overlap the window."""
    return [value for moment, value in series if moment + PERIOD > window_start]


def _finding(
    instance: GpuInstance,
    telemetry: str,
    util_max: float,
    series: list[tuple[datetime, float]],
    threshold_pct: float,
    window: Window,
) -> IdleFinding:
    busy_until = [moment + PERIOD for moment, value in series if value >= threshold_pct]
    idle_since = max([window.lookback_start, instance.launched_at, *busy_until])
    idle_hours = (window.end - idle_since).total_seconds() / 3600
    hourly = instance.hourly_cost_usd
    return IdleFinding(
        resource_id=instance.instance_id,
        region=instance.region,
        instance_type=instance.instance_type,
        telemetry=telemetry,
        gpu_util_max=util_max if telemetry == "gpu" else None,
        cpu_util_max=util_max if telemetry == "cpu" else None,
        idle_hours=round(idle_hours, 2),
        hourly_cost_usd=hourly,
        wasted_usd=None if hourly is None else round(idle_hours * hourly, 2),
        tags=instance.tags,
        account_id=instance.account_id,
        account_name=instance.account_name,
    )


def _not_judged(instance: GpuInstance, reason: str) -> dict[str, str]:
    return {
        "resource_id": instance.instance_id,
        "account_id": instance.account_id,
        "region": instance.region,
        "reason": reason,
    }
