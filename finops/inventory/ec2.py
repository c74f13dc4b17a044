"""EC2: instances, volumes, snapshots, launch templates and network interfaces.

Tags filter on the server through `Filters`; the client-side pass after it only guards endpoints that
ignore a filter. Dependents and deletes re-read AWS instead of trusting the enumerated attributes,
which may be minutes old by the time a sweeper acts on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
    same_run,
)
from mlp import pricing
from mlp.tags import normalize_tags

COMPUTE_SERVICE = "Amazon Elastic Compute Cloud - Compute"
EC2_OTHER_SERVICE = "EC2 - Other"

# Every state in which an instance still exists; "terminated" ones linger in describe calls for a while.
LIVE_INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
# AWS charges compute only from running until stopping: a stopped instance costs its volumes alone.
BILLED_INSTANCE_STATES = ("pending", "running")
LIVE_VOLUME_STATES = ["creating", "available", "in-use", "deleting", "error"]
# EC2 takes at most 200 values in one filter.
FILTER_VALUES_LIMIT = 200
# Without MaxResults moto answers at most 15 templates and no NextToken; AWS's own maximum is 200.
LAUNCH_TEMPLATE_PAGE_SIZE = 200
# The tag EC2 itself puts on every instance launched from a template.
LAUNCH_TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"

INSTANCE_PRICE_SOURCE = (
    f"{pricing.PRICE_SOURCE}; spot at on-demand less {pricing.DEFAULT_SPOT_DISCOUNT:.0%}; "
    "stopped instances bill no compute"
)
VOLUME_PRICE_SOURCE = (
    f"gp3 storage list price (${pricing.GP3_GB_MONTHLY}/GB-month) over {pricing.HOURS_PER_MONTH:.0f} "
    "hours, whatever the volume type"
)
SNAPSHOT_PRICE_SOURCE = "not priced: snapshot storage is incremental and its billed size is not in the API"


def ec2_arn(region: str, account_id: str, kind: str, resource_id: str) -> str:
    """The ARN of an EC2 resource; snapshot ARNs carry no account id."""
    owner = "" if kind == "snapshot" else account_id
    return f"arn:aws:ec2:{region}:{owner}:{kind}/{resource_id}"


def instance_hourly_cost(instance: Mapping[str, Any]) -> float | None:
    """List price while it bills compute, spot at the documented discount; None when the type is unpriced."""
    if instance.get("State", {}).get("Name") not in BILLED_INSTANCE_STATES:
        return 0.0
    instance_type = instance["InstanceType"]
    if instance_type not in pricing.EC2:
        return None
    if instance.get("InstanceLifecycle") == "spot":
        return pricing.spot_hourly(instance_type)
    return pricing.on_demand_hourly(instance_type)


def volume_hourly_cost(volume: Mapping[str, Any]) -> float:
    return volume["Size"] * pricing.GP3_GB_MONTHLY / pricing.HOURS_PER_MONTH


def _facts(item: Mapping[str, Any], tags_key: str) -> dict[str, Any]:
    """The description as AWS gave it, less the tags (which the Resource carries normalized)."""
    return {key: value for key, value in item.items() if key != tags_key}


def _tag_filters(tag_filter: TagFilter | None) -> list[dict[str, Any]]:
    return tag_filter.ec2_filters() if tag_filter else []


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), FILTER_VALUES_LIMIT):
        yield list(ids[start : start + FILTER_VALUES_LIMIT])


def _described_instances(ec2: Any, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for page in pages(ec2, "describe_instances", Filters=filters):
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])


def instances_by_id(scope: Scope, instance_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Descriptions of these instances in any state; an id AWS does not know is simply absent.

    Filtering on instance-id instead of passing InstanceIds keeps one vanished id from failing the call.
    """
    ec2 = scope.client("ec2")
    return {
        instance["InstanceId"]: instance
        for chunk in _chunks(list(dict.fromkeys(instance_ids)))
        for instance in _described_instances(ec2, [{"Name": "instance-id", "Values": chunk}])
    }


def instance_dependents(scope: Scope, instance_ids: Sequence[str], relation: str) -> list[Dependent]:
    """The live ones of these instances with their own tags; one AWS no longer knows stays, unproven."""
    described = instances_by_id(scope, instance_ids)
    dependents = []
    for instance_id in dict.fromkeys(instance_ids):
        instance = described.get(instance_id)
        if instance is not None and instance["State"]["Name"] not in LIVE_INSTANCE_STATES:
            continue
        tags = normalize_tags(instance.get("Tags")) if instance else {}
        dependents.append(Dependent("ec2:instance", instance_id, tags, relation))
    return dependents


