"""Planting helpers for the reaper's tests: an account as training stacks and their neighbours leave it.

`plant_run` creates what `infra/components/training_fleet.py` creates for one run, tagged the way the
stack's provider default tags and launch-template tag specifications tag it: an Auto Scaling group
with instances attached, their root volumes and network interfaces, the launch template, the
interruption queue and its two EventBridge rules, the instance role and profile. The `foreign_*`
helpers plant what is not the run's but attaches to or shares what is: these are what the reaper
must never take with a run. `snapshot` reads the whole account back with boto3 alone, so tests judge
the reaper with code that shares nothing with it.

A second account is an organization member (`member_account`); moto maps the credentials of a role
assumed in it to that account, so `member_clients` plants and reads there as the reaper's sessions do.

Works inside `moto.mock_aws()` or against a moto server, through whatever clients `clients` builds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from moto import mock_aws

from finops.inventory import Scope
from finops.reaper import OverBudget, Reaper, ReapPolicy
from finops.scope import Account, ScanScope
from tests.test_diy_state import PROJECT, file_put, write_stack

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
# The role the organization creates in every member account, assumed by `--org-role`.
MEMBER_ROLE = "OrganizationAccountAccessRole"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Expired two hours before NOW: past the default 60 min grace.
EXPIRED = "2026-11-23T10:00:00Z"
LIVE = "2099-01-01T00:00:00Z"
INSTANCE_TYPE = "g5.xlarge"
# What the fleet's SSM parameter would resolve to.
FLEET_AMI = "ami-0a1b2c3d4e5f60718"
MANDATORY = {
    "team": "ml-platform",
    "project": "recsys",
    "environment": "dev",
    "cost-center": "CC-4410",
    "owner": "ml-platform@example.com",
    "managed-by": "pulumi",
}
PROD_TAGS = {**MANDATORY, "environment": "prod", "team": "serving"}
# A managed policy every run's role has attached: the sweep must detach it, never delete it.
SHARED_POLICY_NAME = "mlp-shared-run-policy"
ROOT_DEVICE = "/dev/sda1"
# EC2 terminal states: the instance is going or gone, whatever describe still answers.
GONE_STATES = frozenset({"shutting-down", "terminated"})

Clients = Callable[[str, str], Any]


def default_clients(service: str, region: str) -> Any:
    return boto3.client(service, region_name=region)


def run_tags(run_id: str, expires_at: str = EXPIRED, **overrides: str) -> dict[str, str]:
    """A training stack's tags; an override of "-" drops the key."""
    tags = {
        **MANDATORY,
        "run-id": run_id,
        "ephemeral": "true",
        "pulumi-stack": f"train-{run_id}",
        "expires-at": expires_at,
    }
    tags.update(overrides)
    return {key: value for key, value in tags.items() if value != "-"}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


_serial = itertools.count()


@dataclass
class PlantedRun:
    run_id: str
    tags: dict[str, str]
    region: str
    asg: str
    launch_template: str
    instances: list[str]
    volumes: list[str]
    enis: list[str]
    queue_url: str
    rules: list[str]
    role: str
    profile: str
    profile_arn: str
    # Pulumi's auto-name suffix, played by a serial: a twin in another account reuses it.
    serial: int = 0

    def ids(self) -> set[tuple[str, str]]:
        """Every (kind, id) the run owns, in `snapshot`'s vocabulary."""
        return {
            ("asg", self.asg),
            ("launch-template", self.launch_template),
            *(("instance", i) for i in self.instances),
            *(("volume", v) for v in self.volumes),
            *(("eni", e) for e in self.enis),
            ("queue", self.queue_url),
            *(("rule", r) for r in self.rules),
            ("role", self.role),
            ("profile", self.profile),
        }


