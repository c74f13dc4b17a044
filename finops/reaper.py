"""The reaper: decides which training runs to take down, proves they are its own, and does it safely.

Deciding is a pure function of a stack's tags and facts read from AWS (`decide`, `decide_orphans`),
proven by property-based tests. Every destroy candidate is then proven resource by resource
(`finops.ownership`): one resource or dependent that is not provably the run's refuses the whole run.
Acting goes through `RunTeardown` under a per-stack lock whose lease is checked before every
destructive step. Each candidate succeeds or fails on its own; the result always carries every
candidate, receipt and error. It never deletes S3 objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from finops.idle import scan_idle
from finops.inventory import Resource
from finops.locks import Locks, locks_for
from finops.run_resources import by_run, find_run_resources
from finops.teardown import Receipt, RunTeardown, run_cost_usd
from infra.config import PROD, TRAINING_STACK_PREFIX, environment_stacks, find_project_dir, load_stack_config
from infra.training.automation import PulumiAutomationBackend, StackBackend, StackSummary, backend_url
from infra.training.checkpoints import Completion, read_completion
from infra.training.state import DiyStateBackend, StackReader
from mlp import aws
from mlp.errors import ConfigError, UserError, describe
from mlp.tags import ENVIRONMENT, EXPIRES_AT, RUN_ID, is_ephemeral, normalize_tags, parse_expires_at

DEFAULT_GRACE_MINUTES = 60
GPU_TELEMETRY = "gpu"
# Always environments, even where the project has no Pulumi.<name>.yaml for them.
BUILTIN_ENVIRONMENT_STACKS = frozenset({"dev", PROD})


@dataclass(frozen=True)
class IdleEvidence:
    hours: float
    telemetry: str  # "gpu" or "cpu": what the idle-GPU scan judged the instance on


@dataclass(frozen=True)
class RunFacts:
    """What AWS says about one training stack's run."""

    completion: Completion | None = None
    instance_ids: tuple[str, ...] = ()
    # For the instances the idle-GPU scan found idle: how long, and on which telemetry.
    idle: Mapping[str, IdleEvidence] = field(default_factory=dict)


@dataclass(frozen=True)
class ReapPolicy:
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES)
    # Environments whose config sets `training.reapProd: true`.
    prod_opt_in: bool = False
    # Names of environment stacks (every Pulumi.<name>.yaml): never candidates, whatever their tags say.
    environment_stacks: frozenset[str] = BUILTIN_ENVIRONMENT_STACKS


@dataclass(frozen=True)
class Candidate:
    stack: str
    run_id: str
    reason: str  # completed | expired | idle | orphaned
    action: str  # destroy | skip | refuse
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
    all_idle = bool(instances) and instances <= set(facts.idle)
    idle_for = min((facts.idle[i].hours for i in instances), default=0.0) if all_idle else 0.0

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
        on_cpu = sorted(i for i in instances if facts.idle[i].telemetry != GPU_TELEMETRY)
        if on_cpu:
            # Without GPU telemetry a busy GPU looks idle (the agent may simply have failed to start).
            return Candidate(
                stack.name,
                run_id,
                reason,
                "skip",
                f"{why}, judged on CPU only for {', '.join(on_cpu)} (no GPU telemetry): "
                "reported, never destroyed as idle",
                notify=True,
            )
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
    owned_by_run: Mapping[str, Sequence[Resource]],
    stack_names: set[str],
    policy: ReapPolicy,
    now: datetime,
) -> list[Candidate]:
    """Runs with AWS resources and no stack (lost state, a half-failed destroy), swept only after expiry.

    An unexpired run is never an orphan, whatever the backend holds: a wrong backend URL or lost
    state must not take down live runs.
    """
    candidates = []
    for run_id, owned in sorted(owned_by_run.items()):
        stack = f"{TRAINING_STACK_PREFIX}{run_id}"
        if stack in stack_names:
            continue
        why = f"{len(owned)} resource(s) tagged run-id={run_id} and no stack {stack} on this backend"
        undated = [item for item in owned if _expires_at(item.tags) is None]
        if undated:
            first = undated[0]
            candidates.append(
                Candidate(
                    stack,
                    run_id,
                    "orphaned",
                    "skip",
                    f"{why}; but {first.kind} {first.resource_id} has no valid expires-at, so its expiry cannot be proven",
                )
            )
            continue
        latest = max(_expires_at(item.tags) for item in owned)  # type: ignore[type-var]
        if now < latest + policy.grace:
            candidates.append(
                Candidate(
                    stack,
                    run_id,
                    "orphaned",
                    "skip",
                    f"{why}; but it expires at {latest.isoformat()} (+{_minutes(policy.grace)} min grace): "
                    "an unexpired run is never swept",
                    notify=True,
                )
            )
            continue
        if any(item.tags.get(ENVIRONMENT) == PROD for item in owned) and not policy.prod_opt_in:
            candidates.append(
                Candidate(stack, run_id, "orphaned", "skip", f"{why}; but environment=prod has not opted in")
            )
            continue
        candidates.append(
            Candidate(stack, run_id, "orphaned", "destroy", f"{why}; expired {latest.isoformat()}")
        )
    return candidates


