"""The reaper: decides which training runs to take down, proves they are its own, and does it safely.

Deciding is a pure function of a stack's tags and facts read from AWS (`decide`, `decide_orphans`),
proven by property-based tests. Every destroy candidate is then proven resource by resource
(`finops.ownership`): one resource or dependent that is not provably the run's refuses the whole run.
Acting goes through `RunTeardown` under a per-stack lock whose lease is checked before every
destructive step. Each candidate succeeds or fails on its own; the result always carries every
candidate, receipt and error. It never deletes S3 objects.

It covers every account and region of a `ScanScope`, the targets surveyed concurrently, each with
its account's session; a target that cannot be read is a gap of the result's scope (exit 1). Proofs
hold per account: a stack is acted on only in the account its state names, an orphan only in the
account its resources were found in, and nothing of one account is ever taken for another's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from finops.idle import scan_idle
from finops.inventory import Resource, Scope
from finops.locks import Locks, locks_for
from finops.ownership import StackAccount, stack_account
from finops.run_costs import Period, RunCosts, environment_budget_usd, run_costs
from finops.run_resources import RunSurvey, by_run, find_run_resources, survey_runs
from finops.scope import DEFAULT_CONCURRENCY, Gap, ScanScope
from finops.teardown import RUN_COST_LOOKBACK, Receipt, RunTeardown, account_teardown, run_cost_usd
from infra.config import PROD, TRAINING_STACK_PREFIX, environment_stacks, find_project_dir, load_stack_config
from infra.training.automation import PulumiAutomationBackend, StackBackend, StackSummary, backend_url
from infra.training.checkpoints import Completion, read_completion
from infra.training.state import DiyStateBackend, StackReader
from mlp import aws
from mlp.errors import ConfigError, UserError, describe
from mlp.tags import (
    DEFAULT_MANDATORY_TAGS,
    ENVIRONMENT,
    EXPIRES_AT,
    OWNER,
    RUN_ID,
    format_expires_at,
    is_ephemeral,
    normalize_tags,
    parse_expires_at,
)

DEFAULT_GRACE_MINUTES = 60
GPU_TELEMETRY = "gpu"
# Always environments, even where the project has no Pulumi.<name>.yaml for them.
BUILTIN_ENVIRONMENT_STACKS = frozenset({"dev", PROD})


@dataclass(frozen=True)
class IdleEvidence:
    hours: float
    telemetry: str  # "gpu" or "cpu": what the idle-GPU scan judged the instance on


@dataclass(frozen=True)
class OverBudget:
    """A running run whose billed-plus-estimated cost exceeds its per-run budget (finops.run_costs)."""

    cost_usd: float
    budget_usd: float
    # When its accrued cost passed the budget, from its cost timeline: the grace period runs from here.
    since: datetime


@dataclass(frozen=True)
class RunFacts:
    """What AWS says about one training stack's run."""

    completion: Completion | None = None
    instance_ids: tuple[str, ...] = ()
    # For the instances the idle-GPU scan found idle: how long, and on which telemetry.
    idle: Mapping[str, IdleEvidence] = field(default_factory=dict)
    over_budget: OverBudget | None = None


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
    reason: str  # completed | expired | over-budget | idle | orphaned
    action: str  # destroy | skip | refuse
    why: str
    notify: bool = False
    # The account whose resources it is about; "" when its stack's state proves none.
    account_id: str = ""
    # The run's `owner` tag, whom a notification is about; "" when untagged.
    owner: str = ""
    # When a run skipped for its grace period becomes a destroy candidate.
    ready_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "run_id": self.run_id,
            "account_id": self.account_id or None,
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

    def candidate(reason: str, action: str, why: str, **extra: Any) -> Candidate:
        return Candidate(stack.name, run_id, reason, action, why, owner=tags.get(OWNER, ""), **extra)

    # From when the run is a destroy candidate: None for one that is at once.
    since: datetime | None = None
    if facts.completion is not None and facts.completion.verified:
        reason, why = "completed", facts.completion.why
    elif expires_at is not None and now >= expires_at:
        since = expires_at
        why = f"expired {_minutes(now - expires_at)} min ago (expires-at {tags[EXPIRES_AT]}); no verified _COMPLETE"
        reason = "expired"
    elif facts.over_budget is not None:
        over = facts.over_budget
        # Expired in all but the clock: stopped the same way, grace period and checkpoints included.
        since, reason = over.since, "over-budget"
        why = (
            f"${over.cost_usd:,.2f} billed plus estimated, over its {_usd(over.budget_usd)} budget "
            f"since {format_expires_at(over.since)}"
        )
    elif all_idle:
        since = now - timedelta(hours=idle_for)
        why = f"all {len(instances)} instance(s) idle for {idle_for:.1f} h"
        reason = "idle"
        on_cpu = sorted(i for i in instances if facts.idle[i].telemetry != GPU_TELEMETRY)
        if on_cpu:
            # Without GPU telemetry a busy GPU looks idle (the agent may simply have failed to start).
            return candidate(
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
        return candidate(reason, "skip", f"{why}; but {refusal}")
    if since is not None and now - since < policy.grace:
        return candidate(
            reason,
            "skip",
            f"{why}; within the {_minutes(policy.grace)} min grace period, notified",
            notify=True,
            ready_at=since + policy.grace,
        )
    # Its owner hears of a run stopped for its cost: nothing else about it has ended.
    return candidate(reason, "destroy", why, notify=reason == "over-budget")


def decide_orphans(
    owned_by_run: Mapping[str, Sequence[Resource]],
    stack_names: set[str],
    policy: ReapPolicy,
    now: datetime,
    *,
    account_id: str = "",
    stacks_elsewhere: Mapping[str, str] | None = None,
) -> list[Candidate]:
    """Runs with AWS resources in `account_id` and no stack (lost state, a half-failed destroy), swept only after expiry.

    `stack_names` own their runs' resources here; `stacks_elsewhere` (stack -> account) are stacks
    whose state puts them in another account: resources here tagged as theirs are neither theirs
    nor orphans, and are never swept. An unexpired run is never an orphan, whatever the backend
    holds: a wrong backend URL or lost state must not take down live runs.
    """
    elsewhere = stacks_elsewhere or {}
    candidates = []
    for run_id, owned in sorted(owned_by_run.items()):
        stack = f"{TRAINING_STACK_PREFIX}{run_id}"
        if stack in stack_names:
            continue
        action, why, notify = _orphan_verdict(run_id, owned, elsewhere.get(stack), policy, now, account_id)
        candidates.append(
            Candidate(stack, run_id, "orphaned", action, why, notify=notify, account_id=account_id)
        )
    return candidates


def _orphan_verdict(
    run_id: str,
    owned: Sequence[Resource],
    stack_account: str | None,
    policy: ReapPolicy,
    now: datetime,
    account_id: str,
) -> tuple[str, str, bool]:
    """(action, why, notify) for the resources of a run with no stack in `account_id`."""
    stack = f"{TRAINING_STACK_PREFIX}{run_id}"
    here = f" in account {account_id}" if account_id else ""
    if stack_account is not None:
        return (
            "skip",
            f"{len(owned)} resource(s) tagged run-id={run_id}{here}, but stack {stack} lives in "
            f"account {stack_account}: not its resources and no orphan, never swept",
            True,
        )
    why = f"{len(owned)} resource(s) tagged run-id={run_id}{here} and no stack {stack} on this backend"
    undated = [item for item in owned if _expires_at(item.tags) is None]
    if undated:
        first = undated[0]
        return (
            "skip",
            f"{why}; but {first.kind} {first.resource_id} has no valid expires-at, so its expiry cannot be proven",
            False,
        )
    latest = max(_expires_at(item.tags) for item in owned)  # type: ignore[type-var]
    if now < latest + policy.grace:
        return (
            "skip",
            f"{why}; but it expires at {latest.isoformat()} (+{_minutes(policy.grace)} min grace): "
            "an unexpired run is never swept",
            True,
        )
    if any(item.tags.get(ENVIRONMENT) == PROD for item in owned) and not policy.prod_opt_in:
        return "skip", f"{why}; but environment=prod has not opted in", False
    return "destroy", f"{why}; expired {latest.isoformat()}", False


def _expires_at(tags: Mapping[str, str]) -> datetime | None:
    try:
        return parse_expires_at(tags[EXPIRES_AT]) if tags.get(EXPIRES_AT) else None
    except ValueError:
        return None


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _usd(amount: float) -> str:
    """ "$250" for a budget in whole dollars, "$249.50" otherwise."""
    return f"${amount:,.0f}" if amount.is_integer() else f"${amount:,.2f}"


@dataclass
class ReapResult:
    applied: bool
    # What was covered, gaps included: the scope's own and the targets that failed to answer.
    scope: ScanScope
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
        """Exit 1: an error, a leak, a refused run (it keeps billing until a person looks), or a gap."""
        return (
            bool(self.errors)
            or self.leaked
            or bool(self.scope.gaps)
            or any(c.action == "refuse" for c in self.candidates)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "scope": self.scope.to_json(),
            "warnings": self.warnings,
            "candidates": [candidate.to_json() for candidate in self.candidates],
            "receipts": [receipt.to_json() for receipt in self.receipts],
            "errors": self.errors,
        }


def with_gaps(scope: ScanScope, gaps: Sequence[Gap]) -> ScanScope:
    """`scope` with the `gaps` of another look at it, each account-region named once (its first reason)."""
    named = {(gap.account_id, gap.region) for gap in scope.gaps}
    fresh = [gap for gap in gaps if (gap.account_id, gap.region) not in named]
    return replace(scope, gaps=[*scope.gaps, *fresh])


# A stack's checkpoint read: with its account's session, in the region of the account's first target.
CompletionReader = Callable[[StackSummary, Scope], Completion | None]


class Reaper:
    """Reads the backend and every target of the scope, decides, proves, and (with `apply`) destroys and sweeps."""

    def __init__(
        self,
        stacks: StackReader,
        *,
        scope: ScanScope,
        destroyer: Callable[[], StackBackend],
        policy: ReapPolicy,
        completion: CompletionReader,
        idle: Mapping[tuple[str, str], IdleEvidence],
        locks: Locks,
        run_cost: Callable[[str], float | None],
        log: Callable[[str], None],
        notify: Callable[[str], None],
        over_budget: Mapping[tuple[str, str], OverBudget] | None = None,
        warnings: Sequence[str] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.stacks = stacks
        self.scope = scope
        self.destroyer = destroyer
        self.policy = policy
        self.completion = completion
        # (account id, instance id) -> evidence: instance ids are only unique within an account.
        self.idle = idle
        self.locks = locks
        self.run_cost = run_cost
        self.log = log
        self.notify = notify
        # (account id, run id) -> the running runs over their budget.
        self.over_budget = dict(over_budget or {})
        # What makes the facts behind the decisions doubtful (run costs that are estimates only, say).
        self.warnings = list(warnings)
        self.concurrency = concurrency

    def teardown(self, targets: Sequence[Scope]) -> RunTeardown:
        """The teardown of one account over `targets`, acting with the account's session."""
        return account_teardown(
            targets,
            prod_opt_in=self.policy.prod_opt_in,
            run_cost=self.run_cost,
            log=self.log,
            with_cost_line=True,
        )

    def run(self, *, apply: bool, now: datetime | None = None) -> ReapResult:
        survey = survey_runs(self.scope, concurrency=self.concurrency)
        covered = with_gaps(self.scope, survey.gaps)
        result = ReapResult(applied=apply, scope=covered, candidates=[])
        teardowns = {account: self.teardown(targets) for account, targets in survey.answered.items()}
        result.candidates = self._plan(now or datetime.now(UTC), survey, teardowns, result)
        for gap in covered.gaps:
            self.log(f"GAP {gap.part}: {gap.reason}")
        for warning in result.warnings:
            self.log(f"WARNING {warning}")
        for candidate in result.candidates:
            where = f" in {candidate.account_id}" if candidate.account_id else ""
            self.log(f"{candidate.action:8} {candidate.stack}{where} [{candidate.reason}] {candidate.why}")
            if candidate.notify or candidate.action == "refuse":
                self._notify(candidate, result, apply=apply)
            if apply and candidate.action == "destroy":
                self._act(candidate, teardowns[candidate.account_id], result)
        return result

    def _plan(
        self,
        now: datetime,
        survey: RunSurvey,
        teardowns: Mapping[str, RunTeardown],
        result: ReapResult,
    ) -> list[Candidate]:
        listed = self.stacks.list_stacks()
        training = [
            summary
            for summary in listed
            if summary.name.startswith(TRAINING_STACK_PREFIX)
            and summary.name not in self.policy.environment_stacks
        ]
        result.warnings.extend([*self.stacks.warnings, *self.warnings])
        if survey.run_count() and not training:
            result.warnings.insert(
                0,
                f"the state backend holds no training stack while AWS holds resources of {survey.run_count()} run(s): "
                "a wrong or empty backend is the usual cause (--backend, MLP_BACKEND_URL, PULUMI_BACKEND_URL)",
            )
        homes = {summary.name: self._home(summary.name) for summary in training}
        candidates = []
        for summary in sorted(training, key=lambda s: s.name):
            home = homes[summary.name]
            try:
                facts = self._facts(summary, survey, teardowns.get(home.account_id or ""))
                candidate = decide(summary, facts, self.policy, now)
            except Exception as error:  # one unreadable stack must not hide the others
                result.errors.append({"stack": summary.name, "error": describe(error)})
                continue
            if candidate is not None:
                candidates.append(replace(candidate, account_id=home.account_id or ""))
        # Any stack of the name owns its resources, even one whose file could not be read, and an
        # environment's never lose theirs; a stack whose account is not proven owns them in every account.
        everywhere = {
            summary.name
            for summary in listed
            if summary.name not in homes or homes[summary.name].account_id is None
        } | self.policy.environment_stacks
        names = {summary.name for summary in listed}
        everywhere |= {
            stack
            for stack in {
                f"{TRAINING_STACK_PREFIX}{run_id}" for runs in survey.owned.values() for run_id in runs
            }
            if stack not in names and self.stacks.has_stack(stack)
        }
        for account_id, owned in sorted(survey.owned.items()):
            here = {name for name, home in homes.items() if home.account_id == account_id}
            elsewhere = {
                name: home.account_id
                for name, home in homes.items()
                if home.account_id is not None and home.account_id != account_id
            }
            candidates.extend(
                decide_orphans(
                    owned,
                    everywhere | here,
                    self.policy,
                    now,
                    account_id=account_id,
                    stacks_elsewhere=elsewhere,
                )
            )
        return [self._proven(candidate, homes, survey, teardowns, result) for candidate in candidates]

    def _home(self, stack: str) -> StackAccount:
        """The account the stack's state names; an unreadable state names none."""
        try:
            outputs = self.stacks.outputs(stack)
        except Exception as error:  # refused below, with the reason, like any unproven account
            return StackAccount(stack, None, f"the state of {stack} cannot be read ({describe(error)})")
        return stack_account(stack, outputs)

    def _facts(self, summary: StackSummary, survey: RunSurvey, home: RunTeardown | None) -> RunFacts:
        """What AWS says about the run, read in its stack's account only; nothing where that is not known."""
        if home is None:
            return RunFacts()
        run_id = normalize_tags(summary.tags).get(RUN_ID, "")
        owned = survey.owned.get(home.account_id, {}).get(run_id, [])
        instances = tuple(item.resource_id for item in owned if item.kind == "ec2:instance")
        idle = {
            instance: evidence
            for (account_id, instance), evidence in self.idle.items()
            if account_id == home.account_id
        }
        return RunFacts(
            completion=self.completion(summary, home.scope()),
            instance_ids=instances,
            idle=idle,
            over_budget=self.over_budget.get((home.account_id, run_id)),
        )

    def _proven(
        self,
        candidate: Candidate,
        homes: Mapping[str, StackAccount],
        survey: RunSurvey,
        teardowns: Mapping[str, RunTeardown],
        result: ReapResult,
    ) -> Candidate:
        """A destroy candidate stays one only when its account and every resource it would delete are proven the run's."""
        if candidate.action != "destroy":
            return candidate
        if candidate.reason != "orphaned" and homes[candidate.stack].account_id is None:
            return replace(
                candidate,
                action="refuse",
                why=f"{candidate.why}; refused, nothing touched: {homes[candidate.stack].why}, "
                "so which account its resources are in is not proven",
            )
        teardown = teardowns.get(candidate.account_id)
        reached = (
            "could not reach"
            if any(gap.account_id == candidate.account_id for gap in result.scope.gaps)
            else "does not cover"
        )
        if teardown is None:
            return replace(
                candidate,
                action="skip",
                why=f"{candidate.why}; but it lives in account {candidate.account_id}, which this reap {reached}",
            )
        region = homes[candidate.stack].region if candidate.reason != "orphaned" else None
        if region is not None and region not in teardown.regions:
            # Pulumi would destroy resources there whose dependents no proof has looked at.
            return replace(
                candidate,
                action="skip",
                why=f"{candidate.why}; but it lives in {region} of account {candidate.account_id}, "
                f"which this reap {reached}",
            )
        try:
            owned = survey.owned[candidate.account_id].get(candidate.run_id, [])
            proof = teardown.prove(candidate.run_id, owned)
        except Exception as error:
            result.errors.append(self._error(candidate, describe(error)))
            return replace(candidate, action="skip", why=f"{candidate.why}; but its proof failed")
        if proof.proven:
            return candidate
        return replace(
            candidate,
            action="refuse",
            why=f"{candidate.why}; refused, nothing touched: {'; '.join(proof.refusals)}",
        )

    @staticmethod
    def _error(candidate: Candidate, error: str) -> dict[str, str]:
        return {
            "stack": candidate.stack,
            "run_id": candidate.run_id,
            "account_id": candidate.account_id,
            "error": error,
        }

    def _notify(self, candidate: Candidate, result: ReapResult, *, apply: bool) -> None:
        where = f" in account {candidate.account_id}" if candidate.account_id else ""
        owner = f", owner {candidate.owner}," if candidate.owner else ""
        upcoming = _next_step(candidate, apply=apply)
        try:
            self.notify(
                f"training run {candidate.run_id} ({candidate.stack}){where}{owner} is {candidate.reason}, "
                f"{candidate.action}: {candidate.why}" + (f". Next: {upcoming}" if upcoming else "")
            )
        except Exception as error:  # a chat outage must not stop the reaping
            result.errors.append(self._error(candidate, f"notifying: {describe(error)}"))

    def _act(self, candidate: Candidate, teardown: RunTeardown, result: ReapResult) -> None:
        try:
            with self.locks.hold(candidate.stack) as lease:
                if candidate.reason == "orphaned":
                    receipt = teardown.sweep(candidate.run_id, lease.check)
                else:
                    receipt = teardown.destroy_stack(
                        candidate.stack, candidate.run_id, self._destroyer(), lease.check
                    )
        except Exception as error:  # each candidate succeeds or fails on its own
            self.log(f"ERROR {candidate.stack}: {describe(error)}")
            result.errors.append(self._error(candidate, describe(error)))
            return
        result.receipts.append(receipt)
        result.errors.extend(self._error(candidate, error) for error in receipt.errors)

    def _destroyer(self) -> StackBackend:
        try:
            return self.destroyer()
        except UserError as error:
            raise RuntimeError(f"needs the Pulumi CLI to destroy ({error})") from None


def _next_step(candidate: Candidate, *, apply: bool) -> str:
    """What becomes of the run, for the people a notification reaches; "" when nothing is planned."""
    kept = "its checkpoints are kept"
    if candidate.action == "destroy":
        return f"destroyed now, {kept}" if apply else f"destroyed by the next `mlp reap --apply`, {kept}"
    if candidate.action == "skip" and candidate.ready_at is not None:
        return f"destroyed by the reaper from {format_expires_at(candidate.ready_at)} on, {kept}"
    return ""


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
    scope: ScanScope,
    backend: str | None,
    notify: Callable[[str], None],
    log: Callable[[str], None],
    concurrency: int = DEFAULT_CONCURRENCY,
    now: datetime | None = None,
    project_dir: Path | None = None,
) -> ReapResult:
    """`mlp reap` over every target of `scope`: read the state backend (no Pulumi CLI needed) and AWS;
    destroy only with `apply`."""
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
        # Its gaps are the reaper's too: a target without idle evidence has no idle run reaped.
        idle_scan = scan_idle(scope, now=moment, concurrency=concurrency)
        idle = {
            (f.account_id, f.resource_id): IdleEvidence(f.idle_hours, f.telemetry) for f in idle_scan.findings
        }
        # Likewise: a target whose runs' costs cannot be read has no run reaped for its budget.
        costs = running_costs(idle_scan.scope, moment, project_dir=project_dir, concurrency=concurrency)

        def completion(summary: StackSummary, home: Scope) -> Completion | None:
            run_id = normalize_tags(summary.tags).get(RUN_ID, "")
            bucket = reader.outputs(summary.name).get("checkpointBucket")
            return read_completion(home.client("s3"), bucket, run_id) if bucket and run_id else None

        reaper = Reaper(
            reader,
            scope=with_gaps(idle_scan.scope, costs.scope.gaps),
            destroyer=lambda: PulumiAutomationBackend(url),
            policy=policy,
            completion=completion,
            idle=idle,
            locks=locks_for(url, lambda: aws.client("s3")),
            run_cost=lambda run_id: run_cost_usd(run_id, moment),
            log=log,
            notify=notify,
            over_budget=over_budget_runs(costs),
            warnings=[f"run costs: {note}" for note in costs.notes],
            concurrency=concurrency,
        )
        return reaper.run(apply=apply, now=moment)


def running_costs(
    scope: ScanScope,
    now: datetime,
    *,
    project_dir: Path | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> RunCosts:
    """What each run of `scope` has cost over the teardown's lookback, against its environment's budget."""
    return run_costs(
        scope,
        Period.last_days(RUN_COST_LOOKBACK.days, now),
        budget_usd=environment_budget_usd(project_dir),
        concurrency=concurrency,
    )


def over_budget_runs(costs: RunCosts) -> dict[tuple[str, str], OverBudget]:
    """(account id, run id) -> the running runs of `costs` past their budget, and since when."""
    return {
        (run.account_id, run.run_id): OverBudget(run.cost_usd, run.budget_usd, run.budget_crossed_at)
        for run in costs.runs
        if run.over_budget and run.budget_usd is not None and run.budget_crossed_at is not None
    }


@dataclass
class RunLeftovers:
    """Expired runs that still own resources, per account, and the scope they were looked for in."""

    scope: ScanScope
    leftovers: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope.to_json(), "leftovers": self.leftovers}


def scan_expired_run_leftovers(
    scope: ScanScope,
    now: datetime,
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES),
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> RunLeftovers:
    """Runs past expiry (plus grace) that still have resources, in every account and region of `scope`.

    Needs only AWS, not the Pulumi backend: a run past its `expires-at` should own nothing, whether
    its stack still exists or not, so every resource left is billing for nothing. A target that
    cannot be read is a gap of the returned scope; the others' leftovers stay.
    """
    survey = survey_runs(scope, concurrency=concurrency)
    leftovers = [
        leftover
        for account_id, owned in sorted(survey.owned.items())
        for leftover in _leftovers(account_id, owned, now, grace)
    ]
    return RunLeftovers(replace(scope, gaps=[*scope.gaps, *survey.gaps]), leftovers)


def expired_run_leftovers(
    regions: Sequence[str],
    now: datetime,
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES),
) -> list[dict[str, Any]]:
    """`scan_expired_run_leftovers` in `regions` of the caller's own account; an AWS error raises."""
    account_id = aws.caller_account_id(regions[0])
    return _leftovers(account_id, by_run(find_run_resources(regions, account_id)), now, grace)


def _leftovers(
    account_id: str, owned_by_run: Mapping[str, Sequence[Resource]], now: datetime, grace: timedelta
) -> list[dict[str, Any]]:
    leftovers = []
    for run_id, owned in sorted(owned_by_run.items()):
        expiries = [moment for moment in (_expires_at(item.tags) for item in owned) if moment is not None]
        if not expiries or now < max(expiries) + grace:
            continue
        hourly = sum(item.hourly_cost_usd or 0.0 for item in owned)
        leftovers.append(
            {
                "stack": f"{TRAINING_STACK_PREFIX}{run_id}",
                "run_id": run_id,
                "account_id": account_id,
                "reason": "expired",
                "action": "destroy",
                "why": f"{len(owned)} resource(s) still billing ${hourly:.4f}/h after expires-at {max(expiries).isoformat()}",
                "hourly_cost_usd": round(hourly, 4),
                # The run's cost tags as its resources carry them: whom to ask about it.
                "tags": {
                    key: value
                    for item in owned
                    for key, value in item.tags.items()
                    if key in DEFAULT_MANDATORY_TAGS and value
                },
                "resources": [item.to_json() for item in owned],
            }
        )
    return leftovers
