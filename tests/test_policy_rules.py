"""Every rule of the pack: a compliant and a violating hand-written plan, with the exact violation text.

The plans are evaluated by the offline evaluator, which runs the pack's own CrossGuard policy objects;
`test_policy_crossguard.py` shows the analyzer path reports the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy.analyzer_view import analyzer_props
from policy.evaluate import CheckResult, evaluate_plan
from policy.pack import rules
from policy.rules.common import Resource
from policy.rules.training import TrainingFleetConfig, check_training_fleet

PLANS = Path(__file__).resolve().parent / "fixtures" / "plans"
# The fixtures' run tags expire at 2026-11-23T20:00:00Z, inside a 24 h limit measured from here.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALL_TAGS = "team, project, environment, cost-center, owner, managed-by"
TAG_FIX = f"set every mandatory tag ({ALL_TAGS}) under ml-platform:tags or on the resource"
OPEN_FIX = "admit known CIDRs or security groups only; only HTTPS (443) into a load balancer may be open to the internet"
SPOT_FIX = "training fleets outside prod (environment dev) are spot-only: request spot capacity only"
M = "mandatory"
CIDR_FIX = (
    "a public API endpoint admits only listed CIDRs, none of them the whole internet: list your offices' or VPN's "
    "(ml-platform:serving.publicAccessCidrs) or make it private (ml-platform:serving.endpointPublicAccess false)"
)
HOP_FIX = (
    "set metadataOptions.httpPutResponseHopLimit 1 so only the instance itself, not its containers, reaches the "
    "instance metadata service"
)
ROLE_FIX = (
    "grant a training run only what it needs in an inline policy of its own, or allowlist the policy in "
    "allowedManagedPolicyArns"
)
KEY_FIX = "write an explicit key policy granting kms:* only to named principals (the account root or roles)"
WILDCARD_FIX = KEY_FIX + ", or narrow the wildcard principal with a Condition"
FLOW_LOG_FIX = "add an aws.ec2.FlowLog with vpcId set to it (trafficType ALL)"
DROP_FIX = 'drop every capability: include "ALL" (add back only what the container needs)'
ESCALATION_FIX = "set allowPrivilegeEscalation: false"
NETWORK_POLICY_FIX = (
    "add a kubernetes NetworkPolicy in it: deny by default, then admit the traffic its workloads serve"
)


def automount_fix(workload: str) -> str:
    return f"set it false; a workload that calls the Kubernetes API is listed by name ('{workload}') in apiWorkloads"


def check(path: str, pack_config: dict[str, Any] | None = None) -> CheckResult:
    return evaluate_plan(json.loads((PLANS / path).read_text()), pack_config, clock=lambda: NOW)


def found(result: CheckResult) -> list[tuple[str, str, str, str]]:
    """(policy, resource name, level, message) per violation; the name is the URN's last part."""
    return [(v.policy, v.resource.rsplit("::", 1)[-1], v.level, v.message) for v in result.violations]


# Only the budget fixtures are checked against this budget, and only the pod-security fixtures with
# an API workload allowlisted; the others keep the pack defaults.
FIXTURE_PACK_CONFIG = {
    "stack-monthly-budget": {"stack-monthly-budget": {"monthlyBudgetUsd": 100}},
    "kubernetes-pod-security": {"kubernetes-pod-security": {"apiWorkloads": ["cluster-autoscaler"]}},
}


def pack_config_for(rule_name: str) -> dict[str, Any] | None:
    return FIXTURE_PACK_CONFIG.get(rule_name)


ATHENA_ENFORCE_FIX = "set it true so clients cannot override result encryption or the scan cutoff"
ATHENA_ENCRYPT_FIX = "encrypt query results with a customer-managed key: SSE_KMS (or CSE_KMS) with kmsKeyArn"
ATHENA_CUTOFF_FIX = "cap the bytes one query may scan (ml-platform:costExport.bytesScannedCutoffGb)"
ATHENA_ENCRYPTION = "configuration.resultConfiguration.encryptionConfiguration.encryptionOption"
ATHENA = "athena-workgroup-guardrails"

