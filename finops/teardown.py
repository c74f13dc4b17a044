"""Taking a training run down, the one way every path does it: prove, destroy, then write the receipt.

`mlp train destroy --apply`, `mlp train launch --wait` and the reaper all call `RunTeardown`: it
inventories what the run owns, proves every resource and dependent is the run's (refusing the whole
run otherwise), destroys the run's stack through Pulumi or, for an orphan, deletes the proven
resources through the inventory registry, and then checks what is still tagged with the run.
A teardown acts in one account, with that account's session, for every read, proof and delete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from finops import inventory
from finops.costs import tag_value_cost_usd
from finops.inventory import Resource, Scope
from finops.locks import locks_for
from finops.ownership import RunProof, prove_run
from finops.run_resources import find_run_resources, is_terminating
from infra.training.automation import StackBackend
from infra.training.lifecycle import empty_program
from mlp import aws
from mlp.errors import UserError, describe
from mlp.tags import RUN_ID

Log = Callable[[str], None]
# Runs are bounded to days; a month of Cost Explorer covers any of them.
RUN_COST_LOOKBACK = timedelta(days=30)


def _unchecked() -> None:
    """For callers that hold no lease: there is nothing to lose."""


class Refused(UserError):
    """The run's resources are not all provably its own: nothing was touched (a finding: exit 1)."""

    exit_code = 1

    def __init__(self, proof: RunProof) -> None:
        super().__init__(
            f"refusing to take down run {proof.run_id}, nothing was touched: {'; '.join(proof.refusals)}"
        )
        self.proof = proof


@dataclass(frozen=True)
class Receipt:
    run_id: str
    removed: list[str]
    leaks: list[Resource]
    run_cost_usd: float | None
    # Deletes that failed during an orphan sweep, one line each; what they left is among the leaks.
    errors: list[str] = field(default_factory=list)
    account_id: str = ""
    # Billed, estimated and instance-hours (finops.run_costs.receipt_cost_line); None when not asked for.
    cost_line: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "account_id": self.account_id,
            "removed": self.removed,
            "leaks": [leak.to_json() for leak in self.leaks],
            "run_cost_usd": self.run_cost_usd,
            "errors": self.errors,
            "cost_line": self.cost_line,
        }

    def lines(self) -> list[str]:
        cost = "not in Cost Explorer yet" if self.run_cost_usd is None else f"${self.run_cost_usd:,.2f}"
        lines = [
            f"receipt for {self.run_id} in account {self.account_id}: {len(self.removed)} resource(s) removed, "
            f"{len(self.leaks)} left behind, run cost {cost}"
        ]
        if self.cost_line is not None:
            estimated = " (estimated in part)" if self.cost_line["estimated"] else ""
            lines.append(
                f"  cost ${self.cost_line['cost_usd']:,.2f}{estimated}: billed ${self.cost_line['billed_usd'] or 0.0:,.2f}, "
                f"estimated ${self.cost_line['estimated_usd']:,.2f}, {self.cost_line['instance_hours_total']:.2f} instance-h"
            )
        lines += [f"  LEAK {leak.arn} (${leak.hourly_cost_usd or 0.0:.4f}/h)" for leak in self.leaks]
        lines += [f"  ERROR {error}" for error in self.errors]
        return lines


