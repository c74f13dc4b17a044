"""The environment stacks planned offline under mocks: tags, encryption, exposure, dev vs prod."""

from __future__ import annotations

import json

import pytest

from infra.mocks import ACCOUNT_ID
from infra.mocks import _hex as _mock_hex
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
        plan,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "checkpoints-encryption",
    )
    default = encryption["rules"][0]["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms" and default["kmsMasterKeyId"].startswith("arn:aws:kms:")
    public = inputs(
        plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "checkpoints-public-access"
    )
    assert all(
        public[flag] is True
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    assert (
        inputs(plan, "aws:s3/bucketVersioning:BucketVersioning", "checkpoints-versioning")[
            "versioningConfiguration"
        ]["status"]
        == "Enabled"
    )
    policy = json.loads(inputs(plan, "aws:s3/bucketPolicy:BucketPolicy", "checkpoints-tls-only")["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = {
        rule["id"]: rule
        for rule in inputs(
            plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "checkpoints-lifecycle"
        )["rules"]
    }
    assert (
        rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"]
        == config.checkpoints.noncurrent_version_expiration_days
    )
    assert (
        rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        == 3
    )
    bucket = one(plan, "aws:s3/bucket:Bucket", "checkpoints")
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
    # The FinOps jobs' CronJobs come with the stack that hosts them.
    jobs = {"CronJob"} if config.finops.enabled else set()
    assert {item["type"].split(":")[-1] for item in workloads} == jobs | {
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


def _policy(resource: dict) -> dict:
    return json.loads(resource["inputs"]["policy"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _key_behind(plan: dict, resource: dict, key_input: str) -> dict:
    """The KMS key resource an input (`kmsKeyId`, ...) of `resource` came from."""
    keys = {key["urn"]: key for key in of_type(plan, "aws:kms/key:Key")}
    sources = [urn for urn in resource["propertyDependencies"].get(key_input, []) if urn in keys]
    assert len(sources) == 1, f"{resource['name']}.{key_input} comes from {sources}, not one KMS key"
    return keys[sources[0]]


def _statements_for(policy: dict, principal_kind: str, principal: str) -> list[dict]:
    return [
        statement
        for statement in policy["Statement"]
        if principal in _as_list(statement["Principal"].get(principal_kind, []))
    ]


def test_serving_node_launch_templates_keep_pods_off_the_node_role(planned: tuple) -> None:
    _, plan = planned
    templates = of_type(plan, "aws:ec2/launchTemplate:LaunchTemplate")
    assert {template["name"] for template in templates} == {"serving-cpu-nodes", "serving-gpu-nodes"}
    for template in templates:
        assert template["inputs"]["metadataOptions"]["httpPutResponseHopLimit"] == 1, template["name"]


def test_every_kms_key_has_an_explicit_policy_where_root_administers_and_only_named_users_use(
    planned: tuple,
) -> None:
    _, plan = planned
    keys = of_type(plan, "aws:kms/key:Key")
    # Other components (an opt-in cost export) may add keys; every key, theirs too, is checked below.
    assert {key["name"] for key in keys} >= {
        "checkpoints-key",
        "serving-secrets",
        "serving-logs",
        "feature-store-at-rest",
        "cost-governance-alerts",
        "network-flow-logs",
    }
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    for key in keys:
        assert key["inputs"]["enableKeyRotation"] is True, key["name"]
        statements = _policy(key)["Statement"]
        for statement in statements:
            assert statement["Effect"] == "Allow"
            actions = _as_list(statement["Action"])
            assert not {"*", "kms:*"} & set(actions), (key["name"], statement["Sid"])
            if "Service" in statement["Principal"]:
                assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT_ID
        administration = [s for s in statements if s["Principal"] == {"AWS": root} and "Condition" not in s]
        assert len(administration) == 1, key["name"]
        admin_actions = set(administration[0]["Action"])
        assert {"kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:EnableKeyRotation"} <= admin_actions
        assert not admin_actions & {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:CreateGrant"}
        # The account's principals get use only through a named service, never outright.
        for statement in _statements_for({"Statement": statements}, "AWS", root):
            if statement is not administration[0]:
                conditions = statement["Condition"]["StringEquals"]
                assert conditions["kms:CallerAccount"] == ACCOUNT_ID and conditions["kms:ViaService"]


def test_checkpoint_key_is_retained_whatever_destroys_the_stack(planned: tuple) -> None:
    config, plan = planned
    key = one(plan, "aws:kms/key:Key", "checkpoints-key")
    assert key["retainOnDelete"] is True
    assert key["protect"] is config.is_prod
    bucket = one(plan, "aws:s3/bucket:Bucket", "checkpoints")
    # No input of the bucket names the key: only an explicit depends_on orders its delete first.
    assert key["urn"] in bucket["dependencies"]
    assert not any(key["urn"] in urns for urns in bucket["propertyDependencies"].values())
    via_s3 = [s for s in _policy(key)["Statement"] if "kms:ViaService" in str(s.get("Condition"))]
    assert [s["Condition"]["StringEquals"]["kms:ViaService"] for s in via_s3] == [
        "s3.us-east-1.amazonaws.com"
    ]
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(via_s3[0]["Action"])


def test_log_groups_topic_and_cache_are_encrypted_with_their_own_keys(planned: tuple) -> None:
    _, plan = planned
    for group in of_type(plan, "aws:cloudwatch/logGroup:LogGroup"):
        key = _key_behind(plan, group, "kmsKeyId")
        data_keys, describe = _statements_for(_policy(key), "Service", "logs.us-east-1.amazonaws.com")
        assert data_keys["Condition"]["StringEquals"] == {
            "aws:SourceAccount": ACCOUNT_ID,
            "kms:EncryptionContext:aws:logs:arn": (
                f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:{group['inputs']['name']}"
            ),
        }
        assert "kms:DescribeKey" not in data_keys["Action"]
        assert (describe["Action"], describe["Condition"]) == (
            "kms:DescribeKey",
            {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}},
        )
    assert {group["inputs"]["name"] for group in of_type(plan, "aws:cloudwatch/logGroup:LogGroup")} == {
        f"/aws/eks/mlp-{plan['stack']}-serving/cluster",
        f"/aws/vpc/mlp-{plan['stack']}/flow-logs",
    }

    topic_key = _policy(_key_behind(plan, one(plan, "aws:sns/topic:Topic"), "kmsMasterKeyId"))
    for publisher in ("budgets.amazonaws.com", "costalerts.amazonaws.com"):
        [statement] = _statements_for(topic_key, "Service", publisher)
        assert set(statement["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}

    cache_key = _policy(
        _key_behind(plan, one(plan, "aws:elasticache/replicationGroup:ReplicationGroup"), "kmsKeyId")
    )
    assert "elasticache.us-east-1.amazonaws.com" in json.dumps(cache_key)

    cluster = one(plan, "aws:eks/cluster:Cluster")
    secrets_key = _key_behind(plan, cluster, "encryptionConfig")
    assert cluster["inputs"]["encryptionConfig"]["provider"]["keyArn"].startswith("arn:aws:kms:")
    # The cluster role, by ARN, is the one role named in the secrets key's policy.
    cluster_role = one(plan, "aws:iam/role:Role", "serving-cluster")
    assert secrets_key["propertyDependencies"]["policy"] == [cluster_role["urn"]]
    [role_use] = [s for s in _policy(secrets_key)["Statement"] if ":role/" in json.dumps(s["Principal"])]
    assert role_use["Principal"]["AWS"].startswith(f"arn:aws:iam::{ACCOUNT_ID}:role/serving-cluster-")
    assert {"kms:Encrypt", "kms:Decrypt"} <= set(role_use["Action"])


def test_alert_topic_admits_publishers_only_for_this_account(planned: tuple) -> None:
    _, plan = planned
    policy = _policy(one(plan, "aws:sns/topicPolicy:TopicPolicy"))
    publishers = {_as_list(s["Principal"]["Service"])[0]: s for s in policy["Statement"]}
    assert set(publishers) == {"budgets.amazonaws.com", "costalerts.amazonaws.com"}
    for statement in publishers.values():
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}
    assert publishers["budgets.amazonaws.com"]["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:budgets::{ACCOUNT_ID}:*"
    }


def _assert_flow_logs_all_traffic(plan: dict, vpc_id: str, retention_days: int) -> None:
    flow_log = one(plan, "aws:ec2/flowLog:FlowLog")["inputs"]
    assert flow_log["vpcId"] == vpc_id and flow_log["trafficType"] == "ALL"
    assert flow_log["logDestinationType"] == "cloud-watch-logs"
    group = one(plan, "aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    group_arn = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:{group['inputs']['name']}"
    assert flow_log["logDestination"] == group_arn
    assert group["inputs"]["retentionInDays"] == retention_days
    assert _key_behind(plan, group, "kmsKeyId")["name"] == "network-flow-logs"

    role = one(plan, "aws:iam/role:Role", "network-flow-logs")
    assert one(plan, "aws:ec2/flowLog:FlowLog")["propertyDependencies"]["iamRoleArn"] == [role["urn"]]
    [trust] = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT_ID},
        "ArnLike": {"aws:SourceArn": f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:vpc-flow-log/*"},
    }
    [write, find] = _policy(one(plan, "aws:iam/rolePolicy:RolePolicy", "network-flow-logs"))["Statement"]
    assert set(write["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
    assert (find["Action"], find["Resource"]) == ("logs:DescribeLogGroups", "*")
    assert write["Resource"] == [group_arn, f"{group_arn}:*"]


def test_the_new_vpc_logs_all_its_traffic_for_the_configured_retention(planned: tuple) -> None:
    config, plan = planned
    assert config.network.flow_log_retention_days == (365 if config.is_prod else 30)
    vpc = one(plan, "aws:ec2/vpc:Vpc")
    assert one(plan, "aws:ec2/flowLog:FlowLog")["propertyDependencies"]["vpcId"] == [vpc["urn"]]
    vpc_id = one(plan, "aws:ec2/securityGroup:SecurityGroup", "network-training")["inputs"]["vpcId"]
    _assert_flow_logs_all_traffic(plan, vpc_id, config.network.flow_log_retention_days)


def test_an_existing_vpc_is_flow_logged_too() -> None:
    from infra.config import parse_stack_config, read_stack_file
    from infra.plan import plan_environment
    from tests.conftest import REPO_ROOT

    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:network"] = {
        "existingVpcId": "vpc-0abc1234",
        "existingPrivateSubnetIds": ["subnet-0aaa1111", "subnet-0bbb2222"],
        "flowLogRetentionDays": 14,
    }
    plan = plan_environment(parse_stack_config("dev", raw), raw).to_json()
    _assert_flow_logs_all_traffic(plan, "vpc-0abc1234", 14)


@pytest.mark.parametrize("stack", STACKS)
def test_the_feature_store_token_is_in_secrets_manager_and_no_output_carries_it(stack: str) -> None:
    from infra.config import parse_stack_config, read_stack_file
    from infra.plan import SECRET_PLACEHOLDER, plan_environment
    from tests.conftest import REPO_ROOT

    raw = read_stack_file(stack, REPO_ROOT)
    result = plan_environment(parse_stack_config(stack, raw), raw)
    outputs, plan = result.outputs, result.to_json()

    secret = one(plan, "aws:secretsmanager/secret:Secret")
    assert secret["inputs"]["name"] == f"mlp/{stack}/feature-store/auth-token"
    assert secret["inputs"]["recoveryWindowInDays"] >= 7 and secret["inputs"]["description"]
    token = one(plan, "random:index/randomPassword:RandomPassword")
    version = one(plan, "aws:secretsmanager/secretVersion:SecretVersion")
    assert version["inputs"]["secretString"] == SECRET_PLACEHOLDER
    assert version["propertyDependencies"]["secretString"] == [token["urn"]]
    assert version["propertyDependencies"]["secretId"] == [secret["urn"]]

    assert "featureStoreAuthToken" not in outputs
    assert outputs["featureStoreAuthSecretArn"].startswith(
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT_ID}:secret:mlp/{stack}/feature-store/auth-token-"
    )
    # Plan outputs are resolved values, secret or not: an exported token, plain or secret, shows here.
    token_value = _mock_hex(f"password:{token['name']}", 32)
    assert token_value not in json.dumps(outputs)
