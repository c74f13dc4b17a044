"""What a training run owns in AWS, found through the inventory registry by the run's tags.

Only resources whose tags prove they belong to a run are returned: `ephemeral=true`, a `run-id`,
and a `pulumi-stack` equal to `train-<run-id>`. S3 is never among them: checkpoints stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from finops import inventory
from finops.inventory import Resource, TagFilter
from infra.config import TRAINING_STACK_PREFIX
from mlp.tags import EPHEMERAL, EPHEMERAL_VALUE, PULUMI_STACK, RUN_ID, normalize_tags

# An instance AWS is already terminating: it is going, neither a leak nor something left to delete.
TERMINATING_STATES = frozenset({"shutting-down", "terminated"})


def proven_run_id(tags: Any) -> str | None:
    """The run a resource belongs to, only when its tags prove it; otherwise None."""
    present = normalize_tags(tags)
    run_id = present.get(RUN_ID, "").strip()
    if not run_id or present.get(EPHEMERAL) != EPHEMERAL_VALUE:
        return None
    if present.get(PULUMI_STACK) != f"{TRAINING_STACK_PREFIX}{run_id}":
        return None
    return run_id


def run_tag_filter(run_id: str | None = None) -> TagFilter:
    """Resources tagged ephemeral, of `run_id` or of any run."""
    if run_id:
        return TagFilter(equals={EPHEMERAL: EPHEMERAL_VALUE, RUN_ID: run_id})
    return TagFilter(equals={EPHEMERAL: EPHEMERAL_VALUE}, present=(RUN_ID,))


def is_terminating(resource: Resource) -> bool:
    return resource.kind == "ec2:instance" and (
        resource.attributes.get("State", {}).get("Name") in TERMINATING_STATES
    )


def find_run_resources(regions: Sequence[str], account_id: str, run_id: str | None = None) -> list[Resource]:
    """Resources proven to belong to `run_id` (or to any run when None), in delete order."""
    types = inventory.run_resource_types()
    found = inventory.scan([t.kind for t in types], regions, account_id, run_tag_filter(run_id))
    order = {t.kind: t.delete_order or 0 for t in types}
    proven = [
        item for item in found if (owner := proven_run_id(item.tags)) and (run_id is None or owner == run_id)
    ]
    return sorted(proven, key=lambda item: order[item.kind])


def by_run(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    """Proven run resources grouped by their run id, each group in the order given."""
    grouped: dict[str, list[Resource]] = {}
    for resource in resources:
        owner = proven_run_id(resource.tags)
        if owner:
            grouped.setdefault(owner, []).append(resource)
    return grouped
