"""The reaper: decides which training stacks and orphaned run resources to destroy, and does it safely.

Deciding is a pure function of a stack's tags and facts read from AWS (`decide`), so it is proven
by property-based tests. Acting goes through the same `StackBackend` as `mlp train`, under a
per-stack lock, and ends with a receipt of anything still billing. It never deletes S3 objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from finops.costs import tag_value_cost_usd
from finops.locks import LockHeld, Locks
from finops.run_resources import (
    TRAINING_STACK_PREFIX,
    RunResource,
    delete_run_resource,
    find_run_resources,
    proven_run_id,
    run_instance_ids,
)
from infra.training.automation import StackBackend, StackSummary
from infra.training.checkpoints import Completion, read_completion
from infra.training.lifecycle import empty_program
from mlp import aws
from mlp.tags import ENVIRONMENT, EXPIRES_AT, RUN_ID, is_ephemeral, normalize_tags, parse_expires_at

PROD = "prod"
DEFAULT_GRACE_MINUTES = 60
# Runs are bounded to days; a month of Cost Explorer covers any of them.
RUN_COST_LOOKBACK = timedelta(days=30)


@dataclass(frozen=True)
class RunFacts:
    """What AWS says about one training stack's run."""

    completion: Completion | None = None
    instance_ids: tuple[str, ...] = ()
    # Idle hours by instance id, for the instances the idle-GPU scan found idle.
    idle_hours: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ReapPolicy:
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES)
    # Environments whose config sets `training.reapProd: true`.
    prod_opt_in: bool = False
    # Names of environment stacks: never candidates, whatever their tags say.
    environment_stacks: frozenset[str] = frozenset({"dev", "prod"})


@dataclass(frozen=True)
class Candidate:
    stack: str
    run_id: str
    reason: str
    action: str
    why: str
    notify: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "run_id": self.run_id,
            "reason": self.reason,
            "action": self.action,
            "why": self.why,
        }


def _safety_refusal(stack: str, tags: dict[str, str], policy: ReapPolicy) -> str | None:
    """Why this stack may not be touched, or None when its tags prove it is an ephemeral run."""
    run_id = tags.get(RUN_ID, "")
    if stack in policy.environment_stacks or not stack.startswith(TRAINING_STACK_PREFIX):
        return "an environment stack, never reaped"
    if not is_ephemeral(tags):
        return "not tagged ephemeral=true with a run-id"
    if stack != f"{TRAINING_STACK_PREFIX}{run_id}":
        return f"stack name does not match its run-id {run_id!r}"
    if tags.get(ENVIRONMENT) == PROD and not policy.prod_opt_in:
        return "environment=prod and prod has not opted in (training.reapProd)"
    return None


def decide(stack: StackSummary, facts: RunFacts, policy: ReapPolicy, now: datetime) -> Candidate | None:
    """Whether a training stack is a candidate, why, and whether to destroy it now; None if neither."""
    tags = normalize_tags(stack.tags)
    run_id = tags.get(RUN_ID, "")
    expires_at = _expires_at(tags)
    instances = set(facts.instance_ids)
    all_idle = bool(instances) and instances <= set(facts.idle_hours)
    idle_for = min((facts.idle_hours[i] for i in instances), default=0.0) if all_idle else 0.0

    if facts.completion is not None and facts.completion.verified:
        reason, ready, why = "completed", True, facts.completion.why
    elif expires_at is not None and now >= expires_at:
        overdue = now - expires_at
        ready = overdue >= policy.grace
        why = f"expired {_minutes(overdue)} min ago (expires-at {tags[EXPIRES_AT]}); no verified _COMPLETE"
        reason = "expired"
    elif all_idle:
        ready = timedelta(hours=idle_for) >= policy.grace
        why = f"all {len(instances)} instance(s) idle for {idle_for:.1f} h"
        reason = "idle"
    else:
        return None

    refusal = _safety_refusal(stack.name, tags, policy)
    if refusal is not None:
        return Candidate(stack.name, run_id, reason, "skip", f"{why}; but {refusal}")
    if not ready:
        return Candidate(
            stack.name,
            run_id,
            reason,
            "skip",
            f"{why}; within the {_minutes(policy.grace)} min grace period, notified",
            notify=True,
        )
    return Candidate(stack.name, run_id, reason, "destroy", why)


