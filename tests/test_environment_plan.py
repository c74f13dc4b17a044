"""The environment stacks planned offline under mocks: tags, encryption, exposure, dev vs prod."""

from __future__ import annotations

import json

import pytest

from infra.plan import load_and_plan
from infra.tagging import is_taggable, receives_default_tags, untagged_in_plan
from mlp.tags import DEFAULT_MANDATORY_TAGS, WORKLOAD_LABELS
from tests.plan_helpers import inputs, of_type, one

STACKS = ("dev", "prod")


@pytest.fixture(scope="module", params=STACKS)
def planned(request: pytest.FixtureRequest) -> tuple:
    return load_and_plan(request.param)


@pytest.fixture(scope="module")
def dev() -> dict:
    return load_and_plan("dev")[1]


@pytest.fixture(scope="module")
def prod() -> dict:
    return load_and_plan("prod")[1]


def test_every_taggable_resource_and_everything_launched_carries_every_mandatory_tag(planned: tuple) -> None:
    config, plan = planned
    taggable = [item for item in plan["resources"] if item["custom"] and is_taggable(item["type"])]
    assert len(taggable) > 40
    assert untagged_in_plan(plan["resources"], config.mandatory_tags) == []


def test_every_aws_resource_uses_the_tagged_provider(planned: tuple) -> None:
    config, plan = planned
    provider = one(plan, "pulumi:providers:aws")
    assert provider["inputs"]["defaultTags"]["tags"] == config.resource_tags
    aws_resources = [item for item in plan["resources"] if item["type"].startswith("aws:")]
    assert aws_resources and all(item["provider"] == provider["urn"] for item in aws_resources)


def test_resources_outside_default_tags_get_explicit_launch_tags(planned: tuple) -> None:
    config, plan = planned
    for template in of_type(plan, "aws:ec2/launchTemplate:LaunchTemplate"):
        kinds = {spec["resourceType"]: spec["tags"] for spec in template["inputs"]["tagSpecifications"]}
        assert {"instance", "volume", "network-interface"} <= set(kinds)
        for tags in kinds.values():
            assert {key: tags[key] for key in config.mandatory_tags} == {
                key: config.resource_tags[key] for key in config.mandatory_tags
            }


def test_a_resource_without_tags_is_reported(dev: dict) -> None:
    stripped = json.loads(json.dumps(dev))
    bucket = one(stripped, "aws:s3/bucket:Bucket")
    bucket["provider"] = None
    template = of_type(stripped, "aws:ec2/launchTemplate:LaunchTemplate")[0]
    template["inputs"]["tagSpecifications"] = []
    gaps = untagged_in_plan(stripped["resources"], DEFAULT_MANDATORY_TAGS)
    assert {(gap["name"], gap["launched"]) for gap in gaps} == {
        (bucket["name"], None),
        (template["name"], "instance"),
        (template["name"], "volume"),
        (template["name"], "network-interface"),
    }
    assert all(gap["missing"] == list(DEFAULT_MANDATORY_TAGS) for gap in gaps)