@dataclass
class World:
    """What is planted in one account, with the clients that planted it."""

    clients: Clients = default_clients
    region: str = REGION
    account_id: str = ACCOUNT_ID
    runs: list[PlantedRun] = field(default_factory=list)
    _network: tuple[str, str] | None = None
    _built: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._built:
            self._built[service] = self.clients(service, self.region)
        return self._built[service]

    def network(self) -> tuple[str, str]:
        """A default subnet and an AMI id."""
        if self._network is None:
            ec2 = self.client("ec2")
            subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
                "Subnets"
            ][0]
            # Any id does (moto validates AMIs only on request); describing moto's AMIs costs seconds.
            self._network = (subnet["SubnetId"], FLEET_AMI)
        return self._network

    def shared_policy_arn(self) -> str:
        iam = self.client("iam")
        arn = f"arn:aws:iam::{self.account_id}:policy/{SHARED_POLICY_NAME}"
        try:
            iam.get_policy(PolicyArn=arn)
        except iam.exceptions.NoSuchEntityException:
            arn = iam.create_policy(
                PolicyName=SHARED_POLICY_NAME,
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": "*"}
                        ],
                    }
                ),
            )["Policy"]["Arn"]
        return arn

    # -- a run, as its stack creates it ----------------------------------------------------------

    def plant_run(
        self,
        run_id: str,
        *,
        expires_at: str = EXPIRED,
        instances: int = 2,
        tags: Mapping[str, str] | None = None,
        twin_of: PlantedRun | None = None,
    ) -> PlantedRun:
        """One training run; `tags` replaces the run's tags on every resource (for look-alikes).

        `twin_of` (a run planted in another account) gives every resource the same names and tags.
        """
        if twin_of is not None:
            run_id, tags, instances = twin_of.run_id, twin_of.tags, len(twin_of.instances)
        tags = dict(tags) if tags is not None else run_tags(run_id, expires_at)
        serial = twin_of.serial if twin_of is not None else next(_serial)
        # Pulumi auto-names most of a stack's resources with a random suffix; the serial plays it.
        base = f"{run_id}-{serial}"
        subnet, image = self.network()
        iam, ec2 = self.client("iam"), self.client("ec2")

        role = f"fleet-instance-{base}"
        iam.create_role(
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            Tags=tag_list(tags),
        )
        iam.put_role_policy(
            RoleName=role,
            PolicyName="checkpoints",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
                }
            ),
        )
        iam.attach_role_policy(RoleName=role, PolicyArn=self.shared_policy_arn())
        profile = iam.create_instance_profile(InstanceProfileName=role, Tags=tag_list(tags))[
            "InstanceProfile"
        ]
        iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)

        block_devices = [
            {
                "DeviceName": ROOT_DEVICE,
                "Ebs": {
                    "VolumeSize": 100,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ]
        template = ec2.create_launch_template(
            LaunchTemplateName=f"fleet-{base}",
            LaunchTemplateData={
                "ImageId": image,
                "InstanceType": INSTANCE_TYPE,
                "IamInstanceProfile": {"Arn": profile["Arn"]},
                "BlockDeviceMappings": block_devices,
                "TagSpecifications": [
                    {"ResourceType": kind, "Tags": tag_list(tags)}
                    for kind in ("instance", "volume", "network-interface")
                ],
            },
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list(tags)}],
        )["LaunchTemplate"]["LaunchTemplateId"]

        autoscaling = self.client("autoscaling")
        asg = f"mlp-train-{base}"
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=asg,
            MinSize=0,
            # Room for the foreign instances some tests attach.
            MaxSize=instances + 4,
            DesiredCapacity=0,
            VPCZoneIdentifier=subnet,
            MixedInstancesPolicy={
                "InstancesDistribution": {
                    "OnDemandBaseCapacity": 0,
                    "OnDemandPercentageAboveBaseCapacity": 0,
                    "SpotAllocationStrategy": "price-capacity-optimized",
                },
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": template, "Version": "$Latest"},
                    "Overrides": [{"InstanceType": t} for t in (INSTANCE_TYPE, "g6.xlarge", "g4dn.xlarge")],
                },
            },
            Tags=[
                {
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": True,
                    "ResourceId": asg,
                    "ResourceType": "auto-scaling-group",
                }
                for key, value in tags.items()
            ],
        )
        instance_ids: list[str] = []
        if instances:
            # What the group's launches amount to: instances from the template, tagged by its tag
            # specifications, then members of the group.
            launched = ec2.run_instances(
                LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
                ImageId=image,
                InstanceType=INSTANCE_TYPE,
                MinCount=instances,
                MaxCount=instances,
                SubnetId=subnet,
                IamInstanceProfile={"Arn": profile["Arn"]},
                BlockDeviceMappings=block_devices,
                TagSpecifications=[
                    {"ResourceType": kind, "Tags": tag_list(tags)} for kind in ("instance", "volume")
                ],
            )["Instances"]
            instance_ids = [item["InstanceId"] for item in launched]
            autoscaling.attach_instances(AutoScalingGroupName=asg, InstanceIds=instance_ids)
        volumes, enis = self._attachments(instance_ids)
        if enis:
            ec2.create_tags(Resources=enis, Tags=tag_list(tags))

        sqs = self.client("sqs")
        queue_url = sqs.create_queue(QueueName=f"mlp-train-{base}-interruptions", tags=dict(tags))["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = self.client("events")
        rules = []
        for kind, detail_type in (
            ("spot", "EC2 Spot Instance Interruption Warning"),
            ("rebalance", "EC2 Instance Rebalance Recommendation"),
        ):
            rule = f"fleet-{kind}-{base}"
            events.put_rule(
                Name=rule,
                EventPattern=json.dumps({"source": ["aws.ec2"], "detail-type": [detail_type]}),
                Tags=tag_list(tags),
            )
            events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
            rules.append(rule)

        planted = PlantedRun(
            run_id=run_id,
            tags=tags,
            region=self.region,
            asg=asg,
            launch_template=template,
            instances=instance_ids,
            volumes=volumes,
            enis=enis,
            queue_url=queue_url,
            rules=rules,
            role=role,
            profile=role,
            profile_arn=profile["Arn"],
            serial=serial,
        )
        self.runs.append(planted)
        return planted

    def launched_at(self, instance_ids: Iterable[str], moment: datetime) -> None:
        """Backdate the instances' LaunchTime, which EC2 sets to when they were planted.

        moto's backends are this process's (inside `mock_aws` and behind a moto server in it alike).
        """
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[self.account_id][self.region]
        for instance_id in instance_ids:
            backend.get_instance(instance_id).launch_time = moment.astimezone(UTC).replace(tzinfo=None)

    def _attachments(self, instance_ids: list[str]) -> tuple[list[str], list[str]]:
        if not instance_ids:
            return [], []
        described = [
            instance
            for reservation in self.client("ec2").describe_instances(InstanceIds=instance_ids)["Reservations"]
            for instance in reservation["Instances"]
        ]
        volumes = [m["Ebs"]["VolumeId"] for i in described for m in i.get("BlockDeviceMappings", [])]
        enis = [n["NetworkInterfaceId"] for i in described for n in i.get("NetworkInterfaces", [])]
        return volumes, enis

    def delete_run(self, run: PlantedRun, *, leave: Iterable[str] = ()) -> None:
        """What `pulumi destroy` of the run's stack deletes, less the ids in `leave` (a leak)."""
        kept = set(leave)
        ec2, iam = self.client("ec2"), self.client("iam")
        for instance in run.instances:
            # A volume Pulumi lost track of: it must outlive its instance to be left behind.
            mappings = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
            devices = [
                m["DeviceName"]
                for m in mappings.get("BlockDeviceMappings", [])
                if m["Ebs"]["VolumeId"] in kept
            ]
            if devices:
                ec2.modify_instance_attribute(
                    InstanceId=instance,
                    BlockDeviceMappings=[
                        {"DeviceName": d, "Ebs": {"DeleteOnTermination": False}} for d in devices
                    ],
                )
        self.client("autoscaling").delete_auto_scaling_group(AutoScalingGroupName=run.asg, ForceDelete=True)
        if run.instances:
            ec2.terminate_instances(InstanceIds=run.instances)
        ec2.delete_launch_template(LaunchTemplateId=run.launch_template)
        for volume in run.volumes:
            if volume not in kept:
                with _gone_is_fine():
                    ec2.delete_volume(VolumeId=volume)
        for interface in run.enis:
            if interface not in kept:
                with _gone_is_fine():
                    ec2.delete_network_interface(NetworkInterfaceId=interface)
        events = self.client("events")
        for rule in run.rules:
            events.remove_targets(Rule=rule, Ids=["queue"])
            events.delete_rule(Name=rule)
        self.client("sqs").delete_queue(QueueUrl=run.queue_url)
        iam.remove_role_from_instance_profile(InstanceProfileName=run.profile, RoleName=run.role)
        iam.delete_instance_profile(InstanceProfileName=run.profile)
        iam.delete_role_policy(RoleName=run.role, PolicyName="checkpoints")
        iam.detach_role_policy(RoleName=run.role, PolicyArn=self.shared_policy_arn())
        iam.delete_role(RoleName=run.role)

    # -- what is not the run's but touches it ----------------------------------------------------

    def foreign_instance(
        self, tags: Mapping[str, str] | None = None, *, profile_arn: str | None = None
    ) -> str:
        """A running instance that is not any run's (untagged unless `tags`)."""
        subnet, image = self.network()
        extra: dict[str, Any] = {}
        if tags:
            extra["TagSpecifications"] = [
                {"ResourceType": kind, "Tags": tag_list(tags)} for kind in ("instance", "volume")
            ]
        if profile_arn:
            extra["IamInstanceProfile"] = {"Arn": profile_arn}
        instance = self.client("ec2").run_instances(
            ImageId=image, InstanceType="m6i.large", MinCount=1, MaxCount=1, SubnetId=subnet, **extra
        )["Instances"][0]
        if tags:
            interfaces = [n["NetworkInterfaceId"] for n in instance.get("NetworkInterfaces", [])]
            self.client("ec2").create_tags(Resources=interfaces, Tags=tag_list(tags))
        return instance["InstanceId"]

    def attach_to_group(self, asg: str, instance_id: str) -> None:
        self.client("autoscaling").attach_instances(AutoScalingGroupName=asg, InstanceIds=[instance_id])

    def foreign_profile(
        self, role: str, tags: Mapping[str, str] | None = None, *, name: str | None = None
    ) -> str:
        """An instance profile of someone else that holds `role`."""
        iam = self.client("iam")
        name = name or f"foreign-profile-{next(_serial)}"
        extra = {"Tags": tag_list(tags)} if tags else {}
        iam.create_instance_profile(InstanceProfileName=name, **extra)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        return name

    def foreign_group(self, launch_template: str, tags: Mapping[str, str] | None = None) -> str:
        """An Auto Scaling group of someone else launching from `launch_template`."""
        subnet, _ = self.network()
        name = f"serving-{next(_serial)}"
        self.client("autoscaling").create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=2,
            DesiredCapacity=0,
            VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": launch_template, "Version": "$Latest"},
            Tags=[
                {
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for k, v in (tags or {}).items()
            ],
        )
        return name

    def foreign_volume(
        self, instance_id: str, tags: Mapping[str, str] | None = None, *, delete_on_termination: bool = True
    ) -> str:
        """A volume of someone else attached to `instance_id`, deleted with it unless told otherwise."""
        ec2 = self.client("ec2")
        zone = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
            "Placement"
        ]["AvailabilityZone"]
        extra = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}]} if tags else {}
        volume = ec2.create_volume(AvailabilityZone=zone, Size=500, VolumeType="gp3", **extra)["VolumeId"]
        device = f"/dev/sd{'fghijklmnop'[next(_serial) % 11]}"
        ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device=device)
        if delete_on_termination:
            ec2.modify_instance_attribute(
                InstanceId=instance_id,
                BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": True}}],
            )
        return volume

    def checkpoints(self, bucket: str, run_id: str, tags: Mapping[str, str] | None = None) -> str:
        """The environment's checkpoint bucket with one of the run's checkpoints in it; returns the key."""
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        if tags:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_list(tags)})
        key = f"runs/{run_id}/checkpoints/step-000100.pt"
        s3.put_object(Bucket=bucket, Key=key, Body=b"weights")
        return key


