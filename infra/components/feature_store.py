"""FeatureStore: the online feature store, an encrypted ElastiCache (Redis) replication group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.config import FeatureStoreConfig
from infra.kms import GRANTING_SERVICE_ACTIONS, ViaServiceUse, customer_managed_key


@dataclass(frozen=True)
class FeatureStoreArgs:
    environment: str
    config: FeatureStoreConfig
    multi_az: bool
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    # Only these security groups (serving nodes, training fleets) may reach the Redis port.
    client_security_group_ids: Sequence[pulumi.Input[str]]
    # How long a deleted AUTH-token secret can still be restored.
    auth_secret_recovery_days: int


class FeatureStore(pulumi.ComponentResource):
    """Redis with AUTH, TLS and at-rest encryption (own KMS key) in private subnets; multi-AZ failover in prod.

    The AUTH token lives in a Secrets Manager secret; clients read it there with
    `secretsmanager:GetSecretValue` on `auth_secret_arn`, so no stack output carries it.

    Outputs: `primary_endpoint`, `reader_endpoint`, `port`, `security_group_id`, `auth_secret_arn`.
    """

    primary_endpoint: pulumi.Output[str]
    reader_endpoint: pulumi.Output[str]
    port: int
    security_group_id: pulumi.Output[str]
    auth_secret_arn: pulumi.Output[str]

    def __init__(self, name: str, args: FeatureStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ml-platform:infra:FeatureStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config

        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="Feature store: Redis from serving nodes and training fleets only",
            vpc_id=args.vpc_id,
            tags={"Name": f"mlp-{args.environment}-feature-store"},
            opts=child,
        )
        for index, client_group in enumerate(args.client_security_group_ids):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-client-{index}",
                security_group_id=security_group.id,
                referenced_security_group_id=client_group,
                ip_protocol="tcp",
                from_port=config.port,
                to_port=config.port,
                description="Redis (TLS) from an admitted workload group",
                opts=child,
            )
        subnet_group = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=f"mlp-{args.environment}-feature-store",
            description="Private subnets of the feature store",
            subnet_ids=args.subnet_ids,
            opts=child,
        )
        token = random.RandomPassword(
            f"{name}-auth-token",
            length=48,
            # Redis AUTH tokens accept only printable characters other than @, " and /.
            special=False,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
        )
        auth_secret = aws.secretsmanager.Secret(
            f"{name}-auth-token",
            name=f"mlp/{args.environment}/feature-store/auth-token",
            description=f"ml-platform {args.environment} feature store (Redis) AUTH token",
            recovery_window_in_days=args.auth_secret_recovery_days,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-auth-token", secret_id=auth_secret.id, secret_string=token.result, opts=child
        )
        at_rest_key = customer_managed_key(
            f"{name}-at-rest",
            parent=self,
            description=f"ml-platform {args.environment} feature store encryption at rest",
            uses=[ViaServiceUse("elasticache", GRANTING_SERVICE_ACTIONS)],
        )
        failover = config.num_nodes >= 2
        group = aws.elasticache.ReplicationGroup(
            f"{name}",
            replication_group_id=f"mlp-{args.environment}-features",
            description=f"ml-platform {args.environment} online feature store",
            engine="redis",
            engine_version=config.engine_version,
            node_type=config.node_type,
            num_cache_clusters=config.num_nodes,
            port=config.port,
            automatic_failover_enabled=failover,
            multi_az_enabled=args.multi_az and failover,
            at_rest_encryption_enabled=True,
            kms_key_id=at_rest_key.arn,
            transit_encryption_enabled=True,
            auth_token=token.result,
            subnet_group_name=subnet_group.name,
            security_group_ids=[security_group.id],
            snapshot_retention_limit=config.snapshot_retention_days,
            snapshot_window="03:00-04:00" if config.snapshot_retention_days else None,
            maintenance_window="sun:05:00-sun:06:00",
            auto_minor_version_upgrade=True,
            apply_immediately=not args.multi_az,
            opts=child,
        )
        self.primary_endpoint = group.primary_endpoint_address
        self.reader_endpoint = group.reader_endpoint_address
        self.port = config.port
        self.security_group_id = security_group.id
        self.auth_secret_arn = auth_secret.arn
        self.register_outputs(
            {
                "primary_endpoint": self.primary_endpoint,
                "reader_endpoint": self.reader_endpoint,
                "port": self.port,
                "security_group_id": self.security_group_id,
                "auth_secret_arn": self.auth_secret_arn,
            }
        )