EXPECTED: dict[str, list[tuple[str, str, str, str]]] = {
    ATHENA: [
        (
            ATHENA,
            "adhoc",
            M,
            f"Workgroup 'adhoc': configuration.enforceWorkgroupConfiguration is false; {ATHENA_ENFORCE_FIX}",
        ),
        (ATHENA, "adhoc", M, f"Workgroup 'adhoc': {ATHENA_ENCRYPTION} is 'SSE_S3'; {ATHENA_ENCRYPT_FIX}"),
        (
            ATHENA,
            "adhoc",
            M,
            f"Workgroup 'adhoc': configuration.bytesScannedCutoffPerQuery is not set; {ATHENA_CUTOFF_FIX}",
        ),
        (
            ATHENA,
            "notebooks",
            M,
            f"Workgroup 'notebooks': {ATHENA_ENCRYPTION} is not set; {ATHENA_ENCRYPT_FIX}",
        ),
        (
            ATHENA,
            "notebooks",
            M,
            f"Workgroup 'notebooks': configuration.bytesScannedCutoffPerQuery is not set; {ATHENA_CUTOFF_FIX}",
        ),
    ],
    "mandatory-cost-tags": [
        (
            "mandatory-cost-tags",
            "checkpoints",
            M,
            "Bucket 'checkpoints': tags is missing cost-center, owner (has: environment, managed-by, project, team); "
            + TAG_FIX,
        ),
        (
            "mandatory-cost-tags",
            "cluster-logs",
            M,
            "LogGroup 'cluster-logs': tags is missing owner (has: cost-center, environment, managed-by, project, "
            "team); " + TAG_FIX,
        ),
        (
            "mandatory-cost-tags",
            "serving-nodes",
            M,
            "LaunchTemplate 'serving-nodes': tags is missing cost-center, owner (has: environment, managed-by, "
            "project, team); " + TAG_FIX,
        ),
        (
            "mandatory-cost-tags",
            "serving-nodes",
            M,
            "LaunchTemplate 'serving-nodes': tagSpecifications[resourceType=volume].tags is missing "
            f"{ALL_TAGS} (has none); add a tagSpecifications entry for volume carrying every mandatory tag "
            f"({ALL_TAGS}); provider default tags never reach launched resources",
        ),
        (
            "mandatory-cost-tags",
            "batch-workers",
            M,
            "Group 'batch-workers': tags with propagateAtLaunch is missing owner, managed-by (has: cost-center, "
            "environment, project, team); add {key, value, propagateAtLaunch: true} entries for every mandatory "
            f"tag ({ALL_TAGS})",
        ),
    ],
    "training-fleet-guardrails": [
        (
            "training-fleet-guardrails",
            "bert-ft-02-fleet",
            M,
            "Group 'bert-ft-02-fleet': mixedInstancesPolicy.instancesDistribution.onDemandPercentageAboveBaseCapacity "
            "is 100; " + SPOT_FIX,
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-fleet",
            M,
            "Group 'bert-ft-02-fleet': mixedInstancesPolicy.launchTemplate.overrides[].instanceType is p5.48xlarge; "
            "use only allowlisted types (g5.xlarge, g5.2xlarge, g6.xlarge, g6.2xlarge, g4dn.xlarge) or extend "
            "ml-platform:training.allowedInstanceTypes",
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-fleet",
            M,
            "Group 'bert-ft-02-fleet': maxSize is 4 (32 GPUs with p5.48xlarge); stay within 8 GPUs per run: lower "
            "the capacity or use smaller instance types",
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-fleet",
            M,
            "Group 'bert-ft-02-fleet': tag run-id is not set; tag the fleet with its run id (mlp train does)",
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-fleet",
            M,
            "Group 'bert-ft-02-fleet': tag expires-at is '2099-01-01T00:00:00Z'; set it no later than "
            "2026-11-24T12:00:00Z (24 h from now)",
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-burst",
            M,
            "Fleet 'bert-ft-02-burst': targetCapacitySpecification.defaultTargetCapacityType is 'on-demand'; "
            + SPOT_FIX,
        ),
        (
            "training-fleet-guardrails",
            "bert-ft-02-burst",
            M,
            "Fleet 'bert-ft-02-burst': tag expires-at is 'next tuesday'; use ISO 8601 UTC like 2026-01-31T18:00:00Z",
        ),
    ],
    "fleet-terminates-on-delete": [
        (
            "fleet-terminates-on-delete",
            "bert-ft-01-fleet",
            M,
            "Fleet 'bert-ft-01-fleet': terminateInstances is not set (defaults to false); set terminateInstances: "
            "true so destroying the fleet terminates its instances",
        ),
        (
            "fleet-terminates-on-delete",
            "bert-ft-01-spot",
            M,
            "SpotFleetRequest 'bert-ft-01-spot': terminateInstancesOnDelete is 'false'; set "
            'terminateInstancesOnDelete: "true" so destroying the request terminates its instances',
        ),
    ],
    "training-role-managed-policies": [
        (
            "training-role-managed-policies",
            "fleet-instance",
            M,
            "Role 'fleet-instance': managedPolicyArns is arn:aws:iam::aws:policy/AmazonS3FullAccess; "
            + ROLE_FIX,
        ),
        (
            "training-role-managed-policies",
            "fleet-ssm",
            M,
            "RolePolicyAttachment 'fleet-ssm': policyArn is arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore on "
            "training role 'fleet-instance'; " + ROLE_FIX,
        ),
        (
            "training-role-managed-policies",
            "eval-readonly",
            M,
            "PolicyAttachment 'eval-readonly': policyArn is arn:aws:iam::aws:policy/ReadOnlyAccess on training role "
            "'eval-instance'; " + ROLE_FIX,
        ),
    ],
    "s3-bucket-security": [
        (
            "s3-bucket-security",
            "checkpoints",
            M,
            "Bucket 'checkpoints': public access block 'checkpoints-public-access' is missing restrictPublicBuckets; "
            "set blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets all true",
        ),
        (
            "s3-bucket-security",
            "checkpoints",
            M,
            "Bucket 'checkpoints': versioning is not enabled; checkpoint buckets keep every version: add an "
            "aws.s3.BucketVersioning with status Enabled",
        ),
        (
            "s3-bucket-security",
            "scratch",
            M,
            "Bucket 'scratch': server-side encryption is not configured; add an "
            "aws.s3.BucketServerSideEncryptionConfiguration for it (SSE-KMS with a customer key)",
        ),
        (
            "s3-bucket-security",
            "scratch",
            M,
            "Bucket 'scratch': public access block is not configured; add an aws.s3.BucketPublicAccessBlock for it "
            "with blockPublicAcls, blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets all true",
        ),
    ],
    "s3-no-public-acl": [
        (
            "s3-no-public-acl",
            "exports-acl",
            M,
            "BucketAcl 'exports-acl': acl is 'public-read'; use private (or no ACL) and grant access through IAM",
        ),
        (
            "s3-no-public-acl",
            "exports-grants",
            M,
            "BucketAcl 'exports-grants': grants is READ to AllUsers; remove grants to AllUsers/AuthenticatedUsers "
            "and grant access through IAM",
        ),
    ],
    "elasticache-encryption": [
        (
            "elasticache-encryption",
            "features-dev",
            M,
            "ReplicationGroup 'features-dev': transitEncryptionEnabled is false; set transitEncryptionEnabled: true "
            "(clients connect over TLS)",
        ),
        (
            "elasticache-encryption",
            "features-dev",
            M,
            "ReplicationGroup 'features-dev': authToken is not set; set an AUTH token (generated, kept as a Pulumi "
            "secret) or RBAC userGroupIds",
        ),
        (
            "elasticache-encryption",
            "features-prod",
            M,
            "ReplicationGroup 'features-prod': automaticFailoverEnabled is false; set automaticFailoverEnabled: true "
            "(prod fails over to a replica)",
        ),
        (
            "elasticache-encryption",
            "features-prod",
            M,
            "ReplicationGroup 'features-prod': multiAzEnabled is not set; set multiAzEnabled: true (prod keeps "
            "replicas in other AZs)",
        ),
        (
            "elasticache-encryption",
            "features-prod",
            M,
            "ReplicationGroup 'features-prod': numCacheClusters is 1; prod needs at least 2 nodes "
            "(ml-platform:featureStore.numNodes) for multi-AZ failover",
        ),
        (
            "elasticache-encryption",
            "sessions",
            M,
            "Cluster 'sessions': engine is 'redis'; a standalone cache cluster cannot encrypt at rest: use an "
            "aws.elasticache.ReplicationGroup",
        ),
    ],
    "eks-cluster-hardening": [
        (
            "eks-cluster-hardening",
            "serving-dev",
            M,
            "Cluster 'serving-dev': encryptionConfig is not set; encrypt Kubernetes secrets: set encryptionConfig "
            '{resources: ["secrets"], provider: {keyArn: <KMS key>}}',
        ),
        (
            "eks-cluster-hardening",
            "serving-dev",
            M,
            "Cluster 'serving-dev': enabledClusterLogTypes is ['api']; enable control-plane logging for audit, "
            "authenticator",
        ),
        (
            "eks-cluster-hardening",
            "serving-dev",
            M,
            "Cluster 'serving-dev': vpcConfig.publicAccessCidrs is not set (AWS then admits 0.0.0.0/0); "
            + CIDR_FIX,
        ),
        (
            "eks-cluster-hardening",
            "serving-prod",
            M,
            "Cluster 'serving-prod': vpcConfig.endpointPublicAccess/endpointPrivateAccess is true/true; in prod the "
            "API endpoint is private only: endpointPublicAccess false, endpointPrivateAccess true",
        ),
        (
            "eks-cluster-hardening",
            "serving-empty-cidrs",
            M,
            "Cluster 'serving-empty-cidrs': vpcConfig.publicAccessCidrs is [] (AWS then admits 0.0.0.0/0); "
            + CIDR_FIX,
        ),
        (
            "eks-cluster-hardening",
            "serving-world-cidrs",
            M,
            "Cluster 'serving-world-cidrs': vpcConfig.publicAccessCidrs is ['203.0.113.0/24', '0.0.0.0/0']; "
            + CIDR_FIX,
        ),
    ],
    "imdsv2-encrypted-ebs": [
        (
            "imdsv2-encrypted-ebs",
            "workers",
            M,
            "LaunchTemplate 'workers': metadataOptions.httpTokens is 'optional' (IMDSv1 allowed); require IMDSv2: "
            'set metadataOptions.httpTokens "required"',
        ),
        (
            "imdsv2-encrypted-ebs",
            "workers",
            M,
            "LaunchTemplate 'workers': blockDeviceMappings[0].ebs.encrypted is 'false'; set ebs.encrypted \"true\" "
            "(optionally with a kmsKeyId)",
        ),
        (
            "imdsv2-encrypted-ebs",
            "bastion",
            M,
            "Instance 'bastion': metadataOptions.httpTokens is not set (IMDSv1 allowed); require IMDSv2: set "
            'metadataOptions.httpTokens "required"',
        ),
        (
            "imdsv2-encrypted-ebs",
            "bastion",
            M,
            "Instance 'bastion': rootBlockDevice.encrypted is false; set rootBlockDevice.encrypted: true",
        ),
        (
            "imdsv2-encrypted-ebs",
            "datasets",
            M,
            "Volume 'datasets': encrypted is false; set encrypted: true (EBS volumes are encrypted)",
        ),
    ],
    "imds-hop-limit": [
        (
            "imds-hop-limit",
            "serving-nodes",
            M,
            "LaunchTemplate 'serving-nodes': metadataOptions.httpPutResponseHopLimit is 2; " + HOP_FIX,
        ),
        (
            "imds-hop-limit",
            "training",
            M,
            "LaunchTemplate 'training': metadataOptions.httpPutResponseHopLimit is not set (the AMI's default "
            "applies); " + HOP_FIX,
        ),
    ],
    "kms-key-policy": [
        (
            "kms-key-policy",
            "checkpoints-key",
            M,
            "Key 'checkpoints-key': policy is not set (AWS's default key policy); " + KEY_FIX,
        ),
        (
            "kms-key-policy",
            "serving-secrets",
            M,
            "Key 'serving-secrets': policy is not JSON (Expecting value); " + KEY_FIX,
        ),
        (
            "kms-key-policy",
            "alerts-key",
            M,
            "Key 'alerts-key': policy.Statement[1] is 'kms:*' to Principal {AWS: '*'} without a Condition; "
            + WILDCARD_FIX,
        ),
        (
            "kms-key-policy",
            "alerts-key",
            M,
            "Key 'alerts-key': policy.Statement[2] is ['kms:Decrypt', '*'] to Principal '*' without a Condition; "
            + WILDCARD_FIX,
        ),
    ],
    "sns-topic-encryption": [
        (
            "sns-topic-encryption",
            "cost-alerts",
            M,
            "Topic 'cost-alerts': kmsMasterKeyId is not set; encrypt the topic with a customer KMS key whose policy "
            "lets its publishers use it",
        ),
    ],
    "no-public-ingress": [
        (
            "no-public-ingress",
            "bastion",
            M,
            "SecurityGroup 'bastion': ingress[0] is tcp 22 from 0.0.0.0/0; " + OPEN_FIX,
        ),
        (
            "no-public-ingress",
            "workers-https",
            M,
            "SecurityGroupIngressRule 'workers-https': cidrIpv4/cidrIpv6 is tcp 443 from ::/0; " + OPEN_FIX,
        ),
        (
            "no-public-ingress",
            "workers-everything",
            M,
            "SecurityGroupRule 'workers-everything': cidrBlocks is all traffic from 0.0.0.0/0; " + OPEN_FIX,
        ),
    ],
    "vpc-flow-logs": [
        (
            "vpc-flow-logs",
            "network-vpc",
            M,
            "Vpc 'network-vpc': flow logs is not configured; " + FLOW_LOG_FIX,
        ),
        (
            "vpc-flow-logs",
            "ml-platform-dev",
            M,
            "stack: VPC 'vpc-0123456789abcdef0' (vpcId of SecurityGroup 'training') has no flow log; "
            + FLOW_LOG_FIX,
        ),
    ],
    "kubernetes-pod-security": [
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.automountServiceAccountToken is not set (defaults to "
            "true); " + automount_fix("model-server"),
        ),
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.initContainers[0].securityContext.capabilities.drop is "
            "not set; " + DROP_FIX,
        ),
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.initContainers[0].securityContext.allowPrivilegeEscalation "
            "is not set (defaults to true); " + ESCALATION_FIX,
        ),
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.containers[0].securityContext.capabilities.drop is "
            "['NET_RAW']; " + DROP_FIX,
        ),
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation "
            "is true; " + ESCALATION_FIX,
        ),
        (
            "kubernetes-pod-security",
            "model-server",
            M,
            "Deployment 'model-server': spec.template.spec.securityContext.seccompProfile.type is not set (for "
            "initContainers[0], containers[0]); set seccompProfile.type RuntimeDefault (or Localhost) on the pod "
            "or on every container",
        ),
        (
            "kubernetes-pod-security",
            "backfill",
            M,
            "Job 'backfill': spec.template.spec.automountServiceAccountToken is true; "
            + automount_fix("backfill"),
        ),
        (
            "kubernetes-pod-security",
            "backfill",
            M,
            "Job 'backfill': spec.template.spec.containers[0].securityContext.seccompProfile.type is 'Unconfined'; "
            "use RuntimeDefault (or Localhost)",
        ),
        (
            "kubernetes-pod-security",
            "debug",
            M,
            "Pod 'debug': spec.containers[0].securityContext.capabilities.drop is not set; " + DROP_FIX,
        ),
        (
            "kubernetes-pod-security",
            "debug",
            M,
            "Pod 'debug': spec.containers[0].securityContext.allowPrivilegeEscalation is not set (defaults to true); "
            + ESCALATION_FIX,
        ),
    ],
    "kubernetes-namespace-network-policy": [
        (
            "kubernetes-namespace-network-policy",
            "serving-ns",
            M,
            "Namespace 'serving-ns': network policy is not configured (workloads: model-server, feature-cache); "
            + NETWORK_POLICY_FIX,
        ),
        (
            "kubernetes-namespace-network-policy",
            "batch-ns",
            M,
            "Namespace 'batch-ns': network policy is not configured (workloads: reindex); "
            + NETWORK_POLICY_FIX,
        ),
    ],
    "stack-monthly-budget": [
        (
            "stack-monthly-budget",
            "ml-platform-dev",
            "advisory",
            "stack: estimated monthly cost is $479.61, over the budget of $100.00; shrink node counts or instance "
            "types, or raise ml-platform:budgets.environmentMonthlyUsd",
        ),
    ],
}