def decide_orphans(
    resources: Sequence[RunResource], stacks: Sequence[StackSummary], policy: ReapPolicy
) -> list[Candidate]:
    """Runs with AWS resources but no stack left (lost state, a destroy that failed half-way)."""
    existing = {summary.name for summary in stacks}
    by_run: dict[str, list[RunResource]] = {}
    for resource in resources:
        if proven_run_id(resource.tags) == resource.run_id:
            by_run.setdefault(resource.run_id, []).append(resource)
    candidates = []
    for run_id, owned in sorted(by_run.items()):
        stack = f"{TRAINING_STACK_PREFIX}{run_id}"
        if stack in existing:
            continue
        why = f"{len(owned)} resource(s) tagged run-id={run_id} and no stack {stack}"
        if any(item.tags.get(ENVIRONMENT) == PROD for item in owned) and not policy.prod_opt_in:
            candidates.append(
                Candidate(stack, run_id, "orphaned", "skip", f"{why}; but environment=prod has not opted in")
            )
        else:
            candidates.append(Candidate(stack, run_id, "orphaned", "destroy", why))
    return candidates


def _expires_at(tags: dict[str, str]) -> datetime | None:
    try:
        return parse_expires_at(tags[EXPIRES_AT]) if tags.get(EXPIRES_AT) else None
    except ValueError:
        return None


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


@dataclass(frozen=True)
class Receipt:
    run_id: str
    removed: list[str]
    leaks: list[dict[str, Any]]
    run_cost_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "removed": self.removed,
            "leaks": self.leaks,
            "run_cost_usd": self.run_cost_usd,
        }


@dataclass
class ReapResult:
    applied: bool
    candidates: list[Candidate]
    receipts: list[Receipt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        return any(receipt.leaks for receipt in self.receipts)

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "candidates": [candidate.to_json() for candidate in self.candidates],
            "receipts": [receipt.to_json() for receipt in self.receipts],
            "errors": self.errors,
        }


class Reaper:
    """Reads the backend and AWS, decides, and (with `apply`) destroys, sweeps and writes receipts."""

    def __init__(
        self,
        backend: StackBackend,
        *,
        regions: Sequence[str],
        policy: ReapPolicy,
        facts: Callable[[StackSummary], RunFacts],
        locks: Locks,
        run_cost: Callable[[str], float | None],
        log: Callable[[str], None],
        notify: Callable[[str], None],
    ) -> None:
        self.backend = backend
        self.regions = list(regions)
        self.policy = policy
        self.facts = facts
        self.locks = locks
        self.run_cost = run_cost
        self.log = log
        self.notify = notify

    def plan(self, now: datetime) -> list[Candidate]:
        stacks = self.backend.list_stacks()
        candidates = []
        for summary in sorted(stacks, key=lambda s: s.name):
            if not summary.name.startswith(TRAINING_STACK_PREFIX):
                continue
            candidate = decide(summary, self.facts(summary), self.policy, now)
            if candidate is not None:
                candidates.append(candidate)
        candidates.extend(decide_orphans(find_run_resources(self.regions), stacks, self.policy))
        return candidates

    def run(self, *, apply: bool, now: datetime | None = None) -> ReapResult:
        candidates = self.plan(now or datetime.now(UTC))
        result = ReapResult(applied=apply, candidates=candidates)
        for candidate in candidates:
            self.log(f"{candidate.action:8} {candidate.stack} [{candidate.reason}] {candidate.why}")
            if candidate.notify:
                self.notify(
                    f"training run {candidate.run_id} ({candidate.stack}) is {candidate.reason}: {candidate.why}"
                )
            if not apply or candidate.action != "destroy":
                continue
            try:
                with self.locks.hold(candidate.stack):
                    result.receipts.append(self._act(candidate))
            except LockHeld as held:
                result.errors.append(str(held))
                self.log(str(held))
        return result

    def _act(self, candidate: Candidate) -> Receipt:
        before = find_run_resources(self.regions, candidate.run_id)
        if candidate.reason == "orphaned":
            for resource in before:
                delete_run_resource(resource)
        else:
            self.backend.destroy(candidate.stack, empty_program, on_output=self.log)
            self.backend.remove(candidate.stack)
        return take_receipt(self.regions, candidate.run_id, before, self.run_cost, self.log)