@contextlib.contextmanager
def _gone_is_fine() -> Any:
    try:
        yield
    except botocore.exceptions.ClientError as error:
        if "NotFound" not in error.response["Error"]["Code"]:
            raise


# -- a DIY state backend, as the Pulumi CLI writes it --------------------------------------------


def diy_backend(root: Path) -> str:
    """An empty project-scoped DIY backend in `root`; returns its URL."""
    file_put(root)(".pulumi/meta.yaml", b"version: 1\n")
    return f"file://{root}"


def add_stack(
    root: Path,
    stack: str,
    tags: Mapping[str, str],
    outputs: Mapping[str, Any] | None = None,
    *,
    account_id: str | None = ACCOUNT_ID,
    region: str = REGION,
) -> None:
    """What `pulumi stack init`, `stack tag set` and `up` leave for one stack deployed in `account_id`.

    Its outputs are the training program's, whose interruption queue URL names the account, plus
    `outputs`; with `account_id` None no output names an account, as a stack never deployed.
    """
    run_id = stack.removeprefix("train-")
    named = {
        "runId": run_id,
        "region": region,
        "interruptionQueueUrl": f"https://sqs.{region}.amazonaws.com/{account_id}/mlp-train-{run_id}-interruptions",
    }
    written = {**(named if account_id is not None else {}), **(outputs or {})}
    write_stack(file_put(root), stack, outputs=written, tags=dict(tags))


