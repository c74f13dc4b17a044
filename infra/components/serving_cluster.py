"""ServingCluster: EKS from `pulumi_aws.eks` primitives, so every child is visible to tags, mocks and policies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import NodeGroupConfig, ServingConfig
from infra.iam import assume_role_policy, irsa_assume_role_policy, managed_policy_arn
from infra.kms import (
    EKS_SECRETS_ACTIONS,
    GRANTING_SERVICE_ACTIONS,
    RoleUse,
    SourceArn,
    ViaServiceUse,
    account_scope,
    customer_managed_key,
    encrypted_log_group,
    source_conditions,
)
from infra.tagging import NODE_GROUP_TAG_KINDS, launch_tag_specifications

CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
GPU_NODE_LABEL = "nvidia.com/gpu.present"
CORE_ADDONS = ("coredns", "kube-proxy", "eks-pod-identity-agent")


@dataclass(frozen=True)
class ServingClusterArgs:
    environment: str
    config: ServingConfig
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    # The environment's mandatory tags: node instances and volumes get them through launch templates.
    tags: Mapping[str, str]
    log_retention_days: int


class ServingCluster(pulumi.ComponentResource):
    """EKS control plane, OIDC for IRSA, managed node groups through launch templates, core add-ons.

    Outputs: `cluster_name`, `cluster_endpoint`, `cluster_security_group_id`, `oidc_provider_arn`,
    `kubeconfig` (secret JSON), `gpu_enabled`.
    """

    cluster_name: pulumi.Output[str]
    cluster_endpoint: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    gpu_enabled: bool

    def __init__(
        self, name: str, args: ServingClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:ServingCluster", name, None, opts)
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        config = args.config
        cluster_name = f"mlp-{args.environment}-serving"

        # EKS sends the cluster as the source: the role serves this cluster, no other.
        cluster_role = aws.iam.Role(
            f"{name}-cluster",
            assume_role_policy=account_scope(self).apply(
                lambda scope: assume_role_policy(
                    "eks.amazonaws.com", source_conditions(scope, SourceArn("eks", f"cluster/{cluster_name}"))
                )
            ),
            opts=self._child,
        )
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy",
            role=cluster_role.name,
            policy_arn=managed_policy_arn("AmazonEKSClusterPolicy"),
            opts=self._child,
        )
        secrets_key = customer_managed_key(
            f"{name}-secrets",
            parent=self,
            description=f"ml-platform {args.environment} EKS secrets envelope encryption",
            uses=[
                RoleUse("AllowEksClusterRole", cluster_role.arn, EKS_SECRETS_ACTIONS),
                # Whoever creates the cluster lets EKS take a grant on the key, through EKS only.
                ViaServiceUse("eks", GRANTING_SERVICE_ACTIONS),
            ],
        )
        log_group_name = f"/aws/eks/{cluster_name}/cluster"
        # Created before the cluster so EKS logs into a group with a retention, not an unbounded one.
        log_group = encrypted_log_group(
            f"{name}-logs",
            parent=self,
            log_group_name=log_group_name,
            retention_days=args.log_retention_days,
            description=f"ml-platform {args.environment} EKS control-plane logs",
        )
        cluster = aws.eks.Cluster(
            f"{name}",
            name=cluster_name,
            role_arn=cluster_role.arn,
            version=config.kubernetes_version,
            vpc_config={
                "subnet_ids": args.subnet_ids,
                "endpoint_private_access": True,
                "endpoint_public_access": config.endpoint_public_access,
                "public_access_cidrs": list(config.public_access_cidrs)
                if config.endpoint_public_access
                else None,
            },
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            encryption_config={"resources": ["secrets"], "provider": {"key_arn": secrets_key.arn}},
            access_config={
                "authentication_mode": "API_AND_CONFIG_MAP",
                "bootstrap_cluster_creator_admin_permissions": True,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_policy, log_group]),
        )
        issuer = cluster.identities.apply(lambda identities: identities[0]["oidcs"][0]["issuer"])
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], opts=self._child
        )

        node_role = aws.iam.Role(
            f"{name}-node", assume_role_policy=assume_role_policy("ec2.amazonaws.com"), opts=self._child
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}",
                role=node_role.name,
                policy_arn=managed_policy_arn(policy),
                opts=self._child,
            )
            for policy in (
                "AmazonEKSWorkerNodePolicy",
                "AmazonEC2ContainerRegistryReadOnly",
                "CloudWatchAgentServerPolicy",
            )
        ]
        node_groups = [
            self._node_group(
                name, "cpu", cluster, node_role, config.cpu_node_group, gpu=False, depends_on=node_policies
            )
        ]
        self.gpu_enabled = config.gpu_node_group.enabled
        if self.gpu_enabled:
            node_groups.append(
                self._node_group(
                    name, "gpu", cluster, node_role, config.gpu_node_group, gpu=True, depends_on=node_policies
                )
            )

        # The VPC CNI gets AWS permissions through IRSA rather than from every node's role.
        cni_role = aws.iam.Role(
            f"{name}-vpc-cni",
            assume_role_policy=irsa_assume_role_policy(oidc.arn, issuer, "kube-system", "aws-node"),
            opts=self._child,
        )
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni",
            role=cni_role.name,
            policy_arn=managed_policy_arn("AmazonEKS_CNI_Policy"),
            opts=self._child,
        )
        aws.eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=cluster.name,
            addon_name="vpc-cni",
            service_account_role_arn=cni_role.arn,
            # The CNI's network-policy agent is what enforces the serving namespace's NetworkPolicies.
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cni_policy]),
        )
        for addon in CORE_ADDONS:
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=cluster.name,
                addon_name=addon,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                # CoreDNS pods need nodes to schedule on before the add-on reports healthy.
                opts=pulumi.ResourceOptions(parent=self, depends_on=node_groups),
            )

        self.cluster_name = cluster.name
        self.cluster_endpoint = cluster.endpoint
        self.cluster_security_group_id = cluster.vpc_config.apply(
            lambda vpc: vpc["cluster_security_group_id"]
        )
        self.oidc_provider_arn = oidc.arn
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority).apply(
                lambda values: kubeconfig_json(values[0], values[1], values[2]["data"])
            )
        )
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_endpoint": self.cluster_endpoint,
                "cluster_security_group_id": self.cluster_security_group_id,
                "oidc_provider_arn": self.oidc_provider_arn,
                "gpu_enabled": self.gpu_enabled,
            }
        )

    def _node_group(
        self,
        name: str,
        kind: str,
        cluster: aws.eks.Cluster,
        node_role: aws.iam.Role,
        config: NodeGroupConfig,
        *,
        gpu: bool,
        depends_on: list[pulumi.Resource],
    ) -> aws.eks.NodeGroup:
        environment = self._args.environment
        template = aws.ec2.LaunchTemplate(
            f"{name}-{kind}-nodes",
            description=f"EKS {kind} nodes: IMDSv2 only, encrypted gp3 root, cost tags at launch",
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                # One hop: pods in their own network namespace cannot reach the node role's credentials.
                # Nothing needs them there: the VPC CNI uses IRSA and the CloudWatch agent runs hostNetwork.
                "http_put_response_hop_limit": 1,
            },
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    "ebs": {
                        "volume_size": config.disk_size_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            tag_specifications=launch_tag_specifications(
                {**self._args.tags, "Name": f"mlp-{environment}-{kind}-node"}, NODE_GROUP_TAG_KINDS
            ),
            update_default_version=True,
            opts=self._child,
        )
        return aws.eks.NodeGroup(
            f"{name}-{kind}",
            cluster_name=cluster.name,
            node_group_name_prefix=f"mlp-{environment}-{kind}-",
            node_role_arn=node_role.arn,
            subnet_ids=self._args.subnet_ids,
            instance_types=list(config.instance_types),
            capacity_type=config.capacity_type,
            ami_type="AL2023_x86_64_NVIDIA" if gpu else "AL2023_x86_64_STANDARD",
            scaling_config={
                "min_size": config.min_size,
                "desired_size": config.desired_size,
                "max_size": config.max_size,
            },
            update_config={"max_unavailable": 1},
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            labels={"workload": kind, **({GPU_NODE_LABEL: "true"} if gpu else {})},
            taints=[GPU_TAINT] if gpu else [],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )


def kubeconfig_json(cluster_name: str, endpoint: str, certificate_authority: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token`, as the AWS CLI writes it."""
    user: dict[str, Any] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--output", "json"],
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": certificate_authority},
                }
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [{"name": cluster_name, "user": user}],
        }
    )
