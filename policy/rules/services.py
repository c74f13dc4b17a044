"""Rules 5, 6 and 7: ElastiCache encryption and failover, EKS hardening (secrets, logs, endpoint access),
IMDSv2 and encrypted EBS; and the IMDS hop limit of launch templates."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity
from pydantic import Field

from policy.analyzer_view import display, has_key, is_true, items_of, lookup
from policy.rules.common import Resource, Rule, RuleConfig, violation
from policy.rules.network import ANYWHERE

REPLICATION_GROUP_TYPE = "aws:elasticache/replicationGroup:ReplicationGroup"
CACHE_CLUSTER_TYPE = "aws:elasticache/cluster:Cluster"
REDIS_ENGINES = ("redis", "valkey")
EKS_CLUSTER_TYPE = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE_TYPE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE_TYPES = ("aws:ec2/instance:Instance", "aws:ec2/spotInstanceRequest:SpotInstanceRequest")
VOLUME_TYPE = "aws:ebs/volume:Volume"


def _must_be_true(resource: Resource, prop: str, why: str) -> Iterator[str]:
    value = lookup(resource.props, prop)
    if not is_true(value):
        yield violation(resource, prop, display(value), f"set {prop}: true ({why})")


def check_elasticache(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type == CACHE_CLUSTER_TYPE:
        engine = lookup(resource.props, "engine", default="")
        if engine in REDIS_ENGINES and not has_key(resource.props, "replicationGroupId"):
            yield violation(
                resource,
                "engine",
                display(engine),
                "a standalone cache cluster cannot encrypt at rest: use an aws.elasticache.ReplicationGroup",
            )
        return
    if resource.type != REPLICATION_GROUP_TYPE:
        return
    yield from _must_be_true(resource, "atRestEncryptionEnabled", "data at rest is encrypted")
    yield from _must_be_true(resource, "transitEncryptionEnabled", "clients connect over TLS")
    # Set but unknown at preview (a generated password) still counts as set.
    if not any(has_key(resource.props, key) for key in ("authToken", "authTokenWo", "userGroupIds")):
        yield violation(
            resource,
            "authToken",
            "not set",
            "set an AUTH token (generated, kept as a Pulumi secret) or RBAC userGroupIds",
        )
    if resource.is_prod:
        yield from _must_be_true(resource, "automaticFailoverEnabled", "prod fails over to a replica")
        yield from _must_be_true(resource, "multiAzEnabled", "prod keeps replicas in other AZs")
        nodes = lookup(resource.props, "numCacheClusters")
        replicas = lookup(resource.props, "replicasPerNodeGroup")
        if (nodes is None or nodes < 2) and (replicas is None or replicas < 1):
            yield violation(
                resource,
                "numCacheClusters",
                display(nodes),
                "prod needs at least 2 nodes (ml-platform:featureStore.numNodes) for multi-AZ failover",
            )


class EksClusterConfig(RuleConfig):
    required_log_types: list[str] = Field(
        ["api", "audit", "authenticator"],
        description="Control-plane log types every EKS cluster must send to CloudWatch.",
    )


def check_eks_cluster(resource: Resource, config: EksClusterConfig) -> Iterator[str]:
    if resource.type != EKS_CLUSTER_TYPE:
        return
    encrypted = [
        item
        for item in items_of(lookup(resource.props, "encryptionConfig"))
        or [lookup(resource.props, "encryptionConfig", default={})]
        if "secrets" in items_of(lookup(item, "resources"))
        and has_key(lookup(item, "provider", default={}), "keyArn")
    ]
    if not encrypted:
        yield violation(
            resource,
            "encryptionConfig",
            display(lookup(resource.props, "encryptionConfig")),
            "encrypt Kubernetes secrets: set encryptionConfig "
            '{resources: ["secrets"], provider: {keyArn: <KMS key>}}',
        )
    logs = [str(kind) for kind in items_of(lookup(resource.props, "enabledClusterLogTypes"))]
    absent = [kind for kind in config.required_log_types if kind not in logs]
    if absent:
        yield violation(
            resource,
            "enabledClusterLogTypes",
            display(logs),
            f"enable control-plane logging for {', '.join(absent)}",
        )
    yield from _endpoint_access_findings(resource)


def _endpoint_access_findings(resource: Resource) -> Iterator[str]:
    public = lookup(resource.props, "vpcConfig", "endpointPublicAccess", default=True)
    if resource.is_prod:
        private = lookup(resource.props, "vpcConfig", "endpointPrivateAccess", default=False)
        if public is not False or private is not True:
            yield violation(
                resource,
                "vpcConfig.endpointPublicAccess/endpointPrivateAccess",
                f"{display(public)}/{display(private)}",
                "in prod the API endpoint is private only: "
                "endpointPublicAccess false, endpointPrivateAccess true",
            )
        return
    if public is False:
        return
    listed = lookup(resource.props, "vpcConfig", "publicAccessCidrs")
    cidrs = [str(cidr) for cidr in items_of(listed)]
    if cidrs and not any(cidr in ANYWHERE for cidr in cidrs):
        return
    yield violation(
        resource,
        "vpcConfig.publicAccessCidrs",
        # An absent or empty list is no restriction: AWS then admits the whole internet.
        display(listed) + ("" if cidrs else " (AWS then admits 0.0.0.0/0)"),
        "a public API endpoint admits only listed CIDRs, none of them the whole internet: list your offices' "
        "or VPN's (ml-platform:serving.publicAccessCidrs) or make it private "
        "(ml-platform:serving.endpointPublicAccess false)",
    )


def _imds_findings(resource: Resource) -> Iterator[str]:
    tokens = lookup(resource.props, "metadataOptions", "httpTokens")
    if tokens != "required":
        yield violation(
            resource,
            "metadataOptions.httpTokens",
            display(tokens) + (" (IMDSv1 allowed)" if tokens in (None, "optional") else ""),
            'require IMDSv2: set metadataOptions.httpTokens "required"',
        )


def check_imds_hop_limit(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type != LAUNCH_TEMPLATE_TYPE:
        return
    # Unset means "no preference": the AMI's default applies, and EKS AMIs default to 2, which lets
    # containers on the node reach the node role's credentials through IMDS.
    hop_limit = lookup(resource.props, "metadataOptions", "httpPutResponseHopLimit")
    if hop_limit != 1:
        yield violation(
            resource,
            "metadataOptions.httpPutResponseHopLimit",
            display(hop_limit) + (" (the AMI's default applies)" if hop_limit is None else ""),
            "set metadataOptions.httpPutResponseHopLimit 1 so only the instance itself, not its containers, "
            "reaches the instance metadata service",
        )


def check_instance_hardening(resource: Resource, _config: None) -> Iterator[str]:
    props = resource.props
    if resource.type == LAUNCH_TEMPLATE_TYPE:
        yield from _imds_findings(resource)
        for index, mapping in enumerate(items_of(lookup(props, "blockDeviceMappings"))):
            if not has_key(mapping, "ebs"):
                continue
            encrypted = lookup(mapping, "ebs", "encrypted")
            if not is_true(encrypted):
                yield violation(
                    resource,
                    f"blockDeviceMappings[{index}].ebs.encrypted",
                    display(encrypted),
                    'set ebs.encrypted "true" (optionally with a kmsKeyId)',
                )
    elif resource.type in INSTANCE_TYPES:
        # An instance started from a launch template takes its metadata options from the template.
        if not (has_key(props, "launchTemplate") and not has_key(props, "metadataOptions")):
            yield from _imds_findings(resource)
        encrypted = lookup(props, "rootBlockDevice", "encrypted")
        if not is_true(encrypted):
            yield violation(
                resource,
                "rootBlockDevice.encrypted",
                display(encrypted),
                "set rootBlockDevice.encrypted: true",
            )
        for index, device in enumerate(items_of(lookup(props, "ebsBlockDevices"))):
            encrypted = lookup(device, "encrypted")
            if not is_true(encrypted):
                yield violation(
                    resource, f"ebsBlockDevices[{index}].encrypted", display(encrypted), "set encrypted: true"
                )
    elif resource.type == VOLUME_TYPE:
        yield from _must_be_true(resource, "encrypted", "EBS volumes are encrypted")


ELASTICACHE_RULE = Rule(
    name="elasticache-encryption",
    description=(
        "ElastiCache Redis encrypts at rest and in transit, requires AUTH, and fails over across AZs in prod."
    ),
    severity=Severity.HIGH,
    check=check_elasticache,
)

EKS_RULE = Rule(
    name="eks-cluster-hardening",
    description=(
        "EKS clusters encrypt secrets with KMS, log the control plane, keep the prod endpoint private and "
        "admit only listed, non-world CIDRs to a public endpoint elsewhere."
    ),
    severity=Severity.HIGH,
    check=check_eks_cluster,
    config_model=EksClusterConfig,
)

INSTANCE_RULE = Rule(
    name="imdsv2-encrypted-ebs",
    description="Launch templates and instances require IMDSv2 and encrypt their EBS volumes.",
    severity=Severity.HIGH,
    check=check_instance_hardening,
)

IMDS_HOP_LIMIT_RULE = Rule(
    name="imds-hop-limit",
    description="Launch templates set the instance metadata hop limit to 1, so containers cannot reach IMDS.",
    severity=Severity.HIGH,
    check=check_imds_hop_limit,
)
