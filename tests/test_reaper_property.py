"""The reaper's safety, as a property over whole accounts: it deletes only what is proven an expired orphan's.

Each example plants a fresh moto account: runs that are live, expired or within their grace, with
or without a stack, prod or not; look-alike runs whose tags almost prove them; and foreign
resources attached to or sharing a run's (an instance in its group, a profile holding its role, a
group launching from its template, a volume deleted with its instance, an instance running with its
profile), tagged as nothing, as prod, as near-misses of the run, as another run. The reaper runs
with `apply`, and the account read back with boto3 alone is judged by rules written here, not
by the reaper's own proofs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from finops.reaper import DEFAULT_GRACE_MINUTES
from infra.training.automation import StackSummary
from mlp.tags import parse_expires_at
from tests.reaper_world import (
    ACCOUNT_ID,
    EXPIRED,
    LIVE,
    NOW,
    PROD_TAGS,
    REGION,
    FakePulumi,
    PlantedRun,
    World,
    build_reaper,
    reuse_clients,
    run_tags,
    snapshot,
)

GRACE = timedelta(minutes=DEFAULT_GRACE_MINUTES)
EXPIRIES = {"live": LIVE, "expired": EXPIRED, "in-grace": "2026-11-23T11:30:00Z"}
LINK_KINDS = frozenset({"member", "attachment", "profile-role"})
RUN_IDS = ("r0", "r1", "r2")
# A run that never had a stack, expired, whose only resources are the foreign ones tagged as it.
PHANTOM_EXPIRED = "r9"
PHANTOM_LIVE = "r8"


class Reader:
    """The state backend as the reaper reads it: these stacks, and these whose files it cannot parse."""

    def __init__(self, stacks: list[StackSummary], unreadable: set[str]) -> None:
        self.stacks = stacks
        self.unreadable = unreadable
        self.warnings = [
            f"skipped .pulumi/stacks/ml-platform/{name}.json: is not valid JSON" for name in unreadable
        ]

    def list_stacks(self) -> list[StackSummary]:
        return list(self.stacks)

    def outputs(self, stack: str) -> dict:
        # What a deployed training stack's state holds: a queue URL naming the account it is in.
        return {
            "interruptionQueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{stack}-interruptions"
        }

    def has_stack(self, stack: str) -> bool:
        return stack in self.unreadable or any(summary.name == stack for summary in self.stacks)


def proves(tags: Mapping[str, str]) -> str | None:
    """The run these tags prove, by the rule as written for people: ephemeral, run-id, its stack name."""
    run_id = tags.get("run-id", "")
    if run_id and tags.get("ephemeral") == "true" and tags.get("pulumi-stack") == f"train-{run_id}":
        return run_id
    return None


def expired_past_grace(tags: Mapping[str, str]) -> bool:
    try:
        return parse_expires_at(tags["expires-at"]) + GRACE <= NOW
    except (KeyError, ValueError):
        return False


def foreign_tags(variant: str, run: PlantedRun) -> dict[str, str] | None:
    expiry = run.tags["expires-at"]
    return {
        "untagged": None,
        "prod": dict(PROD_TAGS),
        "ephemeral-false": run_tags(run.run_id, expiry, ephemeral="false"),
        "stack-mismatch": run_tags(run.run_id, expiry, **{"pulumi-stack": "train-other"}),
        "no-ephemeral": run_tags(run.run_id, expiry, ephemeral="-"),
        "other-run": run_tags(PHANTOM_EXPIRED, EXPIRED),
        "live-run": run_tags(PHANTOM_LIVE, LIVE),
    }[variant]


@dataclass(frozen=True)
class Hazard:
    run_id: str  # the run whose resource the foreign one attaches to or shares
    foreign_id: str


def plant_hazard(world: World, kind: str, run: PlantedRun, tags: dict[str, str] | None) -> str | None:
    """Plants one foreign resource on `run`; returns its id, or None where the run offers no hold."""
    if kind == "stranger-in-group":
        stranger = world.foreign_instance(tags)
        world.attach_to_group(run.asg, stranger)
        return stranger
    if kind == "shared-role":
        return world.foreign_profile(run.role, tags)
    if kind == "shared-template":
        return world.foreign_group(run.launch_template, tags)
    if kind == "foreign-volume":
        return world.foreign_volume(run.instances[0], tags) if run.instances else None
    if kind == "profile-user":
        return world.foreign_instance(tags, profile_arn=run.profile_arn)
    raise AssertionError(kind)


runs = st.lists(
    st.fixed_dictionaries(
        {
            # Weighted toward expired orphans: the runs the reaper acts on, where the risk is.
            "expiry": st.sampled_from(["expired", "expired", "expired", "in-grace", "live"]),
            # An unreadable stack file still names a stack: its run is no orphan.
            "stack": st.sampled_from(["none", "none", "listed", "unreadable"]),
            "instances": st.integers(0, 2),
            "prod": st.sampled_from([False, False, False, False, True]),
        }
    ),
    min_size=1,
    max_size=3,
)
hazards = st.lists(
    st.tuples(
        st.sampled_from(
            ["stranger-in-group", "shared-role", "shared-template", "foreign-volume", "profile-user"]
        ),
        st.integers(0, 2),
        st.sampled_from(["untagged", "prod", "ephemeral-false", "stack-mismatch", "other-run", "live-run"]),
    ),
    max_size=2,
)
look_alikes = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["ephemeral-false", "stack-mismatch", "no-ephemeral"])),
    max_size=1,
)


EXPIRED_ORPHAN = {"expiry": "expired", "stack": "none", "instances": 1, "prod": False}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # An example costs seconds of moto; shrinking one would take minutes, and they are small to read as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
# The stacks an orphan sweep must respect even though the reaper cannot or may not destroy them.
@example(
    run_specs=[EXPIRED_ORPHAN, {**EXPIRED_ORPHAN, "stack": "unreadable"}],
    hazard_specs=[],
    look_alike_specs=[],
    environment=False,
)
@example(
    run_specs=[EXPIRED_ORPHAN, EXPIRED_ORPHAN, {**EXPIRED_ORPHAN, "stack": "listed"}],
    hazard_specs=[],
    look_alike_specs=[],
    environment=True,
)
@given(run_specs=runs, hazard_specs=hazards, look_alike_specs=look_alikes, environment=st.booleans())
def test_the_reaper_deletes_only_proven_expired_orphans_and_names_every_refusal(
    run_specs: list[dict],
    hazard_specs: list[tuple[str, int, str]],
    look_alike_specs: list[tuple[int, str]],
    environment: bool,
) -> None:
    # A project whose Pulumi.train-r2.yaml predates the reservation of `train-`: an environment.
    environments = {"dev", "prod", *(["train-r2"] if environment else [])}
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        reuse_clients(patch)
        world = World()
        planted: list[PlantedRun] = []
        stacks: list[StackSummary] = []
        unreadable: set[str] = set()
        for run_id, spec in zip(RUN_IDS, run_specs, strict=False):
            overrides = {"environment": "prod"} if spec["prod"] else {}
            tags = run_tags(run_id, EXPIRIES[spec["expiry"]], **overrides)
            run = world.plant_run(run_id, tags=tags, instances=spec["instances"])
            planted.append(run)
            if spec["stack"] == "listed":
                stacks.append(StackSummary(f"train-{run_id}", dict(tags)))
            elif spec["stack"] == "unreadable":
                unreadable.add(f"train-{run_id}")
        for index, variant in look_alike_specs:
            target = planted[index % len(planted)]
            world.plant_run(target.run_id, tags=foreign_tags(variant, target), instances=1)
        planted_hazards = []
        for kind, index, variant in hazard_specs:
            target = planted[index % len(planted)]
            foreign_id = plant_hazard(world, kind, target, foreign_tags(variant, target))
            if foreign_id is not None:
                planted_hazards.append(Hazard(target.run_id, foreign_id))

        before = snapshot()
        # Deletes nothing: what a stack holds is Pulumi's to delete, and this property is about the reaper's.
        pulumi = FakePulumi(None)
        notices: list[str] = []
        reaper = build_reaper(
            Reader(stacks, unreadable),
            destroyer=lambda: pulumi,
            notify=notices.append,
            environment_stacks=environments,
        )
        result = reaper.run(apply=True, now=NOW)
        after = snapshot()

    stack_names = {summary.name for summary in stacks} | unreadable
    owned: dict[str, list[dict[str, str]]] = {}
    for (kind, _), tags in before.items():
        if kind not in LINK_KINDS and (owner := proves(tags)):
            owned.setdefault(owner, []).append(tags)

    def sweepable(run_id: str) -> bool:
        return (
            f"train-{run_id}" not in stack_names
            and all(expired_past_grace(tags) for tags in owned[run_id])
            and all(tags.get("environment") != "prod" for tags in owned[run_id])
        )

    deleted = {key for key in before if key not in after and key[0] not in LINK_KINDS}
    for key in deleted:
        owner = proves(before[key])
        assert owner is not None, f"deleted {key}, whose tags prove no run: {before[key]}"
        assert sweepable(owner), f"deleted {key} of run {owner}, which is live, prod or has a stack"
    gone_ids = {identifier for _, identifier in deleted}
    for kind, link in set(before) - set(after):
        if kind in LINK_KINDS:
            assert set(link.split("/")) & gone_ids, f"broke {kind} {link} while both ends stayed"
    for key, tags in after.items():
        assert before.get(key, tags) == tags, f"retagged {key}"
    assert not set(after) - set(before), "created resources"

    for candidate in result.candidates:
        event(f"{candidate.reason} {candidate.action}")
    event(f"deleted {'some' if deleted else 'none'}")
    by_stack = {candidate.stack: candidate for candidate in result.candidates}
    hazarded = {hazard.run_id for hazard in planted_hazards}
    for hazard in planted_hazards:
        spec = run_specs[RUN_IDS.index(hazard.run_id)]
        stack = f"train-{hazard.run_id}"
        if spec["expiry"] != "expired" or spec["prod"] or stack in unreadable or stack in environments:
            continue
        candidate = by_stack[stack]
        assert candidate.action == "refuse", candidate
        assert hazard.foreign_id in candidate.why, candidate
        assert any(f"train-{hazard.run_id}" in notice and "refuse" in notice for notice in notices)
    for call, stack in pulumi.calls:
        run_id = stack.removeprefix("train-")
        spec = run_specs[RUN_IDS.index(run_id)]
        assert stack in {summary.name for summary in stacks} and stack not in environments
        assert run_id not in hazarded
        assert (spec["expiry"], spec["prod"]) == ("expired", False), (call, stack, spec)
