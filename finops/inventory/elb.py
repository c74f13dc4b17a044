"""Load balancers: ALBs/NLBs (elbv2) and classic ELBs, one kind as the tagging API names them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
from mlp.tags import normalize_tags

KIND = "elasticloadbalancing:loadbalancer"
# DescribeTags of both APIs takes at most 20 load balancers per call.
DESCRIBE_TAGS_LIMIT = 20
PRICE_SOURCE = "not priced: mlp.pricing has no load balancer rate (hourly plus capacity units)"


def _tags_in_batches(
    describe_tags: Callable[[list[str]], list[dict[str, Any]]], ids: Sequence[str], id_key: str
) -> dict[str, dict[str, str]]:
    """Tags of each balancer that still exists, 20 to a call; ids missing from the answer are gone."""
    tags: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), DESCRIBE_TAGS_LIMIT):
        batch = list(ids[start : start + DESCRIBE_TAGS_LIMIT])
        descriptions = if_exists(lambda batch=batch: describe_tags(batch))
        if descriptions is None:
            # One balancer of the batch went since the listing and failed the call: ask one at a time.
            descriptions = [
                description
                for one in batch
                for description in if_exists(lambda one=one: describe_tags([one])) or []
            ]
        for description in descriptions:
            tags[description[id_key]] = normalize_tags(description.get("Tags"))
    return tags


def _balancers(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    yield from filtered(_current_generation(scope), tag_filter)
    yield from filtered(_classic(scope), tag_filter)


def _current_generation(scope: Scope) -> Iterator[Resource]:
    elbv2 = scope.client("elbv2")
    known_tags = tagging_api_tags(scope, [KIND])
    balancers = [
        balancer
        for page in pages(elbv2, "describe_load_balancers")
        for balancer in page.get("LoadBalancers", [])
    ]
    unknown = [
        balancer["LoadBalancerArn"] for balancer in balancers if balancer["LoadBalancerArn"] not in known_tags
    ]
    known_tags.update(
        _tags_in_batches(
            lambda arns: elbv2.describe_tags(ResourceArns=arns).get("TagDescriptions", []),
            unknown,
            "ResourceArn",
        )
    )
    for balancer in balancers:
        arn = balancer["LoadBalancerArn"]
        if arn in known_tags:
            yield make_resource(
                KIND, arn, arn, scope, known_tags[arn], hourly_cost_usd=None, attributes=balancer
            )


def _classic(scope: Scope) -> Iterator[Resource]:
    """Classic (v1) load balancers: a separate API, still billing by the hour, named rather than ARN'd."""
    elb = scope.client("elb")
    balancers = [
        balancer
        for page in pages(elb, "describe_load_balancers")
        for balancer in page.get("LoadBalancerDescriptions", [])
    ]
    tags = _tags_in_batches(
        lambda names: elb.describe_tags(LoadBalancerNames=names).get("TagDescriptions", []),
        [balancer["LoadBalancerName"] for balancer in balancers],
        "LoadBalancerName",
    )
    for balancer in balancers:
        name = balancer["LoadBalancerName"]
        if name not in tags:
            continue
        arn = f"arn:aws:elasticloadbalancing:{scope.region}:{scope.account_id}:loadbalancer/{name}"
        # "Type" as elbv2 spells it, so consumers tell the generations apart from one field.
        attributes = {**balancer, "Type": "classic"}
        yield make_resource(KIND, name, arn, scope, tags[name], hourly_cost_usd=None, attributes=attributes)


register(
    ResourceType(
        kind=KIND,
        service="elbv2",
        enumerate=_balancers,
        cost_service="Amazon Elastic Load Balancing",
        price_source=PRICE_SOURCE,
        untagged_scan=True,
    )
)
