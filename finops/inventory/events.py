"""EventBridge rules of the default bus: a training run's spot-interruption rules."""

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

# RemoveTargets takes at most this many target ids per call.
REMOVE_TARGETS_LIMIT = 100


def _rules(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    events = scope.client("events")
    for page in pages(events, "list_rules"):
        for rule in page.get("Rules", []):
            # EventBridge lists no tags; a rule deleted since the listing is skipped.
            answer = if_exists(lambda rule=rule: events.list_tags_for_resource(ResourceARN=rule["Arn"]))
            if answer is None:
                continue
            resource = make_resource(
                "events:rule",
                rule["Name"],
                rule["Arn"],
                scope,
                answer.get("Tags"),
                attributes=rule,
            )
            yield from filtered([resource], tag_filter)


def _delete(scope: Scope, resource: Resource) -> None:
    """Targets off (removing one deletes nothing), then the rule."""
    events = scope.client("events")
    name = resource.resource_id
    targets = if_exists(
        lambda: [
            target["Id"]
            for page in pages(events, "list_targets_by_rule", Rule=name)
            for target in page.get("Targets", [])
        ]
    )
    if targets is None:
        return
    for start in range(0, len(targets), REMOVE_TARGETS_LIMIT):
        answer = events.remove_targets(Rule=name, Ids=targets[start : start + REMOVE_TARGETS_LIMIT])
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"rule {name}: targets not removed: {answer.get('FailedEntries')}")
    if_exists(lambda: events.delete_rule(Name=name))


register(
    ResourceType(
        kind="events:rule",
        service="events",
        enumerate=_rules,
        untagged_scan=False,
        run_resource=True,
        dependents=no_dependents,
        delete=_delete,
        delete_order=60,
    )
)
