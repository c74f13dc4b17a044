"""ElastiCache replication groups and the stand-alone cache clusters outside any group."""

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
    tagging_api_tags,
)
from mlp import pricing
from mlp.tags import normalize_tags

SERVICE = "Amazon ElastiCache"
PRICE_SOURCE = "ElastiCache on-demand node list prices (mlp.pricing) times the number of nodes"
TAG_TYPES = ["elasticache:replicationgroup", "elasticache:cluster"]


def node_hourly_cost(node_type: str | None, nodes: int) -> float | None:
    if node_type not in pricing.ELASTICACHE_HOURLY:
        return None
    return pricing.ELASTICACHE_HOURLY[node_type] * nodes


class _Tags:
    """The tagging API's answer once per enumeration, ListTagsForResource for whatever it missed."""

    def __init__(self, scope: Scope) -> None:
        self.elasticache = scope.client("elasticache")
        self.known = tagging_api_tags(scope, TAG_TYPES)

    def of(self, arn: str) -> dict[str, str] | None:
        """The resource's tags, or None when it is gone since the listing."""
        if arn in self.known:
            return self.known[arn]
        answer = if_exists(lambda: self.elasticache.list_tags_for_resource(ResourceName=arn))
        return None if answer is None else normalize_tags(answer.get("TagList"))


def _replication_groups(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    tags = _Tags(scope)
    for page in pages(tags.elasticache, "describe_replication_groups"):
        for group in page.get("ReplicationGroups", []):
            group_tags = tags.of(group["ARN"])
            if group_tags is None:
                continue
            resource = make_resource(
                "elasticache:replicationgroup",
                group["ReplicationGroupId"],
                group["ARN"],
                scope,
                group_tags,
                hourly_cost_usd=node_hourly_cost(
                    group.get("CacheNodeType"), len(group.get("MemberClusters", []))
                ),
                attributes=group,
            )
            yield from filtered([resource], tag_filter)


def _clusters(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    tags = _Tags(scope)
    for page in pages(tags.elasticache, "describe_cache_clusters"):
        for cluster in page.get("CacheClusters", []):
            # Members of a replication group are billed and reported through their group.
            if cluster.get("ReplicationGroupId"):
                continue
            cluster_tags = tags.of(cluster["ARN"])
            if cluster_tags is None:
                continue
            resource = make_resource(
                "elasticache:cluster",
                cluster["CacheClusterId"],
                cluster["ARN"],
                scope,
                cluster_tags,
                hourly_cost_usd=node_hourly_cost(
                    cluster.get("CacheNodeType"), cluster.get("NumCacheNodes", 0)
                ),
                attributes=cluster,
            )
            yield from filtered([resource], tag_filter)


register(
    ResourceType(
        kind="elasticache:replicationgroup",
        service="elasticache",
        enumerate=_replication_groups,
        cost_service=SERVICE,
        price_source=PRICE_SOURCE,
        untagged_scan=True,
    )
)
register(
    ResourceType(
        kind="elasticache:cluster",
        service="elasticache",
        enumerate=_clusters,
        cost_service=SERVICE,
        price_source=PRICE_SOURCE,
        untagged_scan=True,
    )
)