def test_every_rule_has_both_fixtures_and_expectations() -> None:
    names = [rule.name for rule in rules()]
    assert sorted(names) == sorted(EXPECTED)
    for name in names:
        assert (PLANS / name / "compliant.json").is_file()
        assert (PLANS / name / "violating.json").is_file()


@pytest.mark.parametrize("rule_name", sorted(EXPECTED))
def test_compliant_plan_has_no_violation(rule_name: str) -> None:
    result = check(f"{rule_name}/compliant.json", pack_config_for(rule_name))
    assert found(result) == []
    assert result.checked_resources == len(
        json.loads((PLANS / rule_name / "compliant.json").read_text())["resources"]
    )


@pytest.mark.parametrize("rule_name", sorted(EXPECTED))
def test_violating_plan_reports_exactly_its_violations(rule_name: str) -> None:
    result = check(f"{rule_name}/violating.json", pack_config_for(rule_name))
    assert found(result) == EXPECTED[rule_name]


def test_hand_made_bad_plan_fails_once_for_each_listed_problem() -> None:
    result = check("bad.json")
    problems = {(policy, name): message for policy, name, _level, message in found(result)}
    assert len(problems) == len(result.violations) == 7
    assert result.mandatory_count == 7
    # untagged bucket: a bucket created through a provider without default tags
    assert problems["mandatory-cost-tags", "raw-data"].startswith(
        f"Bucket 'raw-data': tags is missing {ALL_TAGS}"
    )
    # public ACL
    assert problems["s3-no-public-acl", "exports-acl"].startswith(
        "BucketAcl 'exports-acl': acl is 'public-read'"
    )
    # unencrypted Redis
    assert problems["elasticache-encryption", "features"].startswith(
        "ReplicationGroup 'features': atRestEncryptionEnabled is false"
    )
    # IMDSv1
    assert problems["imdsv2-encrypted-ebs", "workers"].startswith(
        "LaunchTemplate 'workers': metadataOptions.httpTokens is 'optional' (IMDSv1 allowed)"
    )
    # on-demand training fleet
    assert problems["training-fleet-guardrails", "bert-ft-01-fleet"] == (
        "Group 'bert-ft-01-fleet': mixedInstancesPolicy.instancesDistribution.onDemandPercentageAboveBaseCapacity "
        "is 100; " + SPOT_FIX
    )
    # SSH-open security group
    assert problems["no-public-ingress", "bastion"].startswith(
        "SecurityGroup 'bastion': ingress[0] is tcp 22 from 0.0.0.0/0"
    )
    # EC2 Fleet that keeps its instances on delete
    assert problems["fleet-terminates-on-delete", "bert-ft-01-burst"].startswith(
        "Fleet 'bert-ft-01-burst': terminateInstances is false"
    )