@dataclass(frozen=True)
class RunTeardown:
    regions: Sequence[str]
    account_id: str
    prod_opt_in: bool
    run_cost: Callable[[str], float | None]
    log: Log
    # Acts in the account (an assumed role's); None: the caller's own credentials.
    session: boto3.session.Session | None = field(default=None, compare=False, repr=False)
    # Whether the receipt carries the run's cost line (instance-hours and estimates besides the bill).
    with_cost_line: bool = False

    def scope(self, region: str = inventory.GLOBAL) -> Scope:
        """The account in `region`, with its session; global types go through the first region."""
        where = self.regions[0] if region == inventory.GLOBAL else region
        return Scope(where, self.account_id, session=self.session)

    def inventory(self, run_id: str | None = None) -> list[Resource]:
        """What the run (or every run, with None) owns now in this account, in delete order."""
        return find_run_resources(self.regions, self.account_id, run_id, session=self.session)

    def prove(self, run_id: str, resources: Sequence[Resource] | None = None) -> RunProof:
        owned = self.inventory(run_id) if resources is None else resources
        return prove_run(run_id, owned, prod_opt_in=self.prod_opt_in, home=self.scope())

    def destroy_stack(
        self, stack: str, run_id: str, backend: StackBackend, check: Callable[[], None] = _unchecked
    ) -> Receipt:
        """`pulumi destroy` and remove the run's stack, once everything it would delete is proven the run's."""
        proof = self._proven(run_id)
        check()
        backend.destroy(stack, empty_program, on_output=self.log)
        check()
        backend.remove(stack)
        return self.receipt(run_id, proof.resources)

    def sweep(self, run_id: str, check: Callable[[], None] = _unchecked) -> Receipt:
        """Delete an orphaned run's proven resources through the registry, in delete order."""
        proof = self._proven(run_id)
        errors = []
        for resource in proof.resources:
            if is_terminating(resource):
                continue
            check()
            declaration = inventory.resource_type(resource.kind)
            try:
                declaration.delete(self.scope(resource.region), resource)  # type: ignore[misc]
            except Exception as error:  # one stuck resource must not keep the rest of the run billing
                errors.append(f"deleting {resource.kind} {resource.resource_id}: {describe(error)}")
                self.log(f"ERROR {errors[-1]}")
        return self.receipt(run_id, proof.resources, errors)

    def receipt(self, run_id: str, before: Sequence[Resource], errors: Sequence[str] = ()) -> Receipt:
        """After a destroy: what went, what is still tagged with the run (a leak), what the run cost."""
        after = [item for item in self.inventory(run_id) if not is_terminating(item)]
        left = {item.arn for item in after}
        receipt = Receipt(
            run_id=run_id,
            removed=[item.arn for item in before if item.arn not in left],
            leaks=after,
            run_cost_usd=self.run_cost(run_id),
            errors=list(errors),
            account_id=self.account_id,
            cost_line=self._cost_line(run_id) if self.with_cost_line else None,
        )
        for leak in receipt.leaks:
            self.log(
                f"LEAK after destroying train-{run_id}: {leak.arn} (${leak.hourly_cost_usd or 0.0:.4f}/h)"
            )
        return receipt

    def _cost_line(self, run_id: str) -> dict[str, Any] | None:
        # Here, not at the top: run costs load the fleet's Pulumi module, which no other teardown step needs.
        from finops.run_costs import Period, receipt_cost_line

        period = Period.last_days(RUN_COST_LOOKBACK.days)
        return receipt_cost_line([self.scope(region) for region in self.regions], run_id, period)

    def _proven(self, run_id: str) -> RunProof:
        proof = self.prove(run_id)
        if not proof.proven:
            raise Refused(proof)
        return proof


def account_teardown(
    targets: Sequence[Scope],
    *,
    prod_opt_in: bool,
    run_cost: Callable[[str], float | None],
    log: Log,
    with_cost_line: bool = False,
) -> RunTeardown:
    """The teardown of one account over its `targets` (the first its home region), with their session."""
    [account_id] = {target.account_id for target in targets}
    return RunTeardown(
        [target.region for target in targets],
        account_id,
        prod_opt_in=prod_opt_in,
        run_cost=run_cost,
        log=log,
        session=targets[0].session,
        with_cost_line=with_cost_line,
    )


def run_cost_usd(run_id: str, now: datetime | None = None) -> float | None:
    """The run's cost over the last month from Cost Explorer; None until it has data for the run."""
    today = (now or datetime.now(UTC)).date()
    return tag_value_cost_usd(RUN_ID, run_id, today - RUN_COST_LOOKBACK, today + timedelta(days=1))


def destroy_named_run(
    stack: str, run_id: str, backend: StackBackend, *, regions: Sequence[str], backend_url: str, log: Log
) -> Receipt:
    """The teardown a user asks for by naming the run (`mlp train destroy`, `launch --wait`).

    It holds the same per-stack lock as the reaper, so the two never act on one stack at once. Naming
    the run is the opt-in for prod; the ownership proofs still apply in full.
    """
    teardown = RunTeardown(
        regions,
        aws.caller_account_id(regions[0]),
        prod_opt_in=True,
        run_cost=run_cost_usd,
        log=log,
        with_cost_line=True,
    )
    with locks_for(backend_url, lambda: aws.client("s3")).hold(stack) as lease:
        return teardown.destroy_stack(stack, run_id, backend, lease.check)
