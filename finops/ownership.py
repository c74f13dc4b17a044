"""Ownership proofs: a run's resources are deleted only when each, and all they would take with them, is the run's.

A resource is the run's when its tags prove it (`ephemeral=true`, `run-id=R`, `pulumi-stack=train-R`)
and it is not prod unless prod opted in. Deleting it is safe only when every dependent the registry
declares for its type (group members, volumes deleted on termination, the profiles holding a role,
the groups using a launch template, ...) is proven to be R's as well. One unproven dependent refuses
the whole run: nothing of it is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finops import inventory
from finops.inventory import GLOBAL, Resource, Scope
from finops.run_resources import proven_run_id
from infra.config import PROD, TRAINING_STACK_PREFIX
from mlp.tags import ENVIRONMENT, RUN_ID


@dataclass(frozen=True)
class RunProof:
    run_id: str
    resources: tuple[Resource, ...]
    # Why the run may not be touched, one line per unproven resource or dependent; empty when proven.
    refusals: tuple[str, ...] = ()

    @property
    def proven(self) -> bool:
        return not self.refusals


def prove_run(run_id: str, resources: Sequence[Resource], *, prod_opt_in: bool, home_region: str) -> RunProof:
    """Prove that deleting `resources` touches nothing that is not `run_id`'s.

    `home_region` is where global resources (IAM) are asked about their dependents.
    """
    stack = f"{TRAINING_STACK_PREFIX}{run_id}"
    refusals: list[str] = []
    for resource in resources:
        what = f"{resource.kind} {resource.resource_id}"
        if proven_run_id(resource.tags) != run_id:
            refusals.append(f"{what} is not tagged ephemeral=true, {RUN_ID}={run_id}, pulumi-stack={stack}")
            continue
        if resource.tags.get(ENVIRONMENT) == PROD and not prod_opt_in:
            refusals.append(f"{what} is environment=prod and prod has not opted in (training.reapProd)")
            continue
        declaration = inventory.resource_type(resource.kind)
        if declaration.dependents is None:
            continue
        region = home_region if resource.region == GLOBAL else resource.region
        for dependent in declaration.dependents(Scope(region, resource.account_id), resource):
            if proven_run_id(dependent.tags) != run_id:
                refusals.append(
                    f"{what}: {dependent.relation} {dependent.kind} {dependent.resource_id} "
                    f"is not run {run_id}'s"
                )
    return RunProof(run_id, tuple(resources), tuple(dict.fromkeys(refusals)))
