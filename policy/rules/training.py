"""Rules 2 and 3: training fleets are spot-only outside prod, allowlisted, GPU-capped and expire; fleets
terminate their instances when destroyed; and training runs' roles carry no AWS-managed policy
outside an allowlist.

A training fleet is an ASG with a mixed-instances policy, an EC2 Fleet, a spot fleet request or a
spot instance request that either carries the training tags (`run-id` / `ephemeral`) or asks for
GPU instance types. A training role is an IAM role with the training tags or under the runs' IAM path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pulumi_policy import Severity
from pydantic import Field

from infra.config import TrainingConfig
from infra.iam import RUN_ROLE_PATH
from infra.tagging import ASG_TYPE
from mlp import pricing
from mlp.tags import EXPIRES_AT, RUN_ID, format_expires_at, is_ephemeral, parse_expires_at
from policy.analyzer_view import display, is_true, items_of, lookup, peek
from policy.rules.common import Resource, Rule, RuleConfig, referenced, violation

FLEET_TYPE = "aws:ec2/fleet:Fleet"
SPOT_FLEET_TYPE = "aws:ec2/spotFleetRequest:SpotFleetRequest"
SPOT_INSTANCE_TYPE = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
FLEET_TYPES: tuple[str, ...] = (ASG_TYPE, FLEET_TYPE, SPOT_FLEET_TYPE, SPOT_INSTANCE_TYPE)
ROLE_TYPE = "aws:iam/role:Role"
ROLE_POLICY_ATTACHMENT_TYPE = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY_ATTACHMENT_TYPE = "aws:iam/policyAttachment:PolicyAttachment"
# The property through which each attachment type names its role(s).
ROLE_PROPS = {ROLE_POLICY_ATTACHMENT_TYPE: "role", POLICY_ATTACHMENT_TYPE: "roles"}
# In every partition (aws, aws-cn, aws-us-gov) AWS-managed policies live in the account "aws".
AWS_MANAGED_POLICY_ARN = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/")

FLEET_RULE_NAME = "training-fleet-guardrails"
_TRAINING_DEFAULTS = TrainingConfig.model_fields


class TrainingFleetConfig(RuleConfig):
    allowed_instance_types: list[str] = Field(
        list(_TRAINING_DEFAULTS["allowed_instance_types"].default),
        min_length=1,
        description="GPU instance types training fleets may use (ml-platform:training.allowedInstanceTypes).",
    )
    max_gpus_per_run: int = Field(
        _TRAINING_DEFAULTS["max_gpus_per_run"].default,
        ge=1,
        description="Most GPUs one training fleet may run at full size (ml-platform:training.maxGpusPerRun).",
    )
    max_run_hours: float = Field(
        _TRAINING_DEFAULTS["max_run_hours"].default,
        gt=0,
        description="Latest expires-at, in hours from the check (ml-platform:training.maxRunHours).",
    )


@dataclass(frozen=True)
class FleetShape:
    """What a fleet asks for, read from whichever fleet resource type it is."""

    # (property path, value) when some capacity is on-demand, else None.
    on_demand: tuple[str, object] | None
    # (instance type, weighted capacity) per launch option.
    options: tuple[tuple[str, float], ...]
    types_property: str
    capacity_property: str
    capacity: float


def _weight(value: object) -> float:
    """An option's weighted capacity; unset (or unusable) means one unit per instance."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        return 1.0
    return weight if weight > 0 else 1.0


def _override_options(configs: object) -> list[tuple[str, float]]:
    options = []
    for config in items_of(configs):
        for override in items_of(lookup(config, "overrides")):
            instance_type = lookup(override, "instanceType")
            if isinstance(instance_type, str):
                options.append((instance_type, _weight(lookup(override, "weightedCapacity"))))
    return options


