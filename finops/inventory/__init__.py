"""The one AWS inventory layer: a registry of resource types, one module per service.

    from finops import inventory
    inventory.scan(["ec2:instance"], regions, account_id, TagFilter({"ephemeral": "true"}))

Importing the package imports every service module, and so registers every declaration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Imported for their side effect of registering their declarations.
from finops.inventory import autoscaling, ec2, eks, elasticache, elb, events, iam, s3, sqs  # noqa: F401
from finops.inventory.core import (
    GLOBAL,
    REGISTRY,
    Dependent,
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    make_resource,
)

__all__ = [
    "GLOBAL",
    "REGISTRY",
    "Dependent",
    "Resource",
    "ResourceType",
    "Scope",
    "TagFilter",
    "make_resource",
    "resource_type",
    "run_resource_types",
    "scan",
    "scan_scope",
    "untagged_scan_types",
]


def resource_type(kind: str) -> ResourceType:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise KeyError(f"no resource type {kind!r} in the inventory registry") from None


def run_resource_types() -> list[ResourceType]:
    """The types a training stack creates, in delete order."""
    return sorted((t for t in REGISTRY.values() if t.run_resource), key=lambda t: t.delete_order or 0)


def untagged_scan_types() -> list[ResourceType]:
    return [t for t in REGISTRY.values() if t.untagged_scan]


def scan(
    kinds: Iterable[str],
    regions: Sequence[str],
    account_id: str,
    tag_filter: TagFilter | None = None,
) -> list[Resource]:
    """Every resource of `kinds` in `regions` of one account; global types once, through the first region."""
    # Kind by kind, so callers that list kinds in delete order get resources in that order.
    found: list[Resource] = []
    for kind in kinds:
        for index, region in enumerate(regions):
            found.extend(scan_scope([kind], Scope(region, account_id), tag_filter, with_global=index == 0))
    return found


def scan_scope(
    kinds: Iterable[str], scope: Scope, tag_filter: TagFilter | None = None, *, with_global: bool
) -> list[Resource]:
    """Every resource of `kinds` in one account and region; global types only when `with_global`."""
    found: list[Resource] = []
    for kind in kinds:
        declaration = resource_type(kind)
        if with_global or not declaration.is_global:
            found.extend(declaration.enumerate(scope, tag_filter))
    return found
