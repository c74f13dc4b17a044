"""The environment stack program: network, checkpoints, serving, feature store and cost governance.

`build_environment` is what `pulumi up -s dev` runs (through `infra/__main__.py`) and what
`mlp plan --stack dev` runs under mocks. Its exports are the contract with training stacks and FinOps.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.checkpoint_bucket import CheckpointBucket, CheckpointBucketArgs
from infra.components.cost_export import CostExport, CostExportArgs
from infra.components.cost_governance import CostGovernance, CostGovernanceArgs
from infra.components.feature_store import FeatureStore, FeatureStoreArgs
from infra.components.finops_jobs import FinOpsJobs, FinOpsJobsArgs
from infra.components.network import Network, NetworkArgs
from infra.components.serving_cluster import ServingCluster, ServingClusterArgs
from infra.components.serving_workloads import ServingWorkloads, ServingWorkloadsArgs
from infra.config import StackConfig


def aws_provider(config: StackConfig) -> aws.Provider:
    """The one AWS provider of a stack, with the mandatory tags as default tags."""
    return aws.Provider("aws", region=config.region, default_tags={"tags": config.resource_tags})


def build_environment(config: StackConfig) -> None:
    provider = aws_provider(config)
    on_aws = pulumi.ResourceOptions(providers={"aws": provider})
    environment = config.environment

    network = Network(
        "network", NetworkArgs(environment=environment, region=config.region, config=config.network), on_aws
    )
    checkpoints = CheckpointBucket(
        "checkpoints",
        CheckpointBucketArgs(environment=environment, config=config.checkpoints, protect=config.is_prod),
        on_aws,
    )
    serving = ServingCluster(
        "serving",
        ServingClusterArgs(
            environment=environment,
            config=config.serving,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            tags=config.resource_tags,
            log_retention_days=365 if config.is_prod else 30,
        ),
        on_aws,
    )
    feature_store = FeatureStore(
        "feature-store",
        FeatureStoreArgs(
            environment=environment,
            config=config.feature_store,
            multi_az=config.is_prod,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            client_security_group_ids=[serving.cluster_security_group_id, network.training_security_group_id],
            auth_secret_recovery_days=30 if config.is_prod else 7,
        ),
        on_aws,
    )
    kubernetes = k8s.Provider("serving-cluster", kubeconfig=serving.kubeconfig, enable_server_side_apply=True)
    workloads = ServingWorkloads(
        "serving-workloads",
        ServingWorkloadsArgs(
            config=config.serving,
            gpu_nodes=serving.gpu_enabled,
            vpc_cidr=network.vpc_cidr,
            feature_store_port=config.feature_store.port,
            tags=config.resource_tags,
        ),
        pulumi.ResourceOptions(providers={"kubernetes": kubernetes}),
    )
    governance = CostGovernance(
        "cost-governance",
        CostGovernanceArgs(
            environment=environment,
            config=config.budgets,
            mandatory_tags=config.mandatory_tags,
            activate_cost_allocation_tags=config.budgets.activate_cost_allocation_tags,
        ),
        on_aws,
    )

    pulumi.export("environment", environment)
    pulumi.export("region", config.region)
    pulumi.export("tags", config.resource_tags)
    pulumi.export("vpcId", network.vpc_id)
    pulumi.export("privateSubnetIds", network.private_subnet_ids)
    pulumi.export("trainingSecurityGroupId", network.training_security_group_id)
    pulumi.export("checkpointBucketName", checkpoints.bucket_name)
    pulumi.export("checkpointBucketArn", checkpoints.bucket_arn)
    pulumi.export("checkpointKmsKeyArn", checkpoints.kms_key_arn)
    pulumi.export("clusterName", serving.cluster_name)
    pulumi.export("clusterSecurityGroupId", serving.cluster_security_group_id)
    pulumi.export("oidcProviderArn", serving.oidc_provider_arn)
    pulumi.export("kubeconfig", serving.kubeconfig)
    pulumi.export("servingNamespace", workloads.namespace)
    pulumi.export("featureStoreEndpoint", feature_store.primary_endpoint)
    pulumi.export("featureStoreReaderEndpoint", feature_store.reader_endpoint)
    pulumi.export("featureStorePort", feature_store.port)
    pulumi.export("featureStoreSecurityGroupId", feature_store.security_group_id)
    # The ARN, not the token: a training stack's StackReference would keep any exported value in its state.
    pulumi.export("featureStoreAuthSecretArn", feature_store.auth_secret_arn)
    pulumi.export("costAlertTopicArn", governance.alert_topic_arn)
    pulumi.export("training", json.loads(config.training.model_dump_json(by_alias=True)))

    if config.cost_export.enabled:
        cost_export = CostExport(
            "cost-export",
            CostExportArgs(
                environment=environment,
                region=config.region,
                config=config.cost_export,
                tags=config.resource_tags,
                protect=config.is_prod,
            ),
            on_aws,
        )
        pulumi.export("costExportFocusUri", cost_export.focus_uri)
        pulumi.export("costExportAthenaWorkgroup", cost_export.athena_workgroup)
        pulumi.export("costExportGlueDatabase", cost_export.glue_database)
        pulumi.export("costExportGlueTable", cost_export.glue_table)

    if config.finops.enabled:
        finops = FinOpsJobs(
            "finops",
            FinOpsJobsArgs(
                environment=environment,
                region=config.region,
                config=config.finops,
                kubernetes_version=config.serving.kubernetes_version,
                oidc_provider_arn=serving.oidc_provider_arn,
                alert_topic_arn=governance.alert_topic_arn,
                checkpoint_bucket_arn=checkpoints.bucket_arn,
                checkpoint_kms_key_arn=checkpoints.kms_key_arn,
                tags=config.resource_tags,
                protect=config.is_prod,
            ),
            pulumi.ResourceOptions(providers={"aws": provider, "kubernetes": kubernetes}),
        )
        pulumi.export("finopsReportsUri", finops.reports_uri)
        pulumi.export("finopsReportRoleArn", finops.report_role_arn)
        pulumi.export("finopsReaperRoleArn", finops.reaper_role_arn)
        pulumi.export("finopsFinanceRoleArn", finops.finance_role_arn)