def fleet_shape(resource: Resource) -> FleetShape | None:
    props = resource.props
    if resource.type == ASG_TYPE:
        policy = lookup(props, "mixedInstancesPolicy")
        capacity = lookup(props, "maxSize", default=0)
        if policy is None:
            return FleetShape(("mixedInstancesPolicy", None), (), "launchTemplate", "maxSize", capacity)
        distribution = lookup(policy, "instancesDistribution", default={})
        base = lookup(distribution, "onDemandBaseCapacity", default=0)
        # AWS's default for the percentage is 100: an unset value means all on-demand.
        percentage = lookup(distribution, "onDemandPercentageAboveBaseCapacity", default=100)
        on_demand = None
        if percentage != 0:
            on_demand = (
                "mixedInstancesPolicy.instancesDistribution.onDemandPercentageAboveBaseCapacity",
                percentage,
            )
        elif base != 0:
            on_demand = ("mixedInstancesPolicy.instancesDistribution.onDemandBaseCapacity", base)
        options = _override_options([lookup(policy, "launchTemplate", default={})])
        types = "mixedInstancesPolicy.launchTemplate.overrides[].instanceType"
        return FleetShape(on_demand, tuple(options), types, "maxSize", capacity)
    if resource.type == FLEET_TYPE:
        spec = lookup(props, "targetCapacitySpecification", default={})
        default_type = lookup(spec, "defaultTargetCapacityType")
        on_demand_capacity = lookup(spec, "onDemandTargetCapacity", default=0)
        on_demand = None
        if default_type != "spot":
            on_demand = ("targetCapacitySpecification.defaultTargetCapacityType", default_type)
        elif on_demand_capacity != 0:
            on_demand = ("targetCapacitySpecification.onDemandTargetCapacity", on_demand_capacity)
        options = _override_options(lookup(props, "launchTemplateConfigs"))
        capacity = lookup(spec, "totalTargetCapacity", default=0)
        types = "launchTemplateConfigs[].overrides[].instanceType"
        return FleetShape(
            on_demand, tuple(options), types, "targetCapacitySpecification.totalTargetCapacity", capacity
        )
    if resource.type == SPOT_FLEET_TYPE:
        on_demand_capacity = lookup(props, "onDemandTargetCapacity", default=0)
        on_demand = ("onDemandTargetCapacity", on_demand_capacity) if on_demand_capacity != 0 else None
        options = _override_options(lookup(props, "launchTemplateConfigs"))
        for spec in items_of(lookup(props, "launchSpecifications")):
            instance_type = lookup(spec, "instanceType")
            if isinstance(instance_type, str):
                options.append((instance_type, _weight(lookup(spec, "weightedCapacity"))))
        types = "launchTemplateConfigs[].overrides[].instanceType/launchSpecifications[].instanceType"
        return FleetShape(
            on_demand, tuple(options), types, "targetCapacity", lookup(props, "targetCapacity", default=0)
        )
    if resource.type == SPOT_INSTANCE_TYPE:
        instance_type = lookup(props, "instanceType")
        options = ((instance_type, 1.0),) if isinstance(instance_type, str) else ()
        return FleetShape(None, options, "instanceType", "instanceType", 1)
    return None


def has_training_tags(resource: Resource) -> bool:
    tags = resource.tags
    return is_ephemeral(tags) or bool(tags.get(RUN_ID, "").strip())


def is_training_fleet(resource: Resource, shape: FleetShape) -> bool:
    uses_gpus = any(pricing.is_gpu_instance_type(instance_type) for instance_type, _ in shape.options)
    return has_training_tags(resource) or uses_gpus


def _most_gpus(shape: FleetShape) -> tuple[int, str] | None:
    """The GPUs of the fleet at full capacity, filled with its largest-GPU option, and that type."""
    if not isinstance(shape.capacity, int | float):
        return None
    worst: tuple[int, str] | None = None
    for instance_type, weight in shape.options:
        if instance_type not in pricing.EC2:
            continue
        gpus = math.ceil(shape.capacity / weight) * pricing.gpus_per_instance(instance_type)
        if worst is None or gpus > worst[0]:
            worst = (gpus, instance_type)
    return worst


def check_training_fleet(resource: Resource, config: TrainingFleetConfig, now: datetime) -> Iterator[str]:
    shape = fleet_shape(resource)
    if shape is None or not is_training_fleet(resource, shape):
        return
    if shape.on_demand is not None and not resource.is_prod:
        path, value = shape.on_demand
        yield violation(
            resource,
            path,
            display(value),
            f"training fleets outside prod (environment {resource.environment or 'unset'}) are spot-only: "
            "request spot capacity only",
        )
    allowed = config.allowed_instance_types
    refused = sorted({instance_type for instance_type, _ in shape.options if instance_type not in allowed})
    if refused:
        yield violation(
            resource,
            shape.types_property,
            ", ".join(refused),
            f"use only allowlisted types ({', '.join(allowed)}) "
            "or extend ml-platform:training.allowedInstanceTypes",
        )
    worst = _most_gpus(shape)
    if worst is not None and worst[0] > config.max_gpus_per_run:
        gpus, instance_type = worst
        yield violation(
            resource,
            shape.capacity_property,
            f"{display(shape.capacity)} ({gpus} GPUs with {instance_type})",
            f"stay within {config.max_gpus_per_run} GPUs per run: "
            "lower the capacity or use smaller instance types",
        )
    tags = resource.tags
    if not tags.get(RUN_ID, "").strip():
        yield violation(
            resource, f"tag {RUN_ID}", "not set", "tag the fleet with its run id (mlp train does)"
        )
    latest = now + timedelta(hours=config.max_run_hours)
    expires_at = tags.get(EXPIRES_AT, "").strip()
    limit = f"{format_expires_at(latest)} ({display(config.max_run_hours)} h from now)"
    if not expires_at:
        yield violation(resource, f"tag {EXPIRES_AT}", "not set", f"set it, in UTC, no later than {limit}")
        return
    try:
        moment = parse_expires_at(expires_at)
    except ValueError:
        yield violation(
            resource, f"tag {EXPIRES_AT}", repr(expires_at), "use ISO 8601 UTC like 2026-01-31T18:00:00Z"
        )
        return
    if moment > latest:
        yield violation(resource, f"tag {EXPIRES_AT}", repr(expires_at), f"set it no later than {limit}")