def test_taggability_comes_from_pulumi_aws_classes() -> None:
    assert is_taggable("aws:s3/bucket:Bucket")
    assert is_taggable("aws:autoscaling/group:Group")
    assert not receives_default_tags("aws:autoscaling/group:Group")
    assert not is_taggable("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert not is_taggable("aws:s3/bucketVersioning:BucketVersioning")
    assert not is_taggable("kubernetes:core/v1:Namespace")


def test_checkpoint_bucket_is_private_encrypted_versioned_and_tls_only(planned: tuple) -> None:
    config, plan = planned
    key = one(plan, "aws:kms/key:Key", "checkpoints-key")
    assert key["inputs"]["enableKeyRotation"] is True
    encryption = inputs(
        plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    default = encryption["rules"][0]["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms" and default["kmsMasterKeyId"].startswith("arn:aws:kms:")
    public = inputs(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(
        public[flag] is True
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    assert (
        inputs(plan, "aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"]
        == "Enabled"
    )
    policy = json.loads(inputs(plan, "aws:s3/bucketPolicy:BucketPolicy")["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = {
        rule["id"]: rule
        for rule in inputs(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    }
    assert (
        rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"]
        == config.checkpoints.noncurrent_version_expiration_days
    )
    assert (
        rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        == 3
    )
    bucket = one(plan, "aws:s3/bucket:Bucket")
    assert bucket["inputs"]["forceDestroy"] is False
    assert bucket["protect"] is config.is_prod
    assert ("transition-old-runs" in rules) is config.is_prod


def test_feature_store_encryption_and_availability_dev_vs_prod(dev: dict, prod: dict) -> None:
    for plan in (dev, prod):
        group = inputs(plan, "aws:elasticache/replicationGroup:ReplicationGroup")
        assert group["atRestEncryptionEnabled"] is True and group["transitEncryptionEnabled"] is True
        assert group["authToken"] == "[secret]"
        ingress = [
            rule["inputs"]
            for rule in of_type(plan, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
            if rule["name"].startswith("feature-store-")
        ]
        assert len(ingress) == 2
        assert all(
            rule["fromPort"] == 6379 and rule["referencedSecurityGroupId"] and "cidrIpv4" not in rule
            for rule in ingress
        )
    dev_group = inputs(dev, "aws:elasticache/replicationGroup:ReplicationGroup")
    assert dev_group["numCacheClusters"] == 1 and dev_group["automaticFailoverEnabled"] is False
    prod_group = inputs(prod, "aws:elasticache/replicationGroup:ReplicationGroup")
    assert prod_group["numCacheClusters"] >= 2
    assert prod_group["automaticFailoverEnabled"] is True and prod_group["multiAzEnabled"] is True
    assert prod_group["snapshotRetentionLimit"] > 0


def test_serving_cluster_hardening_dev_vs_prod(dev: dict, prod: dict) -> None:
    for plan in (dev, prod):
        cluster = inputs(plan, "aws:eks/cluster:Cluster")
        assert cluster["encryptionConfig"]["resources"] == ["secrets"]
        assert set(cluster["enabledClusterLogTypes"]) == {
            "api",
            "audit",
            "authenticator",
            "controllerManager",
            "scheduler",
        }
        assert cluster["vpcConfig"]["endpointPrivateAccess"] is True
        for template in of_type(plan, "aws:ec2/launchTemplate:LaunchTemplate"):
            assert template["inputs"]["metadataOptions"]["httpTokens"] == "required"
            assert all(
                device["ebs"]["encrypted"] == "true" for device in template["inputs"]["blockDeviceMappings"]
            )
        groups = {group["name"]: group["inputs"] for group in of_type(plan, "aws:eks/nodeGroup:NodeGroup")}
        assert groups["serving-cpu"]["capacityType"] == "ON_DEMAND"
        assert all("launchTemplate" in group for group in groups.values())
        assert one(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")["inputs"][
            "clientIdLists"
        ] == ["sts.amazonaws.com"]
        assert {addon["inputs"]["addonName"] for addon in of_type(plan, "aws:eks/addon:Addon")} >= {
            "vpc-cni",
            "coredns",
            "kube-proxy",
        }
    assert inputs(dev, "aws:eks/cluster:Cluster")["vpcConfig"]["endpointPublicAccess"] is True
    assert inputs(prod, "aws:eks/cluster:Cluster")["vpcConfig"]["endpointPublicAccess"] is False
    assert inputs(dev, "aws:eks/nodeGroup:NodeGroup", "serving-gpu")["capacityType"] == "SPOT"
    assert inputs(prod, "aws:eks/nodeGroup:NodeGroup", "serving-gpu")["capacityType"] == "ON_DEMAND"


def test_kubernetes_workloads_are_labelled_and_gpu_aware(planned: tuple) -> None:
    config, plan = planned
    expected = {key: config.resource_tags[key] for key in WORKLOAD_LABELS}
    workloads = [item for item in plan["resources"] if item["type"].startswith("kubernetes:")]
    assert {item["type"].split(":")[-1] for item in workloads} == {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "DaemonSet",
        "ConfigMap",
        "ServiceAccount",
        "NetworkPolicy",
    }
    for item in workloads:
        labels = item["inputs"]["metadata"]["labels"]
        assert {key: labels.get(key) for key in WORKLOAD_LABELS} == expected, item["name"]
        template = item["inputs"].get("spec", {}).get("template")
        if template:
            assert {key: template["metadata"]["labels"].get(key) for key in WORKLOAD_LABELS} == expected
    deployment = inputs(plan, "kubernetes:apps/v1:Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"] and container["livenessProbe"]["httpGet"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"] == {
        "nvidia.com/gpu.present": "true"
    }


def test_network_spans_availability_zones(dev: dict, prod: dict) -> None:
    for plan, zones, nats in ((dev, 2, 1), (prod, 3, 3)):
        private = [s["inputs"] for s in of_type(plan, "aws:ec2/subnet:Subnet") if "-private-" in s["name"]]
        assert len({subnet["availabilityZone"] for subnet in private}) == zones
        assert all(subnet["mapPublicIpOnLaunch"] is False for subnet in private)
        assert len(of_type(plan, "aws:ec2/natGateway:NatGateway")) == nats
        gateways = [
            e["inputs"]
            for e in of_type(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
            if e["inputs"]["vpcEndpointType"] == "Gateway"
        ]
        assert [gateway["serviceName"] for gateway in gateways] == ["com.amazonaws.us-east-1.s3"]


def test_cost_governance(planned: tuple) -> None:
    config, plan = planned
    activated = {
        item["inputs"]["tagKey"]
        for item in of_type(plan, "aws:costexplorer/costAllocationTag:CostAllocationTag")
    }
    assert set(config.mandatory_tags) <= activated
    budgets = {item["inputs"]["name"]: item["inputs"] for item in of_type(plan, "aws:budgets/budget:Budget")}
    assert set(budgets) == {f"mlp-{config.environment}"} | {
        f"mlp-{config.environment}-team-{team}" for team in config.budgets.team_monthly_usd
    }
    environment_budget = budgets[f"mlp-{config.environment}"]
    assert float(environment_budget["limitAmount"]) == config.budgets.environment_monthly_usd
    thresholds = sorted(
        n["threshold"] for n in environment_budget["notifications"] if n["notificationType"] == "ACTUAL"
    )
    assert thresholds == sorted(config.budgets.alert_thresholds_pct)
    assert one(plan, "aws:costexplorer/anomalySubscription:AnomalySubscription")["inputs"]["monitorArnLists"]


def test_plan_json_has_the_design_shape(planned: tuple) -> None:
    _, plan = planned
    assert set(plan) == {"project", "stack", "resources", "estimated_monthly_cost_usd"}
    assert plan["project"] == "ml-platform" and isinstance(plan["estimated_monthly_cost_usd"], float)
    urns = {item["urn"] for item in plan["resources"]}
    for item in plan["resources"]:
        assert item["urn"].startswith(f"urn:pulumi:{plan['stack']}::ml-platform::")
        assert (
            isinstance(item["type"], str)
            and isinstance(item["name"], str)
            and isinstance(item["custom"], bool)
        )
        assert item["parent"] is None or item["parent"] in urns
        assert item["provider"] is None or item["provider"] in urns
        assert isinstance(item["inputs"], dict)
    json.dumps(plan)  # serialisable as-is


def test_prod_costs_more_than_dev(dev: dict, prod: dict) -> None:
    assert 0 < dev["estimated_monthly_cost_usd"] < prod["estimated_monthly_cost_usd"]


def test_an_existing_vpc_is_used_instead_of_a_new_one() -> None:
    from infra.config import parse_stack_config, read_stack_file
    from infra.plan import plan_environment
    from tests.conftest import REPO_ROOT

    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:network"] = {
        "existingVpcId": "vpc-0abc1234",
        "existingPrivateSubnetIds": ["subnet-0aaa1111", "subnet-0bbb2222"],
    }
    plan = plan_environment(parse_stack_config("dev", raw), raw).to_json()
    types = {item["type"] for item in plan["resources"]}
    assert not types & {"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/natGateway:NatGateway"}
    assert inputs(plan, "aws:eks/cluster:Cluster")["vpcConfig"]["subnetIds"] == [
        "subnet-0aaa1111",
        "subnet-0bbb2222",
    ]
    assert inputs(plan, "aws:elasticache/subnetGroup:SubnetGroup")["subnetIds"] == [
        "subnet-0aaa1111",
        "subnet-0bbb2222",
    ]
    assert (
        one(plan, "aws:ec2/securityGroup:SecurityGroup", "network-training")["inputs"]["vpcId"]
        == "vpc-0abc1234"
    )


def test_serving_gpu_nodes_publish_the_gpu_metric_finops_reads(dev: dict) -> None:
    from finops.idle import GPU_METRIC
    from mlp import gpu_metrics

    config = json.loads(inputs(dev, "kubernetes:core/v1:ConfigMap")["data"]["cwagentconfig.json"])
    metrics = config["metrics"]
    assert (
        metrics["namespace"],
        f"nvidia_smi_{metrics['metrics_collected']['nvidia_gpu']['measurement'][0]}",
    ) == GPU_METRIC
    assert metrics["aggregation_dimensions"] == [[gpu_metrics.DIMENSION]]
    daemonsets = {
        item["inputs"]["metadata"]["name"]: item["inputs"]["spec"]["template"]["spec"]
        for item in of_type(dev, "kubernetes:apps/v1:DaemonSet")
    }
    agent = daemonsets["cloudwatch-agent-gpu"]
    assert (
        agent["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        and agent["tolerations"][0]["key"] == "nvidia.com/gpu"
    )
    assert agent["volumes"][0]["configMap"]["name"] == "cloudwatch-agent-gpu"
    assert set(daemonsets) == {"cloudwatch-agent-gpu", "nvidia-device-plugin"}
