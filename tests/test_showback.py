"""Showback by cost-center and team, the idle rate, owners, and one action item per thing to fix.

Spend comes from the sandbox's Cost Explorer emulator over the line items of `tests.test_budgets`
(and `tests.test_costs`' seeded ones); the FOCUS export's line items are
`tests.test_report_focus_unlocks`'. Every expected dollar is summed by hand from those line items.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from finops import report
from finops.costs import UNTAGGED_LABEL, Spend
from finops.findings import Report
from finops.idle import IdleFinding
from finops.sandbox.cost_explorer import LineItem
from finops.showback import (
    OWNER_TAG,
    SHOWBACK_COLUMNS,
    TEAM_OWNER,
    ShowbackRow,
    actions,
    idle_rate,
    showback,
    stack_team_owners,
    team_owners,
)
from finops.untagged import UntaggedFinding
from mlp.pricing import HOURS_PER_MONTH
from tests.test_budgets import (
    FINANCE_STACKS,
    PERIOD,
    finance_line_items,
    make_project,
    read_items,
    stack_file,
)
from tests.test_costs import NOW, TODAY, make_line_items
from tests.test_report import IDLE, UNTAGGED_RESOURCES, read_spend
from tests.test_report_focus_unlocks import LINE_ITEMS, with_line_items

DAYS_LEFT = 8  # November 23rd to December 1st
MONTH_START = TODAY.replace(day=1)


@pytest.fixture(scope="module")
def items() -> list[LineItem]:
    return finance_line_items()


@pytest.fixture(scope="module")
def spend(items: list[LineItem]) -> Spend:
    return read_items(items)


def label(item: LineItem, key: str) -> str:
    return item.tags.get(key) or UNTAGGED_LABEL


def usd(items: list[LineItem], start: date, end: date) -> float:
    return sum(item.unblended_cost for item in items if start <= item.day < end)


def expected_rows(items: list[LineItem], key: str) -> list[ShowbackRow]:
    """The showback rows of `key`, summed from the line items the report read."""
    read = [item for item in items if item.day >= PERIOD.fetch_start]
    rows = []
    for name in {label(item, key) for item in read}:
        group = [item for item in read if label(item, key) == name]
        month_to_date = usd(group, MONTH_START, TODAY)
        run_rate = usd(group, TODAY - timedelta(days=7), TODAY) / 7
        current, previous = (
            usd(group, PERIOD.start, PERIOD.end),
            usd(group, PERIOD.previous.start, PERIOD.previous.end),
        )
        rows.append(
            ShowbackRow(
                name=name,
                month_to_date_usd=round(month_to_date, 2),
                forecast_usd=round(month_to_date + run_rate * DAYS_LEFT, 2),
                period_usd=round(current, 2),
                previous_usd=round(previous, 2),
                change_usd=round(current - previous, 2),
                change_pct=round((current - previous) / previous * 100, 1) if previous else None,
            )
        )
    return sorted(rows, key=lambda row: (row["name"] == UNTAGGED_LABEL, -row["period_usd"], row["name"]))


def assert_rows_equal(got: list[ShowbackRow] | None, expected: list[ShowbackRow]) -> None:
    assert got is not None
    assert [row["name"] for row in got] == [row["name"] for row in expected]
    for row, want in zip(got, expected, strict=True):
        for column, value in want.items():
            if value is None or isinstance(value, str):
                assert row[column] == value, (row["name"], column)
            else:
                assert row[column] == pytest.approx(value, abs=0.011), (row["name"], column)


# --- showback ---------------------------------------------------------------------------------------


def test_showback_rows_by_cost_center_and_team(spend: Spend, items: list[LineItem]) -> None:
    result = showback(spend, PERIOD)

    assert_rows_equal(result.by_cost_center, expected_rows(items, "cost-center"))
    assert_rows_equal(result.by_team, expected_rows(items, "team"))
    by_team = {row["name"]: row for row in result.by_team or []}
    by_cost_center = {row["name"]: row for row in result.by_cost_center or []}
    # The biggest period first, untagged last.
    assert list(by_cost_center) == ["cc-nlp", "cc-vision", "cc-recsys", UNTAGGED_LABEL]
    assert list(by_team) == ["nlp", "vision", "recsys", UNTAGGED_LABEL]
    # vision: 14 days at $12 against 6 October days at $10 and 8 November days at $12.
    assert by_team["vision"] == ShowbackRow(
        name="vision",
        month_to_date_usd=22 * 12.0,
        forecast_usd=22 * 12.0 + 12.0 * DAYS_LEFT,
        period_usd=14 * 12.0,
        previous_usd=6 * 10.0 + 8 * 12.0,
        change_usd=12.0,
        change_pct=round(12 / 156 * 100, 1),
    )
    # nlp's staging spend is new this period: no previous dollar, so no percentage.
    assert by_cost_center["cc-nlp"]["previous_usd"] == 0.0
    assert by_cost_center["cc-nlp"]["change_pct"] is None
    assert by_cost_center["cc-nlp"]["period_usd"] == 11 * 100.0
    # recsys stopped before the period: all of its previous spend is the change.
    assert by_team["recsys"]["period_usd"] == 0.0
    assert by_team["recsys"]["change_usd"] == -5 * 20.0
    assert by_team["recsys"]["change_pct"] == -100.0
    assert by_team["recsys"]["month_to_date_usd"] == by_team["recsys"]["forecast_usd"] == 0.0


def test_showback_of_seeded_spend_sums_like_the_line_items() -> None:
    seeded = make_line_items(days=45)
    result = showback(read_spend(seeded), PERIOD)
    for key, rows in (("team", result.by_team), ("cost-center", result.by_cost_center)):
        assert_rows_equal(rows, expected_rows(seeded, key))


def parsed_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def csv_row(dimension: str, row: ShowbackRow) -> dict[str, str]:
    return {
        "dimension": dimension,
        **{key: "" if value is None else str(value) for key, value in row.items()},
    }


def test_showback_csv_reads_back_as_the_rows(spend: Spend) -> None:
    result = showback(spend, PERIOD)
    header, rows = parsed_csv(result.csv())

    assert header == list(SHOWBACK_COLUMNS)
    assert rows == [csv_row("cost-center", row) for row in result.by_cost_center or []] + [
        csv_row("team", row) for row in result.by_team or []
    ]
    # Numbers as numbers, an unknown percentage as an empty cell.
    for parsed, row in zip(rows, [*(result.by_cost_center or []), *(result.by_team or [])], strict=True):
        assert float(parsed["period_usd"]) == row["period_usd"]
        assert (parsed["change_pct"] == "") == (row["change_pct"] is None)
    assert any(parsed["change_pct"] == "" for parsed in rows)


def test_showback_of_a_missing_view_is_none_and_left_out_of_the_csv() -> None:
    throttled = read_spend(make_line_items(days=45), throttle=3, max_attempts=3)  # team+environment fails
    result = showback(throttled, PERIOD)

    assert result.by_team is None
    assert result.by_cost_center
    assert result.to_json() == {"by_cost_center": result.by_cost_center, "by_team": None}
    _, rows = parsed_csv(result.csv())
    assert {row["dimension"] for row in rows} == {"cost-center"}


# --- the idle rate -----------------------------------------------------------------------------------------


def test_idle_rate_is_the_idle_gpus_hourly_cost_for_a_month() -> None:
    unpriced = dataclasses.replace(IDLE[1], resource_id="i-0mystery", hourly_cost_usd=None, wasted_usd=None)
    rate = idle_rate([*IDLE, unpriced], window_hours=6.0, threshold_pct=5.0)
    hourly = 1.006 + 0.526  # IDLE's list prices; the unpriced one adds nothing
    assert rate == {
        "window_hours": 6.0,
        "threshold_pct": 5.0,
        "instances": 3,
        "hourly_usd": round(hourly, 4),
        "monthly_usd": round(hourly * 730, 2),
    }
    assert idle_rate([], 6.0, 5.0)["monthly_usd"] == 0.0


# --- owners ---------------------------------------------------------------------------------------------------


def test_team_owners_are_the_most_frequent_owner_seen_else_the_stacks() -> None:
    seen = [
        {"team": "vision", "owner": "ana@example.com"},
        {"team": "vision", "owner": "ben@example.com"},
        {"team": "vision", "owner": "ben@example.com"},
        {"team": "nlp"},  # no owner: says nothing
        {"owner": "orphan@example.com"},  # no team: says nothing
    ]
    owners = team_owners(seen, {"vision": "vision-lead@example.com", "recsys": "recsys-lead@example.com"})
    assert owners == {"vision": "ben@example.com", "recsys": "recsys-lead@example.com"}


def test_stack_team_owners_are_the_stacks_team_and_owner_tags(tmp_path: Path) -> None:
    without_owner = stack_file("recsys", "x@example.com", 100, {}, [80])
    del without_owner["config"]["ml-platform:tags"]["owner"]
    project = make_project(tmp_path / "project", {**FINANCE_STACKS, "qa": without_owner})

    # dev tags vision's owner, staging nlp's; qa has no owner; broken, prod and train-r1 do not load.
    assert stack_team_owners(project) == {"vision": "vision@example.com", "nlp": "nlp@example.com"}
    assert stack_team_owners(tmp_path / "nowhere") == {}


# --- action items ---------------------------------------------------------------------------------------------


def idle(
    resource_id: str, tags: Mapping[str, str], hourly: float | None = 1.006, hours: float = 12.0
) -> IdleFinding:
    return IdleFinding(
        resource_id=resource_id,
        region="us-east-1",
        instance_type="g5.xlarge",
        telemetry="gpu",
        gpu_util_max=1.0,
        cpu_util_max=None,
        idle_hours=hours,
        hourly_cost_usd=hourly,
        wasted_usd=None if hourly is None else hourly * hours,
        tags=tags,
        account_id="111111111111",
    )


OWNERS = {"vision": "vision-lead@example.com"}


def test_the_owner_tag_wins_over_the_teams_owner() -> None:
    [item] = actions([idle("i-1", {"team": "vision", "owner": "ana@example.com"})], [], [], owners=OWNERS)
    assert (item.owner, item.owner_source) == ("ana@example.com", OWNER_TAG)
    assert item.text.startswith("Ask ana@example.com to stop i-1 ")


def test_without_an_owner_tag_the_teams_owner_is_asked() -> None:
    [item] = actions([idle("i-1", {"team": "vision"})], [], [], owners=OWNERS)
    assert (item.owner, item.owner_source) == ("vision-lead@example.com", TEAM_OWNER)
    assert item.text.startswith("Ask vision-lead@example.com to stop i-1 ")


def test_without_any_owner_the_text_says_whom_to_find() -> None:
    team_only, bare = actions([idle("i-1", {"team": "nlp"}), idle("i-2", {})], [], [], owners=OWNERS)
    assert (team_only.owner, team_only.owner_source, bare.owner, bare.owner_source) == (
        None,
        None,
        None,
        None,
    )
    assert team_only.text.startswith("Find the owner of team nlp to stop i-1 ")
    assert bare.text.startswith("Find who owns it and ask them to stop i-2 ")


def test_an_idle_gpus_item_names_owner_instance_type_idle_hours_and_monthly_cost() -> None:
    [item] = actions(
        [dataclasses.replace(IDLE[1], tags={"owner": "bo@example.com"}, account_id="222222222222")],
        [],
        [],
        owners={},
    )
    monthly = round(0.526 * HOURS_PER_MONTH, 2)  # IDLE[1]'s list price for 730 hours: $383.98
    assert monthly == round(0.526 * 730, 2) == 383.98
    assert item.monthly_usd == monthly
    assert (
        item.text
        == f"Ask bo@example.com to stop i-0idle2 (g4dn.xlarge, its GPU idle for 6 h): ${monthly:,.2f}/month"
    )
    assert item.command is None
    assert item.to_json() == {
        "kind": "idle",
        "resource_id": "i-0idle2",
        "account_id": "222222222222",
        "region": "us-west-2",
        "owner": "bo@example.com",
        "owner_source": OWNER_TAG,
        "monthly_usd": monthly,
        "text": item.text,
        "command": None,
    }


def test_a_training_instance_is_ended_with_its_run() -> None:
    [item] = actions([IDLE[0]], [], [], owners=OWNERS)  # team vision, run r1, 12 idle hours at $1.006
    monthly = round(1.006 * 730, 2)
    assert item.command == "mlp train destroy r1 --apply"
    assert item.text == (
        f"Ask vision-lead@example.com to end training run r1 on i-0idle1 (g5.xlarge, its GPU idle for 12 h): "
        f"${monthly:,.2f}/month"
    )


def test_an_unpriced_instance_has_no_monthly_cost_and_says_so() -> None:
    [item] = actions([idle("i-1", {"team": "vision"}, hourly=None, hours=7.5)], [], [], owners=OWNERS)
    assert item.monthly_usd is None
    assert item.text.endswith("(g5.xlarge, its GPU idle for 7.5 h): cost unknown (no list price)")


def test_a_leftover_is_confirmed_over_and_reaped() -> None:
    leftover = {
        "run_id": "r9",
        "account_id": "333333333333",
        "hourly_cost_usd": 2.5,
        "tags": {"team": "vision"},
    }
    [item] = actions([], [], [leftover], owners=OWNERS)
    assert (item.kind, item.resource_id, item.account_id, item.monthly_usd) == (
        "leftover",
        "r9",
        "333333333333",
        2.5 * 730,
    )
    assert item.command == "mlp reap --apply"
    assert item.text == (
        "Ask vision-lead@example.com to confirm training run r9 is over; the reaper destroys what it still "
        "owns: $1,825.00/month"
    )


@pytest.fixture(scope="module")
def from_export() -> Report:
    """IDLE and UNTAGGED_RESOURCES with the FOCUS export's line items (test_report_focus_unlocks')."""
    return report.build_report(
        with_line_items(read_spend([]), LINE_ITEMS),
        PERIOD,
        idle=IDLE,
        untagged=UNTAGGED_RESOURCES,
        generated_at=NOW,
        stack_team_owners={"vision": "vision-lead@example.com"},
    )


def per_month(billed_in_period: float) -> float:
    """The period's billed dollars as a month: per day of the 14-day period, for 730/24 days."""
    return round(billed_in_period / PERIOD.days * HOURS_PER_MONTH / 24, 2)