def check_terminates_on_delete(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type == FLEET_TYPE:
        value = lookup(resource.props, "terminateInstances")
        if not is_true(value):
            yield violation(
                resource,
                "terminateInstances",
                display(value) + (" (defaults to false)" if value is None else ""),
                "set terminateInstances: true so destroying the fleet terminates its instances",
            )
    elif resource.type == SPOT_FLEET_TYPE:
        value = lookup(resource.props, "terminateInstancesOnDelete")
        if not is_true(value):
            yield violation(
                resource,
                "terminateInstancesOnDelete",
                display(value),
                'set terminateInstancesOnDelete: "true" so destroying the request terminates its instances',
            )


def training_fleet_rule(clock: Callable[[], datetime]) -> Rule:
    """Rule 2; `clock` is when `expires-at` is measured from (now, except in tests)."""
    return Rule(
        name=FLEET_RULE_NAME,
        description=(
            "Training fleets are spot-only outside prod, use allowlisted GPU types, stay under the per-run "
            "GPU cap and carry run-id and an expires-at within the environment's max run hours."
        ),
        severity=Severity.HIGH,
        check=lambda resource, config: check_training_fleet(resource, config, clock()),
        config_model=TrainingFleetConfig,
    )


class TrainingRolePoliciesConfig(RuleConfig):
    allowed_managed_policy_arns: list[str] = Field(
        [],
        description="AWS-managed policy ARNs a training run's role may have attached.",
    )


def is_training_role(role: Resource) -> bool:
    path = peek(role.props, "path")
    return has_training_tags(role) or (isinstance(path, str) and path.startswith(RUN_ROLE_PATH))


def _refused_managed_policies(arns: object, config: TrainingRolePoliciesConfig) -> list[str]:
    """The AWS-managed, unlisted ARNs among `arns`; one unknown at preview is a policy the stack creates."""
    listed = items_of(arns) or [arns]
    return [
        str(arn)
        for arn in listed
        if isinstance(arn, str)
        and AWS_MANAGED_POLICY_ARN.match(arn)
        and arn not in config.allowed_managed_policy_arns
    ]


def check_training_role_policies(
    resources: Sequence[Resource], config: TrainingRolePoliciesConfig
) -> Iterator[tuple[str | None, str]]:
    training_roles = [r for r in resources if r.type == ROLE_TYPE and is_training_role(r)]
    fix = (
        "grant a training run only what it needs in an inline policy of its own, "
        "or allowlist the policy in allowedManagedPolicyArns"
    )
    for role in training_roles:
        refused = _refused_managed_policies(peek(role.props, "managedPolicyArns"), config)
        if refused:
            yield role.urn, violation(role, "managedPolicyArns", ", ".join(refused), fix)
    # Attachments carry no tags: they are a training run's when they point at a training role.
    for attachment in (r for r in resources if r.type in ROLE_PROPS):
        roles = referenced(attachment, ROLE_PROPS[attachment.type], training_roles)
        refused = _refused_managed_policies(peek(attachment.props, "policyArn"), config)
        if roles and refused:
            names = ", ".join(f"'{role.name}'" for role in roles)
            yield (
                attachment.urn,
                violation(attachment, "policyArn", f"{refused[0]} on training role {names}", fix),
            )


TRAINING_ROLE_RULE = Rule(
    name="training-role-managed-policies",
    description="Training runs' IAM roles carry no AWS-managed policy outside the allowlist.",
    severity=Severity.HIGH,
    check=check_training_role_policies,
    config_model=TrainingRolePoliciesConfig,
    stack_level=True,
)

TERMINATE_RULE = Rule(
    name="fleet-terminates-on-delete",
    description="EC2 Fleets and spot fleet requests terminate their instances when they are destroyed.",
    severity=Severity.HIGH,
    check=check_terminates_on_delete,
)
