"""The training stack program: one TrainingFleet built from a run request.

It is the inline program `mlp train launch` deploys through the Automation API and the one
`mlp train plan` runs under mocks; the environment's bucket, subnets and security group (and, for a
run with the feature store, its endpoint and the ARN of its AUTH token's secret) come from the
environment stack through a StackReference. The token itself is read by the instances at boot and
never enters this stack's inputs, outputs or state.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.components.training_fleet import TrainingFleet, TrainingFleetArgs, asg_name
from infra.config import PROJECT
from infra.plan import PlanResult, plan_environment, run_offline
from infra.training.checkpoints import RUNS_PREFIX
from infra.training.request import RunRequest
from infra.training.user_data import FeatureStoreAccess, UserDataValues, render_user_data
from mlp.errors import UserError
from mlp.tags import format_expires_at

# The environment stack outputs every training stack consumes.
ENVIRONMENT_OUTPUTS = (
    "checkpointBucketName",
    "checkpointKmsKeyArn",
    "privateSubnetIds",
    "trainingSecurityGroupId",
)
# And those a run with the feature store adds.
FEATURE_STORE_OUTPUTS = ("featureStoreEndpoint", "featureStorePort", "featureStoreAuthSecretArn")


def environment_outputs(request: RunRequest) -> tuple[str, ...]:
    """The environment stack outputs this run reads: nothing else of the environment reaches it."""
    return ENVIRONMENT_OUTPUTS + (FEATURE_STORE_OUTPUTS if request.feature_store else ())


def environment_stack_reference(environment_stack: str) -> str:
    """The fully qualified name self-managed backends (file://, s3://) give the environment stack."""
    return f"organization/{PROJECT}/{environment_stack}"


def build_training_run(request: RunRequest) -> None:
    reference = pulumi.StackReference(
        "environment", stack_name=environment_stack_reference(request.environment.stack)
    )
    environment = {name: reference.require_output(name) for name in environment_outputs(request)}
    bucket = environment["checkpointBucketName"]
    secret_arn = environment.get("featureStoreAuthSecretArn")
    provider = aws.Provider("aws", region=request.environment.region, default_tags={"tags": request.tags})
    limits = request.environment.training

    def user_data(bucket_name: str, feature_store: list | None) -> str:
        return render_user_data(
            UserDataValues(
                run_id=request.run_id,
                bucket=bucket_name,
                region=request.environment.region,
                asg_name=asg_name(request.run_id),
                command=request.command,
                image=request.image,
                max_hours=request.max_hours,
                feature_store=FeatureStoreAccess(*feature_store) if feature_store else None,
            )
        )

    feature_store = (
        pulumi.Output.all(*(environment[name] for name in FEATURE_STORE_OUTPUTS))
        if request.feature_store
        else None
    )
    fleet = TrainingFleet(
        "fleet",
        TrainingFleetArgs(
            run_id=request.run_id,
            instance_types=request.instance_types,
            count=request.count,
            max_hours=request.max_hours,
            on_demand_base=request.on_demand_base,
            root_volume_gb=limits.root_volume_gb,
            ami_ssm_parameter=limits.ami_ssm_parameter,
            bucket_name=bucket,
            kms_key_arn=environment["checkpointKmsKeyArn"],
            subnet_ids=environment["privateSubnetIds"],
            security_group_id=environment["trainingSecurityGroupId"],
            user_data=pulumi.Output.all(bucket, feature_store).apply(lambda values: user_data(*values)),
            tags=request.tags,
            session_manager=limits.session_manager,
            image_repositories=limits.image_repositories,
            feature_store_secret_arn=secret_arn,
        ),
        pulumi.ResourceOptions(providers={"aws": provider}),
    )
    pulumi.export("runId", request.run_id)
    pulumi.export("region", request.environment.region)
    pulumi.export("expiresAt", format_expires_at(request.expires_at))
    pulumi.export("checkpointBucket", bucket)
    pulumi.export("checkpointPrefix", f"{RUNS_PREFIX}{request.run_id}/")
    pulumi.export("asgName", fleet.asg_name)
    pulumi.export("interruptionQueueUrl", fleet.interruption_queue_url)


def plan_training_run(request: RunRequest, raw_environment_config: dict) -> PlanResult:
    """The run's stack under mocks, reading the outputs the environment stack's own plan produces."""
    environment = plan_environment(request.environment, raw_environment_config)
    missing = [name for name in environment_outputs(request) if name not in environment.outputs]
    if missing:
        fix = "drop --feature-store or deploy" if request.feature_store else "deploy"
        raise UserError(
            f"environment stack {request.environment.stack} does not export {', '.join(missing)}, which the run "
            f"reads; {fix} an environment program that exports it"
        )
    return run_offline(
        lambda: build_training_run(request),
        stack=request.stack,
        region=request.environment.region,
        config_values={"aws:region": request.environment.region},
        stack_outputs={request.environment.stack: environment.outputs},
    )
