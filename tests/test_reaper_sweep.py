"""Orphan sweeps, stack destroys and their receipts against moto: the run's resources go, nothing else."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from finops import inventory
from finops.locks import FileLocks, LockLost
from finops.reaper import expired_run_leftovers
from finops.run_resources import find_run_resources
from finops.teardown import Refused
from infra.training.state import DiyStateBackend
from mlp import pricing
from mlp.errors import UserError
from tests.reaper_world import (
    ACCOUNT_ID,
    LIVE,
    NOW,
    PROD_TAGS,
    REGION,
    FakePulumi,
    World,
    add_stack,
    build_reaper,
    diy_state,
    mocked_world,
    run_tags,
    snapshot,
)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    with mocked_world(monkeypatch, tmp_path) as planted:
        yield planted


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return diy_state(tmp_path)


def reader(root: Path) -> DiyStateBackend:
    return DiyStateBackend(f"file://{root}")


def test_planted_orphans_are_swept_and_look_alikes_kept(world: World, state: Path, tmp_path: Path) -> None:
    orphan = world.plant_run("orph1")
    look_alikes = [
        world.plant_run("orph1", tags=run_tags("orph1", ephemeral="false")),
        world.plant_run("orph1", tags=run_tags("orph1", **{"pulumi-stack": "dev"})),
        world.plant_run("orph1", tags=run_tags("orph1", ephemeral="-")),
    ]
    live = world.plant_run("live1", expires_at=LIVE)
    add_stack(state, "train-live1", run_tags("live1", LIVE))
    key = world.checkpoints("mlp-dev-checkpoints-x", "orph1", tags=run_tags("orph1"))
    before = snapshot()
    locks = FileLocks(tmp_path / "locks")

    dry = build_reaper(reader(state), locks=locks).run(apply=False, now=NOW)
    assert [(c.stack, c.reason, c.action) for c in dry.candidates] == [("train-orph1", "orphaned", "destroy")]
    assert snapshot() == before

    result = build_reaper(reader(state), locks=locks).run(apply=True, now=NOW)
    assert result.errors == [] and not result.failed
    [receipt] = result.receipts
    assert receipt.leaks == [] and len(receipt.removed) == len(orphan.ids())
    assert find_run_resources([REGION], ACCOUNT_ID, "orph1") == []

    after = snapshot()
    assert {entry for entry in before if entry not in after} == orphan.ids() | links_of(before, orphan.ids())
    for kept in [*look_alikes, live]:
        assert kept.ids() <= set(after)
    assert ("object", f"mlp-dev-checkpoints-x/{key}") in after
    assert ("policy", world.shared_policy_arn()) in after

    again = build_reaper(reader(state), locks=locks).run(apply=True, now=NOW)
    assert again.candidates == [] and again.receipts == [] and again.errors == []


def links_of(entries: dict, ids: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The link entries of a snapshot that involve any of `ids`."""
    names = {identifier for _, identifier in ids}
    return {
        (kind, link)
        for kind, link in entries
        if kind in ("member", "attachment", "profile-role") and set(link.split("/")) & names
    }


def test_a_destroy_that_leaves_a_volume_is_a_leak(world: World, state: Path) -> None:
    run = world.plant_run("r7")
    add_stack(state, "train-r7", run.tags)
    pulumi = FakePulumi(world, state, leave={run.volumes[0]})
    logs: list[str] = []
    result = build_reaper(reader(state), destroyer=lambda: pulumi, log=logs.append).run(apply=True, now=NOW)
    assert [(c.reason, c.action) for c in result.candidates] == [("expired", "destroy")]
    assert pulumi.calls == [("destroy", "train-r7"), ("remove", "train-r7")]
    assert result.leaked and result.failed
    [leak] = result.receipts[0].leaks
    assert (leak.kind, leak.resource_id) == ("ec2:volume", run.volumes[0]) and leak.hourly_cost_usd > 0
    assert any(line.startswith("LEAK after destroying train-r7") for line in logs)
    assert not reader(state).has_stack("train-r7")