def remove_stack(root: Path, stack: str) -> None:
    """What `pulumi stack rm` leaves: only the checkpoint's backup."""
    base = root / ".pulumi" / "stacks" / PROJECT / stack
    for suffix in (".json", ".pulumi-tags"):
        Path(f"{base}{suffix}").unlink(missing_ok=True)


# -- reading the account back --------------------------------------------------------------------


def member_account(name: str = "research") -> str:
    """A new member account of the caller's organization (created first if need be); its id."""
    organizations = boto3.client("organizations", region_name=REGION)
    with contextlib.suppress(organizations.exceptions.AlreadyInOrganizationException):
        organizations.create_organization(FeatureSet="ALL")
    status = organizations.create_account(AccountName=name, Email=f"{name}@example.com")
    return status["CreateAccountStatus"]["AccountId"]


def member_clients(account_id: str, role: str = MEMBER_ROLE) -> Clients:
    """Clients acting in `account_id` through `role`, the way `--org-role` reaches it."""
    from mlp import aws

    session = aws.assumed_role_session(f"arn:aws:iam::{account_id}:role/{role}", session_name="reaper-tests")

    def clients(service: str, region: str) -> Any:
        return session.client(service, region_name=region)

    return clients


def own_scope(regions: Iterable[str] = (REGION,), account_id: str = ACCOUNT_ID) -> ScanScope:
    """`regions` of the caller's own account, as `mlp reap` resolves it without --accounts or --org-role."""
    return ScanScope(
        targets=[Scope(region, account_id) for region in regions], accounts=[Account(account_id)]
    )


