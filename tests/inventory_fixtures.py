"""One creator per inventory kind: makes one resource of that kind in moto, with the given tags.

Each returns the id the registry reports for it; `expected_arn` asks AWS for the ARN independently
of the registry's own code. Call them inside `mock_aws`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import boto3

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE_POLICY = '{"Version": "2012-10-17", "Statement": []}'
ASSUME_EC2 = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)

Tags = Mapping[str, str]
Creator = Callable[..., str]

_serial = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_serial)}"


def tag_list(tags: Tags) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_specifications(tags: Tags, *kinds: str) -> dict[str, Any]:
    """TagSpecifications for the kinds, or nothing at all for no tags (EC2 refuses an empty list)."""
    if not tags:
        return {}
    return {"TagSpecifications": [{"ResourceType": kind, "Tags": tag_list(tags)} for kind in kinds]}


def ec2(region: str = REGION) -> Any:
    return boto3.client("ec2", region_name=region)


@functools.cache
def image(region: str = REGION) -> str:
    """moto's Amazon AMIs are the same in every mock, and listing them is the slowest call here."""
    return sorted(i["ImageId"] for i in ec2(region).describe_images(Owners=["amazon"])["Images"])[0]


def subnets(region: str = REGION) -> list[str]:
    return sorted(subnet["SubnetId"] for subnet in ec2(region).describe_subnets()["Subnets"])[:2]


def create_instance(tags: Tags, region: str = REGION, **request: Any) -> str:
    """A g5.xlarge whose instance and root volume carry `tags`; `request` adds to run_instances."""
    arguments: dict[str, Any] = {
        "ImageId": image(region),
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": "g5.xlarge",
        "Placement": {"AvailabilityZone": f"{region}a"},
        **tag_specifications(tags, "instance", "volume"),
        **request,
    }
    return ec2(region).run_instances(**arguments)["Instances"][0]["InstanceId"]


def create_volume(tags: Tags, region: str = REGION) -> str:
    return ec2(region).create_volume(
        AvailabilityZone=f"{region}a", Size=10, VolumeType="gp3", **tag_specifications(tags, "volume")
    )["VolumeId"]


def create_snapshot(tags: Tags, region: str = REGION) -> str:
    volume = create_volume({}, region)
    return ec2(region).create_snapshot(VolumeId=volume, **tag_specifications(tags, "snapshot"))["SnapshotId"]


def create_launch_template(tags: Tags, region: str = REGION) -> str:
    return ec2(region).create_launch_template(
        LaunchTemplateName=unique("lt"),
        LaunchTemplateData={"ImageId": image(region), "InstanceType": "g5.xlarge"},
        **tag_specifications(tags, "launch-template"),
    )["LaunchTemplate"]["LaunchTemplateId"]


def create_network_interface(tags: Tags, region: str = REGION) -> str:
    return ec2(region).create_network_interface(
        SubnetId=subnets(region)[0], **tag_specifications(tags, "network-interface")
    )["NetworkInterface"]["NetworkInterfaceId"]


def asg_tags(name: str, tags: Tags) -> list[dict[str, Any]]:
    return [
        {
            "Key": key,
            "Value": value,
            "PropagateAtLaunch": True,
            "ResourceId": name,
            "ResourceType": "auto-scaling-group",
        }
        for key, value in tags.items()
    ]


def create_auto_scaling_group(
    tags: Tags,
    region: str = REGION,
    *,
    desired: int = 0,
    template_id: str | None = None,
    mixed: bool = True,
) -> str:
    """A group launching from `template_id` (a new template when None), as the training fleet does
    through a mixed instances policy, or through its plain LaunchTemplate when not `mixed`."""
    name = unique("asg")
    template = template_id or create_launch_template({}, region)
    specification = {"LaunchTemplateId": template, "Version": "$Latest"}
    launch: dict[str, Any] = (
        {
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": specification,
                    "Overrides": [{"InstanceType": "g5.xlarge"}],
                }
            }
        }
        if mixed
        else {"LaunchTemplate": specification}
    )
    boto3.client("autoscaling", region_name=region).create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=max(desired, 2),
        DesiredCapacity=desired,
        AvailabilityZones=[f"{region}a"],
        Tags=asg_tags(name, tags),
        **launch,
    )
    return name


def create_role(tags: Tags, region: str = REGION) -> str:
    name = unique("role")
    boto3.client("iam", region_name=region).create_role(
        RoleName=name, AssumeRolePolicyDocument=ASSUME_EC2, Tags=tag_list(tags)
    )
    return name


def create_instance_profile(tags: Tags, region: str = REGION, *, role: str | None = None) -> str:
    iam = boto3.client("iam", region_name=region)
    name = unique("profile")
    iam.create_instance_profile(InstanceProfileName=name, Tags=tag_list(tags))
    if role:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
    return name


def create_queue(tags: Tags, region: str = REGION) -> str:
    return boto3.client("sqs", region_name=region).create_queue(QueueName=unique("queue"), tags=dict(tags))[
        "QueueUrl"
    ]


def create_rule(tags: Tags, region: str = REGION) -> str:
    name = unique("rule")
    boto3.client("events", region_name=region).put_rule(
        Name=name,
        EventPattern='{"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}',
        Tags=tag_list(tags),
    )
    return name


def create_bucket(tags: Tags, region: str = REGION) -> str:
    s3 = boto3.client("s3", region_name=region)
    name = unique("bucket")
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **location)
    if tags:
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_list(tags)})
    return name


