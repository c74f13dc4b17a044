"""A training run's stack planned offline: spot fleet shape, hardening, IAM scope, tags, secrets."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pulumi
import pytest

from infra.config import parse_stack_config, read_stack_file
from infra.iam import RUN_ROLE_PATH
from infra.mocks import ACCOUNT_ID, PlanMocks
from infra.plan import plan_environment
from infra.tagging import untagged_in_plan
from infra.training.program import plan_training_run
from infra.training.request import build_request
from mlp.errors import UserError
from mlp.tags import TRAINING_TAGS
from tests.conftest import REPO_ROOT
from tests.plan_helpers import inputs, of_type, one

TYPES = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
TRAINER_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/team/trainer:1.4"
SHARED_REPOSITORY_ARN = "arn:aws:ecr:eu-west-1:210987654321:repository/shared/base"


def plan_run(raw: dict[str, Any], **overrides: Any):
    values: dict[str, Any] = {
        "run_id": "bert-ft-01",
        "instance_types": TYPES,
        "count": 2,
        "max_hours": 8.0,
        "created_at": datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        "command": "python train.py --epochs 3",
    }
    request = build_request(parse_stack_config("dev", raw), **(values | overrides))
    result = plan_training_run(request, raw)
    return request, result.to_json(), result.outputs


@pytest.fixture(scope="module")
def planned():
    return plan_run(read_stack_file("dev", REPO_ROOT))


@pytest.fixture(scope="module")
def dev_with_training_access() -> dict[str, Any]:
    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:training"].update(
        sessionManager=True, imageRepositories=["team/trainer", SHARED_REPOSITORY_ARN]
    )
    return raw


@pytest.fixture(scope="module")
def planned_with_access(dev_with_training_access: dict[str, Any]):
    """Session Manager, two image repositories, an ECR image and the feature store."""
    return plan_run(dev_with_training_access, image=TRAINER_IMAGE, feature_store=True)


def policy_statements(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    policy = json.loads(inputs(plan, "aws:iam/rolePolicy:RolePolicy")["policy"])
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def boot_script(plan: dict[str, Any]) -> str:
    return gzip.decompress(
        base64.b64decode(inputs(plan, "aws:ec2/launchTemplate:LaunchTemplate")["userData"])
    ).decode()


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
    script = boot_script(plan)
    assert script.startswith("#!/") and "bert-ft-01" in script and "python train.py --epochs 3" in script


def test_only_the_host_reaches_instance_metadata(planned) -> None:
    _, plan, _ = planned
    options = inputs(plan, "aws:ec2/launchTemplate:LaunchTemplate")["metadataOptions"]
    assert options["httpPutResponseHopLimit"] == 1


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


def test_by_default_the_role_has_no_managed_policy_and_no_optional_grant(planned) -> None:
    _, plan, _ = planned
    assert of_type(plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []
    assert of_type(plan, "aws:iam/policyAttachment:PolicyAttachment") == []
    assert not inputs(plan, "aws:iam/role:Role").get("managedPolicyArns")
    statements = policy_statements(plan)
    assert set(statements) == {
        "RunCheckpoints",
        "ListRunPrefix",
        "CheckpointKey",
        "GpuMetrics",
        "StopOwnFleetWhenDone",
    }
    actions = json.dumps([statement["Action"] for statement in statements.values()])
    assert "ssm" not in actions and "ecr:" not in actions and "secretsmanager:" not in actions


def test_run_role_and_instance_profile_live_under_the_runs_path(planned) -> None:
    _, plan, _ = planned
    assert inputs(plan, "aws:iam/role:Role")["path"] == RUN_ROLE_PATH == "/ml-platform/runs/"
    assert inputs(plan, "aws:iam/instanceProfile:InstanceProfile")["path"] == RUN_ROLE_PATH


def test_session_manager_grants_only_what_the_agent_needs(planned_with_access) -> None:
    _, plan, _ = planned_with_access
    statement = policy_statements(plan)["SessionManager"]
    assert sorted(statement["Action"]) == [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    ]
    assert of_type(plan, "aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []


def test_image_pulls_are_scoped_to_the_configured_repositories(planned_with_access) -> None:
    _, plan, _ = planned_with_access
    statements = policy_statements(plan)
    pull = statements["PullTrainerImages"]
    assert sorted(pull["Action"]) == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ]
    assert pull["Resource"] == [
        f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/team/trainer",
        SHARED_REPOSITORY_ARN,
    ]
    assert statements["EcrLogin"]["Action"] == "ecr:GetAuthorizationToken"
    assert statements["EcrLogin"]["Resource"] == "*"
    script = boot_script(plan)
    assert f"readonly ECR_REGISTRY={ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com\n" in script
    assert "readonly ECR_REGION=us-east-1\n" in script


def test_feature_store_grants_exactly_its_secret(planned_with_access) -> None:
    request, plan, _ = planned_with_access
    raw = read_stack_file("dev", REPO_ROOT)
    environment = plan_environment(request.environment, raw).outputs
    secret_arn = environment["featureStoreAuthSecretArn"]
    statement = policy_statements(plan)["FeatureStoreAuthToken"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == secret_arn and secret_arn.startswith("arn:aws:secretsmanager:")
    script = boot_script(plan)
    assert f"readonly FEATURE_STORE_AUTH_SECRET_ARN={secret_arn}\n" in script
    assert f"readonly FEATURE_STORE_HOST={environment['featureStoreEndpoint']}\n" in script
    assert f"readonly FEATURE_STORE_PORT={environment['featureStorePort']}\n" in script


def test_without_the_feature_store_the_run_reads_none_of_it(planned) -> None:
    _, plan, _ = planned
    script = boot_script(plan)
    assert "readonly FEATURE_STORE_AUTH_SECRET_ARN=''\n" in script
    assert "readonly FEATURE_STORE_HOST=''\n" in script
    assert "cache.amazonaws.com" not in script


def auth_token_values(plan: dict[str, Any]) -> set[str]:
    """What the mocks make of every random password in the environment: the AUTH token among them."""
    mocks = PlanMocks(region="us-east-1")
    return {
        mocks.new_resource(
            pulumi.runtime.MockResourceArgs(
                typ=item["type"], name=item["name"], inputs={}, provider="", resource_id=""
            )
        )[1]["result"]
        for item in of_type(plan, "random:index/randomPassword:RandomPassword")
    }


def test_the_auth_token_is_in_no_output_and_no_input_of_the_run(planned_with_access) -> None:
    request, plan, outputs = planned_with_access
    raw = read_stack_file("dev", REPO_ROOT)
    environment = plan_environment(request.environment, raw).to_json()
    tokens = auth_token_values(environment)
    assert tokens and all(len(token) >= 16 for token in tokens)
    recorded = json.dumps({"resources": plan["resources"], "outputs": outputs})
    assert [token for token in tokens if token in recorded] == []
    assert not any("featureStore" in name or "Token" in name for name in outputs)


def test_an_environment_without_the_secret_output_is_refused_in_one_line(monkeypatch) -> None:
    from infra.training import program

    real = program.plan_environment

    def without_secret_arn(*args: Any):
        result = real(*args)
        result.outputs.pop("featureStoreAuthSecretArn")
        return result

    monkeypatch.setattr(program, "plan_environment", without_secret_arn)
    with pytest.raises(UserError) as error:
        plan_run(read_stack_file("dev", REPO_ROOT), feature_store=True)
    assert str(error.value) == (
        "environment stack dev does not export featureStoreAuthSecretArn, which the run reads; "
        "drop --feature-store or deploy an environment program that exports it"
    )


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
