"""The registry's vocabulary: what a resource type declares, and the typed records enumeration yields.

Every AWS resource type the project knows is one `ResourceType` declaration in the module of its
service (`finops/inventory/<service>.py`), in the manner of Cloud Custodian's resource registry. The
untagged and idle scans, the orphan sweeper, the destroy receipts, the report's service join and the
sandbox all read these declarations; nothing else enumerates AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
import botocore.exceptions

from mlp import aws
from mlp.tags import RUN_ID, normalize_tags

T = TypeVar("T")

GLOBAL = "global"
# Error codes (or parts of them) by which the services say a resource does not exist.
GONE_ERROR_CODE_PARTS = ("NotFound", "NoSuchEntity", "NoSuchBucket", "NonExistentQueue", "QueueDoesNotExist")


@dataclass(frozen=True)
class Scope:
    """One account and region to enumerate; global types use `region` only for their endpoint.

    `session` acts in the account (an assumed role's); None is the caller's own credentials.
    """

    region: str
    account_id: str
    account_name: str = ""
    session: boto3.session.Session | None = field(default=None, compare=False, repr=False)

    def client(self, service: str) -> Any:
        return aws.client(service, self.region, session=self.session)


@dataclass(frozen=True)
class TagFilter:
    """Resources whose tags carry these exact values and these keys; server-side where the API filters."""

    equals: Mapping[str, str] = field(default_factory=dict)
    present: tuple[str, ...] = ()

    def matches(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(key) == value for key, value in self.equals.items()) and all(
            key in tags for key in self.present
        )

    def ec2_filters(self) -> list[dict[str, Any]]:
        """The same filter in the `Filters` shape of EC2 and Auto Scaling describe calls."""
        return [{"Name": f"tag:{key}", "Values": [value]} for key, value in self.equals.items()] + [
            {"Name": "tag-key", "Values": [key]} for key in self.present
        ]


@dataclass(frozen=True)
class Resource:
    """One AWS resource as enumerated: identity, tags, what it costs while it exists, type-specific facts."""

    kind: str
    resource_id: str
    arn: str
    region: str
    account_id: str
    tags: Mapping[str, str]
    hourly_cost_usd: float | None = 0.0
    # What the declaration's dependents/delete/consumers need (instance type, state, launch time, size,
    # attachments, ...), under the AWS API's own field names.
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.resource_id,
            "arn": self.arn,
            "region": self.region,
            "account_id": self.account_id,
            "hourly_cost_usd": None if self.hourly_cost_usd is None else round(self.hourly_cost_usd, 4),
        }


@dataclass(frozen=True)
class Dependent:
    """Something that deleting a resource would take with it or break, with its tags as AWS reports them."""

    kind: str
    resource_id: str
    tags: Mapping[str, str]
    relation: str  # why it depends, in words: "member of the group", "attached volume deleted on termination"


Enumerate = Callable[[Scope, TagFilter | None], Iterator[Resource]]
Dependents = Callable[[Scope, Resource], list[Dependent]]
Delete = Callable[[Scope, Resource], None]


@dataclass(frozen=True)
class ResourceType:
    kind: str  # one name each, Resource Groups Tagging API style: "ec2:instance"
    service: str  # the boto3 service name
    enumerate: Enumerate  # paginated; yields only resources that still exist
    cost_service: str | None = None  # where its spend shows: Cost Explorer SERVICE / FOCUS ServiceName
    price_source: str | None = (
        None  # how `hourly_cost_usd` is priced, in words; None: costs nothing by the hour
    )
    is_global: bool = False  # enumerated once per account (IAM, the S3 bucket list)
    untagged_scan: bool = True  # `mlp untagged` checks it for the mandatory tags
    run_resource: bool = False  # a training stack creates it: the sweeper and the receipts look for it
    dependents: Dependents | None = None  # what deleting it would take with it or break
    delete: Delete | None = None  # only called after every dependent is proven the run's
    delete_order: int | None = None  # lower goes first: what launches or references a resource goes before it


REGISTRY: dict[str, ResourceType] = {}


def register(resource_type: ResourceType) -> ResourceType:
    if resource_type.kind in REGISTRY:
        raise ValueError(f"resource type {resource_type.kind} is declared twice")
    if resource_type.run_resource and (resource_type.delete is None or resource_type.delete_order is None):
        raise ValueError(f"{resource_type.kind} is a run resource but declares no delete and delete order")
    REGISTRY[resource_type.kind] = resource_type
    return resource_type


def make_resource(
    kind: str,
    resource_id: str,
    arn: str,
    scope: Scope,
    tags: Any,
    *,
    hourly_cost_usd: float | None = 0.0,
    attributes: Mapping[str, Any] | None = None,
) -> Resource:
    """A `Resource` with tags normalized from any shape AWS answers with; global types get region "global"."""
    region = GLOBAL if REGISTRY.get(kind) and REGISTRY[kind].is_global else scope.region
    return Resource(
        kind,
        resource_id,
        arn,
        region,
        scope.account_id,
        normalize_tags(tags),
        hourly_cost_usd,
        dict(attributes or {}),
    )


def filtered(resources: Iterable[Resource], tag_filter: TagFilter | None) -> Iterator[Resource]:
    """Client-side tag filtering, for the APIs that cannot filter on tags themselves."""
    for resource in resources:
        if tag_filter is None or tag_filter.matches(resource.tags):
            yield resource


def no_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    """For types whose deletion takes nothing with it and breaks nothing else."""
    return []


def pages(service_client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every page of a list call through its botocore paginator, which raises on a repeated token
    rather than looping on it."""
    yield from service_client.get_paginator(operation).paginate(**kwargs)


def error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_gone(error: botocore.exceptions.ClientError) -> bool:
    """True when AWS refused because the resource no longer exists (or never did)."""
    code = error_code(error)
    if any(part in code for part in GONE_ERROR_CODE_PARTS):
        return True
    # Auto Scaling answers a missing group with a plain ValidationError.
    message = str(error.response.get("Error", {}).get("Message", ""))
    return code == "ValidationError" and "not found" in message.lower()


def if_exists(call: Callable[[], T]) -> T | None:
    """The call's answer, or None when AWS says its resource is gone; any other error is raised."""
    try:
        return call()
    except botocore.exceptions.ClientError as error:
        if is_gone(error):
            return None
        raise


def same_run(tags: Mapping[str, str], other: Mapping[str, str]) -> bool:
    """Both carry the same non-empty run id: the only proof deletes accept that two resources go together."""
    run_id = tags.get(RUN_ID, "").strip()
    return bool(run_id) and other.get(RUN_ID, "").strip() == run_id


def tagging_api_tags(scope: Scope, resource_types: list[str]) -> dict[str, dict[str, str]]:
    """Tags by ARN from the Resource Groups Tagging API: one bulk call instead of one per resource.

    It never returns never-tagged resources (nor, on some endpoints, whole services), so callers ask
    the service itself for any ARN missing here.
    """
    tagging = scope.client("resourcegroupstaggingapi")
    return {
        mapping["ResourceARN"]: normalize_tags(mapping.get("Tags"))
        for page in pages(tagging, "get_resources", ResourceTypeFilters=resource_types)
        for mapping in page.get("ResourceTagMappingList", [])
    }