def create_replication_group(tags: Tags, region: str = REGION) -> str:
    name = unique("rg")
    boto3.client("elasticache", region_name=region).create_replication_group(
        ReplicationGroupId=name,
        ReplicationGroupDescription="feature store",
        Engine="redis",
        CacheNodeType="cache.t4g.medium",
        NumCacheClusters=2,
        **({"Tags": tag_list(tags)} if tags else {}),
    )
    return name


def create_cache_cluster(tags: Tags, region: str = REGION) -> str:
    name = unique("mc")
    boto3.client("elasticache", region_name=region).create_cache_cluster(
        CacheClusterId=name,
        Engine="memcached",
        CacheNodeType="cache.t4g.small",
        NumCacheNodes=2,
        **({"Tags": tag_list(tags)} if tags else {}),
    )
    return name


def create_eks_cluster(tags: Tags, region: str = REGION) -> str:
    name = unique("eks")
    boto3.client("eks", region_name=region).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
        resourcesVpcConfig={"subnetIds": subnets(region)},
        tags=dict(tags),
    )
    return name


def create_nodegroup(tags: Tags, region: str = REGION) -> str:
    cluster = create_eks_cluster({}, region)
    name = unique("ng")
    boto3.client("eks", region_name=region).create_nodegroup(
        clusterName=cluster,
        nodegroupName=name,
        subnets=subnets(region),
        nodeRole=f"arn:aws:iam::{ACCOUNT}:role/eks",
        tags=dict(tags),
    )
    return f"{cluster}/{name}"


def create_load_balancer(tags: Tags, region: str = REGION) -> str:
    return boto3.client("elbv2", region_name=region).create_load_balancer(
        Name=unique("alb"), Subnets=subnets(region), **({"Tags": tag_list(tags)} if tags else {})
    )["LoadBalancers"][0]["LoadBalancerArn"]


def create_classic_load_balancer(tags: Tags, region: str = REGION) -> str:
    name = unique("classic")
    boto3.client("elb", region_name=region).create_load_balancer(
        LoadBalancerName=name,
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
        AvailabilityZones=[f"{region}a"],
        **({"Tags": tag_list(tags)} if tags else {}),
    )
    return name


CREATORS: dict[str, Creator] = {
    "ec2:instance": create_instance,
    "ec2:volume": create_volume,
    "ec2:snapshot": create_snapshot,
    "ec2:launch-template": create_launch_template,
    "ec2:network-interface": create_network_interface,
    "autoscaling:autoScalingGroup": create_auto_scaling_group,
    "iam:role": create_role,
    "iam:instance-profile": create_instance_profile,
    "sqs:queue": create_queue,
    "events:rule": create_rule,
    "s3:bucket": create_bucket,
    "elasticache:replicationgroup": create_replication_group,
    "elasticache:cluster": create_cache_cluster,
    "eks:cluster": create_eks_cluster,
    "eks:nodegroup": create_nodegroup,
    "elasticloadbalancing:loadbalancer": create_load_balancer,
}


def expected_arn(kind: str, resource_id: str, region: str = REGION) -> str:
    """The ARN AWS itself reports (or, where it reports none, documents) for the resource."""
    ec2_types = {
        "ec2:instance": "instance",
        "ec2:volume": "volume",
        "ec2:launch-template": "launch-template",
        "ec2:network-interface": "network-interface",
    }
    if kind in ec2_types:
        return f"arn:aws:ec2:{region}:{ACCOUNT}:{ec2_types[kind]}/{resource_id}"
    if kind == "ec2:snapshot":
        return f"arn:aws:ec2:{region}::snapshot/{resource_id}"
    if kind == "autoscaling:autoScalingGroup":
        groups = boto3.client("autoscaling", region_name=region).describe_auto_scaling_groups(
            AutoScalingGroupNames=[resource_id]
        )
        return groups["AutoScalingGroups"][0]["AutoScalingGroupARN"]
    if kind == "iam:role":
        return boto3.client("iam").get_role(RoleName=resource_id)["Role"]["Arn"]
    if kind == "iam:instance-profile":
        return boto3.client("iam").get_instance_profile(InstanceProfileName=resource_id)["InstanceProfile"][
            "Arn"
        ]
    if kind == "sqs:queue":
        attributes = boto3.client("sqs", region_name=region).get_queue_attributes(
            QueueUrl=resource_id, AttributeNames=["QueueArn"]
        )
        return attributes["Attributes"]["QueueArn"]
    if kind == "events:rule":
        return boto3.client("events", region_name=region).describe_rule(Name=resource_id)["Arn"]
    if kind == "s3:bucket":
        return f"arn:aws:s3:::{resource_id}"
    if kind == "elasticache:replicationgroup":
        elasticache = boto3.client("elasticache", region_name=region)
        return elasticache.describe_replication_groups(ReplicationGroupId=resource_id)["ReplicationGroups"][
            0
        ]["ARN"]
    if kind == "elasticache:cluster":
        elasticache = boto3.client("elasticache", region_name=region)
        return elasticache.describe_cache_clusters(CacheClusterId=resource_id)["CacheClusters"][0]["ARN"]
    if kind == "eks:cluster":
        return boto3.client("eks", region_name=region).describe_cluster(name=resource_id)["cluster"]["arn"]
    if kind == "eks:nodegroup":
        cluster, nodegroup = resource_id.split("/")
        eks = boto3.client("eks", region_name=region)
        return eks.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)["nodegroup"][
            "nodegroupArn"
        ]
    if kind == "elasticloadbalancing:loadbalancer":
        return resource_id
    raise KeyError(f"no expected ARN for {kind}")