def take_receipt(
    regions: Sequence[str],
    run_id: str,
    before: Sequence[RunResource],
    run_cost: Callable[[str], float | None],
    log: Callable[[str], None],
) -> Receipt:
    """After a destroy: what went, what is still tagged with the run (a leak), what the run cost."""
    after = find_run_resources(regions, run_id)
    left = {item.arn for item in after}
    receipt = Receipt(
        run_id=run_id,
        removed=[item.arn for item in before if item.arn not in left],
        leaks=[item.to_json() for item in after],
        run_cost_usd=run_cost(run_id),
    )
    for leak in receipt.leaks:
        log(f"LEAK after destroying train-{run_id}: {leak['arn']} (${leak['hourly_cost_usd']:.4f}/h)")
    return receipt


def aws_facts(
    backend: StackBackend, regions: Sequence[str], idle_hours: dict[str, float]
) -> Callable[[StackSummary], RunFacts]:
    """Facts from AWS: the run's completion marker, its live instances, and which of them are idle."""

    def facts(summary: StackSummary) -> RunFacts:
        run_id = normalize_tags(summary.tags).get(RUN_ID, "")
        if not run_id:
            return RunFacts()
        bucket = backend.outputs(summary.name).get("checkpointBucket")
        completion = read_completion(aws.client("s3"), bucket, run_id) if bucket else None
        return RunFacts(
            completion=completion, instance_ids=run_instance_ids(regions, run_id), idle_hours=idle_hours
        )

    return facts


def run_cost_usd(run_id: str, now: datetime | None = None) -> float | None:
    """The run's cost over the last month from Cost Explorer; None until it has data for the run."""
    today = (now or datetime.now(UTC)).date()
    return tag_value_cost_usd(RUN_ID, run_id, today - RUN_COST_LOOKBACK, today + timedelta(days=1))


def expired_run_leftovers(
    regions: Sequence[str], now: datetime, grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES)
) -> list[dict[str, Any]]:
    """Runs past expiry (plus grace) that still have resources: what the nightly report flags as leaks.

    Needs only AWS, not the Pulumi backend: a run past its `expires-at` should own nothing, whether
    its stack still exists or not, so every resource left is billing for nothing.
    """
    by_run: dict[str, list[RunResource]] = {}
    for resource in find_run_resources(regions):
        by_run.setdefault(resource.run_id, []).append(resource)
    leftovers = []
    for run_id, owned in sorted(by_run.items()):
        expiries = [moment for moment in (_expires_at(item.tags) for item in owned) if moment is not None]
        if not expiries or now < max(expiries) + grace:
            continue
        hourly = sum(item.hourly_cost_usd for item in owned)
        leftovers.append(
            {
                "stack": f"{TRAINING_STACK_PREFIX}{run_id}",
                "run_id": run_id,
                "reason": "expired",
                "action": "destroy",
                "why": f"{len(owned)} resource(s) still billing ${hourly:.4f}/h after expires-at {max(expiries).isoformat()}",
                "hourly_cost_usd": round(hourly, 4),
                "resources": [item.to_json() for item in owned],
            }
        )
    return leftovers
