"""The inventory registry against moto in-process: every kind enumerated, filtered, paginated; every
run kind's dependents and delete; the registry's own invariants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import botocore.paginate
import pytest
from moto import mock_aws

from finops import inventory
from finops.inventory import REGISTRY, Resource, Scope, TagFilter, scan
from finops.inventory.core import Dependent
from mlp import aws as mlp_aws
from mlp import pricing
from tests.inventory_fixtures import (
    ACCOUNT,
    CREATORS,
    REGION,
    create_auto_scaling_group,
    create_classic_load_balancer,
    create_instance,
    create_instance_profile,
    create_launch_template,
    create_network_interface,
    create_role,
    create_rule,
    create_volume,
    ec2,
    expected_arn,
    subnets,
    tag_list,
)

RUN_TAGS = {
    "team": "nlp",
    "run-id": "nlp-r1",
    "ephemeral": "true",
    "pulumi-stack": "train-nlp-r1",
}
FOREIGN_TAGS = {**RUN_TAGS, "run-id": "nlp-r2", "pulumi-stack": "train-nlp-r2"}
ALL_KINDS = sorted(REGISTRY)
RUN_KINDS = sorted(kind for kind, declaration in REGISTRY.items() if declaration.run_resource)
SCOPE = Scope(REGION, ACCOUNT)


@pytest.fixture(autouse=True)
def moto_aws(fake_aws_environment: None) -> Iterator[None]:
    with mock_aws():
        yield


def found(
    kind: str, tag_filter: TagFilter | None = None, regions: list[str] | None = None
) -> dict[str, Resource]:
    return {
        resource.resource_id: resource for resource in scan([kind], regions or [REGION], ACCOUNT, tag_filter)
    }


def only(kind: str, resource_id: str) -> Resource:
    return found(kind)[resource_id]


def by_id(dependents: list[Dependent]) -> dict[str, Dependent]:
    return {dependent.resource_id: dependent for dependent in dependents}


def dependents_of(kind: str, resource_id: str) -> dict[str, Dependent]:
    declaration = REGISTRY[kind]
    assert declaration.dependents is not None
    return by_id(declaration.dependents(SCOPE, only(kind, resource_id)))


def delete(kind: str, resource: Resource) -> None:
    declaration = REGISTRY[kind]
    assert declaration.delete is not None
    declaration.delete(SCOPE, resource)


def describe_instance(instance_id: str) -> dict[str, Any]:
    return ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def asg_members(name: str) -> list[str]:
    groups = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[name]
    )["AutoScalingGroups"]
    return [member["InstanceId"] for member in groups[0]["Instances"]]


# -- every kind ----------------------------------------------------------------------------------


def test_every_kind_has_a_creator() -> None:
    assert set(CREATORS) == set(REGISTRY)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_tagged_resource_is_found_with_its_identity_and_tags(kind: str) -> None:
    resource_id = CREATORS[kind](RUN_TAGS)

    resource = found(kind)[resource_id]

    declaration = REGISTRY[kind]
    assert resource.kind == kind
    assert resource.arn == expected_arn(kind, resource_id)
    assert resource.region == ("global" if declaration.is_global else REGION)
    assert resource.account_id == ACCOUNT
    assert {key: resource.tags.get(key) for key in RUN_TAGS} == RUN_TAGS


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_tag_filters_include_what_matches_and_exclude_the_rest(kind: str) -> None:
    resource_id = CREATORS[kind](RUN_TAGS)

    matching = [
        TagFilter({"run-id": "nlp-r1"}),
        TagFilter({"run-id": "nlp-r1", "ephemeral": "true"}, present=("team",)),
        TagFilter(present=("pulumi-stack",)),
    ]
    excluding = [
        TagFilter({"run-id": "nlp-r2"}),
        TagFilter({"run-id": "nlp-r1"}, present=("owner",)),
        TagFilter(present=("owner",)),
    ]
    for tag_filter in matching:
        assert resource_id in found(kind, tag_filter), tag_filter
    for tag_filter in excluding:
        assert resource_id not in found(kind, tag_filter), tag_filter


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_never_tagged_resource_is_still_enumerated(kind: str) -> None:
    resource_id = CREATORS[kind]({})

    resource = found(kind)[resource_id]

    assert not {key: value for key, value in resource.tags.items() if not key.startswith("aws:")}
    assert resource_id not in found(kind, TagFilter(present=("team",)))


@pytest.fixture
def paginated(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every paginator asks for the smallest page its API allows unless its caller chose a size; counts
    pages per operation."""
    pages: Counter[str] = Counter()
    original = botocore.paginate.Paginator.paginate

    def paginate(self: botocore.paginate.Paginator, **kwargs: Any) -> Any:
        if self._limit_key:
            smallest = self._model.input_shape.members[self._limit_key].metadata.get("min", 1)
            kwargs["PaginationConfig"] = {"PageSize": smallest, **kwargs.get("PaginationConfig", {})}
        name = self._model.name
        for page in original(self, **kwargs):
            pages[name] += 1
            yield page

    monkeypatch.setattr(botocore.paginate.Paginator, "paginate", paginate)
    return pages