def _tags_by_id(
    ec2: Any, operation: str, filter_name: str, ids: Sequence[str], list_key: str, id_key: str, tags_key: str
) -> dict[str, dict[str, str]]:
    return {
        item[id_key]: normalize_tags(item.get(tags_key))
        for chunk in _chunks(list(dict.fromkeys(ids)))
        for page in pages(ec2, operation, Filters=[{"Name": filter_name, "Values": chunk}])
        for item in page.get(list_key, [])
    }


def _volume_tags(ec2: Any, volume_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    return _tags_by_id(ec2, "describe_volumes", "volume-id", volume_ids, "Volumes", "VolumeId", "Tags")


def _interface_tags(ec2: Any, interface_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    return _tags_by_id(
        ec2,
        "describe_network_interfaces",
        "network-interface-id",
        interface_ids,
        "NetworkInterfaces",
        "NetworkInterfaceId",
        "TagSet",
    )


def _volumes_deleted_with(instance: Mapping[str, Any]) -> dict[str, str]:
    """Volume id -> device name of the attached volumes that terminating the instance deletes."""
    return {
        mapping["Ebs"]["VolumeId"]: mapping["DeviceName"]
        for mapping in instance.get("BlockDeviceMappings", [])
        if mapping.get("Ebs", {}).get("DeleteOnTermination")
    }


def _interfaces_deleted_with(instance: Mapping[str, Any]) -> dict[str, str]:
    """Interface id -> attachment id of the attached interfaces that terminating the instance deletes."""
    return {
        interface["NetworkInterfaceId"]: interface["Attachment"]["AttachmentId"]
        for interface in instance.get("NetworkInterfaces", [])
        if interface.get("Attachment", {}).get("DeleteOnTermination")
    }


def _group_dependents(scope: Scope, group_names: Sequence[str], relation: str) -> list[Dependent]:
    """Auto Scaling groups with their own tags; a group gone meanwhile is no longer a dependent."""
    if not group_names:
        return []
    autoscaling = scope.client("autoscaling")
    names = list(dict.fromkeys(group_names))
    return [
        Dependent(
            "autoscaling:autoScalingGroup",
            group["AutoScalingGroupName"],
            normalize_tags(group.get("Tags")),
            relation,
        )
        for page in pages(autoscaling, "describe_auto_scaling_groups", AutoScalingGroupNames=names)
        for group in page.get("AutoScalingGroups", [])
    ]


def _live_instance(scope: Scope, instance_id: str) -> dict[str, Any] | None:
    instance = instances_by_id(scope, [instance_id]).get(instance_id)
    if instance is None or instance["State"]["Name"] not in LIVE_INSTANCE_STATES:
        return None
    return instance


# -- instances -----------------------------------------------------------------------------------


def _instances(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    ec2 = scope.client("ec2")
    filters = [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}, *_tag_filters(tag_filter)]
    found = (
        make_resource(
            "ec2:instance",
            instance["InstanceId"],
            ec2_arn(scope.region, scope.account_id, "instance", instance["InstanceId"]),
            scope,
            instance.get("Tags"),
            hourly_cost_usd=instance_hourly_cost(instance),
            attributes=_facts(instance, "Tags"),
        )
        for instance in _described_instances(ec2, filters)
    )
    yield from filtered(found, tag_filter)


def _instance_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    instance = _live_instance(scope, resource.resource_id)
    if instance is None:
        return []
    ec2 = scope.client("ec2")
    volumes = list(_volumes_deleted_with(instance))
    volume_tags = _volume_tags(ec2, volumes)
    interfaces = list(_interfaces_deleted_with(instance))
    interface_tags = _interface_tags(ec2, interfaces)
    dependents = [
        Dependent("ec2:volume", volume, volume_tags.get(volume, {}), "attached volume deleted on termination")
        for volume in volumes
    ]
    dependents += [
        Dependent(
            "ec2:network-interface",
            interface,
            interface_tags.get(interface, {}),
            "attached network interface deleted on termination",
        )
        for interface in interfaces
    ]
    # Auto Scaling's own answer is the membership; the aws:autoscaling:groupName tag is EC2's copy of it.
    memberships = scope.client("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[resource.resource_id]
    )
    groups = [member["AutoScalingGroupName"] for member in memberships.get("AutoScalingInstances", [])]
    dependents += _group_dependents(scope, groups, "its group: terminating a member changes the group")
    return dependents


def _delete_instance(scope: Scope, resource: Resource) -> None:
    """Terminate, after making sure termination takes no volume or interface of another run with it."""
    instance = _live_instance(scope, resource.resource_id)
    if instance is None:
        return
    ec2 = scope.client("ec2")
    instance_tags = normalize_tags(instance.get("Tags"))
    volumes = _volumes_deleted_with(instance)
    volume_tags = _volume_tags(ec2, list(volumes))
    foreign_devices = [
        device
        for volume, device in volumes.items()
        if not same_run(instance_tags, volume_tags.get(volume, {}))
    ]
    if foreign_devices:
        ec2.modify_instance_attribute(
            InstanceId=resource.resource_id,
            BlockDeviceMappings=[
                {"DeviceName": device, "Ebs": {"DeleteOnTermination": False}} for device in foreign_devices
            ],
        )
    interfaces = _interfaces_deleted_with(instance)
    interface_tags = _interface_tags(ec2, list(interfaces))
    for interface, attachment in interfaces.items():
        if not same_run(instance_tags, interface_tags.get(interface, {})):
            ec2.modify_network_interface_attribute(
                NetworkInterfaceId=interface,
                Attachment={"AttachmentId": attachment, "DeleteOnTermination": False},
            )
    if_exists(lambda: ec2.terminate_instances(InstanceIds=[resource.resource_id]))


# -- volumes -------------------------------------------------------------------------------------


def _volumes(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    ec2 = scope.client("ec2")
    filters = [{"Name": "status", "Values": LIVE_VOLUME_STATES}, *_tag_filters(tag_filter)]
    found = (
        make_resource(
            "ec2:volume",
            volume["VolumeId"],
            ec2_arn(scope.region, scope.account_id, "volume", volume["VolumeId"]),
            scope,
            volume.get("Tags"),
            hourly_cost_usd=volume_hourly_cost(volume),
            attributes=_facts(volume, "Tags"),
        )
        for page in pages(ec2, "describe_volumes", Filters=filters)
        for volume in page.get("Volumes", [])
    )
    yield from filtered(found, tag_filter)


def _attached_instances(
    scope: Scope, operation: str, filter_name: str, resource_id: str, list_key: str
) -> list[str]:
    """The instances a volume or interface is attached to now, as AWS answers it."""
    items = [
        item
        for page in pages(
            scope.client("ec2"), operation, Filters=[{"Name": filter_name, "Values": [resource_id]}]
        )
        for item in page.get(list_key, [])
    ]
    attachments = [attachment for item in items for attachment in item.get("Attachments", [])]
    attachments += [item["Attachment"] for item in items if item.get("Attachment")]
    return [attachment["InstanceId"] for attachment in attachments if attachment.get("InstanceId")]


def _volume_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    instances = _attached_instances(scope, "describe_volumes", "volume-id", resource.resource_id, "Volumes")
    return instance_dependents(scope, instances, "the instance it is attached to")


def _delete_volume(scope: Scope, resource: Resource) -> None:
    try:
        if_exists(lambda: scope.client("ec2").delete_volume(VolumeId=resource.resource_id))
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "VolumeInUse":
            raise RuntimeError(
                f"volume {resource.resource_id} is still attached; re-run the sweep once its instance has terminated"
            ) from error
        raise


# -- snapshots -----------------------------------------------------------------------------------


def _snapshots(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    ec2 = scope.client("ec2")
    found = (
        make_resource(
            "ec2:snapshot",
            snapshot["SnapshotId"],
            ec2_arn(scope.region, scope.account_id, "snapshot", snapshot["SnapshotId"]),
            scope,
            snapshot.get("Tags"),
            hourly_cost_usd=None,
            attributes=_facts(snapshot, "Tags"),
        )
        for page in pages(ec2, "describe_snapshots", OwnerIds=["self"], Filters=_tag_filters(tag_filter))
        for snapshot in page.get("Snapshots", [])
        # OwnerIds filters on the server; checking again keeps public AMI snapshots out where an
        # endpoint (moto) ignores the filter.
        if snapshot.get("OwnerId", scope.account_id) == scope.account_id
    )
    yield from filtered(found, tag_filter)


# -- launch templates ----------------------------------------------------------------------------


def _launch_templates(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    ec2 = scope.client("ec2")
    listing = pages(
        ec2,
        "describe_launch_templates",
        Filters=_tag_filters(tag_filter),
        PaginationConfig={"PageSize": LAUNCH_TEMPLATE_PAGE_SIZE},
    )
    found = (
        make_resource(
            "ec2:launch-template",
            template["LaunchTemplateId"],
            ec2_arn(scope.region, scope.account_id, "launch-template", template["LaunchTemplateId"]),
            scope,
            template.get("Tags"),
            attributes=_facts(template, "Tags"),
        )
        for page in listing
        for template in page.get("LaunchTemplates", [])
    )
    yield from filtered(found, tag_filter)


def _uses_template(group: Mapping[str, Any], template_id: str, template_name: str | None) -> bool:
    """Whether a group launches from the template: its own, its mixed policy's, or an override's."""
    mixed = (group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
    specifications = [
        group.get("LaunchTemplate"),
        mixed.get("LaunchTemplateSpecification"),
        *(override.get("LaunchTemplateSpecification") for override in mixed.get("Overrides") or []),
    ]
    return any(
        spec.get("LaunchTemplateId") == template_id
        or (template_name is not None and spec.get("LaunchTemplateName") == template_name)
        for spec in specifications
        if spec
    )


def _launch_template_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    template_id = resource.resource_id
    template_name = resource.attributes.get("LaunchTemplateName")
    autoscaling = scope.client("autoscaling")
    dependents = [
        Dependent(
            "autoscaling:autoScalingGroup",
            group["AutoScalingGroupName"],
            normalize_tags(group.get("Tags")),
            "launches from the template",
        )
        for page in pages(autoscaling, "describe_auto_scaling_groups")
        for group in page.get("AutoScalingGroups", [])
        if _uses_template(group, template_id, template_name)
    ]
    launched = [
        {"Name": f"tag:{LAUNCH_TEMPLATE_ID_TAG}", "Values": [template_id]},
        {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES},
    ]
    dependents += [
        Dependent(
            "ec2:instance",
            instance["InstanceId"],
            normalize_tags(instance.get("Tags")),
            "launched from the template",
        )
        for instance in _described_instances(scope.client("ec2"), launched)
    ]
    return dependents


def _delete_launch_template(scope: Scope, resource: Resource) -> None:
    ec2 = scope.client("ec2")
    if_exists(lambda: ec2.delete_launch_template(LaunchTemplateId=resource.resource_id))


# -- network interfaces --------------------------------------------------------------------------


def _network_interfaces(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    ec2 = scope.client("ec2")
    found = (
        make_resource(
            "ec2:network-interface",
            interface["NetworkInterfaceId"],
            ec2_arn(scope.region, scope.account_id, "network-interface", interface["NetworkInterfaceId"]),
            scope,
            interface.get("TagSet"),
            attributes=_facts(interface, "TagSet"),
        )
        for page in pages(ec2, "describe_network_interfaces", Filters=_tag_filters(tag_filter))
        for interface in page.get("NetworkInterfaces", [])
    )
    yield from filtered(found, tag_filter)


def _network_interface_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    instances = _attached_instances(
        scope,
        "describe_network_interfaces",
        "network-interface-id",
        resource.resource_id,
        "NetworkInterfaces",
    )
    return instance_dependents(scope, instances, "the instance it is attached to")


def _delete_network_interface(scope: Scope, resource: Resource) -> None:
    ec2 = scope.client("ec2")
    try:
        if_exists(lambda: ec2.delete_network_interface(NetworkInterfaceId=resource.resource_id))
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "InvalidNetworkInterface.InUse":
            raise RuntimeError(
                f"network interface {resource.resource_id} is still attached; "
                "re-run the sweep once its instance has terminated"
            ) from error
        raise


register(
    ResourceType(
        kind="ec2:instance",
        service="ec2",
        enumerate=_instances,
        cost_service=COMPUTE_SERVICE,
        price_source=INSTANCE_PRICE_SOURCE,
        untagged_scan=True,
        run_resource=True,
        dependents=_instance_dependents,
        delete=_delete_instance,
        delete_order=20,
    )
)
register(
    ResourceType(
        kind="ec2:volume",
        service="ec2",
        enumerate=_volumes,
        cost_service=EC2_OTHER_SERVICE,
        price_source=VOLUME_PRICE_SOURCE,
        untagged_scan=True,
        run_resource=True,
        dependents=_volume_dependents,
        delete=_delete_volume,
        delete_order=40,
    )
)
register(
    ResourceType(
        kind="ec2:snapshot",
        service="ec2",
        enumerate=_snapshots,
        cost_service=EC2_OTHER_SERVICE,
        price_source=SNAPSHOT_PRICE_SOURCE,
        untagged_scan=True,
    )
)
register(
    ResourceType(
        kind="ec2:launch-template",
        service="ec2",
        enumerate=_launch_templates,
        untagged_scan=False,
        run_resource=True,
        dependents=_launch_template_dependents,
        delete=_delete_launch_template,
        delete_order=30,
    )
)
register(
    ResourceType(
        kind="ec2:network-interface",
        service="ec2",
        enumerate=_network_interfaces,
        # Interfaces are free; the public IPv4 addresses on them bill under VPC.
        cost_service="Amazon Virtual Private Cloud",
        untagged_scan=False,
        run_resource=True,
        dependents=_network_interface_dependents,
        delete=_delete_network_interface,
        delete_order=50,
    )
)
