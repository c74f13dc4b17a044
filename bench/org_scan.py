"""Bench: the idle-GPU scan over an organization's account x region targets, on the embedded sandbox.

    .venv/bin/python bench/org_scan.py                      # 20 accounts x 4 regions x 250 GPUs
    .venv/bin/python bench/org_scan.py --accounts 5 --instances 50

Seeds an AWS Organization in the sandbox (moto's server, in this process): the payer and members
created by Organizations' CreateAccount, each with `--instances` running GPU instances per region,
launched 30 h ago, with hourly GPU utilization over the last hours; three of every ten are idle
(30 %). Then times, through `finops.scope.run_targets` over the `--org-role` scope:

- the floor: listing the instances alone, in parallel (first: it also warms moto's backends);
- the idle scan (list GPU instances, GetMetricData in batches of 500) at concurrency 16, 8 and 1;
- the scaling: the scan at concurrency 8 over the first 1, 5, 10, 20 accounts.

Each scan's idle count must equal what was seeded, and each target's CloudWatch calls stay within
ceil(judged instances / 500). moto answers in this process's threads, so the GIL bounds what
concurrency gains here: the figures show the scan's own overhead and call counts, not AWS latency.
`--latency-ms N` adds N ms of waiting to every request after seeding (a network round trip: the wait
releases the GIL, as a socket read would), which is where a bounded pool earns its keep against AWS.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.endpoint

from finops import idle
from finops.demo import sandbox_environment
from finops.sandbox import Sandbox
from finops.scope import ScanScope, TargetResults, organization_accounts, resolve_scope, run_targets

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")
ROLE_NAME = "FinOpsReadOnly"
INSTANCE_TYPE = "g5.xlarge"
IDLE_EVERY = 10
IDLE_POSITIONS = (0, 3, 6)
AGE = timedelta(hours=30)
SAMPLE_HOURS = 8  # covers the default 6 h window
METRIC_DATA_PER_CALL = 1000


def is_idle(position: int) -> bool:
    return position % IDLE_EVERY in IDLE_POSITIONS


@dataclass(frozen=True)
class Seeded:
    payer_account_id: str
    idle_count: int
    instance_count: int
    seconds: float


def seed(sandbox: Sandbox, accounts: int, instances: int, now: datetime) -> Seeded:
    started = time.perf_counter()
    organizations = sandbox.client("organizations")
    organizations.create_organization(FeatureSet="ALL")
    account_ids = [sandbox.account_id] + [
        organizations.create_account(AccountName=f"ml-team-{number:02d}", Email=f"team{number}@example.com")[
            "CreateAccountStatus"
        ]["AccountId"]
        for number in range(1, accounts)
    ]
    # moto serves every account the same AMIs per region: look them up once.
    images = {
        region: sorted(
            i["ImageId"] for i in sandbox.client("ec2", region).describe_images(Owners=["amazon"])["Images"]
        )[0]
        for region in REGIONS
    }
    sts = sandbox.client("sts")
    idle_count = 0
    for account_id in account_ids:
        credentials = None
        if account_id != sandbox.account_id:
            credentials = sts.assume_role(
                RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
                RoleSessionName="bench",
            )["Credentials"]
        for region in REGIONS:
            ec2 = sandbox.client("ec2", region, credentials=credentials)
            launched = ec2.run_instances(
                ImageId=images[region], InstanceType=INSTANCE_TYPE, MinCount=instances, MaxCount=instances
            )["Instances"]
            instance_ids = [instance["InstanceId"] for instance in launched]
            for instance_id in instance_ids:
                sandbox.backdate_launch(region, instance_id, now - AGE, account_id)
            idle_count += sum(1 for position in range(len(instance_ids)) if is_idle(position))
            put_gpu_metrics(sandbox.client("cloudwatch", region, credentials=credentials), instance_ids, now)
    return Seeded(
        sandbox.account_id,
        idle_count,
        len(account_ids) * len(REGIONS) * instances,
        time.perf_counter() - started,
    )


def put_gpu_metrics(cloudwatch: Any, instance_ids: list[str], now: datetime) -> None:
    namespace, name = idle.GPU_METRIC
    data = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": now - timedelta(hours=hour, minutes=30),
            "Value": 1.5 if is_idle(position) else 70.0,
            "Unit": "Percent",
        }
        for position, instance_id in enumerate(instance_ids)
        for hour in range(SAMPLE_HOURS)
    ]
    for start in range(0, len(data), METRIC_DATA_PER_CALL):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + METRIC_DATA_PER_CALL])


def org_scope(payer_account_id: str, accounts: int) -> ScanScope:
    listed = organization_accounts(ROLE_NAME, payer_account_id)[:accounts]
    return resolve_scope(listed, list(REGIONS))


def timed(work: Callable[[], TargetResults[Any]]) -> tuple[TargetResults[Any], float]:
    started = time.perf_counter()
    gathered = work()
    return gathered, time.perf_counter() - started


def idle_scan(
    scope: ScanScope, concurrency: int, now: datetime
) -> tuple[TargetResults[idle.TargetIdle], float]:
    window = idle.Window.ending(now, idle.DEFAULT_WINDOW_HOURS)
    return timed(
        lambda: run_targets(
            scope,
            lambda target: idle.idle_in_target(target, window, idle.DEFAULT_THRESHOLD_PCT),
            concurrency=concurrency,
        )
    )


def check(gathered: TargetResults[idle.TargetIdle], expected_idle: int) -> tuple[int, int]:
    """(idle found, CloudWatch calls); raises if a target failed, the count is off, or calls exceed the bound."""
    assert not gathered.gaps, gathered.gaps
    found = sum(len(part.findings) for _, part in gathered.results)
    assert found == expected_idle, f"found {found} idle instances, seeded {expected_idle}"
    for target, part in gathered.results:
        bound = math.ceil(part.instances_scanned / idle.MAX_QUERIES_PER_CALL)
        assert part.cloudwatch_calls <= bound, f"{target}: {part.cloudwatch_calls} calls > {bound}"
    return found, sum(part.cloudwatch_calls for _, part in gathered.results)


def add_round_trip(seconds: float) -> None:
    """Every botocore request waits `seconds` before it is sent, as a network round trip would."""
    send = botocore.endpoint.Endpoint._send

    def delayed(self: Any, request: Any) -> Any:
        time.sleep(seconds)
        return send(self, request)

    botocore.endpoint.Endpoint._send = delayed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--instances", type=int, default=250, help="GPU instances per account-region")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="round-trip time added to every scan request"
    )
    options = parser.parse_args()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with Sandbox() as sandbox:
        seeded = seed(sandbox, options.accounts, options.instances, now)
        print(
            f"seeded {options.accounts} accounts x {len(REGIONS)} regions x {options.instances} GPU instances "
            f"= {seeded.instance_count} ({seeded.idle_count} idle) in {seeded.seconds:.1f}s on {os.cpu_count()} CPUs",
            flush=True,
        )
        per_target_idle = sum(1 for position in range(options.instances) if is_idle(position))

        def row(what: str, accounts: int, concurrency: int, found: int, calls: int, seconds: float) -> None:
            instances = accounts * len(REGIONS) * options.instances
            print(
                f"{what:<22}{accounts:>9}{concurrency:>7}{found:>7}{calls:>10}{seconds:>9.2f}"
                f"{instances / seconds:>9.0f}",
                flush=True,
            )

        if options.latency_ms:
            add_round_trip(options.latency_ms / 1000)
            print(f"every request waits {options.latency_ms:g} ms, as over a network")
        with sandbox_environment(sandbox):
            scope = org_scope(seeded.payer_account_id, options.accounts)
            print(f"{len(scope.targets)} account-regions; {options.instances} GPU instances each")
            print(
                f"{'what':<22}{'accounts':>9}{'conc.':>7}{'idle':>7}{'CW calls':>10}{'seconds':>9}{'inst/s':>9}"
            )
            listing, seconds = timed(
                lambda: run_targets(
                    scope, lambda target: list(idle.running_gpu_instances(target)), concurrency=16
                )
            )
            assert sum(len(found) for _, found in listing.results) == seeded.instance_count
            row("list instances only", options.accounts, 16, 0, 0, seconds)
            for concurrency in (16, 8, 1):
                gathered, seconds = idle_scan(scope, concurrency, now)
                row("idle scan", options.accounts, concurrency, *check(gathered, seeded.idle_count), seconds)
            for accounts in sorted({1, 5, 10, 20, options.accounts} & set(range(1, options.accounts + 1))):
                part = org_scope(seeded.payer_account_id, accounts)
                gathered, seconds = idle_scan(part, 8, now)
                row(
                    "scaling: idle scan",
                    accounts,
                    8,
                    *check(gathered, per_target_idle * len(part.targets)),
                    seconds,
                )


if __name__ == "__main__":
    main()
