"""A running run over its per-run budget is reaped like an expired one: notified within the grace, then destroyed.

Against moto: runs planted as their stacks create them (`tests/reaper_world.py`), their instances'
LaunchTime backdated so that their list-price cost passes the dev environment's $250 budget
(`Pulumi.dev.yaml`) at a moment computed here by hand. moto's Cost Explorer bills nothing, so every
dollar is the estimate: two on-demand g5.xlarge at $1.006/h each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finops.reaper import over_budget_runs, running_costs
from infra.config import load_stack_config
from infra.training.state import DiyStateBackend
from mlp import pricing
from mlp.cli import app
from mlp.tags import format_expires_at
from tests.reaper_world import (
    INSTANCE_TYPE,
    LIVE,
    MANDATORY,
    NOW,
    REGION,
    FakePulumi,
    PlantedRun,
    World,
    add_stack,
    build_reaper,
    diy_state,
    mocked_world,
    own_scope,
    snapshot,
)

BUDGET = float(load_stack_config("dev").training.per_run_budget_usd)
HOURLY = 2 * pricing.on_demand_hourly(INSTANCE_TYPE)
# Two instances from launch: the budget is passed this long after it.
TO_BUDGET = timedelta(hours=BUDGET / HOURLY)
# Launched so that the budget was passed 30 minutes before NOW: within the 60 min grace.
LAUNCHED = (NOW - TO_BUDGET - timedelta(minutes=30)).replace(microsecond=0)
# To the second, as the reaper states it.
CROSSED = (LAUNCHED + TO_BUDGET + timedelta(milliseconds=500)).replace(microsecond=0)
BUCKET = "mlp-dev-checkpoints-0a1b2c"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    with mocked_world(monkeypatch, tmp_path) as planted:
        yield planted


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return diy_state(tmp_path)


def plant(world: World, state: Path, run_id: str, launched: datetime) -> PlantedRun:
    """An unexpired run of two instances launched at `launched`, with its stack and a checkpoint."""
    run = world.plant_run(run_id, expires_at=LIVE, instances=2)
    world.launched_at(run.instances, launched)
    add_stack(state, f"train-{run_id}", run.tags)
    world.checkpoints(BUCKET, run_id)
    return run


def reap(world: World, state: Path, now: datetime, *, apply: bool) -> tuple[Any, list[str], FakePulumi]:
    notices: list[str] = []
    pulumi = FakePulumi(world, state)
    over_budget = over_budget_runs(running_costs(own_scope(), now))
    reaper = build_reaper(
        DiyStateBackend(f"file://{state}"),
        destroyer=lambda: pulumi,
        notify=notices.append,
        over_budget=over_budget,
    )
    return reaper.run(apply=apply, now=now), notices, pulumi


def stamp(moment: datetime) -> str:
    return format_expires_at(moment)


def test_a_run_over_its_budget_is_notified_within_the_grace_and_one_under_it_is_left_alone(
    world: World, state: Path
) -> None:
    rich = plant(world, state, "rich", LAUNCHED)
    plant(world, state, "thrifty", NOW - timedelta(hours=10))
    before = snapshot()

    result, notices, pulumi = reap(world, state, NOW, apply=True)

    [candidate] = result.candidates
    cost = HOURLY * (NOW - LAUNCHED).total_seconds() / 3600
    assert (candidate.stack, candidate.reason, candidate.action) == ("train-rich", "over-budget", "skip")
    assert candidate.why == (
        f"${cost:,.2f} billed plus estimated, over its $250 budget since {stamp(CROSSED)}; "
        "within the 60 min grace period, notified"
    )
    assert pulumi.calls == [] and result.receipts == [] and snapshot() == before
    # The reaper is the scheduled job that sees the run pass its budget: its owner hears it from it.
    [notice] = notices
    assert notice.startswith(f"training run rich (train-rich) in account {world.account_id}, ")
    assert f"owner {MANDATORY['owner']}" in notice and f"${cost:,.2f}" in notice and "$250 budget" in notice
    assert notice.endswith(
        f"Next: destroyed by the reaper from {stamp(CROSSED + timedelta(minutes=60))} on, "
        "its checkpoints are kept"
    )
    assert {item for item in before if item[0] == "instance"} >= {("instance", i) for i in rich.instances}


def test_after_the_grace_it_is_destroyed_with_apply_checkpoints_kept_and_its_receipt_costed(
    world: World, state: Path
) -> None:
    rich = plant(world, state, "rich", LAUNCHED)
    thrifty = plant(world, state, "thrifty", NOW - timedelta(hours=10))
    later = NOW + timedelta(minutes=31)

    dry, _, pulumi = reap(world, state, later, apply=False)
    assert [(c.stack, c.reason, c.action) for c in dry.candidates] == [
        ("train-rich", "over-budget", "destroy")
    ]
    assert f"since {stamp(CROSSED)}" in dry.candidates[0].why and pulumi.calls == []

    result, notices, pulumi = reap(world, state, later, apply=True)

    assert result.errors == [] and not result.failed
    assert pulumi.calls == [("destroy", "train-rich"), ("remove", "train-rich")]
    after = snapshot()
    assert not rich.ids() & set(after) and thrifty.ids() <= set(after)
    assert ("object", f"{BUCKET}/runs/rich/checkpoints/step-000100.pt") in after
    [receipt] = result.receipts
    assert receipt.run_id == "rich" and receipt.leaks == []
    # The run's cost line, read after the destroy (moto keeps no scaling activities, which is where
    # AWS still shows a deleted group's instances, so its hours here are the bucket's run alone).
    assert receipt.cost_line is not None and {"cost_usd", "billed_usd", "estimated_usd"} <= set(
        receipt.cost_line
    )
    assert any("instance-h" in line for line in receipt.lines())
    [notice] = notices
    assert "is over-budget, destroy:" in notice and notice.endswith(
        "Next: destroyed now, its checkpoints are kept"
    )


def test_the_ownership_proofs_still_hold_for_a_run_over_budget(world: World, state: Path) -> None:
    rich = plant(world, state, "rich", LAUNCHED)
    stranger = world.foreign_instance()
    world.attach_to_group(rich.asg, stranger)
    before = snapshot()

    result, notices, pulumi = reap(world, state, NOW + timedelta(minutes=31), apply=True)

    [candidate] = result.candidates
    assert (candidate.reason, candidate.action) == ("over-budget", "refuse") and stranger in candidate.why
    assert pulumi.calls == [] and snapshot() == before and result.failed
    assert any("refuse" in notice for notice in notices)


def test_mlp_reap_json_names_the_over_budget_candidate(world: World, state: Path) -> None:
    # The CLI reads the wall clock: the budget was passed five hours before it.
    plant(world, state, "rich", datetime.now(UTC) - TO_BUDGET - timedelta(hours=5))
    plant(world, state, "thrifty", datetime.now(UTC) - timedelta(hours=10))

    result = CliRunner().invoke(
        app, ["reap", "--format", "json", "--regions", REGION, "--backend", f"file://{state}"]
    )

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [(c["stack"], c["reason"], c["action"]) for c in payload["candidates"]] == [
        ("train-rich", "over-budget", "destroy")
    ]
    assert "over its $250 budget since" in payload["candidates"][0]["why"]