# Where moto answers one page whatever the page size, the smallest page AWS allows holds all three, or
# the registry sets its own page size on purpose.
ONE_PAGE_IN_MOTO = {
    "ec2:snapshot": "DescribeSnapshots",
    "ec2:launch-template": "DescribeLaunchTemplates",
    "ec2:network-interface": "DescribeNetworkInterfaces",
    "ec2:volume": "DescribeVolumes",
    "iam:instance-profile": "ListInstanceProfiles",
    "sqs:queue": "ListQueues",
    "elasticache:replicationgroup": "DescribeReplicationGroups",
    "elasticache:cluster": "DescribeCacheClusters",
    "s3:bucket": "ListBuckets",
}
LIST_OPERATION = {
    "ec2:instance": "DescribeInstances",
    "autoscaling:autoScalingGroup": "DescribeAutoScalingGroups",
    "iam:role": "ListRoles",
    "events:rule": "ListRules",
    "eks:cluster": "ListClusters",
    "eks:nodegroup": "ListClusters",
    "elasticloadbalancing:loadbalancer": "DescribeLoadBalancers",
    **ONE_PAGE_IN_MOTO,
}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_enumeration_goes_through_every_page(kind: str, paginated: Counter[str]) -> None:
    created = {CREATORS[kind](RUN_TAGS) for _ in range(3)}

    assert created <= set(found(kind))

    operation = LIST_OPERATION[kind]
    assert paginated[operation] >= 1
    if kind not in ONE_PAGE_IN_MOTO:
        assert paginated[operation] >= 3


# -- deletes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_delete_removes_the_resource_and_a_second_delete_is_a_no_op(kind: str) -> None:
    resource_id = CREATORS[kind](RUN_TAGS)
    resource = only(kind, resource_id)

    delete(kind, resource)

    assert resource_id not in found(kind)
    delete(kind, resource)
    assert resource_id not in found(kind)


def test_asg_delete_scales_to_zero_and_deletes_once_the_members_are_gone() -> None:
    name = create_auto_scaling_group(RUN_TAGS, desired=2)
    members = asg_members(name)
    assert len(members) == 2

    delete("autoscaling:autoScalingGroup", only("autoscaling:autoScalingGroup", name))

    assert name not in found("autoscaling:autoScalingGroup")
    assert not set(members) & set(found("ec2:instance"))


def _scale_in_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS terminates a scaled-in group's members asynchronously (moto at once): keep them there."""
    real_client = mlp_aws.client

    def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
        made = real_client(service, region, **kwargs)
        if service == "autoscaling":
            made.update_auto_scaling_group = lambda **_: {}
        return made

    monkeypatch.setattr(mlp_aws, "client", client)


def test_asg_delete_forces_only_over_members_of_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    name = create_auto_scaling_group(RUN_TAGS, desired=1)
    group = only("autoscaling:autoScalingGroup", name)
    _scale_in_pending(monkeypatch)

    delete("autoscaling:autoScalingGroup", group)

    monkeypatch.undo()
    assert name not in found("autoscaling:autoScalingGroup")


