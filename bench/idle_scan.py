"""Idle-GPU scan at 100, 1,000 and 5,000 GPU instances against the sandbox (moto over HTTP).

Prints, per fleet size, the CloudWatch GetMetricData calls and wall time of `scan_idle` (≤ 500
queries per call) beside a one-call-per-instance baseline. Instances are launched through the EC2
API; their 24 hourly GPU samples go straight into moto's in-process backend, because putting
120,000 datapoints over HTTP would dominate the run without measuring anything about the scan.

    .venv/bin/python bench/idle_scan.py [--sizes 100,1000,5000]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, datetime, timedelta

from moto.cloudwatch.models import MetricDatum, cloudwatch_backends

from finops.idle import GPU_METRIC, LOOKBACK_HOURS, fetch_hourly_max, scan_idle
from finops.sandbox import Sandbox
from finops.sandbox.server import ACCOUNT_ID

REGION = "us-east-1"
LAUNCH_BATCH = 500
IDLE_SHARE = 0.3


def seed_fleet(sandbox: Sandbox, size: int, now: datetime) -> list[str]:
    sandbox.reset()
    ec2 = sandbox.client("ec2", REGION)
    image = sorted(image["ImageId"] for image in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    instance_ids: list[str] = []
    while len(instance_ids) < size:
        count = min(LAUNCH_BATCH, size - len(instance_ids))
        launched = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=count, MaxCount=count)
        instance_ids.extend(instance["InstanceId"] for instance in launched["Instances"])
    rng = random.Random(size)
    namespace, name = GPU_METRIC
    backend = cloudwatch_backends[ACCOUNT_ID][REGION]
    for instance_id in instance_ids:
        sandbox.backdate_launch(REGION, instance_id, now - timedelta(hours=30))
        idle = rng.random() < IDLE_SHARE
        for hour in range(int(LOOKBACK_HOURS)):
            value = rng.uniform(0, 3) if idle else rng.uniform(40, 95)
            backend.metric_data.append(
                MetricDatum(
                    namespace,
                    name,
                    value,
                    [{"Name": "InstanceId", "Value": instance_id}],
                    # moto keeps naive UTC timestamps.
                    (now - timedelta(hours=hour, minutes=30)).replace(tzinfo=None),
                    "Percent",
                )
            )
    return instance_ids


def fetch_seconds(instance_ids: list[str], now: datetime, per_call: int) -> tuple[int, float]:
    """GetMetricData for every instance, `per_call` instances per request: (calls, seconds)."""
    from mlp import aws

    cloudwatch = aws.client("cloudwatch", REGION)
    start = now - timedelta(hours=LOOKBACK_HOURS)
    began = time.perf_counter()
    calls = 0
    for first in range(0, len(instance_ids), per_call):
        _, used = fetch_hourly_max(cloudwatch, GPU_METRIC, instance_ids[first : first + per_call], start, now)
        calls += used
    return calls, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="comma-separated fleet sizes")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    rows = []
    with Sandbox() as sandbox:
        os.environ.update(sandbox.environ())
        for size in sizes:
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            began = time.perf_counter()
            instance_ids = seed_fleet(sandbox, size, now)
            seed_seconds = time.perf_counter() - began

            began = time.perf_counter()
            scan = scan_idle([REGION], now=now)
            scan_seconds = time.perf_counter() - began
            batched_calls, batched_seconds = fetch_seconds(instance_ids, now, per_call=len(instance_ids))
            baseline_calls, baseline_seconds = fetch_seconds(instance_ids, now, per_call=1)
            rows.append(
                (
                    size,
                    len(scan.findings),
                    scan.cloudwatch_calls,
                    scan_seconds,
                    batched_calls,
                    batched_seconds,
                    baseline_calls,
                    baseline_seconds,
                    seed_seconds,
                )
            )
            print(f"  {size} instances done ({len(scan.findings)} idle)", flush=True)

    header = (
        "instances",
        "idle found",
        "scan calls",
        "scan s",
        "metric calls",
        "metric s",
        "1/inst calls",
        "1/inst s",
        "seed s",
    )
    print()
    print(" | ".join(f"{column:>14}" for column in header))
    print("-+-".join("-" * 14 for _ in header))
    for row in rows:
        cells = [f"{cell:.2f}" if isinstance(cell, float) else str(cell) for cell in row]
        print(" | ".join(f"{cell:>14}" for cell in cells))
    print(
        "\nscan: the whole `scan_idle` (describe_instances + batched GetMetricData, <= 500 queries per call);"
        "\nmetric: the batched GetMetricData alone; 1/inst: the baseline, one GetMetricData call per instance."
    )


if __name__ == "__main__":
    main()
