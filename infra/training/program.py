"""The training stack program: one TrainingFleet built from a run request.

It is the inline program `mlp train launch` deploys through the Automation API and the one
`mlp train plan` runs under mocks; the environment's bucket, subnets and security group come from
the environment stack through a StackReference.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.components.training_fleet import TrainingFleet, TrainingFleetArgs, asg_name
from infra.config import PROJECT
from infra.plan import PlanResult, plan_environment, run_offline
from infra.training.checkpoints import RUNS_PREFIX
from infra.training.request import RunRequest
from infra.training.user_data import UserDataValues, render_user_data
from mlp.tags import format_expires_at

# The environment stack outputs a training stack consumes.
ENVIRONMENT_OUTPUTS = (
    "checkpointBucketName",
    "checkpointKmsKeyArn",
    "privateSubnetIds",
    "trainingSecurityGroupId",
)


def environment_stack_reference(environment_stack: str) -> str:
    """The fully qualified name self-managed backends (file://, s3://) give the environment stack."""
    return f"organization/{PROJECT}/{environment_stack}"


def build_training_run(request: RunRequest) -> None:
    environment = pulumi.StackReference(
        "environment", stack_name=environment_stack_reference(request.environment.stack)
    )
    bucket = environment.require_output("checkpointBucketName")
    provider = aws.Provider("aws", region=request.environment.region, default_tags={"tags": request.tags})
    limits = request.environment.training
    user_data = bucket.apply(
        lambda bucket_name: render_user_data(
            UserDataValues(
                run_id=request.run_id,
                bucket=bucket_name,
                region=request.environment.region,
                asg_name=asg_name(request.run_id),
                command=request.command,
                image=request.image,
                max_hours=request.max_hours,
            )
        )
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
            kms_key_arn=environment.require_output("checkpointKmsKeyArn"),
            subnet_ids=environment.require_output("privateSubnetIds"),
            security_group_id=environment.require_output("trainingSecurityGroupId"),
            user_data=user_data,
            tags=request.tags,
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
    return run_offline(
        lambda: build_training_run(request),
        stack=request.stack,
        region=request.environment.region,
        config_values={"aws:region": request.environment.region},
        stack_outputs={request.environment.stack: environment.outputs},
    )
