"""Rule 8: no security group admits the whole internet, except HTTPS (443) into a load balancer; and
every VPC the stack creates or places resources in has flow logs.

Ingress comes in three shapes: inline `ingress` blocks of a security group, `aws.ec2.SecurityGroupRule`
of type ingress and `aws.vpc.SecurityGroupIngressRule`. The last two point at their group through
`securityGroupId`; a group is a load balancer's when a load balancer lists it in `securityGroups`.

A flow log covers a VPC of the stack when its `vpcId` comes from that VPC (the engine's property
dependencies, or a matching value). A stack on an existing VPC has no VPC resource, but its security
groups and the like name the VPC by its literal id; that id needs a flow log with the same `vpcId`.
Stacks that name no VPC (a training run, which lives in its environment's) need none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pulumi_policy import Severity

from policy.analyzer_view import display, items_of, lookup, peek
from policy.rules.common import Resource, Rule, referenced, violation

SECURITY_GROUP_TYPES = (
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
)
VPC_TYPE = "aws:ec2/vpc:Vpc"
FLOW_LOG_TYPE = "aws:ec2/flowLog:FlowLog"
SECURITY_GROUP_RULE_TYPE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE_TYPE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOAD_BALANCER_TYPES = (
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:alb/loadBalancer:LoadBalancer",
    "aws:elb/loadBalancer:LoadBalancer",
)
ANYWHERE = ("0.0.0.0/0", "::/0")
HTTPS_PORT = 443
TCP = ("tcp", "6")


@dataclass(frozen=True)
class Ingress:
    owner: Resource  # the resource that declares the rule
    prop: str  # where in it, for the message
    protocol: str
    from_port: object
    to_port: object
    open_to: tuple[str, ...]  # the internet-wide CIDRs it admits


def _ports(ingress: Ingress) -> str:
    if str(ingress.protocol) == "-1":
        return "all traffic"
    low, high = display(ingress.from_port), display(ingress.to_port)
    return f"{ingress.protocol} {low}" if low == high else f"{ingress.protocol} {low}-{high}"


def _is_https_only(ingress: Ingress) -> bool:
    ports = {ingress.from_port, ingress.to_port}
    return str(ingress.protocol).lower() in TCP and ports == {HTTPS_PORT}


def _open_cidrs(*lists: object) -> tuple[str, ...]:
    return tuple(str(cidr) for cidr_list in lists for cidr in items_of(cidr_list) if cidr in ANYWHERE)


def _ingresses(resource: Resource) -> Iterator[Ingress]:
    props = resource.props
    if resource.type in SECURITY_GROUP_TYPES:
        for index, block in enumerate(items_of(lookup(props, "ingress"))):
            open_to = _open_cidrs(lookup(block, "cidrBlocks"), lookup(block, "ipv6CidrBlocks"))
            if open_to:
                yield Ingress(
                    resource,
                    f"ingress[{index}]",
                    str(lookup(block, "protocol", default="")),
                    lookup(block, "fromPort"),
                    lookup(block, "toPort"),
                    open_to,
                )
    elif resource.type == SECURITY_GROUP_RULE_TYPE and lookup(props, "type") == "ingress":
        open_to = _open_cidrs(lookup(props, "cidrBlocks"), lookup(props, "ipv6CidrBlocks"))
        if open_to:
            protocol = str(lookup(props, "protocol", default=""))
            yield Ingress(
                resource, "cidrBlocks", protocol, lookup(props, "fromPort"), lookup(props, "toPort"), open_to
            )
    elif resource.type == INGRESS_RULE_TYPE:
        open_to = _open_cidrs([lookup(props, "cidrIpv4")], [lookup(props, "cidrIpv6")])
        if open_to:
            protocol = str(lookup(props, "ipProtocol", default=""))
            yield Ingress(
                resource,
                "cidrIpv4/cidrIpv6",
                protocol,
                lookup(props, "fromPort"),
                lookup(props, "toPort"),
                open_to,
            )


def check_public_ingress(resources: Sequence[Resource], _config: None) -> Iterator[tuple[str | None, str]]:
    groups = [r for r in resources if r.type in SECURITY_GROUP_TYPES]
    balancers = [r for r in resources if r.type in LOAD_BALANCER_TYPES]
    balancer_groups = {group.urn for lb in balancers for group in referenced(lb, "securityGroups", groups)}
    for resource in resources:
        for ingress in _ingresses(resource):
            owners = (
                [resource]
                if resource.type in SECURITY_GROUP_TYPES
                else referenced(resource, "securityGroupId", groups)
            )
            on_balancer = bool(owners) and all(group.urn in balancer_groups for group in owners)
            if _is_https_only(ingress) and on_balancer:
                continue
            yield (
                resource.urn,
                violation(
                    resource,
                    ingress.prop,
                    f"{_ports(ingress)} from {', '.join(ingress.open_to)}",
                    "admit known CIDRs or security groups only; only HTTPS (443) into a load balancer may be "
                    "open to the internet",
                ),
            )


RULE = Rule(
    name="no-public-ingress",
    description="No security group admits 0.0.0.0/0 or ::/0, except HTTPS (443) into a load balancer.",
    severity=Severity.CRITICAL,
    check=check_public_ingress,
    stack_level=True,
)


FLOW_LOG_FIX = "add an aws.ec2.FlowLog with vpcId set to it (trafficType ALL)"


def check_vpc_flow_logs(resources: Sequence[Resource], _config: None) -> Iterator[tuple[str | None, str]]:
    vpcs = [r for r in resources if r.type == VPC_TYPE]
    flow_logs = [r for r in resources if r.type == FLOW_LOG_TYPE]
    for vpc in vpcs:
        if not any(vpc in referenced(flow_log, "vpcId", [vpc]) for flow_log in flow_logs):
            yield vpc.urn, violation(vpc, "flow logs", "not configured", FLOW_LOG_FIX)
    logged_ids = {peek(flow_log.props, "vpcId") for flow_log in flow_logs}
    # Existing VPCs: literal ids that none of the stack's VPCs answers to (unknowns are its own VPCs').
    users: dict[str, Resource] = {}
    for resource in resources:
        vpc_id = peek(resource.props, "vpcId")
        if (
            resource.type != FLOW_LOG_TYPE
            and isinstance(vpc_id, str)
            and not referenced(resource, "vpcId", vpcs)
        ):
            users.setdefault(vpc_id, resource)
    for vpc_id, user in users.items():
        if vpc_id not in logged_ids:
            yield (
                None,
                f"stack: VPC {vpc_id!r} (vpcId of {user.type.rsplit(':', 1)[-1]} '{user.name}') has no flow log; "
                + FLOW_LOG_FIX,
            )


FLOW_LOG_RULE = Rule(
    name="vpc-flow-logs",
    description="Every VPC the stack creates or places resources in has a flow log.",
    severity=Severity.MEDIUM,
    check=check_vpc_flow_logs,
    stack_level=True,
)
