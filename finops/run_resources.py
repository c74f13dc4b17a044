"""What a training run owns in AWS, found through the inventory registry by the run's tags.

Only resources whose tags prove they belong to a run are returned: `ephemeral=true`, a `run-id`,
and a `pulumi-stack` equal to `train-<run-id>`. S3 is never among them: checkpoints stay. Each
resource is found, and so later proven and deleted, in one account with that account's session:
runs are grouped per account, never across them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from finops import inventory
from finops.inventory import Resource, Scope, TagFilter
from finops.scope import DEFAULT_CONCURRENCY, Gap, ScanScope, run_targets
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


def find_run_resources(
    regions: Sequence[str],
    account_id: str,
    run_id: str | None = None,
    *,
    session: boto3.session.Session | None = None,
) -> list[Resource]:
    """Resources of one account proven to belong to `run_id` (or to any run when None), in delete order.

    `session` acts in the account (an assumed role's); None is the caller's own credentials.
    Global types are enumerated through the first region.
    """
    found = [
        item
        for index, region in enumerate(regions)
        for item in find_target_run_resources(
            Scope(region, account_id, session=session), run_id, with_global=index == 0
        )
    ]
    return in_delete_order(found)


def find_target_run_resources(
    target: Scope, run_id: str | None = None, *, with_global: bool
) -> list[Resource]:
    """Run resources of one account and region (global types only when `with_global`), in delete order."""
    kinds = [t.kind for t in inventory.run_resource_types()]
    found = inventory.scan_scope(kinds, target, run_tag_filter(run_id), with_global=with_global)
    return in_delete_order(
        item for item in found if (owner := proven_run_id(item.tags)) and (run_id is None or owner == run_id)
    )


def in_delete_order(resources: Iterable[Resource]) -> list[Resource]:
    """What launches or references a resource before it; a stable sort, so regions keep their order."""
    order = {t.kind: t.delete_order or 0 for t in inventory.run_resource_types()}
    return sorted(resources, key=lambda item: order[item.kind])


@dataclass
class RunSurvey:
    """What every run owns, account by account, over the targets that answered; the others are gaps."""

    # account id -> run id -> the run's resources in that account, in delete order.
    owned: dict[str, dict[str, list[Resource]]] = field(default_factory=dict)
    # account id -> its targets that answered, in the scope's order (the first is its home region).
    answered: dict[str, list[Scope]] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)

    def run_count(self) -> int:
        return sum(len(runs) for runs in self.owned.values())


def survey_runs(scope: ScanScope, *, concurrency: int = DEFAULT_CONCURRENCY) -> RunSurvey:
    """The run resources of every target of `scope`, `concurrency` targets at a time, each with its session."""
    gathered = run_targets(
        scope,
        lambda target: find_target_run_resources(target, with_global=scope.first_region_of(target)),
        concurrency=concurrency,
    )
    survey = RunSurvey(gaps=list(gathered.gaps))
    found: dict[str, list[Resource]] = {}
    for target, resources in gathered.results:
        survey.answered.setdefault(target.account_id, []).append(target)
        found.setdefault(target.account_id, []).extend(resources)
    survey.owned = {account_id: by_run(in_delete_order(items)) for account_id, items in found.items()}
    return survey


def by_run(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    """Proven run resources grouped by their run id, each group in the order given."""
    grouped: dict[str, list[Resource]] = {}
    for resource in resources:
        owner = proven_run_id(resource.tags)
        if owner:
            grouped.setdefault(owner, []).append(resource)
    return grouped