def test_asg_delete_refuses_a_member_attached_from_outside_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    name = create_auto_scaling_group(RUN_TAGS, desired=1)
    group = only("autoscaling:autoScalingGroup", name)
    outsider = create_instance(FOREIGN_TAGS)
    boto3.client("autoscaling", region_name=REGION).attach_instances(
        AutoScalingGroupName=name, InstanceIds=[outsider]
    )
    _scale_in_pending(monkeypatch)

    with pytest.raises(RuntimeError, match=f"group {name} has member.*{outsider} not of its run"):
        delete("autoscaling:autoScalingGroup", group)

    monkeypatch.undo()
    assert name in found("autoscaling:autoScalingGroup")
    assert outsider in found("ec2:instance")


def test_instance_delete_takes_no_foreign_volume_with_it() -> None:
    instance_id = create_instance(RUN_TAGS)
    root = describe_instance(instance_id)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    foreign = create_volume(FOREIGN_TAGS)
    untagged = create_volume({})
    client = ec2()
    for volume, device in ((foreign, "/dev/sdf"), (untagged, "/dev/sdg")):
        client.attach_volume(VolumeId=volume, InstanceId=instance_id, Device=device)
        client.modify_instance_attribute(
            InstanceId=instance_id,
            BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": True}}],
        )

    delete("ec2:instance", only("ec2:instance", instance_id))

    assert instance_id not in found("ec2:instance")
    volumes = found("ec2:volume")
    assert foreign in volumes and untagged in volumes
    assert root not in volumes


def test_instance_delete_clears_delete_on_termination_of_a_foreign_interface(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto neither records an interface's DeleteOnTermination change nor acts on it: the call is checked."""
    instance_id = create_instance(
        RUN_TAGS,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnets()[0], "DeleteOnTermination": True}],
    )
    interface = describe_instance(instance_id)["NetworkInterfaces"][0]
    ec2().create_tags(Resources=[interface["NetworkInterfaceId"]], Tags=tag_list(FOREIGN_TAGS))
    calls: list[dict[str, Any]] = []
    real_client = mlp_aws.client

    def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
        made = real_client(service, region, **kwargs)
        made.meta.events.register(
            "provide-client-params.ec2.ModifyNetworkInterfaceAttribute",
            lambda params, **_: calls.append(params),
        )
        return made

    monkeypatch.setattr(mlp_aws, "client", client)

    delete("ec2:instance", only("ec2:instance", instance_id))

    assert calls == [
        {
            "NetworkInterfaceId": interface["NetworkInterfaceId"],
            "Attachment": {
                "AttachmentId": interface["Attachment"]["AttachmentId"],
                "DeleteOnTermination": False,
            },
        }
    ]


def test_instance_delete_leaves_its_own_run_volumes_to_termination(monkeypatch: pytest.MonkeyPatch) -> None:
    instance_id = create_instance(RUN_TAGS)
    root = describe_instance(instance_id)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    calls: list[str] = []
    real_client = mlp_aws.client

    def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
        made = real_client(service, region, **kwargs)
        made.meta.events.register(
            "before-call.ec2.ModifyInstanceAttribute", lambda **_: calls.append("modify")
        )
        return made

    monkeypatch.setattr(mlp_aws, "client", client)

    delete("ec2:instance", only("ec2:instance", instance_id))

    assert calls == []
    assert root not in found("ec2:volume")


def test_role_delete_strips_its_policies_first() -> None:
    name = create_role(RUN_TAGS)
    iam = boto3.client("iam")
    iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=_allow_nothing())
    policy = iam.create_policy(PolicyName="managed", PolicyDocument=_allow_nothing())["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=name, PolicyArn=policy)

    delete("iam:role", only("iam:role", name))

    assert name not in found("iam:role")
    assert iam.get_policy(PolicyArn=policy)["Policy"]["AttachmentCount"] == 0


def test_role_delete_refuses_while_a_profile_holds_it_and_touches_nothing() -> None:
    name = create_role(RUN_TAGS)
    iam = boto3.client("iam")
    iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=_allow_nothing())
    profile = create_instance_profile(RUN_TAGS, role=name)

    with pytest.raises(RuntimeError, match=f"role {name} is still in instance profile {profile}"):
        delete("iam:role", only("iam:role", name))

    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["inline"]
    assert [
        role["RoleName"]
        for role in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    ] == [name]


