"""Auto Scaling groups: what a training run's fleet is, and what launches its instances."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.exceptions

from finops.inventory.core import (
    Dependent,
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    error_code,
    filtered,
    if_exists,
    make_resource,
    pages,
    register,
)
from finops.inventory.ec2 import COMPUTE_SERVICE, instance_dependents

# What AWS answers when a group still has instances or activities and is deleted without ForceDelete.
GROUP_BUSY_CODES = ("ResourceInUse", "ScalingActivityInProgress")


def _group(scope: Scope, name: str) -> dict[str, Any] | None:
    autoscaling = scope.client("autoscaling")
    groups = [
        group
        for page in pages(autoscaling, "describe_auto_scaling_groups", AutoScalingGroupNames=[name])
        for group in page.get("AutoScalingGroups", [])
    ]
    return groups[0] if groups else None


def _groups(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    autoscaling = scope.client("autoscaling")
    # Auto Scaling's Filters take the same tag:<key> and tag-key names as EC2's.
    filters = tag_filter.ec2_filters() if tag_filter else []
    found = (
        make_resource(
            "autoscaling:autoScalingGroup",
            group["AutoScalingGroupName"],
            group["AutoScalingGroupARN"],
            scope,
            group.get("Tags"),
            # Its members are priced as the instances they are.
            hourly_cost_usd=0.0,
            attributes={key: value for key, value in group.items() if key != "Tags"},
        )
        for page in pages(autoscaling, "describe_auto_scaling_groups", Filters=filters)
        for group in page.get("AutoScalingGroups", [])
    )
    yield from filtered(found, tag_filter)


def _dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    group = _group(scope, resource.resource_id)
    if group is None:
        return []
    members = [member["InstanceId"] for member in group.get("Instances", [])]
    return instance_dependents(scope, members, "member of the group")


def _busy(name: str, members: list[str]) -> RuntimeError:
    listed = f" ({', '.join(members)})" if members else ""
    return RuntimeError(
        f"group {name} still has instances{listed}; re-run the sweep once they have terminated"
    )


def _delete(scope: Scope, resource: Resource) -> None:
    """Scale to zero and delete without ForceDelete: a group with members left is an error, never forced.

    Scaling to zero is the group terminating its own members, which the caller has proven to be the
    run's through `dependents`; whatever is still there when the delete is asked for makes it refuse.
    """
    autoscaling = scope.client("autoscaling")
    name = resource.resource_id
    scaled = if_exists(
        lambda: autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=0, DesiredCapacity=0
        )
    )
    if scaled is None:
        return
    group = _group(scope, name)
    if group is None:
        return
    members = [member["InstanceId"] for member in group.get("Instances", [])]
    if members:
        raise _busy(name, members)
    try:
        if_exists(lambda: autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name))
    except botocore.exceptions.ClientError as error:
        if error_code(error) in GROUP_BUSY_CODES:
            raise _busy(name, []) from error
        raise


register(
    ResourceType(
        kind="autoscaling:autoScalingGroup",
        service="autoscaling",
        enumerate=_groups,
        cost_service=COMPUTE_SERVICE,
        untagged_scan=True,
        run_resource=True,
        dependents=_dependents,
        delete=_delete,
        delete_order=10,
    )
)
