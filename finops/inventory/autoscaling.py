"""Auto Scaling groups: what a training run's fleet is, and what launches its instances."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from finops.inventory.core import (
    Dependent,
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    filtered,
    if_exists,
    make_resource,
    pages,
    register,
    same_run,
)
from finops.inventory.ec2 import COMPUTE_SERVICE, instance_dependents, instances_by_id
from mlp.tags import normalize_tags


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


def _delete(scope: Scope, resource: Resource) -> None:
    """Scale to zero, then delete; ForceDelete only over members that are, at that moment, the group's run's.

    AWS takes minutes to terminate members, and deleting a group with members needs ForceDelete, which
    terminates whatever is in the group: so the members are read again right before it and every one
    must carry the group's run id (the caller proved them through `dependents`; this closes the window
    in which someone could have attached another instance). Any other member refuses the delete.
    """
    autoscaling = scope.client("autoscaling")
    name = resource.resource_id
    scaled = if_exists(
        lambda: autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=0, DesiredCapacity=0
        )
    )
    group = _group(scope, name) if scaled is not None else None
    if group is None:
        return
    members = [member["InstanceId"] for member in group.get("Instances", [])]
    described = instances_by_id(scope, members)
    foreign = [
        member
        for member in members
        if not same_run(resource.tags, normalize_tags(described.get(member, {}).get("Tags")))
    ]
    if foreign:
        raise RuntimeError(f"group {name} has member(s) {', '.join(foreign)} not of its run; not deleting it")
    if_exists(
        lambda: autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=bool(members))
    )


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
