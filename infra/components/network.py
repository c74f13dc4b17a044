"""Network: a VPC with private subnets in >= 2 AZs and what they need to reach AWS APIs, or an existing one."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import NetworkConfig
from infra.iam import assume_role_policy
from infra.kms import KeyScope, SourceArn, account_scope, encrypted_log_group, source_conditions

HTTPS = 443
FLOW_LOGS_SERVICE = "vpc-flow-logs.amazonaws.com"
FLOW_LOG_WRITE_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams")


def flow_logs_trust_policy(scope: KeyScope) -> str:
    """VPC Flow Logs may assume the role, only for this account's flow logs."""
    return assume_role_policy(FLOW_LOGS_SERVICE, source_conditions(scope, SourceArn("ec2", "vpc-flow-log/*")))


def flow_logs_write_policy(log_group_arn: str) -> str:
    """Writing flow-log streams into one log group, and nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteFlowLogStreams",
                    "Effect": "Allow",
                    "Action": list(FLOW_LOG_WRITE_ACTIONS),
                    "Resource": [log_group_arn, f"{log_group_arn}:*"],
                },
                # Flow Logs looks its group up before writing; the action takes no resource but "*".
                {
                    "Sid": "FindTheLogGroup",
                    "Effect": "Allow",
                    "Action": "logs:DescribeLogGroups",
                    "Resource": "*",
                },
            ],
        }
    )


@dataclass(frozen=True)
class NetworkArgs:
    environment: str
    region: str
    config: NetworkConfig


class Network(pulumi.ComponentResource):
    """Private subnets for nodes, caches and training fleets; NAT or endpoints for their egress.

    All traffic of the VPC, created or existing, is flow-logged to a KMS-encrypted log group.

    Outputs: `vpc_id`, `vpc_cidr`, `private_subnet_ids`, `training_security_group_id` (egress-only
    group every training fleet instance joins, so the feature store can admit it by reference).
    """

    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    training_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ml-platform:infra:Network", name, None, opts)
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        if args.config.creates_vpc:
            self._create_vpc(name)
        else:
            self.vpc_id = pulumi.Output.from_input(args.config.existing_vpc_id)
            self.vpc_cidr = aws.ec2.get_vpc_output(
                id=args.config.existing_vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)
            ).cidr_block
            self.private_subnet_ids = pulumi.Output.from_input(list(args.config.existing_private_subnet_ids))

        self._flow_logs(name)

        training_sg = aws.ec2.SecurityGroup(
            f"{name}-training",
            description="Training fleet instances: egress only; services admit this group by reference",
            vpc_id=self.vpc_id,
            tags={"Name": f"mlp-{args.environment}-training"},
            opts=self._child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-training-egress",
            security_group_id=training_sg.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="Image pulls, S3 checkpoints and AWS APIs",
            opts=self._child,
        )
        self.training_security_group_id = training_sg.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "vpc_cidr": self.vpc_cidr,
                "private_subnet_ids": self.private_subnet_ids,
                "training_security_group_id": self.training_security_group_id,
            }
        )

    def _flow_logs(self, name: str) -> None:
        environment = self._args.environment
        log_group_name = f"/aws/vpc/mlp-{environment}/flow-logs"
        log_group = encrypted_log_group(
            f"{name}-flow-logs",
            parent=self,
            log_group_name=log_group_name,
            retention_days=self._args.config.flow_log_retention_days,
            description=f"ml-platform {environment} VPC flow logs",
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=account_scope(self).apply(flow_logs_trust_policy),
            opts=self._child,
        )
        write = aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=log_group.arn.apply(flow_logs_write_policy),
            opts=self._child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-logs",
            vpc_id=self.vpc_id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            tags={"Name": f"mlp-{environment}"},
            # Deliveries made before the role may write fail with a permissions error.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[write]),
        )

    def _create_vpc(self, name: str) -> None:
        config, environment = self._args.config, self._args.environment
        assert config.vpc_cidr is not None
        network = ipaddress.ip_network(config.vpc_cidr)
        # /16 -> /20 blocks: private subnets first (large, for pods and nodes), public ones after.
        blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
        zone_count = config.availability_zones
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=config.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"mlp-{environment}"},
            opts=self._child,
        )
        # The default security group of a new VPC allows all traffic between members: strip it.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], opts=self._child
        )

        private_subnets = []
        public_subnets = []
        for index in range(zone_count):
            zone = zones.names.apply(lambda names, i=index: names[i])
            private_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-private-{index}",
                    vpc_id=vpc.id,
                    cidr_block=str(blocks[index]),
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"mlp-{environment}-private-{index}",
                        "kubernetes.io/role/internal-elb": "1",
                    },
                    opts=self._child,
                )
            )
            if config.nat_gateways != "none":
                public_subnets.append(
                    aws.ec2.Subnet(
                        f"{name}-public-{index}",
                        vpc_id=vpc.id,
                        cidr_block=str(blocks[8 + index]),
                        availability_zone=zone,
                        map_public_ip_on_launch=False,
                        tags={"Name": f"mlp-{environment}-public-{index}", "kubernetes.io/role/elb": "1"},
                        opts=self._child,
                    )
                )

        private_route_tables = self._routes(name, vpc, private_subnets, public_subnets)
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{self._args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[table.id for table in private_route_tables],
            tags={"Name": f"mlp-{environment}-s3"},
            opts=self._child,
        )
        if config.interface_endpoints:
            self._interface_endpoints(name, vpc, private_subnets)

        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        self.private_subnet_ids = pulumi.Output.all(*[subnet.id for subnet in private_subnets])

    def _routes(
        self,
        name: str,
        vpc: aws.ec2.Vpc,
        private_subnets: list[aws.ec2.Subnet],
        public_subnets: list[aws.ec2.Subnet],
    ) -> list[aws.ec2.RouteTable]:
        environment, mode = self._args.environment, self._args.config.nat_gateways
        nat_gateways: list[aws.ec2.NatGateway] = []
        if public_subnets:
            gateway = aws.ec2.InternetGateway(
                f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"mlp-{environment}"}, opts=self._child
            )
            public_table = aws.ec2.RouteTable(
                f"{name}-public",
                vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
                tags={"Name": f"mlp-{environment}-public"},
                opts=self._child,
            )
            for index, subnet in enumerate(public_subnets):
                aws.ec2.RouteTableAssociation(
                    f"{name}-public-{index}",
                    subnet_id=subnet.id,
                    route_table_id=public_table.id,
                    opts=self._child,
                )
            # One NAT is cheap but a single-AZ dependency; prod runs one per AZ.
            for index in range(len(public_subnets) if mode == "perAz" else 1):
                address = aws.ec2.Eip(
                    f"{name}-nat-{index}",
                    domain="vpc",
                    tags={"Name": f"mlp-{environment}-nat-{index}"},
                    opts=self._child,
                )
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{index}",
                        allocation_id=address.id,
                        subnet_id=public_subnets[index].id,
                        tags={"Name": f"mlp-{environment}-nat-{index}"},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
                    )
                )
        tables = []
        for index, subnet in enumerate(private_subnets):
            routes = []
            if nat_gateways:
                routes.append(
                    {"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat_gateways[index % len(nat_gateways)].id}
                )
            table = aws.ec2.RouteTable(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                routes=routes,
                tags={"Name": f"mlp-{environment}-private-{index}"},
                opts=self._child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}", subnet_id=subnet.id, route_table_id=table.id, opts=self._child
            )
            tables.append(table)
        return tables

    def _interface_endpoints(
        self, name: str, vpc: aws.ec2.Vpc, private_subnets: list[aws.ec2.Subnet]
    ) -> None:
        environment = self._args.environment
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            description="HTTPS from inside the VPC to AWS interface endpoints",
            vpc_id=vpc.id,
            tags={"Name": f"mlp-{environment}-endpoints"},
            opts=self._child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-endpoints-https",
            security_group_id=endpoint_sg.id,
            ip_protocol="tcp",
            from_port=HTTPS,
            to_port=HTTPS,
            cidr_ipv4=vpc.cidr_block,
            description="HTTPS from the VPC",
            opts=self._child,
        )
        for service in self._args.config.interface_endpoints:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{self._args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[subnet.id for subnet in private_subnets],
                security_group_ids=[endpoint_sg.id],
                tags={"Name": f"mlp-{environment}-{service}"},
                opts=self._child,
            )
