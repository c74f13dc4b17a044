"""Ownership proofs: a run's resources are deleted only when each, and all they would take with them, is the run's.

A resource is the run's when its tags prove it (`ephemeral=true`, `run-id=R`, `pulumi-stack=train-R`),
it is in the account the run lives in, and it is not prod unless prod opted in. Deleting it is safe
only when every dependent the registry declares for its type (group members, volumes deleted on
termination, the profiles holding a role, the groups using a launch template, ...) is proven to be
R's as well. One unproven dependent refuses the whole run: nothing of it is touched.

Tags are not unique across accounts: another account can hold resources tagged and named exactly
like a run's. So the account is proven apart from the tags. A stack's account is the one its state
names: the ARNs and queue URLs among its outputs carry it (`stack_account`). A run without a stack
lives in the account its resources were found in, and is proven there with that account's session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from finops import inventory
from finops.inventory import GLOBAL, Resource, Scope
from finops.run_resources import proven_run_id
from infra.config import PROD, TRAINING_STACK_PREFIX
from mlp.tags import ENVIRONMENT, RUN_ID

# Where a stack output names its account: an ARN's account field, an SQS queue URL's first segment.
_ARN_ACCOUNT = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:([0-9]{12}):")
_QUEUE_URL_ACCOUNT = re.compile(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/([0-9]{12})/")


@dataclass(frozen=True)
class StackAccount:
    """The account a stack's resources are in, as its state proves it; `account_id` None when it does not."""

    stack: str
    account_id: str | None
    why: str  # the proof, or why there is none
    # The region its `region` output names, where the stack's regional resources are; None if none.
    region: str | None = None


def stack_account(stack: str, outputs: Mapping[str, Any]) -> StackAccount:
    """Which account `stack` lives in, from the accounts its outputs' ARNs and queue URLs name.

    One account named is the proof; none (a stack never deployed, outputs all secret) or several
    is no proof, and the caller refuses rather than guess.
    """
    region = outputs.get("region") if isinstance(outputs.get("region"), str) else None
    named: dict[str, str] = {}
    for key, text in _strings(outputs):
        for pattern in (_ARN_ACCOUNT, _QUEUE_URL_ACCOUNT):
            for account_id in pattern.findall(text):
                named.setdefault(account_id, key)
    if not named:
        return StackAccount(
            stack,
            None,
            f"the state of {stack} names no account (no ARN or queue URL among its outputs)",
            region,
        )
    if len(named) > 1:
        return StackAccount(
            stack, None, f"the state of {stack} names accounts {', '.join(sorted(named))}", region
        )
    [(account_id, key)] = named.items()
    return StackAccount(stack, account_id, f"its output {key} names account {account_id}", region)


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string in an outputs document, with the dotted key it sits under."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{key}[{index}]")


@dataclass(frozen=True)
class RunProof:
    run_id: str
    resources: tuple[Resource, ...]
    # Why the run may not be touched, one line per unproven resource or dependent; empty when proven.
    refusals: tuple[str, ...] = ()

    @property
    def proven(self) -> bool:
        return not self.refusals


def prove_run(run_id: str, resources: Sequence[Resource], *, prod_opt_in: bool, home: Scope) -> RunProof:
    """Prove that deleting `resources` touches nothing that is not `run_id`'s in `home`'s account.

    `home` is the run's account with its session, in the region global resources (IAM) are asked
    about their dependents; dependents are asked about in that account only.
    """
    stack = f"{TRAINING_STACK_PREFIX}{run_id}"
    refusals: list[str] = []
    for resource in resources:
        what = f"{resource.kind} {resource.resource_id}"
        if resource.account_id != home.account_id:
            refusals.append(f"{what} is in account {resource.account_id}, not the run's {home.account_id}")
            continue
        if proven_run_id(resource.tags) != run_id:
            refusals.append(f"{what} is not tagged ephemeral=true, {RUN_ID}={run_id}, pulumi-stack={stack}")
            continue
        if resource.tags.get(ENVIRONMENT) == PROD and not prod_opt_in:
            refusals.append(f"{what} is environment=prod and prod has not opted in (training.reapProd)")
            continue
        declaration = inventory.resource_type(resource.kind)
        if declaration.dependents is None:
            continue
        where = home if resource.region == GLOBAL else replace(home, region=resource.region)
        for dependent in declaration.dependents(where, resource):
            if proven_run_id(dependent.tags) != run_id:
                refusals.append(
                    f"{what}: {dependent.relation} {dependent.kind} {dependent.resource_id} "
                    f"is not run {run_id}'s"
                )
    return RunProof(run_id, tuple(resources), tuple(dict.fromkeys(refusals)))