def test_untagged_items_cost_their_billed_dollars_per_month(from_export: Report) -> None:
    untagged = {item.resource_id: item for item in from_export.actions if item.kind == "untagged"}
    instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"
    volume = "arn:aws:ec2:us-east-1:123456789012:volume/vol-1"
    bucket = "arn:aws:s3:::scratch"

    # The line items of the period: the instance 12.00; the volume 3.00 + 2.50 (its 7.00 of the day
    # before the period is not the period's); the bucket 4.25.
    assert untagged[instance].monthly_usd == per_month(12.00)
    assert untagged[volume].monthly_usd == per_month(3.00 + 2.50)
    assert untagged[bucket].monthly_usd == per_month(4.25)
    assert PERIOD.days == 14

    assert untagged[instance].text == (
        f"Find who owns it and ask them to tag ec2:instance i-0abc with team, owner: "
        f"${per_month(12.00):,.2f}/month nobody is charged for"
    )
    assert untagged[bucket].text == (
        f"Ask bob@example.com to tag s3:bucket scratch with team: ${per_month(4.25):,.2f}/month nobody is charged for"
    )
    assert (untagged[bucket].owner, untagged[bucket].owner_source) == ("bob@example.com", OWNER_TAG)
    assert untagged[volume].text.startswith(
        "Find who owns it and ask them to tag ec2:volume vol-1 with team, project, environment, cost-center, owner"
    )
    assert all(item.command is None for item in untagged.values())


