"""Every AWS resource a training run can leave behind, found by its tags and deleted in order.

Shared by the reaper's orphan detection, its sweeper and the destroy receipt. Only resources whose
tags prove they belong to a run are ever returned: `ephemeral=true`, a `run-id`, and a
`pulumi-stack` equal to `train-<run-id>`. S3 is deliberately absent: checkpoints are never deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from finops.untagged import ec2_arn
from mlp import aws, pricing
from mlp.tags import EPHEMERAL, EPHEMERAL_VALUE, PULUMI_STACK, RUN_ID, normalize_tags

TRAINING_STACK_PREFIX = "train-"
# Deletion order: what launches or references a resource goes before it.
KIND_ORDER: tuple[str, ...] = (
    "autoscaling:group",
    "ec2:instance",
    "ec2:launch-template",
    "ec2:volume",
    "ec2:network-interface",
    "events:rule",
    "sqs:queue",
    "iam:role",
)
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]


@dataclass(frozen=True)
class RunResource:
    kind: str
    resource_id: str
    arn: str
    region: str
    run_id: str
    tags: dict[str, str]
    hourly_cost_usd: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.resource_id,
            "arn": self.arn,
            "region": self.region,
            "run_id": self.run_id,
            "hourly_cost_usd": round(self.hourly_cost_usd, 4),
        }


def proven_run_id(tags: Any) -> str | None:
    """The run a resource belongs to, only when its tags prove it; otherwise None."""
    present = normalize_tags(tags)
    run_id = present.get(RUN_ID, "").strip()
    if not run_id or present.get(EPHEMERAL) != EPHEMERAL_VALUE:
        return None
    if present.get(PULUMI_STACK) != f"{TRAINING_STACK_PREFIX}{run_id}":
        return None
    return run_id


def _ec2_filters(run_id: str | None) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{EPHEMERAL}", "Values": [EPHEMERAL_VALUE]}]
    if run_id:
        filters.append({"Name": f"tag:{RUN_ID}", "Values": [run_id]})
    else:
        filters.append({"Name": "tag-key", "Values": [RUN_ID]})
    return filters


def _account_id(region: str) -> str:
    return aws.client("sts", region).get_caller_identity()["Account"]


# kind, describe call, list key, id key, tags key, ARN resource type
_EC2_LISTINGS = (
    (
        "ec2:launch-template",
        "describe_launch_templates",
        "LaunchTemplates",
        "LaunchTemplateId",
        "Tags",
        "launch-template",
    ),
    ("ec2:volume", "describe_volumes", "Volumes", "VolumeId", "Tags", "volume"),
    (
        "ec2:network-interface",
        "describe_network_interfaces",
        "NetworkInterfaces",
        "NetworkInterfaceId",
        "TagSet",
        "network-interface",
    ),
)


def _hourly(kind: str, item: dict[str, Any]) -> float:
    """What a leftover costs while it stays: instances at list price, volumes at gp3 storage."""
    if kind == "ec2:instance":
        price = pricing.EC2.get(item["InstanceType"])
        return price.on_demand_hourly if price else 0.0
    if kind == "ec2:volume":
        return item["Size"] * pricing.GP3_GB_MONTHLY / pricing.HOURS_PER_MONTH
    return 0.0


def _ec2_resources(region: str, run_id: str | None) -> Iterator[RunResource]:
    ec2 = aws.client("ec2", region)
    account = _account_id(region)
    filters = _ec2_filters(run_id)
    live = [*filters, {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    for page in ec2.get_paginator("describe_instances").paginate(Filters=live):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                arn = ec2_arn(region, account, "instance", instance["InstanceId"])
                hourly = _hourly("ec2:instance", instance)
                yield _resource(
                    "ec2:instance", instance["InstanceId"], arn, region, instance.get("Tags"), hourly
                )
    for kind, call, list_key, id_key, tags_key, arn_type in _EC2_LISTINGS:
        for page in ec2.get_paginator(call).paginate(Filters=filters):
            for item in page[list_key]:
                arn = ec2_arn(region, account, arn_type, item[id_key])
                yield _resource(kind, item[id_key], arn, region, item.get(tags_key), _hourly(kind, item))


def run_instance_ids(regions: Sequence[str], run_id: str) -> tuple[str, ...]:
    """The live instances proven to belong to `run_id`: one filtered describe per region, no full inventory."""
    found = []
    for region in regions:
        live = [*_ec2_filters(run_id), {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
        for page in aws.client("ec2", region).get_paginator("describe_instances").paginate(Filters=live):
            for reservation in page["Reservations"]:
                found.extend(
                    i["InstanceId"]
                    for i in reservation["Instances"]
                    if proven_run_id(i.get("Tags")) == run_id
                )
    return tuple(found)


def _autoscaling_groups(region: str, run_id: str | None) -> Iterator[RunResource]:
    autoscaling = aws.client("autoscaling", region)
    filters = [{"Name": f"tag:{EPHEMERAL}", "Values": [EPHEMERAL_VALUE]}]
    if run_id:
        filters.append({"Name": f"tag:{RUN_ID}", "Values": [run_id]})
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate(Filters=filters):
        for group in page["AutoScalingGroups"]:
            yield _resource(
                "autoscaling:group",
                group["AutoScalingGroupName"],
                group["AutoScalingGroupARN"],
                region,
                group.get("Tags"),
            )


def _queues(region: str) -> Iterator[RunResource]:
    sqs = aws.client("sqs", region)
    for page in sqs.get_paginator("list_queues").paginate():
        for url in page.get("QueueUrls", []):
            tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            yield _resource("sqs:queue", url, arn, region, tags)


def _event_rules(region: str) -> Iterator[RunResource]:
    events = aws.client("events", region)
    token: str | None = None
    while True:
        page = events.list_rules(**({"NextToken": token} if token else {}))
        for rule in page.get("Rules", []):
            tags = events.list_tags_for_resource(ResourceARN=rule["Arn"]).get("Tags", [])
            yield _resource("events:rule", rule["Name"], rule["Arn"], region, tags)
        token = page.get("NextToken")
        if not token:
            return


def _roles(region: str) -> Iterator[RunResource]:
    iam = aws.client("iam", region)
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            tags = iam.list_role_tags(RoleName=role["RoleName"]).get("Tags", [])
            yield _resource("iam:role", role["RoleName"], role["Arn"], "global", tags)


def _resource(
    kind: str, resource_id: str, arn: str, region: str, tags: Any, hourly: float = 0.0
) -> RunResource:
    normalized = normalize_tags(tags)
    return RunResource(kind, resource_id, arn, region, normalized.get(RUN_ID, ""), normalized, hourly)


def find_run_resources(regions: Sequence[str], run_id: str | None = None) -> list[RunResource]:
    """Resources proven to belong to `run_id` (or to any run when None), in deletion order."""
    found: list[RunResource] = []
    for region in regions:
        found.extend(_autoscaling_groups(region, run_id))
        found.extend(_ec2_resources(region, run_id))
        found.extend(_event_rules(region))
        found.extend(_queues(region))
    # IAM is global: list it once, whatever the regions.
    found.extend(_roles(regions[0]))
    proven = [
        item for item in found if proven_run_id(item.tags) and (run_id is None or item.run_id == run_id)
    ]
    return sorted(proven, key=lambda item: KIND_ORDER.index(item.kind))


def _ignore_missing(action: Callable[[], Any]) -> None:
    try:
        action()
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if "NotFound" not in code and "NoSuchEntity" not in code and code != "ValidationError":
            raise


def delete_run_resource(resource: RunResource) -> None:
    """Delete one proven run resource; already-gone resources are fine (re-runs are idempotent)."""
    if proven_run_id(resource.tags) != resource.run_id:
        raise ValueError(f"refusing to delete {resource.arn}: its tags do not prove it belongs to a run")
    region = resource.region
    if resource.kind == "autoscaling:group":
        _ignore_missing(
            lambda: aws.client("autoscaling", region).delete_auto_scaling_group(
                AutoScalingGroupName=resource.resource_id, ForceDelete=True
            )
        )
    elif resource.kind == "ec2:instance":
        _ignore_missing(
            lambda: aws.client("ec2", region).terminate_instances(InstanceIds=[resource.resource_id])
        )
    elif resource.kind == "ec2:launch-template":
        _ignore_missing(
            lambda: aws.client("ec2", region).delete_launch_template(LaunchTemplateId=resource.resource_id)
        )
    elif resource.kind == "ec2:volume":
        _ignore_missing(lambda: aws.client("ec2", region).delete_volume(VolumeId=resource.resource_id))
    elif resource.kind == "ec2:network-interface":
        _ignore_missing(
            lambda: aws.client("ec2", region).delete_network_interface(
                NetworkInterfaceId=resource.resource_id
            )
        )
    elif resource.kind == "events:rule":
        events = aws.client("events", region)
        targets = [
            target["Id"]
            for target in events.list_targets_by_rule(Rule=resource.resource_id).get("Targets", [])
        ]
        if targets:
            events.remove_targets(Rule=resource.resource_id, Ids=targets)
        _ignore_missing(lambda: events.delete_rule(Name=resource.resource_id))
    elif resource.kind == "sqs:queue":
        _ignore_missing(lambda: aws.client("sqs", region).delete_queue(QueueUrl=resource.resource_id))
    elif resource.kind == "iam:role":
        _delete_role(resource.resource_id)
    else:
        raise ValueError(f"no deleter for {resource.kind}")


def _delete_role(role_name: str) -> None:
    iam = aws.client("iam")
    for page in iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=role_name):
        for profile in page["InstanceProfiles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=role_name
            )
            _ignore_missing(
                lambda name=profile["InstanceProfileName"]: iam.delete_instance_profile(
                    InstanceProfileName=name
                )
            )
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
        for policy in page["PolicyNames"]:
            iam.delete_role_policy(RoleName=role_name, PolicyName=policy)
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name):
        for policy in page["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=role_name, PolicyArn=policy["PolicyArn"])
    _ignore_missing(lambda: iam.delete_role(RoleName=role_name))
