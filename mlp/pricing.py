"""Prices: the one table used by training launches, idle-GPU waste and the plan's monthly estimate.

On-demand prices are AWS list prices for Linux in us-east-1, taken from the EC2, ElastiCache and EKS
pricing pages (source: aws.amazon.com/ec2/pricing/on-demand, checked 2026-11). Other regions are
within a few percent for these families and use the same figures. Spot prices come from
`describe_spot_price_history` when AWS is reachable; otherwise the documented discount below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlp.errors import UserError

PRICE_SOURCE = "AWS on-demand list prices, Linux, us-east-1 (aws.amazon.com/ec2/pricing), checked 2026-11"
HOURS_PER_MONTH = 730.0
# Spot capacity for GPU families has cleared at 60-90 % below on-demand; 65 % is the conservative
# mid-point used when the spot price history is not reachable.
DEFAULT_SPOT_DISCOUNT = 0.65

GPU_FAMILY = re.compile(r"^(p\d|g\d|trn\d|inf\d|dl\d)[a-z0-9-]*\.")


@dataclass(frozen=True)
class InstancePrice:
    on_demand_hourly: float
    gpus: int


EC2: dict[str, InstancePrice] = {
    # NVIDIA T4
    "g4dn.xlarge": InstancePrice(0.526, 1),
    "g4dn.2xlarge": InstancePrice(0.752, 1),
    "g4dn.4xlarge": InstancePrice(1.204, 1),
    "g4dn.8xlarge": InstancePrice(2.176, 1),
    "g4dn.12xlarge": InstancePrice(3.912, 4),
    "g4dn.16xlarge": InstancePrice(4.352, 1),
    "g4dn.metal": InstancePrice(7.824, 8),
    # NVIDIA A10G
    "g5.xlarge": InstancePrice(1.006, 1),
    "g5.2xlarge": InstancePrice(1.212, 1),
    "g5.4xlarge": InstancePrice(1.624, 1),
    "g5.8xlarge": InstancePrice(2.448, 1),
    "g5.12xlarge": InstancePrice(5.672, 4),
    "g5.16xlarge": InstancePrice(4.096, 1),
    "g5.24xlarge": InstancePrice(8.144, 4),
    "g5.48xlarge": InstancePrice(16.288, 8),
    # NVIDIA L4
    "g6.xlarge": InstancePrice(0.8048, 1),
    "g6.2xlarge": InstancePrice(0.9776, 1),
    "g6.4xlarge": InstancePrice(1.3232, 1),
    "g6.8xlarge": InstancePrice(2.0144, 1),
    "g6.12xlarge": InstancePrice(4.6016, 4),
    "g6.16xlarge": InstancePrice(3.3968, 1),
    "g6.24xlarge": InstancePrice(6.6752, 4),
    "g6.48xlarge": InstancePrice(13.3504, 8),
    # NVIDIA L40S
    "g6e.xlarge": InstancePrice(1.861, 1),
    "g6e.2xlarge": InstancePrice(2.24208, 1),
    "g6e.12xlarge": InstancePrice(10.49264, 4),
    "g6e.48xlarge": InstancePrice(30.13108, 8),
    # NVIDIA V100 / A100 / H100
    "p3.2xlarge": InstancePrice(3.06, 1),
    "p3.8xlarge": InstancePrice(12.24, 4),
    "p3.16xlarge": InstancePrice(24.48, 8),
    "p4d.24xlarge": InstancePrice(21.9576, 8),
    "p5.48xlarge": InstancePrice(55.04, 8),
    # AWS Trainium / Inferentia (accelerator chips counted as GPUs)
    "trn1.2xlarge": InstancePrice(1.34375, 1),
    "trn1.32xlarge": InstancePrice(21.50, 16),
    "inf2.xlarge": InstancePrice(0.7582, 1),
    "inf2.8xlarge": InstancePrice(1.9679, 1),
    "inf2.24xlarge": InstancePrice(6.4906, 6),
    "inf2.48xlarge": InstancePrice(12.9813, 12),
    "dl1.24xlarge": InstancePrice(13.10904, 8),
    # General purpose (serving CPU nodes, system pods)
    "t3.medium": InstancePrice(0.0416, 0),
    "t3.large": InstancePrice(0.0832, 0),
    "m6i.large": InstancePrice(0.096, 0),
    "m6i.xlarge": InstancePrice(0.192, 0),
    "m6i.2xlarge": InstancePrice(0.384, 0),
    "m7i.large": InstancePrice(0.1008, 0),
    "m7i.xlarge": InstancePrice(0.2016, 0),
    "c6i.xlarge": InstancePrice(0.17, 0),
}

ELASTICACHE_HOURLY: dict[str, float] = {
    "cache.t4g.micro": 0.016,
    "cache.t4g.small": 0.032,
    "cache.t4g.medium": 0.065,
    "cache.m7g.large": 0.158,
    "cache.m7g.xlarge": 0.315,
    "cache.r7g.large": 0.219,
    "cache.r7g.xlarge": 0.437,
    "cache.r6g.large": 0.206,
}

EKS_CONTROL_PLANE_HOURLY = 0.10
NAT_GATEWAY_HOURLY = 0.045
INTERFACE_ENDPOINT_HOURLY_PER_AZ = 0.01
KMS_KEY_MONTHLY = 1.0
# Secrets Manager, per secret and month (API calls, per 10,000, left out).
SECRET_MONTHLY = 0.40
GP3_GB_MONTHLY = 0.08


def is_gpu_instance_type(instance_type: str) -> bool:
    """p*, g*, trn*, inf* and dl* families are the accelerated ones."""
    return bool(GPU_FAMILY.match(instance_type))


def instance_price(instance_type: str) -> InstancePrice:
    try:
        return EC2[instance_type]
    except KeyError:
        known = ", ".join(sorted(t for t in EC2 if is_gpu_instance_type(t)))
        raise UserError(f"instance type {instance_type!r} has no list price; use one of: {known}") from None


def on_demand_hourly(instance_type: str) -> float:
    return instance_price(instance_type).on_demand_hourly


def gpus_per_instance(instance_type: str) -> int:
    return instance_price(instance_type).gpus


def elasticache_hourly(node_type: str) -> float:
    try:
        return ELASTICACHE_HOURLY[node_type]
    except KeyError:
        raise UserError(
            f"node type {node_type!r} has no list price; use one of: {', '.join(sorted(ELASTICACHE_HOURLY))}"
        ) from None


def spot_quote(
    instance_type: str, ec2_client: Any | None = None, availability_zone: str | None = None
) -> tuple[float, str]:
    """Current spot price and its source: the lowest recent price in the spot price history, else the
    documented discount. `ec2_client` is a boto3 EC2 client, or None to not ask AWS."""
    discounted = on_demand_hourly(instance_type) * (1 - DEFAULT_SPOT_DISCOUNT)
    fallback = (discounted, f"on-demand less {DEFAULT_SPOT_DISCOUNT:.0%}")
    if ec2_client is None:
        return fallback
    kwargs: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "MaxResults": 100,
    }
    if availability_zone:
        kwargs["AvailabilityZone"] = availability_zone
    try:
        history = ec2_client.describe_spot_price_history(**kwargs).get("SpotPriceHistory", [])
    except Exception:  # any failure to ask means "use the documented discount"
        return fallback
    prices = [float(item["SpotPrice"]) for item in history if item.get("SpotPrice")]
    return (min(prices), "describe_spot_price_history") if prices else fallback


def spot_hourly(
    instance_type: str, ec2_client: Any | None = None, availability_zone: str | None = None
) -> float:
    return spot_quote(instance_type, ec2_client, availability_zone)[0]