def test_profile_delete_frees_its_run_role_and_keeps_the_role() -> None:
    role = create_role(RUN_TAGS)
    profile = create_instance_profile(RUN_TAGS, role=role)

    delete("iam:instance-profile", only("iam:instance-profile", profile))

    assert profile not in found("iam:instance-profile")
    assert role in found("iam:role")
    delete("iam:role", only("iam:role", role))
    assert role not in found("iam:role")


@pytest.mark.parametrize("role_tags", [FOREIGN_TAGS, {}], ids=["other-run", "untagged"])
def test_profile_delete_refuses_a_role_of_another_run(role_tags: dict[str, str]) -> None:
    role = create_role(role_tags)
    profile = create_instance_profile(RUN_TAGS, role=role)

    with pytest.raises(RuntimeError, match=f"instance profile {profile} holds role {role}"):
        delete("iam:instance-profile", only("iam:instance-profile", profile))

    assert profile in found("iam:instance-profile")
    assert role in found("iam:role")


def test_rule_delete_removes_its_targets_first() -> None:
    name = create_rule(RUN_TAGS)
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="interruptions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("events", region_name=REGION).put_targets(
        Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )

    delete("events:rule", only("events:rule", name))

    assert name not in found("events:rule")
    assert queue in found("sqs:queue")


def test_a_volume_delete_refuses_while_attached() -> None:
    instance_id = create_instance(RUN_TAGS)
    volume = create_volume(RUN_TAGS)
    ec2().attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf")

    with pytest.raises(RuntimeError, match=f"volume {volume} is still attached"):
        delete("ec2:volume", only("ec2:volume", volume))

    assert volume in found("ec2:volume")


