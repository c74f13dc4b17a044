"""Untagged detection against moto in-process: every kind, never-tagged and partly tagged."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finops import inventory
from finops.inventory.ec2 import ec2_arn
from finops.scope import ScanScope, single_account_scope
from finops.untagged import scan_untagged
from mlp.tags import DEFAULT_MANDATORY_TAGS

ACCOUNT = "123456789012"
FULL = {
    "team": "nlp",
    "project": "llm-finetune",
    "environment": "dev",
    "cost-center": "cc-1002",
    "owner": "bob@example.com",
    "managed-by": "pulumi",
}
PARTIAL = {"team": "nlp", "environment": "dev"}
PARTIAL_MISSING = [key for key in DEFAULT_MANDATORY_TAGS if key not in PARTIAL]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


class Account:
    """Creates resources with given tags and remembers what the scan must report."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self.expected: dict[str, tuple[str, list[str]]] = {}
        self.ec2 = boto3.client("ec2", region_name=region)
        self.subnets = sorted(s["SubnetId"] for s in self.ec2.describe_subnets()["Subnets"])[:2]
        self.image = sorted(i["ImageId"] for i in self.ec2.describe_images(Owners=["amazon"])["Images"])[0]

    def expect(self, arn: str, resource_type: str, tags: dict[str, str]) -> None:
        missing = [key for key in DEFAULT_MANDATORY_TAGS if not tags.get(key)]
        if missing:
            self.expected[arn] = (resource_type, missing)

    def instance(self, tags: dict[str, str]) -> str:
        request: dict[str, Any] = {
            "ImageId": self.image,
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": "m6i.large",
        }
        if tags:
            request["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": tag_list(tags)},
                {"ResourceType": "volume", "Tags": tag_list(tags)},
            ]
        instance = self.ec2.run_instances(**request)["Instances"][0]
        self.expect(ec2_arn(self.region, ACCOUNT, "instance", instance["InstanceId"]), "ec2:instance", tags)
        root = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.expect(ec2_arn(self.region, ACCOUNT, "volume", root), "ec2:volume", tags)
        return instance["InstanceId"]

    def volume_and_snapshot(self, tags: dict[str, str]) -> None:
        extra = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}]} if tags else {}
        volume = self.ec2.create_volume(AvailabilityZone=f"{self.region}a", Size=10, **extra)["VolumeId"]
        self.expect(ec2_arn(self.region, ACCOUNT, "volume", volume), "ec2:volume", tags)
        extra = {"TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(tags)}]} if tags else {}
        snapshot = self.ec2.create_snapshot(VolumeId=volume, **extra)["SnapshotId"]
        self.expect(ec2_arn(self.region, ACCOUNT, "snapshot", snapshot), "ec2:snapshot", tags)

    def bucket(self, name: str, tags: dict[str, str], region: str | None = None) -> None:
        s3 = boto3.client("s3", region_name="us-east-1")
        region = region or self.region
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=name, **extra)
        if tags:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_list(tags)})
        if region == self.region:
            self.expect(f"arn:aws:s3:::{name}", "s3:bucket", tags)

    def cache(self, name: str, tags: dict[str, str]) -> None:
        elasticache = boto3.client("elasticache", region_name=self.region)
        extra = {"Tags": tag_list(tags)} if tags else {}
        group = elasticache.create_replication_group(
            ReplicationGroupId=f"{name}-rg",
            ReplicationGroupDescription="feature store",
            Engine="redis",
            CacheNodeType="cache.t4g.medium",
            NumCacheClusters=2,
            **extra,
        )["ReplicationGroup"]
        self.expect(group["ARN"], "elasticache:replicationgroup", tags)
        cluster = elasticache.create_cache_cluster(
            CacheClusterId=f"{name}-mc",
            Engine="memcached",
            CacheNodeType="cache.t4g.small",
            NumCacheNodes=1,
            **extra,
        )["CacheCluster"]
        self.expect(cluster["ARN"], "elasticache:cluster", tags)

    def eks(self, name: str, tags: dict[str, str]) -> None:
        eks = boto3.client("eks", region_name=self.region)
        role = f"arn:aws:iam::{ACCOUNT}:role/eks"
        cluster = eks.create_cluster(
            name=name, roleArn=role, resourcesVpcConfig={"subnetIds": self.subnets}, tags=tags
        )["cluster"]
        self.expect(cluster["arn"], "eks:cluster", tags)
        nodegroup = eks.create_nodegroup(
            clusterName=name, nodegroupName=f"{name}-ng", subnets=self.subnets, nodeRole=role, tags=tags
        )["nodegroup"]
        self.expect(nodegroup["nodegroupArn"], "eks:nodegroup", tags)

    def asg(self, name: str, tags: dict[str, str]) -> None:
        autoscaling = boto3.client("autoscaling", region_name=self.region)
        template = f"{name}-lt"
        self.ec2.create_launch_template(
            LaunchTemplateName=template,
            LaunchTemplateData={"ImageId": self.image, "InstanceType": "m6i.large"},
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            AvailabilityZones=[f"{self.region}a"],
            Tags=[
                {
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                }
                for k, v in tags.items()
            ],
        )
        group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
        self.expect(group["AutoScalingGroupARN"], "autoscaling:autoScalingGroup", tags)

    def load_balancer(self, name: str, tags: dict[str, str]) -> None:
        extra = {"Tags": tag_list(tags)} if tags else {}
        balancer = boto3.client("elbv2", region_name=self.region).create_load_balancer(
            Name=name, Subnets=self.subnets, **extra
        )["LoadBalancers"][0]
        self.expect(balancer["LoadBalancerArn"], "elasticloadbalancing:loadbalancer", tags)

    def classic_load_balancer(self, name: str, tags: dict[str, str]) -> None:
        extra = {"Tags": tag_list(tags)} if tags else {}
        boto3.client("elb", region_name=self.region).create_load_balancer(
            LoadBalancerName=f"classic-{name}",
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
            AvailabilityZones=[f"{self.region}a"],
            **extra,
        )
        arn = f"arn:aws:elasticloadbalancing:{self.region}:{ACCOUNT}:loadbalancer/classic-{name}"
        self.expect(arn, "elasticloadbalancing:loadbalancer", tags)

    def every_kind(self, prefix: str, tags: dict[str, str]) -> None:
        self.instance(tags)
        self.volume_and_snapshot(tags)
        self.bucket(f"{prefix}-bucket-{self.region}", tags)
        self.cache(prefix, tags)
        self.eks(prefix, tags)
        self.asg(prefix, tags)
        self.load_balancer(prefix, tags)
        self.classic_load_balancer(prefix, tags)


