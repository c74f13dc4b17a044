"""SQS queues: a training run's spot-interruption queue."""

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
    no_dependents,
    pages,
    register,
)

# ListQueues answers a NextToken only when MaxResults is set, so without a page size it stops at 1000.
LIST_QUEUES_PAGE_SIZE = 1000


def queue_arn(region: str, queue_url: str) -> str:
    """The ARN from the URL (https://sqs.<region>.amazonaws.com/<account>/<name>): no call per queue."""
    account_id, name = queue_url.rstrip("/").split("/")[-2:]
    return f"arn:aws:sqs:{region}:{account_id}:{name}"


def _queues(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    sqs = scope.client("sqs")
    for page in pages(sqs, "list_queues", PaginationConfig={"PageSize": LIST_QUEUES_PAGE_SIZE}):
        for url in page.get("QueueUrls", []):
            # SQS cannot filter or list tags in bulk; a queue deleted since the listing is skipped.
            answer = if_exists(lambda url=url: sqs.list_queue_tags(QueueUrl=url))
            if answer is None:
                continue
            resource = make_resource(
                "sqs:queue",
                url,
                queue_arn(scope.region, url),
                scope,
                answer.get("Tags"),
                attributes={"QueueUrl": url, "QueueName": url.rstrip("/").split("/")[-1]},
            )
            yield from filtered([resource], tag_filter)


def _delete(scope: Scope, resource: Resource) -> None:
    sqs = scope.client("sqs")
    if_exists(lambda: sqs.delete_queue(QueueUrl=resource.resource_id))


register(
    ResourceType(
        kind="sqs:queue",
        service="sqs",
        enumerate=_queues,
        cost_service="Amazon Simple Queue Service",
        untagged_scan=False,
        run_resource=True,
        dependents=no_dependents,
        delete=_delete,
        delete_order=70,
    )
)