def test_one_stuck_resource_does_not_keep_the_rest_of_the_run_billing(
    world: World, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = world.plant_run("r3")

    def refuse(scope, resource) -> None:
        raise RuntimeError("AccessDenied: not authorized to perform sqs:DeleteQueue")

    queue = inventory.REGISTRY["sqs:queue"]
    monkeypatch.setitem(inventory.REGISTRY, "sqs:queue", dataclasses.replace(queue, delete=refuse))
    result = build_reaper(reader(state)).run(apply=True, now=NOW)
    [receipt] = result.receipts
    assert [leak.resource_id for leak in receipt.leaks] == [run.queue_url]
    assert (
        len(receipt.errors) == 1
        and run.queue_url in receipt.errors[0]
        and "AccessDenied" in receipt.errors[0]
    )
    assert [error["stack"] for error in result.errors] == ["train-r3"] and result.failed
    left = snapshot()
    assert ("queue", run.queue_url) in left
    assert not (run.ids() - {("queue", run.queue_url)}) & set(left)


class LosingLocks:
    """A lock whose lease is lost after `checks` checks: another reaper took it over mid-sweep."""

    def __init__(self, checks: int) -> None:
        self.checks = checks

    def hold(self, name: str) -> contextlib.AbstractContextManager:
        locks = self

        class Lease:
            def check(self) -> None:
                locks.checks -= 1
                if locks.checks < 0:
                    raise LockLost(f"{name} was taken over by another reaper")

        return contextlib.nullcontext(Lease())


def test_a_lost_lease_stops_the_sweep_before_its_next_delete(world: World, state: Path) -> None:
    run = world.plant_run("r4")
    before = snapshot()
    result = build_reaper(reader(state), locks=LosingLocks(checks=1)).run(apply=True, now=NOW)
    assert result.receipts == []
    [error] = result.errors
    assert error["stack"] == "train-r4" and "taken over" in error["error"]
    # The delete order puts the group first: it went with its members (and so their root volumes);
    # nothing after it in the order was touched.
    after = set(snapshot())
    taken = {
        ("asg", run.asg),
        *(("instance", i) for i in run.instances),
        *(("volume", v) for v in run.volumes),
    }
    assert not taken & after
    assert run.ids() - taken <= after
    assert set(before) - after == taken | links_of(before, taken)


def test_a_stack_needing_the_pulumi_cli_is_an_error_and_the_orphan_is_still_swept(
    world: World, state: Path
) -> None:
    world.plant_run("stacked")
    orphan = world.plant_run("orph")
    add_stack(state, "train-stacked", run_tags("stacked"))

    def no_cli():
        raise UserError("the Pulumi CLI is not installed (see pulumi.com/docs/install)")

    result = build_reaper(reader(state), destroyer=no_cli).run(apply=True, now=NOW)
    assert [(c.stack, c.action) for c in result.candidates] == [
        ("train-stacked", "destroy"),
        ("train-orph", "destroy"),
    ]
    [error] = result.errors
    assert error["stack"] == "train-stacked" and "needs the Pulumi CLI to destroy" in error["error"]
    assert [receipt.run_id for receipt in result.receipts] == ["orph"]
    assert not orphan.ids() & set(snapshot())
    assert reader(state).has_stack("train-stacked")


def test_destroying_a_stack_proves_its_resources_first(world: World, state: Path) -> None:
    run = world.plant_run("r5")
    prod_profile = world.foreign_profile(run.role, PROD_TAGS)
    add_stack(state, "train-r5", run.tags)
    pulumi = FakePulumi(world, state)
    reaper = build_reaper(reader(state))
    teardown = reaper.teardown(reaper.scope.targets)
    with pytest.raises(Refused, match=prod_profile):
        teardown.destroy_stack("train-r5", "r5", pulumi)
    assert pulumi.calls == []
    assert run.ids() <= set(snapshot())


def test_leftovers_of_expired_runs_are_flagged_without_the_backend(world: World) -> None:
    finished = world.plant_run("done1", expires_at="2026-11-22T08:00:00Z")
    world.plant_run("busy1", expires_at="2026-11-23T20:00:00Z")
    [leftover] = expired_run_leftovers([REGION], NOW)
    assert (leftover["run_id"], leftover["reason"], leftover["action"]) == ("done1", "expired", "destroy")
    assert {item["id"] for item in leftover["resources"]} == {identifier for _, identifier in finished.ids()}
    volumes = 2 * 100 * pricing.GP3_GB_MONTHLY / pricing.HOURS_PER_MONTH
    assert leftover["hourly_cost_usd"] == pytest.approx(
        volumes + 2 * pricing.on_demand_hourly("g5.xlarge"), abs=1e-4
    )


def test_a_run_whose_stack_file_is_unreadable_is_no_orphan(world: World, state: Path) -> None:
    run = world.plant_run("r6")
    # A torn write or a newer Pulumi: the stack is there, the reader cannot parse it.
    add_stack(state, "train-r6", run.tags)
    (state / ".pulumi" / "stacks" / "ml-platform" / "train-r6.json").write_bytes(
        b'{"version":3,"checkpoint":'
    )
    before = snapshot()
    result = build_reaper(reader(state)).run(apply=True, now=NOW)
    assert any("train-r6.json" in warning for warning in result.warnings)
    assert [c for c in result.candidates if c.action == "destroy"] == []
    assert result.receipts == [] and snapshot() == before
    assert run.ids() <= set(before)
