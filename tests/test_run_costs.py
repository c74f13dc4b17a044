"""Run costs against moto: a run of three instances, one reclaimed, priced by hand from `mlp.pricing`.

moto's clock is EC2's launch and termination times and S3's LastModified, so it is set to the seeded
moments (its `utcnow` in the EC2 and S3 models); nothing sleeps. moto records no scaling activities
(DescribeScalingActivities answers none), so the group's activities come from a fake at the client
boundary: `mlp.aws.client` hands out the real moto client with that one paginator replaced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

import mlp.aws
from finops import run_costs as run_costs_module
from finops.inventory import Scope
from finops.run_costs import Period, RunCosts, run_costs
from finops.sandbox.cost_explorer import CostExplorerEmulator, LineItem
from finops.scope import Account, ScanScope
from finops.teardown import RunTeardown
from mlp import pricing
from mlp.cli import main
from tests.reaper_world import ACCOUNT_ID, FLEET_AMI, LIVE, REGION, run_tags, tag_list
from tests.test_costs import EmulatedCostExplorer

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=4)
TYPE = "g5.xlarge"
SPOT_HOURLY = pricing.on_demand_hourly(TYPE) * (1 - pricing.DEFAULT_SPOT_DISCOUNT)
ON_DEMAND_HOURLY = pricing.on_demand_hourly(TYPE)
BUCKET = "mlp-dev-checkpoints-0a1b2c"
COMPUTE = "Amazon Elastic Compute Cloud - Compute"

# Run r1: A (spot) from T0, reclaimed at T0+2h after a notice at T0+1h58; B (on demand) from T0;
# C (spot) replaces A at T0+2h05. Checkpoints at T0+1h, T0+1h40 and T0+2h30.
A_END = T0 + timedelta(hours=2)
A_NOTICE = T0 + timedelta(hours=1, minutes=58)
C_LAUNCH = T0 + timedelta(hours=2, minutes=5)
CHECKPOINTS = [
    T0 + timedelta(hours=1),
    T0 + timedelta(hours=1, minutes=40),
    T0 + timedelta(hours=2, minutes=30),
]
# Run r2: one on-demand instance for two days, billed by Cost Explorer up to yesterday.
R2_LAUNCH = NOW - timedelta(hours=48)
R2_BILLED = {NOW.date() - timedelta(days=2): 12.07, NOW.date() - timedelta(days=1): 24.14}


class Clock:
    def __init__(self) -> None:
        self.moment = NOW

    def __call__(self) -> datetime:
        return self.moment.replace(tzinfo=None)  # moto's clock is naive UTC


class Activities:
    """DescribeScalingActivities as AWS pages it (two pages), recording what was asked."""

    def __init__(self) -> None:
        self.activities: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

    def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
        self.requests.append(request)
        mine = [
            item
            for item in self.activities
            if item["AutoScalingGroupName"] == request["AutoScalingGroupName"]
        ]
        half = len(mine) // 2
        yield {"Activities": mine[:half], "NextToken": "page-2"}
        yield {"Activities": mine[half:]}


class WithActivities:
    def __init__(self, real: Any, activities: Activities) -> None:
        self._real, self._activities = real, activities

    def get_paginator(self, operation: str) -> Any:
        return (
            self._activities
            if operation == "describe_scaling_activities"
            else self._real.get_paginator(operation)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import moto.ec2.models.instances
    import moto.s3.models

    moment = Clock()
    monkeypatch.setattr(moto.ec2.models.instances, "utcnow", moment)
    monkeypatch.setattr(moto.s3.models, "utcnow", moment)
    return moment


@pytest.fixture
def activities(monkeypatch: pytest.MonkeyPatch) -> Activities:
    feed = Activities()
    real_client = mlp.aws.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real_client(service, *args, **kwargs)
        return WithActivities(made, feed) if service == "autoscaling" else made

    monkeypatch.setattr(mlp.aws, "client", client)
    return feed


@pytest.fixture
def world(clock: Clock, activities: Activities) -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield seed(clock, activities)


def activity(group: str, description: str, start: datetime, end: datetime, cause: str = "") -> dict[str, Any]:
    return {
        "ActivityId": hashlib.sha1(f"{group}{description}".encode()).hexdigest(),
        "AutoScalingGroupName": group,
        "Description": description,
        "Cause": cause,
        "StartTime": start,
        "EndTime": end,
        "StatusCode": "Successful",
    }


def launch(ec2: Any, clock: Clock, at: datetime, tags: dict[str, str], *, spot: bool, subnet: str) -> str:
    clock.moment = at
    extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    return ec2.run_instances(
        ImageId=FLEET_AMI,
        InstanceType=TYPE,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)}],
        **extra,
    )["Instances"][0]["InstanceId"]


def fleet(run_id: str, tags: dict[str, str], subnet: str) -> str:
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    template = ec2.create_launch_template(
        LaunchTemplateName=f"fleet-{run_id}", LaunchTemplateData={"ImageId": FLEET_AMI, "InstanceType": TYPE}
    )["LaunchTemplate"]["LaunchTemplateId"]
    group = f"mlp-train-{run_id}"
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnet,
        Tags=[
            {
                "Key": key,
                "Value": value,
                "PropagateAtLaunch": True,
                "ResourceId": group,
                "ResourceType": "auto-scaling-group",
            }
            for key, value in tags.items()
        ],
    )
    return group


def seed(clock: Clock, activities: Activities) -> dict[str, Any]:
    ec2 = boto3.client("ec2", region_name=REGION)
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)

    tags = run_tags("r1", LIVE)
    group = fleet("r1", tags, subnet)
    a = launch(ec2, clock, T0, tags, spot=True, subnet=subnet)
    b = launch(ec2, clock, T0, tags, spot=False, subnet=subnet)
    c = launch(ec2, clock, C_LAUNCH, tags, spot=True, subnet=subnet)
    autoscaling.attach_instances(AutoScalingGroupName=group, InstanceIds=[a, b, c])
    clock.moment = A_END
    # Out of the group first: moto would launch a fourth instance to replace a member it sees go.
    autoscaling.detach_instances(
        AutoScalingGroupName=group, InstanceIds=[a], ShouldDecrementDesiredCapacity=True
    )
    ec2.terminate_instances(InstanceIds=[a])
    activities.activities += [
        activity(group, f"Launching a new EC2 instance: {a}", T0 - timedelta(minutes=1), T0),
        activity(group, f"Launching a new EC2 instance: {b}", T0 - timedelta(minutes=1), T0),
        activity(
            group,
            f"Terminating EC2 instance: {a}",
            A_NOTICE,
            A_END,
            cause=f"At {A_NOTICE:%Y-%m-%dT%H:%M:%SZ} an instance was taken out of service in response to an "
            "EC2 Spot Instance interruption notice.",
        ),
        activity(group, f"Launching a new EC2 instance: {c}", C_LAUNCH - timedelta(minutes=1), C_LAUNCH),
    ]
    for index, moment in enumerate(CHECKPOINTS):
        clock.moment = moment
        s3.put_object(Bucket=BUCKET, Key=f"runs/r1/checkpoints/step-{index}.pt", Body=b"weights")

    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="mlp-train-r1-interruptions", tags=tags)["QueueUrl"]
    for instance_id, detail_type in (
        (a, "EC2 Spot Instance Interruption Warning"),
        ("i-0ther", "EC2 Instance Rebalance Recommendation"),
    ):
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=json.dumps(
                {
                    "version": "0",
                    "id": instance_id,
                    "detail-type": detail_type,
                    "source": "aws.ec2",
                    "time": f"{A_NOTICE:%Y-%m-%dT%H:%M:%SZ}",
                    "region": REGION,
                    "detail": {"instance-id": instance_id, "instance-action": "terminate"},
                }
            ),
        )

    r2_tags = run_tags("r2", LIVE)
    r2_group = fleet("r2", r2_tags, subnet)
    r2 = launch(ec2, clock, R2_LAUNCH, r2_tags, spot=False, subnet=subnet)
    autoscaling.attach_instances(AutoScalingGroupName=r2_group, InstanceIds=[r2])

    # r0 finished last week: only its checkpoints and verified _COMPLETE remain.
    clock.moment = NOW - timedelta(days=7)
    s3.put_object(Bucket=BUCKET, Key="runs/r0/checkpoints/final.pt", Body=b"done")
    marker = {
        "run_id": "r0",
        "final_checkpoint_key": "runs/r0/checkpoints/final.pt",
        "sha256": hashlib.sha256(b"done").hexdigest(),
    }
    s3.put_object(Bucket=BUCKET, Key="runs/r0/_COMPLETE", Body=json.dumps(marker).encode())
    clock.moment = NOW
    return {"a": a, "b": b, "c": c, "queue": queue, "r2": r2}


def scope() -> ScanScope:
    return ScanScope(targets=[Scope(REGION, ACCOUNT_ID)], accounts=[Account(ACCOUNT_ID)])


def billed_explorer() -> EmulatedCostExplorer:
    emulator = CostExplorerEmulator()
    emulator.load(
        [
            LineItem(
                day,
                COMPUTE,
                REGION,
                "On Demand Instances",
                TYPE,
                ACCOUNT_ID,
                {"run-id": "r2"},
                cost,
                cost,
                24.0,
            )
            for day, cost in R2_BILLED.items()
        ],
        NOW,
    )
    return EmulatedCostExplorer(emulator)


def costs(**options: Any) -> RunCosts:
    options.setdefault("cost_explorer", billed_explorer())
    options.setdefault("budget_usd", lambda environment: 40.0)
    return run_costs(scope(), Period.last_days(30, NOW), **options)


def by_id(result: RunCosts) -> dict[str, dict[str, Any]]:
    return {run["run_id"]: run for run in result.to_json()["runs"]}


def test_the_checkpoints_carry_the_seeded_times(world: dict[str, Any]) -> None:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix="runs/r1/")[
        "Contents"
    ]
    assert sorted(item["LastModified"] for item in listed) == CHECKPOINTS


def test_an_interrupted_run_has_its_hours_lost_work_and_saving(
    world: dict[str, Any], activities: Activities
) -> None:
    run = by_id(costs())["r1"]

    spot_hours = 2.0 + (NOW - C_LAUNCH).total_seconds() / 3600
    on_demand_hours = 4.0
    assert run["status"] == "running" and run["team"] == "ml-platform" and run["environment"] == "dev"
    assert run["start"] == f"{T0:%Y-%m-%dT%H:%M:%S}Z" and run["end"] is None and run["wall_hours"] == 4.0
    assert {
        (line["instance_type"], line["purchase_option"]): line["hours"] for line in run["instance_hours"]
    } == {
        (TYPE, "spot"): round(spot_hours, 4),
        (TYPE, "on-demand"): on_demand_hours,
    }
    instance_cost = spot_hours * SPOT_HOURLY + on_demand_hours * ON_DEMAND_HOURLY
    on_demand = (spot_hours + on_demand_hours) * ON_DEMAND_HOURLY
    assert run["instance_cost_usd"] == round(instance_cost, 2)
    assert run["on_demand_equivalent_usd"] == round(on_demand, 2)
    assert run["saving_usd"] == round(on_demand - instance_cost, 2)
    # Cost Explorer has nothing for r1 yet: all of it is the estimate.
    assert run["billed_usd"] is None and run["estimated"] is True
    assert run["estimated_usd"] == round(instance_cost, 2) == run["cost_usd"]

    [interruption] = run["interruptions"]
    lost_hours = (A_END - CHECKPOINTS[1]).total_seconds() / 3600  # 20 minutes since the 1h40 checkpoint
    overhead_hours = (CHECKPOINTS[2] - C_LAUNCH).total_seconds() / 3600  # 25 minutes to C's first one
    assert interruption == {
        "instance_id": world["a"],
        "kind": "interruption",
        "evidence": ["interruption-queue", "scaling-activity"],
        "instance_type": TYPE,
        "purchase_option": "spot",
        "noticed_at": f"{A_NOTICE:%Y-%m-%dT%H:%M:%S}Z",
        "ended_at": f"{A_END:%Y-%m-%dT%H:%M:%S}Z",
        "last_checkpoint_at": f"{CHECKPOINTS[1]:%Y-%m-%dT%H:%M:%S}Z",
        "lost_hours": round(lost_hours, 4),
        "lost_usd": round(lost_hours * SPOT_HOURLY, 2),
        "replacement_instance_id": world["c"],
        "first_checkpoint_after_restart_at": f"{CHECKPOINTS[2]:%Y-%m-%dT%H:%M:%S}Z",
        "restart_overhead_hours": round(overhead_hours, 4),
        "restart_overhead_usd": round(overhead_hours * SPOT_HOURLY, 2),
    }
    assert run["checkpoint"] == {
        "newest_at": f"{CHECKPOINTS[2]:%Y-%m-%dT%H:%M:%S}Z",
        "age_minutes": 90.0,
        "stale": True,
    }
    assert activities.requests and all(request["IncludeDeletedGroups"] for request in activities.requests)
    # Looked at, not consumed: both notices are still there for whoever else reads the queue.
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=world["queue"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "2"


def test_billed_days_come_from_cost_explorer_and_the_rest_is_estimated(world: dict[str, Any]) -> None:
    explorer = billed_explorer()
    result = costs(cost_explorer=explorer, max_ce_requests=3)
    run = by_id(result)["r2"]

    unbilled_hours = (NOW - datetime.combine(NOW.date(), time(), UTC)).total_seconds() / 3600
    assert run["billed_usd"] == round(sum(R2_BILLED.values()), 2)
    assert run["billed_through"] == (NOW.date() - timedelta(days=1)).isoformat()
    assert run["estimated_usd"] == round(unbilled_hours * ON_DEMAND_HOURLY, 2) and run["estimated"] is True
    assert run["cost_usd"] == round(sum(R2_BILLED.values()) + unbilled_hours * ON_DEMAND_HOURLY, 2)
    assert run["saving_usd"] == 0.0 and run["interruptions"] == []
    [request] = explorer.calls
    assert request["GroupBy"] == [{"Type": "TAG", "Key": "run-id"}]
    assert request["Filter"]["Tags"]["Values"] == ["r0", "r1", "r2"]
    assert result.to_json()["cost_explorer"] == {
        "available": True,
        "reason": None,
        "requests": 1,
        "max_requests": 3,
    }


def test_a_running_run_over_its_budget_is_flagged_and_one_under_is_not(world: dict[str, Any]) -> None:
    runs = by_id(costs(budget_usd=lambda environment: 30.0))
    assert runs["r2"]["cost_usd"] > 30 and runs["r2"]["over_budget"] is True
    assert runs["r1"]["cost_usd"] < 30 and runs["r1"]["over_budget"] is False
    assert runs["r1"]["budget_usd"] == 30.0


def test_a_run_left_only_in_the_bucket_is_completed_by_its_verified_marker(world: dict[str, Any]) -> None:
    run = by_id(costs())["r0"]
    assert run["status"] == "completed" and run["environment"] == "dev" and run["bucket"] == BUCKET
    assert (
        run["instance_hours"] == []
        and run["over_budget"] is False
        and run["checkpoint"]["age_minutes"] is None
    )


def test_an_unreachable_cost_explorer_leaves_every_cost_estimated_with_a_note(world: dict[str, Any]) -> None:
    client = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("get_cost_and_usage", "AccessDeniedException", http_status_code=400)
    with stub:
        result = costs(cost_explorer=client)
    run = by_id(result)["r2"]
    assert run["billed_usd"] is None and run["estimated"] is True
    assert run["estimated_usd"] == round(48 * ON_DEMAND_HOURLY, 2)
    assert result.ce_unavailable and "Cost Explorer unavailable" in result.notes[0]


def test_one_run_id_reads_only_that_run(world: dict[str, Any]) -> None:
    explorer = billed_explorer()
    assert list(by_id(costs(run_id="r2", cost_explorer=explorer))) == ["r2"]
    assert explorer.calls[0]["Filter"]["Tags"]["Values"] == ["r2"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["runs", "cost", *args])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_the_cli_prints_the_json_contract(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--format", "json", "--regions", REGION)
    assert code == 0, err
    payload = json.loads(out)
    runs = {run["run_id"]: run for run in payload["runs"]}
    assert set(runs) == {"r0", "r1", "r2"}
    # moto's Cost Explorer answers no data: the costs are estimates, the budget is Pulumi.dev.yaml's.
    assert payload["cost_explorer"]["available"] is True and runs["r2"]["estimated"] is True
    assert runs["r2"]["budget_usd"] == 250.0
    assert len(runs["r1"]["interruptions"]) == 1


def test_the_cli_goes_on_without_cost_explorer(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("get_cost_and_usage", "ServiceUnavailable", http_status_code=503)
    stub.add_client_error("get_cost_and_usage", "ServiceUnavailable", http_status_code=503)
    monkeypatch.setattr(run_costs_module, "cost_explorer_client", lambda: client)
    with stub:
        code, out, err = run_cli(capsys, "--regions", REGION, "--max-ce-requests", "2")
    assert code == 0, err
    assert "note: Cost Explorer unavailable" in out and "estimated in part" in out


@pytest.mark.parametrize("days", ["0", "400", "-3"])
def test_bad_days_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], days: str) -> None:
    code, out, err = run_cli(capsys, "--days", days)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--days" in err


def test_a_destroy_receipt_carries_the_runs_cost_line(world: dict[str, Any]) -> None:
    teardown = RunTeardown(
        [REGION], ACCOUNT_ID, prod_opt_in=False, run_cost=lambda run_id: None, log=print, with_cost_line=True
    )
    receipt = teardown.receipt("r1", [])
    read_by = datetime.now(UTC)
    line = receipt.to_json()["cost_line"]
    assert line is not None and line["billed_usd"] is None and line["estimated"] is True

    # A ended; B (launched at T0) and C still run, counted up to when the receipt was made: real time,
    # somewhere after NOW (the module's import, minutes earlier on a busy machine).
    def hours_until(moment: datetime) -> float:
        return 2.0 + (moment - C_LAUNCH).total_seconds() / 3600 + (moment - T0).total_seconds() / 3600

    assert hours_until(NOW) - 0.001 <= line["instance_hours_total"] <= hours_until(read_by) + 0.001
    assert any("instance-h" in text for text in receipt.lines())
    assert (
        RunTeardown([REGION], ACCOUNT_ID, prod_opt_in=False, run_cost=lambda run_id: None, log=print)
        .receipt("r1", [])
        .cost_line
        is None
    )


def seconds_apart(stamp: str, moment: datetime) -> float:
    return abs((datetime.fromisoformat(stamp.replace("Z", "+00:00")) - moment).total_seconds())


def test_the_budget_is_crossed_where_the_billed_days_and_the_estimate_reach_it(world: dict[str, Any]) -> None:
    runs = by_id(costs(budget_usd=lambda environment: 30.0))

    # r2's first billed day ran from its launch to midnight, the second all day: $12.07 then $24.14.
    second_day = datetime.combine(NOW.date() - timedelta(days=1), time(), UTC)
    crossed = second_day + timedelta(days=1) * ((30.0 - 12.07) / 24.14)
    assert seconds_apart(runs["r2"]["budget_crossed_at"], crossed) <= 1
    assert runs["r1"]["budget_crossed_at"] is None

    # r1 is all estimate: A (spot) and B (on demand) from T0, B alone from A's end to C's launch,
    # then B and C.
    runs = by_id(costs(budget_usd=lambda environment: 4.0))
    at_c_launch = 2 * (SPOT_HOURLY + ON_DEMAND_HOURLY) + (5 / 60) * ON_DEMAND_HOURLY
    crossed = C_LAUNCH + timedelta(hours=(4.0 - at_c_launch) / (SPOT_HOURLY + ON_DEMAND_HOURLY))
    assert runs["r1"]["over_budget"] is True
    assert seconds_apart(runs["r1"]["budget_crossed_at"], crossed) <= 1


def focus_line_items(rows: list[tuple[date, str | None, dict[str, str], float]]) -> Any:
    """FOCUS line items as `finops.focus` serves them: Tags a JSON object without the `user:` prefix."""
    import pandas as pd

    from finops.focus import LineItems

    return LineItems.from_frame(
        pd.DataFrame(
            [
                {
                    "ChargePeriodStart": pd.Timestamp(datetime.combine(day, time(), UTC)),
                    "ResourceId": resource_id,
                    "Tags": json.dumps(tags),
                    "BilledCost": cost,
                    "EffectiveCost": cost,
                    "ServiceName": COMPUTE,
                }
                for day, resource_id, tags, cost in rows
            ]
        )
    )


class NoCostExplorer:
    def get_cost_and_usage(self, **request: Any) -> Any:
        raise AssertionError("Cost Explorer was asked although the FOCUS export's line items were given")


def test_billed_cost_comes_from_the_focus_line_items_of_the_runs_tags_and_resources(
    world: dict[str, Any],
) -> None:
    yesterday, before = NOW.date() - timedelta(days=1), NOW.date() - timedelta(days=2)
    b_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{world['b']}"
    items = focus_line_items(
        [
            (before, None, {"run-id": "r2"}, 12.07),
            (yesterday, "i-0r2", {"run-id": "r2", "team": "ml-platform"}, 24.14),
            # B's hours before its run-id tag was activated for cost allocation: its ARN is its own.
            (yesterday, b_arn, {}, 3.5),
            # Tagged and its own resource: counted once.
            (yesterday, world["a"], {"run-id": "r1"}, 0.25),
            (yesterday, None, {"run-id": "another-run"}, 99.0),
            (NOW.date() - timedelta(days=40), None, {"run-id": "r2"}, 50.0),
        ]
    )
    with items:
        result = costs(line_items=items, cost_explorer=NoCostExplorer())
    runs = by_id(result)

    assert result.to_json()["cost_source"] == "focus" and result.ce_requests == 0
    assert runs["r2"]["billed_usd"] == 36.21 and runs["r2"]["billed_through"] == yesterday.isoformat()
    assert runs["r1"]["billed_usd"] == 3.75 and runs["r1"]["billed_through"] == yesterday.isoformat()
    # r1 started today: nothing of it is before the day after yesterday, so all of it is estimated too.
    assert runs["r1"]["estimated_usd"] == runs["r1"]["instance_cost_usd"]
    assert runs["r0"]["billed_usd"] is None
    assert costs().to_json()["cost_source"] == "cost-explorer"


def test_a_stopped_instance_counts_its_hours_up_to_its_stop(world: dict[str, Any], clock: Clock) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    stopped = launch(ec2, clock, T0, run_tags("r3", LIVE), spot=False, subnet=subnet)
    clock.moment = T0 + timedelta(hours=1, minutes=30)
    ec2.stop_instances(InstanceIds=[stopped])
    clock.moment = NOW

    run = by_id(costs())["r3"]
    assert run["instance_hours_total"] == 1.5 and run["status"] == "failed"
    assert run["estimated_usd"] == round(1.5 * ON_DEMAND_HOURLY, 2)