def snapshot(
    clients: Clients = default_clients, region: str = REGION
) -> dict[tuple[str, str], dict[str, str]]:
    """Every resource of the kinds the tests plant that still exists, (kind, id) -> tags.

    Instances AWS is terminating count as gone. Links are entries too, so a link broken without
    its ends going shows: ("profile-role", "<profile>/<role>"), ("member", "<group>/<instance>"),
    ("attachment", "<instance>/<volume>").
    """

    def client(service: str) -> Any:
        return clients(service, region)

    def tags_of(items: Any) -> dict[str, str]:
        return {item["Key"]: item["Value"] for item in items or []}

    found: dict[tuple[str, str], dict[str, str]] = {}
    ec2, autoscaling, iam = client("ec2"), client("autoscaling"), client("iam")
    for page in autoscaling.get_paginator("describe_auto_scaling_groups").paginate():
        for group in page["AutoScalingGroups"]:
            found[("asg", group["AutoScalingGroupName"])] = tags_of(group.get("Tags"))
            for member in group.get("Instances", []):
                found[("member", f"{group['AutoScalingGroupName']}/{member['InstanceId']}")] = {}
    for page in ec2.get_paginator("describe_launch_templates").paginate(PaginationConfig={"PageSize": 200}):
        for template in page["LaunchTemplates"]:
            found[("launch-template", template["LaunchTemplateId"])] = tags_of(template.get("Tags"))
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] in GONE_STATES:
                    continue
                found[("instance", instance["InstanceId"])] = tags_of(instance.get("Tags"))
    for page in ec2.get_paginator("describe_volumes").paginate():
        for volume in page["Volumes"]:
            found[("volume", volume["VolumeId"])] = tags_of(volume.get("Tags"))
            for attachment in volume.get("Attachments", []):
                found[("attachment", f"{attachment['InstanceId']}/{volume['VolumeId']}")] = {}
    for page in ec2.get_paginator("describe_network_interfaces").paginate():
        for interface in page["NetworkInterfaces"]:
            found[("eni", interface["NetworkInterfaceId"])] = tags_of(interface.get("TagSet"))
    sqs = client("sqs")
    for url in sqs.list_queues().get("QueueUrls", []):
        found[("queue", url)] = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    events = client("events")
    for rule in events.list_rules()["Rules"]:
        found[("rule", rule["Name"])] = tags_of(
            events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]
        )
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            found[("role", role["RoleName"])] = tags_of(iam.list_role_tags(RoleName=role["RoleName"])["Tags"])
    for page in iam.get_paginator("list_instance_profiles").paginate():
        for listed in page["InstanceProfiles"]:
            profile = iam.get_instance_profile(InstanceProfileName=listed["InstanceProfileName"])[
                "InstanceProfile"
            ]
            found[("profile", profile["InstanceProfileName"])] = tags_of(profile.get("Tags"))
            for role in profile.get("Roles", []):
                found[("profile-role", f"{profile['InstanceProfileName']}/{role['RoleName']}")] = {}
    for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
        for policy in page["Policies"]:
            found[("policy", policy["Arn"])] = {}
    s3 = client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        found[("bucket", bucket["Name"])] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                found[("object", f"{bucket['Name']}/{item['Key']}")] = {}
    return found


