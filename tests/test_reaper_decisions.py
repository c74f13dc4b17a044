"""The reaper's decision rules: what it destroys, when, and what it can never select."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from finops.reaper import ReapPolicy, RunFacts, decide, decide_orphans
from finops.run_resources import RunResource
from infra.training.automation import StackSummary
from infra.training.checkpoints import Completion

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
    return values


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


def test_idle_means_every_instance_idle_for_longer_than_the_grace() -> None:
    summary = StackSummary("train-r1", tags())
    assert (
        decide(summary, RunFacts(instance_ids=("i-1", "i-2"), idle_hours={"i-1": 9.0}), POLICY, NOW) is None
    )
    short = decide(
        summary, RunFacts(instance_ids=("i-1", "i-2"), idle_hours={"i-1": 9.0, "i-2": 0.5}), POLICY, NOW
    )
    assert (short.reason, short.action) == ("idle", "skip")
    idle = decide(
        summary, RunFacts(instance_ids=("i-1", "i-2"), idle_hours={"i-1": 9.0, "i-2": 2.0}), POLICY, NOW
    )
    assert (idle.reason, idle.action) == ("idle", "destroy") and "idle for 2.0 h" in idle.why


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


def test_orphans_are_runs_with_resources_and_no_stack() -> None:
    resources = [
        RunResource("ec2:volume", "vol-1", "arn:vol-1", "us-east-1", "r9", tags("r9")),
        RunResource("ec2:volume", "vol-2", "arn:vol-2", "us-east-1", "r1", tags("r1")),
        RunResource("ec2:volume", "vol-3", "arn:vol-3", "us-east-1", "r8", tags("r8", environment="prod")),
    ]
    candidates = decide_orphans(resources, [StackSummary("train-r1", tags())], POLICY)
    assert [(c.run_id, c.action) for c in candidates] == [("r8", "skip"), ("r9", "destroy")]


# --- the property: nothing protected is ever selected for destruction -------------------------

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
facts = st.builds(
    RunFacts,
    completion=st.sampled_from([None, VERIFIED]),
    instance_ids=st.sampled_from([(), ("i-1",), ("i-1", "i-2")]),
    idle_hours=st.sampled_from([{}, {"i-1": 5.0}, {"i-1": 5.0, "i-2": 3.0}]),
)


@settings(max_examples=400, deadline=None)
@given(name=names, stack_tags=tag_values, run_facts=facts, opt_in=st.booleans(), minutes=st.integers(0, 600))
def test_no_protected_stack_is_ever_selected(
    name: str, stack_tags: dict, run_facts: RunFacts, opt_in: bool, minutes: int
) -> None:
    policy = ReapPolicy(prod_opt_in=opt_in)
    candidate = decide(StackSummary(name, stack_tags), run_facts, policy, NOW + timedelta(minutes=minutes))
    if candidate is None or candidate.action != "destroy":
        return
    assert name not in policy.environment_stacks
    assert stack_tags.get("ephemeral") == "true"
    assert stack_tags.get("run-id") and name == f"train-{stack_tags['run-id']}"
    assert opt_in or stack_tags.get("environment") != "prod"


resource_tags = st.fixed_dictionaries(
    {"run-id": st.sampled_from(["r1", "r2"])},
    optional={
        "ephemeral": st.sampled_from(["true", "false"]),
        "pulumi-stack": st.sampled_from(["train-r1", "train-r2", "dev"]),
        "environment": st.sampled_from(["dev", "prod"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    tag_sets=st.lists(resource_tags, max_size=6),
    stacks=st.sets(st.sampled_from(["train-r1", "train-r2", "dev"])),
    opt_in=st.booleans(),
)
def test_orphan_sweeps_only_take_proven_run_resources(
    tag_sets: list[dict], stacks: set[str], opt_in: bool
) -> None:
    resources = [
        RunResource("ec2:volume", f"vol-{i}", f"arn:vol-{i}", "us-east-1", t["run-id"], t)
        for i, t in enumerate(tag_sets)
    ]
    for candidate in decide_orphans(
        resources, [StackSummary(s, {}) for s in stacks], ReapPolicy(prod_opt_in=opt_in)
    ):
        assert candidate.stack not in stacks
        owned = [
            r
            for r in resources
            if r.run_id == candidate.run_id
            and r.tags.get("ephemeral") == "true"
            and r.tags.get("pulumi-stack") == candidate.stack
        ]
        assert owned
        if candidate.action == "destroy":
            assert opt_in or all(r.tags.get("environment") != "prod" for r in owned)
