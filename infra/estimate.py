"""The monthly cost of a plan, from the same price table training launches and FinOps use.

It prices what dominates an ML platform bill: nodes (EKS node groups, training ASGs), the EKS
control plane, ElastiCache nodes, NAT gateways, interface endpoints, and the fixed monthly fees of
KMS keys and Secrets Manager secrets. Data transfer, storage growth, requests and log ingestion (VPC
flow logs, EKS control-plane logs) are usage-driven and left out; the figure is a floor, not a quote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlp import pricing


def _node_hourly(instance_types: list[str], capacity_type: str) -> float:
    # The first type is the preferred one; an estimate does not model spot allocation.
    hourly = pricing.on_demand_hourly(instance_types[0]) if instance_types else 0.0
    return hourly * (1 - pricing.DEFAULT_SPOT_DISCOUNT) if capacity_type == "SPOT" else hourly


def _asg_monthly(inputs: Mapping[str, Any]) -> float:
    policy = inputs.get("mixedInstancesPolicy") or {}
    overrides = (policy.get("launchTemplate") or {}).get("overrides") or []
    types = [item["instanceType"] for item in overrides if item.get("instanceType")]
    distribution = policy.get("instancesDistribution") or {}
    on_demand_base = int(distribution.get("onDemandBaseCapacity") or 0)
    desired = int(inputs.get("desiredCapacity") or inputs.get("minSize") or 0)
    spot_count = max(desired - on_demand_base, 0)
    on_demand_pct = float(distribution.get("onDemandPercentageAboveBaseCapacity") or 0) / 100
    on_demand = on_demand_base + spot_count * on_demand_pct
    spot = spot_count * (1 - on_demand_pct)
    hours = pricing.HOURS_PER_MONTH
    lifetime = inputs.get("maxInstanceLifetime")
    if lifetime:
        hours = min(hours, float(lifetime) / 3600)
    return (on_demand * _node_hourly(types, "ON_DEMAND") + spot * _node_hourly(types, "SPOT")) * hours


def resource_monthly_cost(resource_type: str, inputs: Mapping[str, Any]) -> float:
    hours = pricing.HOURS_PER_MONTH
    if resource_type == "aws:eks/cluster:Cluster":
        return pricing.EKS_CONTROL_PLANE_HOURLY * hours
    if resource_type == "aws:eks/nodeGroup:NodeGroup":
        desired = int((inputs.get("scalingConfig") or {}).get("desiredSize") or 0)
        return (
            desired
            * _node_hourly(list(inputs.get("instanceTypes") or []), inputs.get("capacityType") or "ON_DEMAND")
            * hours
        )
    if resource_type == "aws:autoscaling/group:Group":
        return _asg_monthly(inputs)
    if resource_type == "aws:elasticache/replicationGroup:ReplicationGroup":
        nodes = int(inputs.get("numCacheClusters") or 1)
        return nodes * pricing.elasticache_hourly(inputs.get("nodeType", "")) * hours
    if resource_type == "aws:ec2/natGateway:NatGateway":
        return pricing.NAT_GATEWAY_HOURLY * hours
    if resource_type == "aws:ec2/vpcEndpoint:VpcEndpoint" and inputs.get("vpcEndpointType") == "Interface":
        return pricing.INTERFACE_ENDPOINT_HOURLY_PER_AZ * len(inputs.get("subnetIds") or []) * hours
    if resource_type == "aws:kms/key:Key":
        return pricing.KMS_KEY_MONTHLY
    if resource_type == "aws:secretsmanager/secret:Secret":
        return pricing.SECRET_MONTHLY
    return 0.0


def estimate_monthly_cost(resources: Iterable[Mapping[str, Any]]) -> float:
    """USD per month for the plan's resources, rounded to cents."""
    total = sum(resource_monthly_cost(item["type"], item.get("inputs") or {}) for item in resources)
    return round(total, 2)
