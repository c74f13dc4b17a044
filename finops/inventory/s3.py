"""S3 buckets, each in its own region: the bucket list is global, so each region asks only for its own.

Never a run resource: checkpoints outlive every run and are never deleted by the sweeper.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.exceptions

from finops.inventory.core import (
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    error_code,
    filtered,
    if_exists,
    make_resource,
    pages,
    register,
    tagging_api_tags,
)
from mlp.tags import normalize_tags

# Unpaginated listings stop at 10,000 buckets, and moto answers no continuation token: the largest
# page AWS allows covers both.
LIST_BUCKETS_PAGE_SIZE = 10_000
PRICE_SOURCE = "not priced: S3 bills stored GB-months and requests, not a rate per bucket-hour"


def bucket_region(s3: Any, name: str) -> str | None:
    """Where a bucket lives, or None when it is gone."""
    answer = if_exists(lambda: s3.get_bucket_location(Bucket=name))
    if answer is None:
        return None
    location = answer.get("LocationConstraint")
    # Buckets of us-east-1 answer no constraint; the oldest EU buckets answer "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _bucket_tags(s3: Any, name: str) -> dict[str, str] | None:
    """A bucket's tags ({} when it has none), or None when it is gone."""
    try:
        answer = if_exists(lambda: s3.get_bucket_tagging(Bucket=name))
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "NoSuchTagSet":
            return {}
        raise
    return None if answer is None else normalize_tags(answer.get("TagSet"))


def _buckets(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    s3 = scope.client("s3")
    known_tags = tagging_api_tags(scope, ["s3"])
    listing = pages(
        s3,
        "list_buckets",
        BucketRegion=scope.region,
        PaginationConfig={"PageSize": LIST_BUCKETS_PAGE_SIZE},
    )
    for page in listing:
        for bucket in page.get("Buckets", []):
            name = bucket["Name"]
            # AWS names each bucket's region in the listing; where an endpoint does not (moto),
            # asking keeps another region's bucket out even if it ignored BucketRegion.
            region = bucket.get("BucketRegion") or bucket_region(s3, name)
            if region != scope.region:
                continue
            arn = f"arn:aws:s3:::{name}"
            tags = known_tags[arn] if arn in known_tags else _bucket_tags(s3, name)
            if tags is None:
                continue
            resource = make_resource(
                "s3:bucket",
                name,
                arn,
                scope,
                tags,
                hourly_cost_usd=None,
                attributes={**bucket, "BucketRegion": region},
            )
            yield from filtered([resource], tag_filter)


register(
    ResourceType(
        kind="s3:bucket",
        service="s3",
        enumerate=_buckets,
        cost_service="Amazon Simple Storage Service",
        price_source=PRICE_SOURCE,
        untagged_scan=True,
    )
)
