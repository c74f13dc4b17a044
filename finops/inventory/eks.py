"""EKS clusters and their managed node groups (whose instances are priced as the EC2 instances they are)."""

from __future__ import annotations

from collections.abc import Iterator

from finops.inventory.core import (
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    filtered,
    if_exists,
    make_resource,
    pages,
    register,
)
from finops.inventory.ec2 import COMPUTE_SERVICE
from mlp import pricing

CONTROL_PLANE_PRICE_SOURCE = (
    f"EKS control plane list price (${pricing.EKS_CONTROL_PLANE_HOURLY}/hour, mlp.pricing)"
)


def _cluster_names(eks: object) -> Iterator[str]:
    for page in pages(eks, "list_clusters"):
        yield from page.get("clusters", [])


def _clusters(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    eks = scope.client("eks")
    for name in _cluster_names(eks):
        # EKS lists names only: tags and ARN need one describe per cluster; one deleted meanwhile is skipped.
        answer = if_exists(lambda name=name: eks.describe_cluster(name=name))
        if answer is None:
            continue
        cluster = answer["cluster"]
        resource = make_resource(
            "eks:cluster",
            cluster["name"],
            cluster["arn"],
            scope,
            cluster.get("tags"),
            hourly_cost_usd=pricing.EKS_CONTROL_PLANE_HOURLY,
            attributes={key: value for key, value in cluster.items() if key != "tags"},
        )
        yield from filtered([resource], tag_filter)


def _nodegroups(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    eks = scope.client("eks")
    for cluster_name in _cluster_names(eks):
        names = if_exists(
            lambda cluster_name=cluster_name: [
                name
                for page in pages(eks, "list_nodegroups", clusterName=cluster_name)
                for name in page.get("nodegroups", [])
            ]
        )
        for nodegroup_name in names or []:
            answer = if_exists(
                lambda cluster_name=cluster_name, nodegroup_name=nodegroup_name: eks.describe_nodegroup(
                    clusterName=cluster_name, nodegroupName=nodegroup_name
                )
            )
            if answer is None:
                continue
            nodegroup = answer["nodegroup"]
            resource = make_resource(
                "eks:nodegroup",
                # Node group names are unique only within their cluster.
                f"{cluster_name}/{nodegroup_name}",
                nodegroup["nodegroupArn"],
                scope,
                nodegroup.get("tags"),
                # Its nodes are priced as the EC2 instances they are.
                hourly_cost_usd=0.0,
                attributes={key: value for key, value in nodegroup.items() if key != "tags"},
            )
            yield from filtered([resource], tag_filter)


register(
    ResourceType(
        kind="eks:cluster",
        service="eks",
        enumerate=_clusters,
        cost_service="Amazon Elastic Container Service for Kubernetes",
        price_source=CONTROL_PLANE_PRICE_SOURCE,
        untagged_scan=True,
    )
)
register(
    ResourceType(
        kind="eks:nodegroup",
        service="eks",
        enumerate=_nodegroups,
        cost_service=COMPUTE_SERVICE,
        untagged_scan=True,
    )
)
