"""Plausible outputs for the resources and invokes the programs use, for offline runs under mocks.

Only what the programs read back is filled in (ids, ARNs, endpoints, names, the OIDC issuer, a
password); everything else mirrors the inputs, as the engine would after a create.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi

ACCOUNT_ID = "123456789012"
MOCK_AMI_ID = "ami-0a1b2c3d4e5f60718"


def _hex(name: str, length: int = 17) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:length]


_ID_PREFIXES = {
    "aws:ec2/vpc:Vpc": "vpc-",
    "aws:ec2/subnet:Subnet": "subnet-",
    "aws:ec2/securityGroup:SecurityGroup": "sg-",
    "aws:ec2/internetGateway:InternetGateway": "igw-",
    "aws:ec2/natGateway:NatGateway": "nat-",
    "aws:ec2/eip:Eip": "eipalloc-",
    "aws:ec2/routeTable:RouteTable": "rtb-",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce-",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt-",
}


class PlanMocks(pulumi.runtime.Mocks):
    """Mocks that answer like AWS would for the program's resources, in one region."""

    def __init__(self, region: str, stack_outputs: dict[str, dict[str, Any]] | None = None) -> None:
        self.region = region
        # Outputs of other stacks, by stack name, returned to StackReference reads.
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        typ, name = args.typ, args.name
        resource_id = _ID_PREFIXES.get(typ, "") + _hex(f"{typ}:{name}")
        service = typ.split(":")[1].split("/")[0] if typ.startswith("aws:") else ""
        arn = f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:{typ.rsplit(':', 1)[-1].lower()}/{name}"

        if typ == "pulumi:pulumi:StackReference":
            stack = state.get("name", name).rsplit("/", 1)[-1]
            return f"{name}-id", {
                **state,
                "outputs": self.stack_outputs.get(stack, {}),
                "secretOutputNames": [],
            }
        if typ == "random:index/randomPassword:RandomPassword":
            return resource_id, {**state, "result": _hex(f"password:{name}", 32)}
        if typ.startswith(("kubernetes:", "pulumi:providers:")):
            return resource_id, state
        if typ == "aws:s3/bucket:Bucket":
            bucket = state.get("bucket") or f"{state.get('bucketPrefix', name)}{_hex(name, 8)}"
            resource_id = bucket
            state.update(
                bucket=bucket,
                arn=f"arn:aws:s3:::{bucket}",
                bucketRegionalDomainName=f"{bucket}.s3.amazonaws.com",
            )
        elif typ == "aws:kms/key:Key":
            resource_id = (
                f"{_hex(name, 8)}-{_hex(name + '1', 4)}-{_hex(name + '2', 4)}-{_hex(name + '3', 12)}"
            )
            state.update(arn=f"arn:aws:kms:{self.region}:{ACCOUNT_ID}:key/{resource_id}", keyId=resource_id)
        elif typ == "aws:iam/role:Role":
            role_name = state.get("name") or f"{name}-{_hex(name, 7)}"
            resource_id = role_name
            state.update(name=role_name, arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{role_name}")
        elif typ == "aws:iam/instanceProfile:InstanceProfile":
            profile_name = state.get("name") or f"{name}-{_hex(name, 7)}"
            resource_id = profile_name
            state.update(name=profile_name, arn=f"arn:aws:iam::{ACCOUNT_ID}:instance-profile/{profile_name}")
        elif typ == "aws:eks/cluster:Cluster":
            cluster = state.get("name") or f"{name}-{_hex(name, 7)}"
            resource_id = cluster
            issuer = f"https://oidc.eks.{self.region}.amazonaws.com/id/{_hex(name, 32).upper()}"
            state.update(
                name=cluster,
                arn=f"arn:aws:eks:{self.region}:{ACCOUNT_ID}:cluster/{cluster}",
                endpoint=f"https://{_hex(name, 32).upper()}.gr7.{self.region}.eks.amazonaws.com",
                certificateAuthority={"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
                identities=[{"oidcs": [{"issuer": issuer}]}],
                vpcConfig={
                    **(state.get("vpcConfig") or {}),
                    "clusterSecurityGroupId": "sg-" + _hex(name + "cluster"),
                },
            )
        elif typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            group = state.get("replicationGroupId", name)
            resource_id = group
            state.update(
                arn=f"arn:aws:elasticache:{self.region}:{ACCOUNT_ID}:replicationgroup:{group}",
                primaryEndpointAddress=f"master.{group}.{_hex(name, 6)}.use1.cache.amazonaws.com",
                readerEndpointAddress=f"replica.{group}.{_hex(name, 6)}.use1.cache.amazonaws.com",
            )
        elif typ == "aws:sqs/queue:Queue":
            queue = state.get("name") or f"{name}-{_hex(name, 7)}"
            resource_id = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{queue}"
            state.update(name=queue, arn=f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{queue}", url=resource_id)
        elif typ == "aws:sns/topic:Topic":
            topic = state.get("name") or f"{name}-{_hex(name, 7)}"
            state.update(name=topic, arn=f"arn:aws:sns:{self.region}:{ACCOUNT_ID}:{topic}")
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            group = state.get("name") or f"{name}-{_hex(name, 7)}"
            resource_id = group
            state.update(name=group, arn=f"arn:aws:logs:{self.region}:{ACCOUNT_ID}:log-group:{group}")
        elif typ == "aws:secretsmanager/secret:Secret":
            secret = state.get("name") or f"{name}-{_hex(name, 7)}"
            # Secrets Manager appends six random characters to every secret's ARN.
            resource_id = f"arn:aws:secretsmanager:{self.region}:{ACCOUNT_ID}:secret:{secret}-{_hex(name, 6)}"
            state.update(name=secret, arn=resource_id)
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            # IAM names an OIDC provider by its issuer's host and path.
            issuer = str(state.get("url", "")).removeprefix("https://")
            state.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{issuer}")
        elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state.update(latestVersion=1, defaultVersion=1, arn=arn)
        else:
            state.setdefault("arn", arn)
            if "name" not in state and typ.startswith("aws:"):
                state["name"] = f"{name}-{_hex(name, 7)}"
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{zone}" for zone in "abcdef"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 7)], "id": self.region}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/planner",
                "userId": "AIDAPLANNER",
                "id": ACCOUNT_ID,
            }
        if token == "aws:index/getRegion:getRegion":
            return {
                "name": self.region,
                "region": self.region,
                "id": self.region,
                "endpoint": f"ec2.{self.region}.amazonaws.com",
            }
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:ec2/getVpc:getVpc":
            return {
                "id": args.args.get("id"),
                "cidrBlock": "10.0.0.0/16",
                "arn": f"arn:aws:ec2:{self.region}:{ACCOUNT_ID}:vpc/{args.args.get('id')}",
            }
        if token == "aws:ssm/getParameter:getParameter":
            return {
                "name": args.args.get("name"),
                "value": MOCK_AMI_ID,
                "type": "String",
                "id": args.args.get("name"),
            }
        raise NotImplementedError(f"offline plan has no mock for invoke {token}; add one to infra/mocks.py")
