"""A training run's stack planned offline: spot fleet shape, hardening, IAM scope, tags."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime

import pytest

from infra.config import parse_stack_config, read_stack_file
from infra.tagging import untagged_in_plan
from infra.training.program import plan_training_run
from infra.training.request import build_request
from mlp.tags import TRAINING_TAGS
from tests.conftest import REPO_ROOT
from tests.plan_helpers import inputs, of_type, one

TYPES = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]


@pytest.fixture(scope="module")
def planned():
    raw = read_stack_file("dev", REPO_ROOT)
    request = build_request(
        parse_stack_config("dev", raw),
        run_id="bert-ft-01",
        instance_types=TYPES,
        count=2,
        max_hours=8.0,
        created_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        command="python train.py --epochs 3",
    )
    result = plan_training_run(request, raw)
    return request, result.to_json(), result.outputs


def test_fleet_is_spot_only_over_three_types_with_rebalancing(planned) -> None:
    _, plan, _ = planned
    group = inputs(plan, "aws:autoscaling/group:Group")
    distribution = group["mixedInstancesPolicy"]["instancesDistribution"]
    assert distribution["onDemandPercentageAboveBaseCapacity"] == 0
    assert distribution["onDemandBaseCapacity"] == 0
    assert distribution["spotAllocationStrategy"] == "price-capacity-optimized"
    overrides = [
        item["instanceType"] for item in group["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
    ]
    assert overrides == TYPES
    assert group["capacityRebalance"] is True
    assert group["desiredCapacity"] == 2 and group["maxSize"] == 2
    assert group["maxInstanceLifetime"] == 86400  # the shortest AWS accepts; the script stops at 8 h
    assert group["name"] == "mlp-train-bert-ft-01"


def test_launch_template_is_hardened_and_boots_the_run(planned) -> None:
    _, plan, _ = planned
    template = inputs(plan, "aws:ec2/launchTemplate:LaunchTemplate")
    assert template["metadataOptions"]["httpTokens"] == "required"
    assert template["imageId"].startswith("ami-")
    assert template["instanceInitiatedShutdownBehavior"] == "terminate"
    volume = template["blockDeviceMappings"][0]["ebs"]
    assert volume["encrypted"] == "true" and volume["volumeType"] == "gp3" and volume["volumeSize"] == 200
    script = gzip.decompress(base64.b64decode(template["userData"])).decode()
    assert script.startswith("#!/") and "bert-ft-01" in script and "python train.py --epochs 3" in script


def test_instance_role_is_scoped_to_the_run_prefix(planned) -> None:
    _, plan, outputs = planned
    policy = json.loads(inputs(plan, "aws:iam/rolePolicy:RolePolicy")["policy"])
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    bucket = outputs["checkpointBucket"]
    assert statements["RunCheckpoints"]["Resource"] == f"arn:aws:s3:::{bucket}/runs/bert-ft-01/*"
    assert statements["ListRunPrefix"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/bert-ft-01/*"]}}
    assert "s3:DeleteObject" not in statements["RunCheckpoints"]["Action"]
    assert statements["GpuMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}
    resources = [statement["Resource"] for statement in policy["Statement"]]
    assert f"arn:aws:s3:::{bucket}/*" not in resources and statements["RunCheckpoints"]["Resource"] != "*"


def test_interruption_events_reach_an_encrypted_queue(planned) -> None:
    _, plan, _ = planned
    patterns = sorted(
        json.loads(rule["inputs"]["eventPattern"])["detail-type"][0]
        for rule in of_type(plan, "aws:cloudwatch/eventRule:EventRule")
    )
    assert patterns == ["EC2 Instance Rebalance Recommendation", "EC2 Spot Instance Interruption Warning"]
    assert inputs(plan, "aws:sqs/queue:Queue")["sqsManagedSseEnabled"] is True
    assert len(of_type(plan, "aws:cloudwatch/eventTarget:EventTarget")) == 2


def test_every_resource_and_launch_carries_run_tags(planned) -> None:
    request, plan, _ = planned
    required = (*request.environment.mandatory_tags, *TRAINING_TAGS)
    assert untagged_in_plan(plan["resources"], required) == []
    provider = one(plan, "pulumi:providers:aws")
    assert provider["inputs"]["defaultTags"]["tags"]["expires-at"] == "2026-11-23T20:00:00Z"
    group = inputs(plan, "aws:autoscaling/group:Group")
    propagated = {tag["key"]: tag["value"] for tag in group["tags"] if tag["propagateAtLaunch"]}
    assert propagated["run-id"] == "bert-ft-01" and propagated["ephemeral"] == "true"
    kinds = {
        spec["resourceType"]
        for spec in inputs(plan, "aws:ec2/launchTemplate:LaunchTemplate")["tagSpecifications"]
    }
    assert kinds == {"instance", "volume", "network-interface", "spot-instances-request"}


def test_environment_outputs_flow_through_the_stack_reference(planned) -> None:
    _, plan, outputs = planned
    group = inputs(plan, "aws:autoscaling/group:Group")
    assert len(group["vpcZoneIdentifiers"]) == 2 and all(
        s.startswith("subnet-") for s in group["vpcZoneIdentifiers"]
    )
    assert inputs(plan, "aws:ec2/launchTemplate:LaunchTemplate")["vpcSecurityGroupIds"][0].startswith("sg-")
    assert outputs["checkpointPrefix"] == "runs/bert-ft-01/" and outputs["checkpointBucket"].startswith(
        "mlp-dev-checkpoints-"
    )