def test_actions_are_sorted_costliest_first(from_export: Report) -> None:
    monthly = [item.monthly_usd for item in from_export.actions]
    assert monthly == sorted(monthly, key=lambda value: -(value or 0.0))
    assert [item.resource_id for item in from_export.actions[:2]] == ["i-0idle1", "i-0idle2"]
    assert len(from_export.actions) == len(IDLE) + len(UNTAGGED_RESOURCES)


def test_without_line_items_untagged_items_have_no_monthly_cost_and_come_last() -> None:
    built = report.build_report(read_spend([]), PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES)
    kinds = [(item.kind, item.monthly_usd) for item in built.actions]
    assert kinds[:2] == [("idle", round(1.006 * 730, 2)), ("idle", round(0.526 * 730, 2))]
    assert kinds[2:] == [("untagged", None)] * 3
    assert all("nobody is charged" not in item.text for item in built.actions[2:])


def test_the_report_asks_the_owner_seen_for_a_team_else_the_stacks_owner() -> None:
    seen_owner = UntaggedFinding(
        "arn:aws:s3:::nlp-scratch",
        "s3:bucket",
        "us-east-1",
        ("project",),
        tags={"team": "nlp", "owner": "nia@example.com"},
    )
    built = report.build_report(
        read_spend([]),
        PERIOD,
        idle=[idle("i-vision", {"team": "vision"}), idle("i-nlp", {"team": "nlp"})],
        untagged=[seen_owner],
        stack_team_owners={"vision": "vision-lead@example.com", "nlp": "nlp-lead@example.com"},
    )
    owners = {item.resource_id: (item.owner, item.owner_source) for item in built.actions}
    assert owners == {
        "i-vision": ("vision-lead@example.com", TEAM_OWNER),  # no vision owner among the tags: the stacks'
        "i-nlp": ("nia@example.com", TEAM_OWNER),  # the nlp owner the tags show beats the stacks'
        "arn:aws:s3:::nlp-scratch": ("nia@example.com", OWNER_TAG),
    }


