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

import requests
from moto.cloudwatch.models import MetricDatum, cloudwatch_backends

from finops.idle import GPU_METRIC, LOOKBACK_HOURS, fetch_hourly_max, scan_idle
from finops.sandbox import Sandbox
from finops.sandbox.server import ACCOUNT_ID

REGION = "us-east-1"
LAUNCH_BATCH = 500
IDLE_SHARE = 0.3


def seed_fleet(sandbox: Sandbox, size: int, now: datetime) -> list[str]:
    requests.post(f"{sandbox.endpoint}/moto-api/reset", timeout=60).raise_for_status()
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


def one_call_per_instance(instance_ids: list[str], now: datetime) -> tuple[int, float]:
    from mlp import aws

    cloudwatch = aws.client("cloudwatch", REGION)
    start = now - timedelta(hours=LOOKBACK_HOURS)
    began = time.perf_counter()
    calls = 0
    for instance_id in instance_ids:
        _, used = fetch_hourly_max(cloudwatch, GPU_METRIC, [instance_id], start, now)
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
            baseline_calls, baseline_seconds = one_call_per_instance(instance_ids, now)
            rows.append(
                (
                    size,
                    len(scan.findings),
                    scan.cloudwatch_calls,
                    scan_seconds,
                    baseline_calls,
                    baseline_seconds,
                    seed_seconds,
                )
            )
            print(f"  {size} instances done ({len(scan.findings)} idle)", flush=True)

    header = ("instances", "idle", "batched calls", "batched s", "baseline calls", "baseline s", "seed s")
    print()
    print(" | ".join(f"{column:>14}" for column in header))
    print("-+-".join("-" * 14 for _ in header))
    for size, idle, calls, seconds, base_calls, base_seconds, seed_seconds in rows:
        print(
            " | ".join(
                f"{value:>14}"
                for value in (
                    size,
                    idle,
                    calls,
                    f"{seconds:.2f}",
                    base_calls,
                    f"{base_seconds:.2f}",
                    f"{seed_seconds:.1f}",
                )
            )
        )
    print(
        "\nBatched: GetMetricData with up to 500 queries per call (CloudWatch bills per 1,000 metrics "
        "requested either way, but calls, latency and throttling scale with the call count)."
    )


if __name__ == "__main__":
    main()
