"""Resources missing mandatory cost tags, including resources that were never tagged.

The Resource Groups Tagging API never returns never-tagged resources, so every kind is listed with
its own service's paginated describe/list call. The tagging API is used only to fetch tags in bulk
where the service would need one call per resource (S3, ElastiCache, load balancers); anything it
does not return is asked of the service itself, so correctness never depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from mlp import aws
from mlp.tags import DEFAULT_MANDATORY_TAGS, missing_tags, normalize_tags

RESOURCE_TYPES: tuple[str, ...] = (
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
)
LIVE_INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
ELB_DESCRIBE_TAGS_LIMIT = 20


def ec2_arn(region: str, account_id: str, kind: str, resource_id: str) -> str:
    """The ARN of an EC2 resource; snapshot ARNs carry no account id."""
    owner = "" if kind == "snapshot" else account_id
    return f"arn:aws:ec2:{region}:{owner}:{kind}/{resource_id}"


@dataclass(frozen=True)
class TaggedResource:
    arn: str
    resource_type: str
    region: str
    tags: dict[str, str]


@dataclass
class UntaggedScan:
    required_tags: list[str]
    findings: list[dict[str, Any]] = field(default_factory=list)
    resources_scanned: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"required_tags": list(self.required_tags), "findings": self.findings}


def scan_untagged(
    regions: Sequence[str], required_tags: Iterable[str] = DEFAULT_MANDATORY_TAGS
) -> UntaggedScan:
    """Every resource of RESOURCE_TYPES in `regions` that lacks one of `required_tags`."""
    required = list(required_tags)
    scan = UntaggedScan(required_tags=required)
    with aws.aws_errors("scanning for untagged resources"):
        account_id = aws.client("sts", regions[0]).get_caller_identity()["Account"]
        resources: list[TaggedResource] = list(_buckets(regions))
        for region in regions:
            resources.extend(_regional_resources(region, account_id))
    scan.resources_scanned = len(resources)
    for resource in resources:
        missing = missing_tags(resource.tags, required)
        if missing:
            scan.findings.append(
                {
                    "arn": resource.arn,
                    "resource_type": resource.resource_type,
                    "region": resource.region,
                    "missing_tags": missing,
                }
            )
    scan.findings.sort(key=lambda finding: (finding["region"], finding["resource_type"], finding["arn"]))
    return scan


def _regional_resources(region: str, account_id: str) -> Iterator[TaggedResource]:
    yield from _ec2(region, account_id)
    yield from _elasticache(region)
    yield from _eks(region)
    yield from _auto_scaling_groups(region)
    yield from _load_balancers(region)
    yield from _classic_load_balancers(region, account_id)


def _pages(service_client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    yield from service_client.get_paginator(operation).paginate(**kwargs)


def _tags_from_tagging_api(region: str, resource_types: list[str]) -> dict[str, dict[str, str]]:
    """Tags of the resources the tagging API knows (never-tagged ones are missing from it)."""
    tagging = aws.client("resourcegroupstaggingapi", region)
    return {
        mapping["ResourceARN"]: normalize_tags(mapping.get("Tags"))
        for page in _pages(tagging, "get_resources", ResourceTypeFilters=resource_types)
        for mapping in page.get("ResourceTagMappingList", [])
    }


def _ec2(region: str, account_id: str) -> Iterator[TaggedResource]:
    ec2 = aws.client("ec2", region)
    instance_filter = [{"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    for page in _pages(ec2, "describe_instances", Filters=instance_filter):
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                yield TaggedResource(
                    ec2_arn(region, account_id, "instance", instance["InstanceId"]),
                    "ec2:instance",
                    region,
                    normalize_tags(instance.get("Tags")),
                )
    for page in _pages(ec2, "describe_volumes"):
        for volume in page.get("Volumes", []):
            yield TaggedResource(
                ec2_arn(region, account_id, "volume", volume["VolumeId"]),
                "ec2:volume",
                region,
                normalize_tags(volume.get("Tags")),
            )
    for page in _pages(ec2, "describe_snapshots", OwnerIds=["self"]):
        for snapshot in page.get("Snapshots", []):
            # OwnerIds filters on the server; checking again keeps public AMI snapshots out where an
            # endpoint (moto) ignores the filter.
            if snapshot.get("OwnerId", account_id) != account_id:
                continue
            yield TaggedResource(
                ec2_arn(region, account_id, "snapshot", snapshot["SnapshotId"]),
                "ec2:snapshot",
                region,
                normalize_tags(snapshot.get("Tags")),
            )


def _buckets(regions: Sequence[str]) -> Iterator[TaggedResource]:
    """Buckets are global: listed once, kept when their region is scanned."""
    s3 = aws.client("s3", regions[0])
    known_tags: dict[str, dict[str, str]] = {}
    for region in regions:
        known_tags.update(_tags_from_tagging_api(region, ["s3"]))
    for page in _pages(s3, "list_buckets"):
        for bucket in page.get("Buckets", []):
            name = bucket["Name"]
            region = bucket.get("BucketRegion") or _bucket_region(s3, name)
            if region not in regions:
                continue
            arn = f"arn:aws:s3:::{name}"
            bucket_tags = known_tags[arn] if arn in known_tags else _bucket_tags(s3, name)
            yield TaggedResource(arn, "s3:bucket", region, bucket_tags)


def _bucket_region(s3: Any, name: str) -> str:
    location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
    # Buckets of us-east-1 answer no constraint; the oldest EU buckets answer "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _bucket_tags(s3: Any, name: str) -> dict[str, str]:
    try:
        return normalize_tags(s3.get_bucket_tagging(Bucket=name).get("TagSet"))
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchTagSet":
            return {}
        raise


def _elasticache(region: str) -> Iterator[TaggedResource]:
    elasticache = aws.client("elasticache", region)
    known_tags = _tags_from_tagging_api(region, ["elasticache:replicationgroup", "elasticache:cluster"])

    def tags_of(arn: str) -> dict[str, str]:
        if arn in known_tags:
            return known_tags[arn]
        return normalize_tags(elasticache.list_tags_for_resource(ResourceName=arn).get("TagList"))

    for page in _pages(elasticache, "describe_replication_groups"):
        for group in page.get("ReplicationGroups", []):
            yield TaggedResource(group["ARN"], "elasticache:replicationgroup", region, tags_of(group["ARN"]))
    for page in _pages(elasticache, "describe_cache_clusters"):
        for cluster in page.get("CacheClusters", []):
            # Members of a replication group are billed and reported through their group.
            if cluster.get("ReplicationGroupId"):
                continue
            yield TaggedResource(cluster["ARN"], "elasticache:cluster", region, tags_of(cluster["ARN"]))


def _eks(region: str) -> Iterator[TaggedResource]:
    eks = aws.client("eks", region)
    for page in _pages(eks, "list_clusters"):
        for name in page.get("clusters", []):
            cluster = eks.describe_cluster(name=name)["cluster"]
            yield TaggedResource(cluster["arn"], "eks:cluster", region, normalize_tags(cluster.get("tags")))
            for nodegroup_page in _pages(eks, "list_nodegroups", clusterName=name):
                for nodegroup_name in nodegroup_page.get("nodegroups", []):
                    nodegroup = eks.describe_nodegroup(clusterName=name, nodegroupName=nodegroup_name)[
                        "nodegroup"
                    ]
                    yield TaggedResource(
                        nodegroup["nodegroupArn"],
                        "eks:nodegroup",
                        region,
                        normalize_tags(nodegroup.get("tags")),
                    )


def _auto_scaling_groups(region: str) -> Iterator[TaggedResource]:
    autoscaling = aws.client("autoscaling", region)
    for page in _pages(autoscaling, "describe_auto_scaling_groups"):
        for group in page.get("AutoScalingGroups", []):
            yield TaggedResource(
                group["AutoScalingGroupARN"],
                "autoscaling:autoScalingGroup",
                region,
                normalize_tags(group.get("Tags")),
            )


def _load_balancers(region: str) -> Iterator[TaggedResource]:
    elbv2 = aws.client("elbv2", region)
    known_tags = _tags_from_tagging_api(region, ["elasticloadbalancing:loadbalancer"])
    arns = [
        balancer["LoadBalancerArn"]
        for page in _pages(elbv2, "describe_load_balancers")
        for balancer in page.get("LoadBalancers", [])
    ]
    unknown = [arn for arn in arns if arn not in known_tags]
    for start in range(0, len(unknown), ELB_DESCRIBE_TAGS_LIMIT):
        batch = unknown[start : start + ELB_DESCRIBE_TAGS_LIMIT]
        for description in elbv2.describe_tags(ResourceArns=batch).get("TagDescriptions", []):
            known_tags[description["ResourceArn"]] = normalize_tags(description.get("Tags"))
    for arn in arns:
        yield TaggedResource(arn, "elasticloadbalancing:loadbalancer", region, known_tags.get(arn, {}))


def _classic_load_balancers(region: str, account_id: str) -> Iterator[TaggedResource]:
    """Classic (v1) load balancers: a separate API, still billing by the hour."""
    elb = aws.client("elb", region)
    names = [
        balancer["LoadBalancerName"]
        for page in _pages(elb, "describe_load_balancers")
        for balancer in page.get("LoadBalancerDescriptions", [])
    ]
    tags: dict[str, dict[str, str]] = {}
    for start in range(0, len(names), ELB_DESCRIBE_TAGS_LIMIT):
        batch = names[start : start + ELB_DESCRIBE_TAGS_LIMIT]
        for description in elb.describe_tags(LoadBalancerNames=batch).get("TagDescriptions", []):
            tags[description["LoadBalancerName"]] = normalize_tags(description.get("Tags"))
    for name in names:
        arn = f"arn:aws:elasticloadbalancing:{region}:{account_id}:loadbalancer/{name}"
        yield TaggedResource(arn, "elasticloadbalancing:loadbalancer", region, tags.get(name, {}))
