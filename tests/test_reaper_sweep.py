"""Orphan sweeping and destroy receipts against moto: planted orphans go, look-alikes stay."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from finops.locks import FileLocks, LockHeld, S3Locks
from finops.reaper import Reaper, ReapPolicy, RunFacts, aws_facts, expired_run_leftovers
from finops.run_resources import find_run_resources
from infra.training.automation import StackSummary
from mlp import pricing

REGION = "us-east-1"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE = {
    "team": "ml",
    "project": "recsys",
    "environment": "dev",
    "cost-center": "cc",
    "owner": "o@x.io",
    "managed-by": "pulumi",
}


def run_tags(run_id: str, **overrides: str) -> dict[str, str]:
    tags = {
        **BASE,
        "run-id": run_id,
        "ephemeral": "true",
        "pulumi-stack": f"train-{run_id}",
        "expires-at": "2026-11-23T10:00:00Z",
    }
    tags.update(overrides)
    return {key: value for key, value in tags.items() if value != "-"}


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


_planted = itertools.count()


def plant_run(run_id: str, tags: dict[str, str], *, with_asg: bool = True) -> dict[str, str]:
    """Everything a training stack creates, carrying `tags`; returns the ids by kind."""
    serial = next(_planted)
    ec2 = boto3.client("ec2", region_name=REGION)
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"lt-{run_id}-{serial}",
        LaunchTemplateData={"ImageId": image, "InstanceType": "g5.xlarge"},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": _tag_list(tags)}],
    )["LaunchTemplate"]["LaunchTemplateId"]
    instance = ec2.run_instances(
        ImageId=image,
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": _tag_list(tags)}],
    )["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(
        AvailabilityZone=f"{REGION}a",
        Size=200,
        VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": _tag_list(tags)}],
    )["VolumeId"]
    ids = {"launch-template": template, "instance": instance, "volume": volume}
    if with_asg:
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        name = f"mlp-train-{run_id}-{serial}"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            VPCZoneIdentifier=subnet,
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in tags.items()],
        )
        ids["asg"] = name
    sqs = boto3.client("sqs", region_name=REGION)
    ids["queue"] = sqs.create_queue(QueueName=f"mlp-train-{run_id}-{serial}", tags=tags)["QueueUrl"]
    events = boto3.client("events", region_name=REGION)
    rule = f"fleet-{run_id}-{serial}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.ec2"]}), Tags=_tag_list(tags))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": f"arn:aws:sqs:{REGION}:123456789012:x"}])
    ids["rule"] = rule
    iam = boto3.client("iam")
    role = f"fleet-{run_id}-{serial}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}", Tags=_tag_list(tags))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="run",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            }
        ),
    )
    iam.create_instance_profile(InstanceProfileName=role, Tags=_tag_list(tags))
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    ids["role"] = role
    return ids


class Backend:
    """The Automation API boundary; `destroy` deletes what its stack owns, except what `leave` names."""

    def __init__(
        self,
        stacks: list[StackSummary],
        owned: dict[str, dict[str, str]] | None = None,
        leave: set[str] = frozenset(),
    ) -> None:
        self.stacks = {summary.name: summary for summary in stacks}
        self.owned = owned or {}
        self.leave = leave
        self.calls: list[tuple[str, str]] = []

    def list_stacks(self) -> list[StackSummary]:
        return list(self.stacks.values())

    def outputs(self, stack: str) -> dict:
        return {}

    def destroy(self, stack: str, program, *, on_output) -> None:
        self.calls.append(("destroy", stack))
        ids = self.owned.get(stack, {})
        ec2 = boto3.client("ec2", region_name=REGION)
        boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(
            AutoScalingGroupName=ids["asg"], ForceDelete=True
        )
        ec2.terminate_instances(InstanceIds=[ids["instance"]])
        ec2.delete_launch_template(LaunchTemplateId=ids["launch-template"])
        if "volume" not in self.leave:
            ec2.delete_volume(VolumeId=ids["volume"])
        boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=ids["queue"])
        events = boto3.client("events", region_name=REGION)
        events.remove_targets(Rule=ids["rule"], Ids=["queue"])
        events.delete_rule(Name=ids["rule"])
        iam = boto3.client("iam")
        iam.remove_role_from_instance_profile(InstanceProfileName=ids["role"], RoleName=ids["role"])
        iam.delete_instance_profile(InstanceProfileName=ids["role"])
        iam.delete_role_policy(RoleName=ids["role"], PolicyName="run")
        iam.delete_role(RoleName=ids["role"])

    def remove(self, stack: str) -> None:
        self.calls.append(("remove", stack))
        self.stacks.pop(stack)


def _reaper(
    backend: Backend, tmp_path: Path, facts: dict[str, RunFacts] | None = None, logs: list[str] | None = None
) -> Reaper:
    return Reaper(
        backend,
        regions=[REGION],
        policy=ReapPolicy(),
        facts=lambda summary: (facts or {}).get(summary.name, RunFacts()),
        locks=FileLocks(tmp_path / "locks"),
        run_cost=lambda run_id: None,
        log=(logs if logs is not None else []).append,
        notify=lambda message: None,
    )


@pytest.fixture
def aws_account():
    with mock_aws():
        yield


def test_planted_orphans_are_swept_and_look_alikes_kept(aws_account, tmp_path: Path) -> None:
    orphan = plant_run("orph1", run_tags("orph1"))
    look_alikes = [
        plant_run("orph1", run_tags("orph1", ephemeral="false"), with_asg=False),
        plant_run("orph1", run_tags("orph1", **{"pulumi-stack": "dev"}), with_asg=False),
        plant_run("orph1", run_tags("orph1", ephemeral="-"), with_asg=False),
    ]
    live = plant_run("live1", run_tags("live1"))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlp-dev-checkpoints-x")
    s3.put_bucket_tagging(Bucket="mlp-dev-checkpoints-x", Tagging={"TagSet": _tag_list(run_tags("orph1"))})
    s3.put_object(Bucket="mlp-dev-checkpoints-x", Key="runs/orph1/checkpoints/step-1.pt", Body=b"w")
    backend = Backend(
        [StackSummary("train-live1", run_tags("live1", **{"expires-at": "2099-01-01T00:00:00Z"}))]
    )

    dry = _reaper(backend, tmp_path).run(apply=False, now=NOW)
    assert [(c.stack, c.reason, c.action) for c in dry.candidates] == [("train-orph1", "orphaned", "destroy")]
    assert len(find_run_resources([REGION], "orph1")) == 7  # nothing touched in a dry run

    result = _reaper(backend, tmp_path).run(apply=True, now=NOW)
    assert find_run_resources([REGION], "orph1") == []
    receipt = result.receipts[0]
    assert receipt.leaks == [] and len(receipt.removed) == 7 and not result.leaked

    ec2 = boto3.client("ec2", region_name=REGION)
    kept_volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert {item["volume"] for item in look_alikes} <= kept_volumes
    assert orphan["volume"] not in kept_volumes and live["volume"] in kept_volumes
    kept_roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert {item["role"] for item in look_alikes} | {live["role"]} <= kept_roles and orphan[
        "role"
    ] not in kept_roles
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert states[orphan["instance"]] == "terminated"
    assert all(states[item["instance"]] == "running" for item in [*look_alikes, live])

    assert [o["Key"] for o in s3.list_objects_v2(Bucket="mlp-dev-checkpoints-x")["Contents"]] == [
        "runs/orph1/checkpoints/step-1.pt"
    ]

    again = _reaper(backend, tmp_path).run(apply=True, now=NOW)
    assert again.candidates == [] and again.receipts == []


def test_a_destroy_that_leaves_a_volume_is_a_leak(aws_account, tmp_path: Path) -> None:
    ids = plant_run("r7", run_tags("r7"))
    backend = Backend([StackSummary("train-r7", run_tags("r7"))], owned={"train-r7": ids}, leave={"volume"})
    logs: list[str] = []
    result = _reaper(backend, tmp_path, logs=logs).run(apply=True, now=NOW)
    assert [(c.reason, c.action) for c in result.candidates] == [("expired", "destroy")]
    assert backend.calls == [("destroy", "train-r7"), ("remove", "train-r7")]
    assert result.leaked
    [leak] = result.receipts[0].leaks
    assert leak["kind"] == "ec2:volume" and leak["id"] == ids["volume"] and leak["hourly_cost_usd"] > 0
    assert any(line.startswith("LEAK after destroying train-r7") for line in logs)


def test_one_lock_per_stack(tmp_path: Path) -> None:
    clock = [1000.0]
    locks = FileLocks(tmp_path, clock=lambda: clock[0])
    with locks.hold("train-a"):
        with pytest.raises(LockHeld, match="train-a is locked by another reaper"), locks.hold("train-a"):
            pass
        with locks.hold("train-b"):
            pass
    with locks.hold("train-a"):
        pass


def test_s3_locks_are_shared_through_the_state_bucket(aws_account) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlp-pulumi-state")
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC)]
    first, second = (
        S3Locks(s3, "mlp-pulumi-state", "/state"),
        S3Locks(s3, "mlp-pulumi-state", "state", clock=lambda: now[0]),
    )
    with first.hold("train-a"):
        assert (
            s3.list_objects_v2(Bucket="mlp-pulumi-state")["Contents"][0]["Key"]
            == "state/.ml-platform-locks/train-a.lock"
        )
        with pytest.raises(LockHeld, match="train-a is locked by another reaper"), second.hold("train-a"):
            pass
    with second.hold("train-a"):
        pass
    assert "Contents" not in s3.list_objects_v2(Bucket="mlp-pulumi-state")


def test_leftovers_of_expired_runs_are_flagged_without_the_backend(aws_account) -> None:
    finished = plant_run("done1", run_tags("done1", **{"expires-at": "2026-11-22T08:00:00Z"}), with_asg=False)
    plant_run("busy1", run_tags("busy1", **{"expires-at": "2026-11-23T20:00:00Z"}), with_asg=False)
    [leftover] = expired_run_leftovers([REGION], NOW)
    assert (leftover["run_id"], leftover["reason"], leftover["action"]) == ("done1", "expired", "destroy")
    assert finished["volume"] in {item["id"] for item in leftover["resources"]}
    expected = 200 * pricing.GP3_GB_MONTHLY / pricing.HOURS_PER_MONTH + pricing.on_demand_hourly("g5.xlarge")
    assert leftover["hourly_cost_usd"] == pytest.approx(expected, abs=1e-4)


def test_aws_facts_read_the_runs_instances_and_marker(aws_account) -> None:
    ids = plant_run("r4", run_tags("r4"), with_asg=False)
    plant_run("r4", run_tags("r4", **{"pulumi-stack": "dev"}), with_asg=False)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlp-dev-checkpoints-y")

    class WithBucket(Backend):
        def outputs(self, stack: str) -> dict:
            return {"checkpointBucket": "mlp-dev-checkpoints-y"}

    facts = aws_facts(WithBucket([]), [REGION], {ids["instance"]: 3.0})(
        StackSummary("train-r4", run_tags("r4"))
    )
    assert facts.instance_ids == (ids["instance"],)
    assert facts.completion is None and facts.idle_hours == {ids["instance"]: 3.0}
