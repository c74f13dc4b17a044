"""The sandbox's training runs as run costs read them over HTTP, priced here by hand from the manifest.

nlp-r231 completed after one spot interruption (three instances, checkpoints every 30 min, the
group's activity history, the notice in its interruption queue); vision-r240 still runs past its
$250 dev budget. Both cost sources hold the same line items, so both give the same billed dollars.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from finops import focus
from finops.demo import sandbox_environment
from finops.inventory import Scope
from finops.reaper import scan_expired_run_leftovers
from finops.run_costs import Period, RunCosts, run_costs
from finops.sandbox import Sandbox, SeedManifest, focus_export, seed_account
from finops.sandbox.seed import SeededInstance, SeededRun
from finops.scope import Account, ScanScope
from mlp.tags import RUN_ID
from tests.sandbox_fixtures import sandbox_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TODAY = datetime.combine(NOW.date(), time(), UTC)
REGION = "us-east-1"


@pytest.fixture(scope="module")
def manifest(sandbox: Sandbox) -> SeedManifest:
    return seed_account(sandbox, now=NOW)


def scope(manifest: SeedManifest) -> ScanScope:
    return ScanScope(targets=[Scope(REGION, manifest.account_id)], accounts=[Account(manifest.account_id)])


def costs(sandbox: Sandbox, manifest: SeedManifest, **options: Any) -> RunCosts:
    with sandbox_environment(sandbox):
        return run_costs(scope(manifest), Period.last_days(30, NOW), **options)


@pytest.fixture(scope="module")
def from_cost_explorer(sandbox: Sandbox, manifest: SeedManifest) -> dict[str, dict[str, Any]]:
    return {run["run_id"]: run for run in costs(sandbox, manifest).to_json()["runs"]}


def run(manifest: SeedManifest, run_id: str) -> SeededRun:
    return next(item for item in manifest.runs if item.run_id == run_id)


def hours(instance: SeededInstance, since: datetime | None = None) -> float:
    start = max(instance.launched_at, since) if since else instance.launched_at
    return max(((instance.ended_at or NOW) - start).total_seconds(), 0.0) / 3600


def billed(manifest: SeedManifest, run_id: str) -> float:
    return sum(item.unblended_cost for item in manifest.line_items if item.tags.get(RUN_ID) == run_id)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_interrupted_run_costs_what_its_instances_and_checkpoints_say(
    manifest: SeedManifest, from_cost_explorer: dict[str, dict[str, Any]]
) -> None:
    seeded = run(manifest, "nlp-r231")
    a, b, c = seeded.instances
    found = from_cost_explorer["nlp-r231"]

    assert (found["status"], found["team"], found["environment"]) == ("completed", "nlp", "dev")
    assert found["bucket"] == seeded.bucket and found["start"] == iso(a.launched_at)
    assert found["end"] == iso(b.ended_at)  # type: ignore[arg-type]
    by_option = {line["purchase_option"]: line for line in found["instance_hours"]}
    assert by_option["on-demand"]["hours"] == round(hours(b), 4) == 17.0
    assert by_option["spot"]["hours"] == round(hours(a) + hours(c), 4)
    # Billed through yesterday by the run-id tag; today's hours at list price.
    assert found["billed_usd"] == round(billed(manifest, "nlp-r231"), 2)
    assert found["billed_through"] == (NOW.date() - timedelta(days=1)).isoformat()
    estimate = sum(hours(item, TODAY) * item.hourly_cost_usd for item in seeded.instances)
    assert found["estimated_usd"] == round(estimate, 2) and found["budget_usd"] == 250.0
    assert found["over_budget"] is False and found["budget_crossed_at"] is None

    [interruption] = found["interruptions"]
    assert a.spot_interrupted and a.ended_at is not None
    last = max(moment for moment in seeded.checkpoints if moment <= a.ended_at)
    resumed = min(moment for moment in seeded.checkpoints if moment > c.launched_at)
    assert interruption == {
        "instance_id": a.instance_id,
        "kind": "interruption",
        "evidence": ["ec2-state-reason", "interruption-queue", "scaling-activity"],
        "instance_type": "g5.12xlarge",
        "purchase_option": "spot",
        "noticed_at": iso(a.ended_at - timedelta(minutes=2)),
        "ended_at": iso(a.ended_at),
        "last_checkpoint_at": iso(last),
        "lost_hours": 0.5,
        "lost_usd": round(0.5 * a.hourly_cost_usd, 2),
        "replacement_instance_id": c.instance_id,
        "first_checkpoint_after_restart_at": iso(resumed),
        "restart_overhead_hours": round(35 / 60, 4),
        "restart_overhead_usd": round(35 / 60 * c.hourly_cost_usd, 2),
    }


def test_the_running_run_is_over_its_budget_since_its_cost_passed_it(
    manifest: SeedManifest, from_cost_explorer: dict[str, dict[str, Any]]
) -> None:
    seeded = run(manifest, "vision-r240")
    found = from_cost_explorer["vision-r240"]
    hourly = sum(item.hourly_cost_usd for item in seeded.instances)

    assert found["status"] == "running" and found["over_budget"] is True
    assert found["cost_usd"] == round(26 * hourly, 2) > 250
    # Yesterday's billed dollars, spread over the hours it ran yesterday, then today's at list price.
    yesterday = billed(manifest, "vision-r240")
    crossed = TODAY + timedelta(hours=(250 - yesterday) / hourly)
    assert found["billed_usd"] == round(yesterday, 2)
    assert found["budget_crossed_at"] == iso((crossed + timedelta(milliseconds=500)).replace(microsecond=0))
    newest = max(seeded.checkpoints)
    assert found["checkpoint"] == {
        "newest_at": iso(newest),
        "age_minutes": (NOW - newest).total_seconds() / 60,
        "stale": False,
    }


def test_the_focus_exports_line_items_bill_the_runs_as_cost_explorer_does(
    sandbox: Sandbox, manifest: SeedManifest, from_cost_explorer: dict[str, dict[str, Any]]
) -> None:
    with sandbox_environment(sandbox):
        spend = focus.read_focus_spend(focus_export.EXPORT_URI, NOW.date() - timedelta(days=40), NOW.date())
    assert spend.line_items is not None
    with spend.line_items:
        result = costs(sandbox, manifest, line_items=spend.line_items)
    assert result.to_json()["cost_source"] == "focus" and result.ce_requests == 0
    for found in result.to_json()["runs"]:
        expected = from_cost_explorer[found["run_id"]]
        for key in ("billed_usd", "billed_through", "estimated_usd", "cost_usd", "budget_crossed_at"):
            assert found[key] == expected[key], (found["run_id"], key)


def test_the_groups_activity_history_is_answered_newest_first(
    sandbox: Sandbox, manifest: SeedManifest
) -> None:
    seeded = run(manifest, "nlp-r231")
    activities = sandbox.client("autoscaling", REGION).describe_scaling_activities(
        AutoScalingGroupName=seeded.group, IncludeDeletedGroups=True
    )["Activities"]
    assert len(activities) == 6
    assert [item["StartTime"] for item in activities] == sorted(
        (item["StartTime"] for item in activities), reverse=True
    )
    [interrupted] = [item for item in activities if "interruption notice" in item["Cause"]]
    assert interrupted["Description"] == f"Terminating EC2 instance: {seeded.instances[0].instance_id}"
    other = sandbox.client("autoscaling", REGION).describe_scaling_activities(AutoScalingGroupName="none")
    assert other["Activities"] == []


def test_the_expired_run_leftovers_are_still_only_the_finished_runs(
    sandbox: Sandbox, manifest: SeedManifest
) -> None:
    with sandbox_environment(sandbox):
        found = scan_expired_run_leftovers(
            ScanScope(
                targets=[Scope(region, manifest.account_id) for region in manifest.regions],
                accounts=[Account(manifest.account_id)],
            ),
            NOW,
        )
    assert [leftover["run_id"] for leftover in found.leftovers] == [manifest.finished_run_id]


def test_seeding_again_lays_out_the_same_ids(sandbox: Sandbox, manifest: SeedManifest) -> None:
    again = seed_account(sandbox, now=NOW)

    assert [item.instance_id for item in again.instances] == [item.instance_id for item in manifest.instances]
    assert [item.arn for item in again.resources] == [item.arn for item in manifest.resources]
    assert again.organization.account_ids == manifest.organization.account_ids
    assert again.runs == manifest.runs and again.line_items == manifest.line_items