def _expires_at(tags: Mapping[str, str]) -> datetime | None:
    try:
        return parse_expires_at(tags[EXPIRES_AT]) if tags.get(EXPIRES_AT) else None
    except ValueError:
        return None


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


@dataclass
class ReapResult:
    applied: bool
    scope: dict[str, list[str]]
    candidates: list[Candidate]
    # Read before the candidates: what makes the whole picture doubtful (an empty backend, say).
    warnings: list[str] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        return any(receipt.leaks for receipt in self.receipts)

    @property
    def failed(self) -> bool:
        """Exit 1: an error, a leak, or a refused run (it keeps billing until a person looks)."""
        return bool(self.errors) or self.leaked or any(c.action == "refuse" for c in self.candidates)

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "scope": self.scope,
            "warnings": self.warnings,
            "candidates": [candidate.to_json() for candidate in self.candidates],
            "receipts": [receipt.to_json() for receipt in self.receipts],
            "errors": self.errors,
        }


class Reaper:
    """Reads the backend and AWS, decides, proves, and (with `apply`) destroys, sweeps and writes receipts."""

    def __init__(
        self,
        stacks: StackReader,
        *,
        destroyer: Callable[[], StackBackend],
        teardown: RunTeardown,
        policy: ReapPolicy,
        completion: Callable[[StackSummary], Completion | None],
        idle: Mapping[str, IdleEvidence],
        locks: Locks,
        log: Callable[[str], None],
        notify: Callable[[str], None],
    ) -> None:
        self.stacks = stacks
        self.destroyer = destroyer
        self.teardown = teardown
        self.policy = policy
        self.completion = completion
        self.idle = idle
        self.locks = locks
        self.log = log
        self.notify = notify

    def run(self, *, apply: bool, now: datetime | None = None) -> ReapResult:
        result = ReapResult(
            applied=apply,
            scope={"accounts": [self.teardown.account_id], "regions": list(self.teardown.regions)},
            candidates=[],
        )
        result.candidates = self._plan(now or datetime.now(UTC), result)
        for warning in result.warnings:
            self.log(f"WARNING {warning}")
        for candidate in result.candidates:
            self.log(f"{candidate.action:8} {candidate.stack} [{candidate.reason}] {candidate.why}")
            if candidate.notify or candidate.action == "refuse":
                self._notify(candidate, result)
            if apply and candidate.action == "destroy":
                self._act(candidate, result)
        return result

    def _plan(self, now: datetime, result: ReapResult) -> list[Candidate]:
        listed = self.stacks.list_stacks()
        training = [
            summary
            for summary in listed
            if summary.name.startswith(TRAINING_STACK_PREFIX)
            and summary.name not in self.policy.environment_stacks
        ]
        result.warnings.extend(self.stacks.warnings)
        owned = by_run(self.teardown.inventory())
        if owned and not training:
            result.warnings.insert(
                0,
                f"the state backend holds no training stack while AWS holds resources of {len(owned)} run(s): "
                "a wrong or empty backend is the usual cause (--backend, MLP_BACKEND_URL, PULUMI_BACKEND_URL)",
            )
        candidates = []
        for summary in sorted(training, key=lambda s: s.name):
            try:
                candidate = decide(summary, self._facts(summary, owned), self.policy, now)
            except Exception as error:  # one unreadable stack must not hide the others
                result.errors.append({"stack": summary.name, "error": describe(error)})
                continue
            if candidate is not None:
                candidates.append(candidate)
        # Any stack of the name owns its resources, even one whose file could not be read, and an
        # environment's never lose theirs.
        owners = {summary.name for summary in listed} | self.policy.environment_stacks
        owners |= {
            stack
            for stack in (f"{TRAINING_STACK_PREFIX}{run_id}" for run_id in owned)
            if stack not in owners and self.stacks.has_stack(stack)
        }
        candidates.extend(decide_orphans(owned, owners, self.policy, now))
        return [self._proven(candidate, owned, result) for candidate in candidates]

    def _facts(self, summary: StackSummary, owned: Mapping[str, Sequence[Resource]]) -> RunFacts:
        run_id = normalize_tags(summary.tags).get(RUN_ID, "")
        instances = tuple(item.resource_id for item in owned.get(run_id, []) if item.kind == "ec2:instance")
        return RunFacts(completion=self.completion(summary), instance_ids=instances, idle=self.idle)

    def _proven(
        self, candidate: Candidate, owned: Mapping[str, Sequence[Resource]], result: ReapResult
    ) -> Candidate:
        """A destroy candidate stays one only when every resource it would delete is proven the run's."""
        if candidate.action != "destroy":
            return candidate
        try:
            proof = self.teardown.prove(candidate.run_id, owned.get(candidate.run_id, []))
        except Exception as error:
            result.errors.append(
                {"stack": candidate.stack, "run_id": candidate.run_id, "error": describe(error)}
            )
            return replace(candidate, action="skip", why=f"{candidate.why}; but its proof failed")
        if proof.proven:
            return candidate
        return replace(
            candidate,
            action="refuse",
            why=f"{candidate.why}; refused, nothing touched: {'; '.join(proof.refusals)}",
        )

    def _notify(self, candidate: Candidate, result: ReapResult) -> None:
        try:
            self.notify(
                f"training run {candidate.run_id} ({candidate.stack}) is {candidate.reason}, "
                f"{candidate.action}: {candidate.why}"
            )
        except Exception as error:  # a chat outage must not stop the reaping
            result.errors.append(
                {
                    "stack": candidate.stack,
                    "run_id": candidate.run_id,
                    "error": f"notifying: {describe(error)}",
                }
            )

    def _act(self, candidate: Candidate, result: ReapResult) -> None:
        try:
            with self.locks.hold(candidate.stack) as lease:
                if candidate.reason == "orphaned":
                    receipt = self.teardown.sweep(candidate.run_id, lease.check)
                else:
                    receipt = self.teardown.destroy_stack(
                        candidate.stack, candidate.run_id, self._destroyer(), lease.check
                    )
        except Exception as error:  # each candidate succeeds or fails on its own
            self.log(f"ERROR {candidate.stack}: {describe(error)}")
            result.errors.append(
                {"stack": candidate.stack, "run_id": candidate.run_id, "error": describe(error)}
            )
            return
        result.receipts.append(receipt)
        result.errors.extend(
            {"stack": candidate.stack, "run_id": candidate.run_id, "error": error} for error in receipt.errors
        )

    def _destroyer(self) -> StackBackend:
        try:
            return self.destroyer()
        except UserError as error:
            raise RuntimeError(f"needs the Pulumi CLI to destroy ({error})") from None


