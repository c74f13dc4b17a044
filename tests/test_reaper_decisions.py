"""The reaper's decision rules: what it destroys, when, and what it can never select."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from finops.inventory import Resource
from finops.reaper import IdleEvidence, OverBudget, ReapPolicy, RunFacts, decide, decide_orphans
from finops.run_resources import by_run
from infra.training.automation import StackSummary
from infra.training.checkpoints import Completion
from mlp.tags import parse_expires_at

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = ReapPolicy(grace=timedelta(minutes=60))
VERIFIED = Completion(
    "r1", "runs/r1/checkpoints/final.pt", "ab" * 32, "2026-11-23T11:00:00Z", True, "verified"
)


def tags(run_id: str = "r1", **overrides: str) -> dict[str, str]:
    values = {
        "run-id": run_id,
        "ephemeral": "true",
        "pulumi-stack": f"train-{run_id}",
        "environment": "dev",
        "expires-at": "2026-11-23T18:00:00Z",
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value != "-"}


def gpu(hours: float) -> IdleEvidence:
    return IdleEvidence(hours, "gpu")


def cpu(hours: float) -> IdleEvidence:
    return IdleEvidence(hours, "cpu")


def volume(serial: int, resource_tags: dict[str, str]) -> Resource:
    return Resource(
        "ec2:volume", f"vol-{serial}", f"arn:aws:ec2:us-east-1:123456789012:volume/vol-{serial}", "us-east-1",
        "123456789012", resource_tags,
    )  # fmt: skip


def test_completed_runs_are_destroyed_at_once() -> None:
    candidate = decide(StackSummary("train-r1", tags()), RunFacts(completion=VERIFIED), POLICY, NOW)
    assert (candidate.reason, candidate.action) == ("completed", "destroy")


def test_expired_runs_get_the_grace_period_and_a_notification_first() -> None:
    summary = StackSummary("train-r1", tags(**{"expires-at": "2026-11-23T11:30:00Z"}))
    early = decide(summary, RunFacts(), POLICY, NOW)
    assert (early.reason, early.action, early.notify) == ("expired", "skip", True)
    assert "expired 30 min ago" in early.why and "grace period" in early.why
    late = decide(summary, RunFacts(), POLICY, NOW + timedelta(minutes=31))
    assert (late.reason, late.action) == ("expired", "destroy")


def test_idle_means_every_instance_idle_on_gpu_telemetry_for_longer_than_the_grace() -> None:
    summary = StackSummary("train-r1", tags())
    two = ("i-1", "i-2")
    assert decide(summary, RunFacts(instance_ids=two, idle={"i-1": gpu(9.0)}), POLICY, NOW) is None
    short = decide(summary, RunFacts(instance_ids=two, idle={"i-1": gpu(9.0), "i-2": gpu(0.5)}), POLICY, NOW)
    assert (short.reason, short.action) == ("idle", "skip")
    idle = decide(summary, RunFacts(instance_ids=two, idle={"i-1": gpu(9.0), "i-2": gpu(2.0)}), POLICY, NOW)
    assert (idle.reason, idle.action) == ("idle", "destroy") and "idle for 2.0 h" in idle.why


def test_idle_judged_on_cpu_alone_is_reported_never_destroyed() -> None:
    # A GPU busy training while its metrics agent failed to start shows only an idle CPU.
    facts = RunFacts(instance_ids=("i-1", "i-2"), idle={"i-1": gpu(9.0), "i-2": cpu(9.0)})
    candidate = decide(StackSummary("train-r1", tags()), facts, POLICY, NOW)
    assert (candidate.reason, candidate.action, candidate.notify) == ("idle", "skip", True)
    assert "i-2" in candidate.why and "i-1" not in candidate.why.split("CPU only")[1]


def test_a_run_over_its_budget_is_treated_like_an_expired_one_from_when_it_passed_it() -> None:
    summary = StackSummary("train-r1", tags(owner="alice@example.com"))
    facts = RunFacts(over_budget=OverBudget(251.5, 250.0, NOW - timedelta(minutes=20)))
    early = decide(summary, facts, POLICY, NOW)
    assert (early.reason, early.action, early.notify) == ("over-budget", "skip", True)
    assert early.why == (
        "$251.50 billed plus estimated, over its $250 budget since 2026-11-23T11:40:00Z; "
        "within the 60 min grace period, notified"
    )
    assert early.ready_at == NOW + timedelta(minutes=40) and early.owner == "alice@example.com"
    late = decide(summary, facts, POLICY, NOW + timedelta(minutes=40))
    assert (late.reason, late.action, late.notify) == ("over-budget", "destroy", True)
    # The same safety rules: prod without its opt-in is reported, never destroyed.
    prod = decide(StackSummary("train-r1", tags(environment="prod")), facts, POLICY, NOW + timedelta(hours=2))
    assert prod.action == "skip" and "prod has not opted in" in prod.why


def test_completion_and_expiry_come_before_the_budget() -> None:
    over = OverBudget(400.0, 249.5, NOW - timedelta(hours=3))
    summary = StackSummary("train-r1", tags(**{"expires-at": "2026-11-23T11:30:00Z"}))
    assert decide(summary, RunFacts(over_budget=over), POLICY, NOW).reason == "expired"
    assert decide(summary, RunFacts(completion=VERIFIED, over_budget=over), POLICY, NOW).reason == "completed"
    cheap = decide(StackSummary("train-r1", tags()), RunFacts(over_budget=over), POLICY, NOW)
    assert "over its $249.50 budget" in cheap.why


def test_a_healthy_run_is_not_a_candidate() -> None:
    assert decide(StackSummary("train-r1", tags()), RunFacts(instance_ids=("i-1",)), POLICY, NOW) is None


def test_unverified_completion_is_not_completion() -> None:
    unverified = Completion("r1", "runs/r1/x", "00", "", False, "checksum differs")
    assert decide(StackSummary("train-r1", tags()), RunFacts(completion=unverified), POLICY, NOW) is None


def test_prod_needs_the_opt_in() -> None:
    summary = StackSummary("train-r1", tags(environment="prod"))
    refused = decide(summary, RunFacts(completion=VERIFIED), POLICY, NOW)
    assert refused.action == "skip" and "prod has not opted in" in refused.why
    allowed = decide(summary, RunFacts(completion=VERIFIED), ReapPolicy(prod_opt_in=True), NOW)
    assert allowed.action == "destroy"


def test_environment_stacks_are_never_destroyed_whatever_their_tags() -> None:
    policy = ReapPolicy(environment_stacks=frozenset({"dev", "prod", "train-legacy"}))
    for name, run_id in (("dev", "dev"), ("train-legacy", "legacy")):
        candidate = decide(StackSummary(name, tags(run_id)), RunFacts(completion=VERIFIED), policy, NOW)
        assert candidate.action == "skip" and "environment stack" in candidate.why


def test_orphans_are_runs_with_resources_and_no_stack_swept_only_once_expired() -> None:
    expired = {"expires-at": "2026-11-23T10:00:00Z"}
    owned = by_run(
        [
            volume(1, tags("r9", **expired)),
            volume(2, tags("r1", **expired)),
            volume(3, tags("r8", environment="prod", **expired)),
            volume(4, tags("r7", **{"expires-at": "2099-01-01T00:00:00Z"})),
            volume(5, tags("r6", **{"expires-at": "-"})),
        ]
    )
    candidates = decide_orphans(owned, {"train-r1"}, POLICY, NOW)
    assert [(c.run_id, c.action) for c in candidates] == [
        ("r6", "skip"),
        ("r7", "skip"),
        ("r8", "skip"),
        ("r9", "destroy"),
    ]
    by_id = {c.run_id: c for c in candidates}
    assert "never swept" in by_id["r7"].why and by_id["r7"].notify
    assert "vol-5" in by_id["r6"].why and "expires-at" in by_id["r6"].why
    assert "prod" in by_id["r8"].why


def test_one_live_resource_keeps_the_whole_orphan() -> None:
    # A half-failed destroy can leave resources of different ages; the newest expiry rules.
    owned = by_run(
        [
            volume(1, tags("r1", **{"expires-at": "2026-11-22T00:00:00Z"})),
            volume(2, tags("r1", **{"expires-at": "2026-11-23T11:30:00Z"})),
        ]
    )
    [early] = decide_orphans(owned, set(), POLICY, NOW)
    assert early.action == "skip"
    [late] = decide_orphans(owned, set(), POLICY, NOW + timedelta(minutes=31))
    assert late.action == "destroy"


# --- the properties: nothing protected, live or doubtful is ever selected for destruction -------

names = st.sampled_from(["dev", "prod", "train-r1", "train-r2", "train-", "r1", "training-r1", "train-dev"])
tag_values = st.fixed_dictionaries(
    {},
    optional={
        "run-id": st.sampled_from(["r1", "r2", "", "dev"]),
        "ephemeral": st.sampled_from(["true", "false", "TRUE", "", "yes"]),
        "environment": st.sampled_from(["dev", "prod", "staging"]),
        "pulumi-stack": st.sampled_from(["train-r1", "train-r2", "dev"]),
        "expires-at": st.sampled_from(["2026-11-23T08:00:00Z", "2026-11-23T23:00:00Z", "not-a-date"]),
    },
)
evidence = st.builds(
    IdleEvidence, hours=st.sampled_from([0.5, 3.0, 9.0]), telemetry=st.sampled_from(["gpu", "cpu"])
)
facts = st.builds(
    RunFacts,
    completion=st.sampled_from([None, VERIFIED]),
    instance_ids=st.sampled_from([(), ("i-1",), ("i-1", "i-2")]),
    idle=st.dictionaries(st.sampled_from(["i-1", "i-2", "i-3"]), evidence, max_size=3),
    over_budget=st.sampled_from(
        [None, *(OverBudget(300.0, 250.0, NOW - timedelta(minutes=ago)) for ago in (-30, 0, 45, 180))]
    ),
)
environment_sets = st.sampled_from(
    [
        frozenset({"dev", "prod"}),
        frozenset({"dev", "prod", "train-r2"}),
        frozenset({"dev", "prod", "train-dev"}),
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    name=names,
    stack_tags=tag_values,
    run_facts=facts,
    opt_in=st.booleans(),
    environments=environment_sets,
    minutes=st.integers(0, 600),
)
def test_no_protected_stack_is_ever_selected(
    name: str, stack_tags: dict, run_facts: RunFacts, opt_in: bool, environments: frozenset, minutes: int
) -> None:
    policy = ReapPolicy(prod_opt_in=opt_in, environment_stacks=environments)
    candidate = decide(StackSummary(name, stack_tags), run_facts, policy, NOW + timedelta(minutes=minutes))
    if candidate is None or candidate.action != "destroy":
        return
    assert name not in environments
    assert stack_tags.get("ephemeral") == "true"
    assert stack_tags.get("run-id") and name == f"train-{stack_tags['run-id']}"
    assert opt_in or stack_tags.get("environment") != "prod"


@settings(max_examples=300, deadline=None)
@given(stack_tags=tag_values, run_facts=facts, minutes=st.integers(0, 600))
def test_idle_judged_on_cpu_is_never_destroyed_as_idle(
    stack_tags: dict, run_facts: RunFacts, minutes: int
) -> None:
    candidate = decide(
        StackSummary("train-r1", stack_tags), run_facts, POLICY, NOW + timedelta(minutes=minutes)
    )
    if candidate is None or candidate.reason != "idle" or candidate.action != "destroy":
        return
    assert run_facts.instance_ids
    assert all(run_facts.idle[i].telemetry == "gpu" for i in run_facts.instance_ids)


@settings(max_examples=300, deadline=None)
@given(stack_tags=tag_values, run_facts=facts, minutes=st.integers(0, 600))
def test_a_run_is_destroyed_for_its_budget_only_a_grace_period_after_passing_it(
    stack_tags: dict, run_facts: RunFacts, minutes: int
) -> None:
    now = NOW + timedelta(minutes=minutes)
    candidate = decide(StackSummary("train-r1", stack_tags), run_facts, POLICY, now)
    if candidate is None or candidate.reason != "over-budget" or candidate.action != "destroy":
        return
    assert run_facts.over_budget is not None and now >= run_facts.over_budget.since + POLICY.grace


expiries = st.sampled_from(
    [
        "2026-11-22T08:00:00Z",
        "2026-11-23T10:30:00Z",
        "2026-11-23T11:30:00Z",
        "2099-01-01T00:00:00Z",
        "soon",
        "-",
    ]
)
resource_tags = st.fixed_dictionaries(
    {"run-id": st.sampled_from(["r1", "r2"]), "expires-at": expiries},
    optional={
        "ephemeral": st.sampled_from(["true", "false"]),
        "pulumi-stack": st.sampled_from(["train-r1", "train-r2", "dev"]),
        "environment": st.sampled_from(["dev", "prod"]),
    },
).map(lambda t: {key: value for key, value in t.items() if value != "-"})
stack_sets = st.sets(st.sampled_from(["train-r1", "train-r2", "dev"]))


@settings(max_examples=300, deadline=None)
@given(tag_sets=st.lists(resource_tags, max_size=6), stacks=stack_sets, opt_in=st.booleans())
def test_orphan_sweeps_only_take_proven_run_resources(
    tag_sets: list[dict], stacks: set[str], opt_in: bool
) -> None:
    resources = [volume(i, t) for i, t in enumerate(tag_sets)]
    for candidate in decide_orphans(by_run(resources), stacks, ReapPolicy(prod_opt_in=opt_in), NOW):
        assert candidate.stack not in stacks
        owned = [
            r
            for r in resources
            if r.tags.get("run-id") == candidate.run_id
            and r.tags.get("ephemeral") == "true"
            and r.tags.get("pulumi-stack") == candidate.stack
        ]
        assert owned
        if candidate.action == "destroy":
            assert opt_in or all(r.tags.get("environment") != "prod" for r in owned)


@settings(max_examples=300, deadline=None)
@given(
    tag_sets=st.lists(resource_tags, max_size=6),
    stacks=stack_sets,
    opt_in=st.booleans(),
    minutes=st.integers(-120, 240),
)
def test_an_unexpired_orphan_is_never_destroyed_whatever_the_stacks(
    tag_sets: list[dict], stacks: set[str], opt_in: bool, minutes: int
) -> None:
    now = NOW + timedelta(minutes=minutes)
    owned = by_run(volume(i, t) for i, t in enumerate(tag_sets))
    for candidate in decide_orphans(owned, stacks, ReapPolicy(prod_opt_in=opt_in), now):
        if candidate.action != "destroy":
            continue
        # Every resource of the run must carry a valid expiry and all of them be past it and the grace.
        for resource in owned[candidate.run_id]:
            assert now >= parse_expires_at(resource.tags["expires-at"]) + POLICY.grace