def test_budget_is_mandatory_when_the_pack_config_says_so() -> None:
    config = {"stack-monthly-budget": {"enforcementLevel": "mandatory", "monthlyBudgetUsd": 100}}
    result = check("stack-monthly-budget/violating.json", config)
    assert [(v.policy, v.level) for v in result.violations] == [("stack-monthly-budget", "mandatory")]
    assert result.mandatory_count == 1


def test_disabled_policy_is_not_run() -> None:
    result = check("bad.json", {"no-public-ingress": "disabled"})
    assert "no-public-ingress" not in {v.policy for v in result.violations}
    assert len(result.violations) == 6


def test_all_sets_every_level_a_policy_does_not_set_itself() -> None:
    result = check("bad.json", {"all": "advisory", "no-public-ingress": "mandatory"})
    levels = {v.policy: v.level for v in result.violations}
    assert levels.pop("no-public-ingress") == "mandatory"
    assert set(levels.values()) == {"advisory"} and len(levels) == 6


def test_training_limits_follow_the_pack_config() -> None:
    config = {
        "training-fleet-guardrails": {
            "allowedInstanceTypes": ["g5.xlarge", "g6.xlarge", "p5.48xlarge"],
            "maxGpusPerRun": 32,
            "maxRunHours": 24 * 365 * 80,
        }
    }
    result = check("training-fleet-guardrails/violating.json", config)
    # The allowlist, GPU-cap and expiry findings are gone; the others do not depend on the limits.
    assert found(result) == [
        expected
        for expected in EXPECTED["training-fleet-guardrails"]
        if not any(word in expected[3] for word in ("allowlisted", "GPUs per run", "no later than"))
    ]
    assert len(result.violations) == 4