def scope_of(*regions: str) -> ScanScope:
    return single_account_scope(regions, ACCOUNT)


def findings_by_arn(regions: list[str], **kwargs: Any) -> dict[str, tuple[str, list[str]]]:
    scan = scan_untagged(scope_of(*regions), **kwargs)
    return {finding.arn: (finding.resource_type, list(finding.missing_tags)) for finding in scan.findings}


def test_never_tagged_and_partly_tagged_resources_of_every_kind_are_found(aws: None) -> None:
    account = Account()
    account.every_kind("never", {})
    account.every_kind("partly", PARTIAL)
    account.every_kind("tagged", FULL)

    found = findings_by_arn(["us-east-1"])

    assert found == account.expected
    assert {resource_type for resource_type, _ in found.values()} == {
        t.kind for t in inventory.untagged_scan_types()
    }
    partly = [missing for arn, (_, missing) in found.items() if "partly" in arn]
    assert partly and all(missing == PARTIAL_MISSING for missing in partly)


def test_fully_tagged_look_alikes_are_not_reported(aws: None) -> None:
    account = Account()
    account.every_kind("tagged", FULL)

    assert findings_by_arn(["us-east-1"]) == {}


def test_empty_tag_values_count_as_missing(aws: None) -> None:
    account = Account()
    account.instance({**FULL, "owner": "  "})

    found = findings_by_arn(["us-east-1"])

    assert sorted(missing for _, missing in found.values()) == [["owner"], ["owner"]]


def test_terminated_instances_are_skipped(aws: None) -> None:
    account = Account()
    instance_id = account.instance({})
    account.ec2.terminate_instances(InstanceIds=[instance_id])

    found = findings_by_arn(["us-east-1"])

    assert ec2_arn("us-east-1", ACCOUNT, "instance", instance_id) not in found


def test_each_region_reports_its_own_resources_and_buckets_once(aws: None) -> None:
    east, west = Account("us-east-1"), Account("us-west-2")
    east.instance({})
    west.instance(PARTIAL)
    east.bucket("east-bucket", {})
    west.bucket("west-bucket", {})
    east.bucket("elsewhere-bucket", {}, region="eu-west-1")

    scan = scan_untagged(scope_of("us-east-1", "us-west-2"))

    arns = [finding.arn for finding in scan.findings]
    assert len(arns) == len(set(arns))
    assert set(arns) == set(east.expected) | set(west.expected)
    regions = {finding.arn: finding.region for finding in scan.findings}
    assert regions["arn:aws:s3:::west-bucket"] == "us-west-2"
    assert "arn:aws:s3:::elsewhere-bucket" not in regions


def test_json_shape(aws: None) -> None:
    Account().instance({})

    payload = scan_untagged(scope_of("us-east-1")).to_json()

    assert set(payload) == {"scope", "required_tags", "findings"}
    assert payload["scope"]["regions"] == ["us-east-1"]
    assert {tuple(finding) for finding in payload["findings"]} == {
        ("arn", "resource_type", "account_id", "account_name", "region", "missing_tags", "tags")
    }
    assert {finding["account_id"] for finding in payload["findings"]} == {ACCOUNT}
    assert all(finding["missing_tags"] == list(DEFAULT_MANDATORY_TAGS) for finding in payload["findings"])


def test_custom_required_tags(aws: None) -> None:
    account = Account()
    account.instance(FULL)
    account.instance({**FULL, "run-id": "nlp-r1"})

    scan = scan_untagged(scope_of("us-east-1"), required_tags=["team", "run-id"])

    assert scan.to_json()["required_tags"] == ["team", "run-id"]
    assert {finding.missing_tags for finding in scan.findings} == {("run-id",)}
    assert len(scan.findings) == 2  # the first instance and its root volume


def test_correct_without_the_tagging_api(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    account = Account()
    account.every_kind("never", {})
    account.every_kind("partly", PARTIAL)
    account.every_kind("tagged", FULL)
    # Every registry module that asks the tagging API for tags in bulk gets an empty answer.
    patched = [
        module
        for module in vars(inventory).values()
        if isinstance(module, ModuleType) and hasattr(module, "tagging_api_tags")
    ]
    assert len(patched) > 1
    for module in patched:
        monkeypatch.setattr(module, "tagging_api_tags", lambda scope, resource_types: {})

    assert findings_by_arn(["us-east-1"]) == account.expected


def test_a_list_of_regions_scans_the_callers_account(aws: None) -> None:
    account = Account()
    account.instance({})

    scan = scan_untagged(["us-east-1"])

    assert {finding.arn for finding in scan.findings} == set(account.expected)
    assert {finding.account_id for finding in scan.findings} == {ACCOUNT}