def instance_state(instance_id: str, clients: Clients = default_clients, region: str = REGION) -> str:
    ec2 = clients("ec2", region)
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


# -- the reaper, built around a world --------------------------------------------------------------


class FakePulumi:
    """The Automation API boundary: `destroy` deletes what the stack's run planted, as Pulumi would.

    `fail` maps a stack to the error its destroy raises; `leave` names ids a destroy leaves behind.
    Without a world, `destroy` only records the call.
    """

    def __init__(
        self,
        world: World | None,
        root: Path | None = None,
        *,
        fail: Mapping[str, str] | None = None,
        leave: Iterable[str] = (),
    ) -> None:
        self.world = world
        self.root = root
        self.fail = dict(fail or {})
        self.leave = set(leave)
        self.calls: list[tuple[str, str]] = []

    def destroy(self, stack: str, program: Callable[[], None], *, on_output: Callable[[str], None]) -> None:
        self.calls.append(("destroy", stack))
        if stack in self.fail:
            raise RuntimeError(self.fail[stack])
        for run in self.world.runs if self.world else []:
            if run.tags.get("pulumi-stack") == stack:
                self.world.delete_run(run, leave=self.leave)

    def remove(self, stack: str) -> None:
        self.calls.append(("remove", stack))
        if self.root is not None:
            remove_stack(self.root, stack)

    def deploy(self, stack: str, program: Callable[[], None], **_: Any) -> dict[str, Any]:
        raise AssertionError(f"the reaper deployed {stack}")

    def list_stacks(self) -> list[Any]:
        raise AssertionError("the reaper lists stacks through the state reader, not Pulumi")

    def outputs(self, stack: str) -> dict[str, Any]:
        raise AssertionError("the reaper reads outputs through the state reader, not Pulumi")