def prod_opt_in(project_dir: Path | None = None) -> bool:
    """Prod runs are reaped only when Pulumi.prod.yaml says `training.reapProd: true`."""
    try:
        project = find_project_dir(project_dir)
    except ConfigError:
        return False
    return (project / f"Pulumi.{PROD}.yaml").is_file() and load_stack_config(PROD, project).training.reap_prod


def reap(
    *,
    apply: bool,
    grace: timedelta,
    regions: Sequence[str],
    backend: str | None,
    notify: Callable[[str], None],
    log: Callable[[str], None],
    now: datetime | None = None,
    project_dir: Path | None = None,
) -> ReapResult:
    """`mlp reap`: read the state backend (no Pulumi CLI needed) and AWS; destroy only with `apply`."""
    moment = now or datetime.now(UTC)
    url = backend_url(backend)
    reader = DiyStateBackend(url)
    opted_in = prod_opt_in(project_dir)
    policy = ReapPolicy(
        grace=grace,
        prod_opt_in=opted_in,
        environment_stacks=BUILTIN_ENVIRONMENT_STACKS | environment_stacks(project_dir),
    )
    with aws.aws_errors("reaping training runs"):
        account_id = aws.caller_account_id(regions[0])
        idle = {f.resource_id: IdleEvidence(f.idle_hours, f.telemetry) for f in scan_idle(regions).findings}
        teardown = RunTeardown(
            regions,
            account_id,
            prod_opt_in=opted_in,
            run_cost=lambda run_id: run_cost_usd(run_id, moment),
            log=log,
        )
        s3 = aws.client("s3")

        def completion(summary: StackSummary) -> Completion | None:
            run_id = normalize_tags(summary.tags).get(RUN_ID, "")
            bucket = reader.outputs(summary.name).get("checkpointBucket")
            return read_completion(s3, bucket, run_id) if bucket and run_id else None

        reaper = Reaper(
            reader,
            destroyer=lambda: PulumiAutomationBackend(url),
            teardown=teardown,
            policy=policy,
            completion=completion,
            idle=idle,
            locks=locks_for(url, lambda: aws.client("s3")),
            log=log,
            notify=notify,
        )
        return reaper.run(apply=apply, now=moment)


def expired_run_leftovers(
    regions: Sequence[str],
    now: datetime,
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES),
) -> list[dict[str, Any]]:
    """Runs past expiry (plus grace) that still have resources: what the nightly report flags as leaks.

    Needs only AWS, not the Pulumi backend: a run past its `expires-at` should own nothing, whether
    its stack still exists or not, so every resource left is billing for nothing.
    """
    leftovers = []
    account_id = aws.caller_account_id(regions[0])
    for run_id, owned in sorted(by_run(find_run_resources(regions, account_id)).items()):
        expiries = [moment for moment in (_expires_at(item.tags) for item in owned) if moment is not None]
        if not expiries or now < max(expiries) + grace:
            continue
        hourly = sum(item.hourly_cost_usd or 0.0 for item in owned)
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