# --- findings.json ---------------------------------------------------------------------------------------------


def test_findings_json_carries_showback_idle_rate_actions_and_runs(
    spend: Spend, items: list[LineItem]
) -> None:
    built = report.build_report(spend, PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES, generated_at=NOW)
    # What findings.json holds (write_report writes exactly this; tests/test_report.py checks that).
    findings: dict[str, Any] = json.loads(json.dumps(built.findings))

    by_cost_center = findings["spend"]["by_cost_center"]
    current = [item for item in items if PERIOD.start <= item.day < PERIOD.end]
    expected = {
        name: round(sum(item.unblended_cost for item in current if label(item, "cost-center") == name), 2)
        for name in {label(item, "cost-center") for item in current}
    }
    assert by_cost_center == pytest.approx(expected, abs=0.006)
    assert by_cost_center["cc-nlp"] == 11 * 100.0 and "cc-recsys" not in by_cost_center

    assert findings["showback"] == json.loads(json.dumps(built.showback.to_json()))
    assert_rows_equal(findings["showback"]["by_team"], expected_rows(items, "team"))
    assert findings["idle_rate"] == {
        "window_hours": 6.0,
        "threshold_pct": 5.0,
        "instances": 2,
        "hourly_usd": round(1.006 + 0.526, 4),
        "monthly_usd": round((1.006 + 0.526) * 730, 2),
    }
    assert findings["actions"] == [item.to_json() for item in built.actions]
    assert [item["kind"] for item in findings["actions"]] == [
        "idle",
        "idle",
        "untagged",
        "untagged",
        "untagged",
    ]
    # No training runs read: null, never an empty list that would claim there were none.
    assert (findings["runs"], findings["runs_totals"], findings["recovered"]) == (None, None, None)