def test_an_interface_delete_refuses_while_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto deletes an attached interface; AWS answers InvalidNetworkInterface.InUse, simulated here."""
    interface = create_network_interface(RUN_TAGS)
    resource = only("ec2:network-interface", interface)
    real_client = mlp_aws.client

    def in_use(**_: Any) -> None:
        error = {"Error": {"Code": "InvalidNetworkInterface.InUse", "Message": "in use"}}
        raise botocore.exceptions.ClientError(error, "DeleteNetworkInterface")

    def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
        made = real_client(service, region, **kwargs)
        made.delete_network_interface = in_use
        return made

    monkeypatch.setattr(mlp_aws, "client", client)

    with pytest.raises(RuntimeError, match=f"network interface {interface} is still attached"):
        delete("ec2:network-interface", resource)


def _allow_nothing() -> str:
    return '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}'


# -- dependents ----------------------------------------------------------------------------------


def test_asg_dependents_are_every_member_with_its_own_tags() -> None:
    name = create_auto_scaling_group(RUN_TAGS, desired=1)
    [member] = asg_members(name)
    foreign = create_instance(FOREIGN_TAGS)
    boto3.client("autoscaling", region_name=REGION).attach_instances(
        InstanceIds=[foreign], AutoScalingGroupName=name
    )

    dependents = dependents_of("autoscaling:autoScalingGroup", name)

    assert set(dependents) == {member, foreign}
    assert all(dependent.kind == "ec2:instance" for dependent in dependents.values())
    assert dependents[member].tags["run-id"] == "nlp-r1"
    assert dependents[foreign].tags["run-id"] == "nlp-r2"


def test_instance_dependents_are_what_termination_deletes_and_its_group() -> None:
    name = create_auto_scaling_group(RUN_TAGS, desired=1)
    [instance_id] = asg_members(name)
    root = describe_instance(instance_id)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    foreign = create_volume(FOREIGN_TAGS)
    kept = create_volume(FOREIGN_TAGS)
    client = ec2()
    client.attach_volume(VolumeId=foreign, InstanceId=instance_id, Device="/dev/sdf")
    client.attach_volume(VolumeId=kept, InstanceId=instance_id, Device="/dev/sdg")
    client.modify_instance_attribute(
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}],
    )

    dependents = dependents_of("ec2:instance", instance_id)

    assert set(dependents) == {root, foreign, name}
    assert dependents[root].kind == "ec2:volume"
    assert dependents[foreign].tags["run-id"] == "nlp-r2"
    assert dependents[name].kind == "autoscaling:autoScalingGroup"
    assert dependents[name].tags["run-id"] == "nlp-r1"


def test_instance_dependents_include_interfaces_deleted_on_termination() -> None:
    instance_id = create_instance(
        RUN_TAGS,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnets()[0], "DeleteOnTermination": True}],
    )
    interface = describe_instance(instance_id)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2().create_tags(Resources=[interface], Tags=tag_list(RUN_TAGS))

    dependents = dependents_of("ec2:instance", instance_id)

    assert dependents[interface].kind == "ec2:network-interface"
    assert dependents[interface].tags == RUN_TAGS


def test_launch_template_dependents_are_its_groups_and_instances() -> None:
    template = create_launch_template(RUN_TAGS)
    ours = create_auto_scaling_group(RUN_TAGS, desired=1, template_id=template)
    theirs = create_auto_scaling_group(FOREIGN_TAGS, template_id=template, mixed=False)
    create_auto_scaling_group(FOREIGN_TAGS)
    [member] = asg_members(ours)
    launched = create_instance(FOREIGN_TAGS, LaunchTemplate={"LaunchTemplateId": template})
    create_instance(RUN_TAGS)

    dependents = dependents_of("ec2:launch-template", template)

    assert set(dependents) == {ours, theirs, member, launched}
    assert dependents[theirs].kind == "autoscaling:autoScalingGroup"
    assert dependents[theirs].tags["run-id"] == "nlp-r2"
    assert dependents[launched].kind == "ec2:instance"
    assert dependents[launched].tags["run-id"] == "nlp-r2"


def test_launch_template_dependents_match_a_group_by_template_name() -> None:
    template = create_launch_template(RUN_TAGS)
    name = ec2().describe_launch_templates(LaunchTemplateIds=[template])["LaunchTemplates"][0][
        "LaunchTemplateName"
    ]
    group = create_auto_scaling_group(FOREIGN_TAGS, template_id=template, mixed=False)
    boto3.client("autoscaling", region_name=REGION).update_auto_scaling_group(
        AutoScalingGroupName=group, LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"}
    )

    assert set(dependents_of("ec2:launch-template", template)) == {group}


@pytest.mark.parametrize("kind", ["ec2:volume", "ec2:network-interface"])
def test_an_attached_volume_or_interface_depends_on_its_instance(kind: str) -> None:
    instance_id = create_instance(FOREIGN_TAGS)
    resource_id = CREATORS[kind](RUN_TAGS)
    if kind == "ec2:volume":
        ec2().attach_volume(VolumeId=resource_id, InstanceId=instance_id, Device="/dev/sdf")
    else:
        ec2().attach_network_interface(NetworkInterfaceId=resource_id, InstanceId=instance_id, DeviceIndex=1)

    dependents = dependents_of(kind, resource_id)

    assert list(dependents) == [instance_id]
    assert dependents[instance_id].kind == "ec2:instance"
    assert dependents[instance_id].tags == FOREIGN_TAGS


@pytest.mark.parametrize("kind", ["ec2:volume", "ec2:network-interface", "events:rule", "sqs:queue"])
def test_what_takes_nothing_with_it_has_no_dependents(kind: str) -> None:
    resource_id = CREATORS[kind](RUN_TAGS)

    assert dependents_of(kind, resource_id) == {}


def test_role_dependents_are_the_profiles_holding_it_with_their_tags() -> None:
    role = create_role(RUN_TAGS)
    ours = create_instance_profile(RUN_TAGS, role=role)
    theirs = create_instance_profile(FOREIGN_TAGS, role=role)
    create_instance_profile(RUN_TAGS)

    dependents = dependents_of("iam:role", role)

    assert set(dependents) == {ours, theirs}
    assert dependents[ours].kind == "iam:instance-profile"
    assert dependents[ours].tags == RUN_TAGS
    assert dependents[theirs].tags == FOREIGN_TAGS


def test_profile_dependents_are_the_live_instances_running_with_it() -> None:
    profile = create_instance_profile(RUN_TAGS, role=create_role(RUN_TAGS))
    arn = expected_arn("iam:instance-profile", profile)
    running = create_instance(FOREIGN_TAGS, IamInstanceProfile={"Arn": arn})
    terminated = create_instance(RUN_TAGS, IamInstanceProfile={"Arn": arn})
    ec2().terminate_instances(InstanceIds=[terminated])
    create_instance(RUN_TAGS)

    dependents = dependents_of("iam:instance-profile", profile)

    assert list(dependents) == [running]
    assert dependents[running].tags == FOREIGN_TAGS


def test_an_instance_gone_from_ec2_is_an_unproven_dependent() -> None:
    dependents = inventory.ec2.instance_dependents(SCOPE, ["i-0123456789abcdef0"], "member of the group")

    assert dependents == [Dependent("ec2:instance", "i-0123456789abcdef0", {}, "member of the group")]


# -- what enumeration reports --------------------------------------------------------------------


def test_instances_carry_their_facts_and_price() -> None:
    on_demand = create_instance(RUN_TAGS)
    spot = create_instance(RUN_TAGS, InstanceMarketOptions={"MarketType": "spot"})
    stopped = create_instance(RUN_TAGS)
    unpriced = create_instance(RUN_TAGS, InstanceType="m1.small")
    ec2().stop_instances(InstanceIds=[stopped])
    gone = create_instance(RUN_TAGS)
    ec2().terminate_instances(InstanceIds=[gone])

    instances = found("ec2:instance")

    assert gone not in instances
    attributes = instances[on_demand].attributes
    for key in ("InstanceType", "State", "LaunchTime", "BlockDeviceMappings", "NetworkInterfaces"):
        assert key in attributes
    assert "Tags" not in attributes
    assert instances[on_demand].hourly_cost_usd == pricing.on_demand_hourly("g5.xlarge")
    assert instances[spot].attributes.get("InstanceLifecycle") == "spot"
    assert instances[spot].hourly_cost_usd == pricing.spot_hourly("g5.xlarge")
    assert instances[stopped].hourly_cost_usd == 0.0
    assert instances[unpriced].hourly_cost_usd is None


def test_volumes_are_priced_as_gp3_storage() -> None:
    volume = create_volume(RUN_TAGS)

    resource = only("ec2:volume", volume)

    assert resource.hourly_cost_usd == pytest.approx(10 * pricing.GP3_GB_MONTHLY / pricing.HOURS_PER_MONTH)
    assert resource.attributes["Size"] == 10
    assert resource.attributes["VolumeType"] == "gp3"
    assert "Attachments" in resource.attributes and "State" in resource.attributes


def test_asg_attributes_name_its_members_and_template() -> None:
    template = create_launch_template(RUN_TAGS)
    name = create_auto_scaling_group(RUN_TAGS, desired=1, template_id=template)

    attributes = only("autoscaling:autoScalingGroup", name).attributes

    assert attributes["DesiredCapacity"] == 1
    assert [member["InstanceId"] for member in attributes["Instances"]] == asg_members(name)
    specification = attributes["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert specification["LaunchTemplateId"] == template
    assert only("ec2:launch-template", template).attributes["LaunchTemplateName"].startswith("lt-")


def test_only_the_accounts_own_snapshots_are_listed() -> None:
    """moto ignores OwnerIds and answers the public AMIs' snapshots too."""
    snapshot = CREATORS["ec2:snapshot"](RUN_TAGS)

    snapshots = found("ec2:snapshot")

    assert snapshot in snapshots
    assert {resource.attributes["OwnerId"] for resource in snapshots.values()} == {ACCOUNT}