def test_rules_are_plain_functions_and_weighted_capacity_counts_instances() -> None:
    inputs = {
        "targetCapacitySpecification": {"defaultTargetCapacityType": "spot", "totalTargetCapacity": 8},
        # 8 capacity units at 4 units per g5.12xlarge: 2 instances of 4 GPUs each.
        "launchTemplateConfigs": [{"overrides": [{"instanceType": "g5.12xlarge", "weightedCapacity": 4}]}],
        "tags": {"run-id": "r1", "expires-at": "2026-11-23T13:00:00Z", "environment": "dev"},
        "terminateInstances": True,
    }
    fleet = Resource("aws:ec2/fleet:Fleet", "burst", "urn:burst", analyzer_props(inputs))
    allowed = ["g5.12xlarge", "g5.xlarge", "g6.xlarge"]
    assert list(check_training_fleet(fleet, TrainingFleetConfig(allowed_instance_types=allowed), NOW)) == []
    tight = TrainingFleetConfig(allowed_instance_types=allowed, max_gpus_per_run=4)
    assert list(check_training_fleet(fleet, tight, NOW)) == [
        "Fleet 'burst': targetCapacitySpecification.totalTargetCapacity is 8 (8 GPUs with g5.12xlarge); "
        "stay within 4 GPUs per run: lower the capacity or use smaller instance types"
    ]


def test_allowlisted_managed_policies_may_be_attached_to_training_roles() -> None:
    ssm = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    config = {"training-role-managed-policies": {"allowedManagedPolicyArns": [ssm]}}
    result = check("training-role-managed-policies/violating.json", config)
    assert found(result) == [
        expected for expected in EXPECTED["training-role-managed-policies"] if ssm not in expected[3]
    ]


def test_a_workload_mounts_a_service_account_token_only_when_allowlisted() -> None:
    result = check("kubernetes-pod-security/compliant.json")
    assert [(v.policy, v.resource.rsplit("::", 1)[-1]) for v in result.violations] == [
        ("kubernetes-pod-security", "cluster-autoscaler")
    ]
    assert result.violations[0].message.endswith(automount_fix("cluster-autoscaler"))


def test_a_policy_arn_unknown_at_preview_is_one_the_stack_creates_not_an_aws_managed_one() -> None:
    plan = json.loads((PLANS / "training-role-managed-policies" / "compliant.json").read_text())
    own = next(r for r in plan["resources"] if r["name"] == "fleet-instance-own")
    own["inputs"]["policyArn"] = UNKNOWN_STRING_VALUE
    assert found(evaluate_plan(plan, clock=lambda: NOW)) == []