class _Lease:
    def check(self) -> None:
        pass


class NoLocks:
    """One reaper at a time by construction: the tests that use it run no other."""

    @contextlib.contextmanager
    def hold(self, name: str) -> Any:
        yield _Lease()


def build_reaper(
    reader: Any,
    *,
    destroyer: Callable[[], Any] | None = None,
    locks: Any = None,
    log: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
    idle: Mapping[tuple[str, str], Any] | None = None,
    completion: Callable[[Any], Any] | None = None,
    prod_opt_in: bool = False,
    environment_stacks: Iterable[str] = ("dev", "prod"),
    scope: ScanScope | None = None,
    over_budget: Mapping[tuple[str, str], OverBudget] | None = None,
) -> Reaper:
    """The Reaper as `finops.reaper.reap` builds it, with the Pulumi boundary and Cost Explorer faked.

    `scope` defaults to us-east-1 of the caller's own account; `over_budget` is what
    `finops.reaper.over_budget_runs` finds, keyed by account and run id.
    """
    logged = log or (lambda line: None)

    def no_destroyer() -> Any:
        raise AssertionError("the reaper needed Pulumi where no stack was to be destroyed")

    return Reaper(
        reader,
        scope=scope or own_scope(),
        destroyer=destroyer or no_destroyer,
        policy=ReapPolicy(prod_opt_in=prod_opt_in, environment_stacks=frozenset(environment_stacks)),
        completion=completion or (lambda summary, home: None),
        idle=dict(idle or {}),
        locks=locks or NoLocks(),
        run_cost=lambda run_id: None,
        log=logged,
        notify=notify or (lambda message: None),
        over_budget=over_budget,
    )


def reuse_clients(monkeypatch: Any) -> None:
    """One boto3 client per service, region and retry setting for the rest of the test.

    Building a client costs more than most moto calls, and the code under test builds one per call;
    clients hold no state that a decision could depend on, so reusing them changes nothing but speed.
    """
    from mlp import aws

    built: dict[tuple[Any, ...], Any] = {}
    original = aws.client

    def client(service: str, region: str | None = None, *, max_attempts: int = 8, session: Any = None) -> Any:
        key = (service, region or aws.default_region(), max_attempts, id(session))
        if key not in built:
            built[key] = original(service, region, max_attempts=max_attempts, session=session)
        return built[key]

    monkeypatch.setattr(aws, "client", client)


@contextlib.contextmanager
def mocked_world(monkeypatch: Any, home: Path) -> Iterator[World]:
    """A `World` over moto with clients reused, `home` as HOME, and no backend or webhook of the shell's."""
    monkeypatch.setenv("HOME", str(home))
    for name in ("MLP_BACKEND_URL", "PULUMI_BACKEND_URL", "MLP_SLACK_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    reuse_clients(monkeypatch)
    with mock_aws():
        yield World()


def diy_state(tmp_path: Path) -> Path:
    """A DIY state backend under `tmp_path/state`."""
    root = tmp_path / "state"
    diy_backend(root)
    return root