def test_buckets_are_reported_in_their_own_region_only() -> None:
    east = CREATORS["s3:bucket"](RUN_TAGS)
    west = CREATORS["s3:bucket"]({}, "us-west-2")
    elsewhere = CREATORS["s3:bucket"]({}, "eu-west-1")

    buckets = scan(["s3:bucket"], [REGION, "us-west-2"], ACCOUNT)

    regions = {resource.resource_id: resource.region for resource in buckets}
    assert len(regions) == len(buckets)
    assert regions[east] == REGION
    assert regions[west] == "us-west-2"
    assert elsewhere not in regions


def test_buckets_are_correct_without_the_tagging_api(monkeypatch: pytest.MonkeyPatch) -> None:
    tagged = CREATORS["s3:bucket"](RUN_TAGS)
    untagged = CREATORS["s3:bucket"]({})
    monkeypatch.setattr(inventory.s3, "tagging_api_tags", lambda scope, resource_types: {})

    buckets = found("s3:bucket")

    assert buckets[tagged].tags == RUN_TAGS
    assert buckets[untagged].tags == {}


def test_global_kinds_are_listed_once_whatever_the_regions() -> None:
    role = create_role(RUN_TAGS)

    roles = [
        resource
        for resource in scan(["iam:role"], [REGION, "us-west-2"], ACCOUNT)
        if resource.resource_id == role
    ]

    assert [resource.region for resource in roles] == ["global"]


