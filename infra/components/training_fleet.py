"""TrainingFleet: one training run's spot GPU instances, resuming from checkpoints when reclaimed.

Everything here belongs to one run and dies with its stack; the checkpoints it writes live in the
environment's bucket under `runs/<run-id>/`, the only prefix its instance role may touch. The role and
its instance profile live under `RUN_ROLE_PATH` and carry no managed policy: every grant is inline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.iam import RUN_ROLE_PATH, assume_role_policy
from infra.tagging import asg_tags, launch_tag_specifications
from infra.training.checkpoints import RUNS_PREFIX
from infra.training.request import repository_arn
from infra.training.user_data import launch_template_user_data
from mlp import gpu_metrics
from mlp.tags import RUN_ID

# Event types AWS sends ahead of reclaiming a spot instance.
# EventBridge cannot match on instance tags, so the rules take every such event of the region and
# observers filter by the run's instance ids (its ASG's members).
INTERRUPTION_EVENTS = {
    "interruption": "EC2 Spot Instance Interruption Warning",
    "rebalance": "EC2 Instance Rebalance Recommendation",
}
# An ASG's max instance lifetime is 0 or at least one day; shorter runs rely on the script's hard stop.
MIN_INSTANCE_LIFETIME_SECONDS = 86_400
# What the SSM agent needs for Session Manager shells, without AmazonSSMManagedInstanceCore's
# ssm:GetParameter* on every parameter of the account.
SESSION_MANAGER_ACTIONS = (
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ssm:UpdateInstanceInformation",
)
ECR_PULL_ACTIONS = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")


@dataclass(frozen=True)
class TrainingFleetArgs:
    run_id: str
    instance_types: Sequence[str]
    count: int
    max_hours: float
    on_demand_base: int
    root_volume_gb: int
    ami_ssm_parameter: str
    bucket_name: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]
    user_data: pulumi.Input[str]
    # Mandatory + training tags (run-id, expires-at, ephemeral, pulumi-stack).
    tags: Mapping[str, str]
    session_manager: bool = False
    # `training.imageRepositories`: names in the stack's account and region, or ARNs.
    image_repositories: Sequence[str] = ()
    # The secret holding the feature store's AUTH token; None when the run does not use it.
    feature_store_secret_arn: pulumi.Input[str] | None = None


def asg_name(run_id: str) -> str:
    return f"mlp-train-{run_id}"


def run_prefix(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/"


def instance_policy(
    run_id: str,
    bucket: str,
    kms_key_arn: str,
    region: str,
    account_id: str,
    *,
    session_manager: bool = False,
    image_repository_arns: Sequence[str] = (),
    feature_store_secret_arn: str | None = None,
) -> str:
    """What a run's instances may do: their run's prefix, the bucket key, their metrics, their ASG;
    and when asked, Session Manager, pulls from the image repositories, the feature store secret."""
    prefix = run_prefix(run_id)
    statements: list[dict] = [
        {
            "Sid": "RunCheckpoints",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
        },
        {
            "Sid": "ListRunPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        },
        {
            "Sid": "CheckpointKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": kms_key_arn,
        },
        {
            "Sid": "GpuMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": gpu_metrics.NAMESPACE}},
        },
        {
            "Sid": "StopOwnFleetWhenDone",
            "Effect": "Allow",
            "Action": "autoscaling:SetDesiredCapacity",
            "Resource": f"arn:aws:autoscaling:{region}:{account_id}:autoScalingGroup:*:autoScalingGroupName/{asg_name(run_id)}",
            "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{RUN_ID}": run_id}},
        },
    ]
    if session_manager:
        # Session Manager instead of SSH: no inbound port, no key pair on the instances.
        statements.append(
            {
                "Sid": "SessionManager",
                "Effect": "Allow",
                "Action": list(SESSION_MANAGER_ACTIONS),
                "Resource": "*",
            }
        )
    if image_repository_arns:
        statements += [
            {
                "Sid": "PullTrainerImages",
                "Effect": "Allow",
                "Action": list(ECR_PULL_ACTIONS),
                "Resource": list(image_repository_arns),
            },
            # GetAuthorizationToken acts on no resource: "*" is the only form AWS accepts.
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ]
    if feature_store_secret_arn:
        statements.append(
            {
                "Sid": "FeatureStoreAuthToken",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": feature_store_secret_arn,
            }
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def interruption_event_pattern(detail_type: str) -> str:
    return json.dumps({"source": ["aws.ec2"], "detail-type": [detail_type]})


class TrainingFleet(pulumi.ComponentResource):
    """Outputs: `asg_name`, `launch_template_id`, `role_arn`, `interruption_queue_url`."""

    asg_name: pulumi.Output[str]
    launch_template_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    interruption_queue_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: TrainingFleetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:TrainingFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=invoke)
        region = aws.get_region_output(opts=invoke)
        ami = aws.ssm.get_parameter_output(name=args.ami_ssm_parameter, opts=invoke)

        role = aws.iam.Role(
            f"{name}-instance",
            path=RUN_ROLE_PATH,
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            opts=child,
        )

        def policy(
            bucket: str, kms_key_arn: str, region: str, account_id: str, secret_arn: str | None
        ) -> str:
            return instance_policy(
                args.run_id,
                bucket,
                kms_key_arn,
                region,
                account_id,
                session_manager=args.session_manager,
                image_repository_arns=[
                    repository_arn(repository, region, account_id) for repository in args.image_repositories
                ],
                feature_store_secret_arn=secret_arn,
            )

        aws.iam.RolePolicy(
            f"{name}-instance",
            role=role.id,
            policy=pulumi.Output.all(
                args.bucket_name,
                args.kms_key_arn,
                region.region,
                identity.account_id,
                args.feature_store_secret_arn,
            ).apply(lambda values: policy(*values)),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-instance", path=RUN_ROLE_PATH, role=role.name, opts=child)

        template = aws.ec2.LaunchTemplate(
            f"{name}",
            description=f"Training run {args.run_id}: GPU AMI, IMDSv2 host-only, encrypted gp3, run tags at launch",
            image_id=ami.value,
            iam_instance_profile={"arn": profile.arn},
            vpc_security_group_ids=[args.security_group_id],
            instance_initiated_shutdown_behavior="terminate",
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                # Only the host reaches instance metadata: a container's extra network hop does not,
                # so training code in the image never holds the instance role's credentials.
                "http_put_response_hop_limit": 1,
                # The boot script reads its run's expires-at from the instance tags.
                "instance_metadata_tags": "enabled",
            },
            block_device_mappings=[
                {
                    "device_name": "/dev/sda1",
                    "ebs": {
                        "volume_size": args.root_volume_gb,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            monitoring={"enabled": True},
            user_data=pulumi.Output.from_input(args.user_data).apply(launch_template_user_data),
            tag_specifications=launch_tag_specifications(args.tags),
            update_default_version=True,
            opts=child,
        )
        lifetime = max(MIN_INSTANCE_LIFETIME_SECONDS, math.ceil(args.max_hours * 3600))
        group = aws.autoscaling.Group(
            f"{name}",
            name=asg_name(args.run_id),
            min_size=0,
            max_size=args.count,
            desired_capacity=args.count,
            vpc_zone_identifiers=args.subnet_ids,
            capacity_rebalance=True,
            max_instance_lifetime=lifetime,
            # Spot capacity can take a while; `up` must not fail waiting for it.
            wait_for_capacity_timeout="0",
            mixed_instances_policy={
                "instances_distribution": {
                    "on_demand_base_capacity": args.on_demand_base,
                    "on_demand_percentage_above_base_capacity": 0,
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": template.id,
                        "version": "$Latest",
                    },
                    "overrides": [{"instance_type": instance_type} for instance_type in args.instance_types],
                },
            },
            tags=asg_tags(args.tags),
            opts=child,
        )

        queue = aws.sqs.Queue(
            f"{name}-interruptions",
            name=f"mlp-train-{args.run_id}-interruptions",
            sqs_managed_sse_enabled=True,
            message_retention_seconds=min(1_209_600, max(3_600, math.ceil(args.max_hours * 3600))),
            opts=child,
        )
        rules = {
            kind: aws.cloudwatch.EventRule(
                f"{name}-{kind}",
                description=f"{detail_type} for training run {args.run_id}",
                event_pattern=interruption_event_pattern(detail_type),
                opts=child,
            )
            for kind, detail_type in INTERRUPTION_EVENTS.items()
        }
        aws.sqs.QueuePolicy(
            f"{name}-interruptions",
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, *[rule.arn for rule in rules.values()]).apply(
                lambda values: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "EventBridgeToQueue",
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": values[0],
                                "Condition": {"ArnEquals": {"aws:SourceArn": values[1:]}},
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        for kind, rule in rules.items():
            aws.cloudwatch.EventTarget(f"{name}-{kind}-queue", rule=rule.name, arn=queue.arn, opts=child)

        self.asg_name = group.name
        self.launch_template_id = template.id
        self.role_arn = role.arn
        self.interruption_queue_url = queue.url
        self.register_outputs(
            {
                "asg_name": self.asg_name,
                "launch_template_id": self.launch_template_id,
                "role_arn": self.role_arn,
                "interruption_queue_url": self.interruption_queue_url,
            }
        )