def test_regional_kinds_stay_in_their_region() -> None:
    instance_id = create_instance(RUN_TAGS, "us-west-2")

    assert instance_id not in found("ec2:instance")
    assert found("ec2:instance", regions=["us-west-2"])[instance_id].region == "us-west-2"


def test_classic_load_balancers_share_the_load_balancer_kind() -> None:
    name = create_classic_load_balancer(RUN_TAGS)
    untagged = create_classic_load_balancer({})

    balancers = found("elasticloadbalancing:loadbalancer")

    assert balancers[name].arn == f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/{name}"
    assert balancers[name].tags == RUN_TAGS
    assert balancers[name].attributes["Type"] == "classic"
    assert balancers[untagged].tags == {}
    assert name not in found("elasticloadbalancing:loadbalancer", TagFilter({"run-id": "nlp-r2"}))


def test_elasticache_is_priced_per_node() -> None:
    cluster = CREATORS["elasticache:cluster"](RUN_TAGS)

    resource = only("elasticache:cluster", cluster)

    assert resource.hourly_cost_usd == pytest.approx(2 * pricing.ELASTICACHE_HOURLY["cache.t4g.small"])


# -- the registry itself -------------------------------------------------------------------------


def test_run_kinds_delete_in_the_fleets_order() -> None:
    assert [declaration.kind for declaration in inventory.run_resource_types()] == [
        "autoscaling:autoScalingGroup",
        "ec2:instance",
        "ec2:launch-template",
        "ec2:volume",
        "ec2:network-interface",
        "events:rule",
        "sqs:queue",
        "iam:instance-profile",
        "iam:role",
    ]


def test_registry_invariants() -> None:
    run_kinds = inventory.run_resource_types()
    assert all(t.delete is not None and t.delete_order is not None and t.dependents for t in run_kinds)
    orders = [t.delete_order for t in run_kinds]
    assert len(orders) == len(set(orders))
    assert not any(t.run_resource for t in REGISTRY.values() if t.service == "s3" or t.kind.startswith("s3:"))
    assert all(t.cost_service for t in inventory.untagged_scan_types())
    assert {t.kind for t in inventory.untagged_scan_types()} == {
        "ec2:instance",
        "ec2:volume",
        "ec2:snapshot",
        "s3:bucket",
        "elasticache:replicationgroup",
        "elasticache:cluster",
        "eks:cluster",
        "eks:nodegroup",
        "autoscaling:autoScalingGroup",
        "elasticloadbalancing:loadbalancer",
    }


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_kind_that_can_cost_by_the_hour_says_how_it_is_priced(kind: str) -> None:
    for tags in (RUN_TAGS, {}):
        CREATORS[kind](tags)

    costs = {resource.hourly_cost_usd for resource in found(kind).values()}

    if costs != {0.0}:
        assert REGISTRY[kind].price_source, costs
