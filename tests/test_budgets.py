"""Budgets against actual: AWS Budgets read back (moto), the stacks' config as the fallback, each status.

The limits come from moto's AWS Budgets (seeded by `finops.sandbox.budgets.seed_budgets` from a
project made here) or from the Pulumi.<stack>.yaml files of that project; the spend comes from the
sandbox's Cost Explorer emulator over line items made here, so every month-to-date and forecast
dollar expected is summed by hand from those line items.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws

from finops import costs, report
from finops.analysis import RUN_RATE_DAYS, report_period
from finops.budgets import (
    AWS_BUDGETS,
    STACK_CONFIG,
    Budget,
    budget_statuses,
    load_budgets,
    read_aws_budgets,
    stack_config_budgets,
)
from finops.costs import Spend
from finops.findings import Report
from finops.sandbox.budgets import seed_budgets
from finops.sandbox.cost_explorer import CostExplorerEmulator, LineItem
from tests.test_costs import TODAY, EmulatedCostExplorer, SleepRecorder, full_tags, make_line_items
from tests.test_report import read_spend

ACCOUNT_ID = "123456789012"
DAYS = 14
PERIOD = report_period(DAYS, TODAY)
EC2 = "Amazon Elastic Compute Cloud - Compute"
S3 = "Amazon Simple Storage Service"

# The fixture's tag sets: three fully tagged teams, nlp's partly tagged dev spend, untagged storage.
VISION_DEV = full_tags("vision", "dev")
NLP_STAGING = full_tags("nlp", "staging")
RECSYS_STAGING = full_tags("recsys", "staging")
NLP_DEV_PARTIAL = {"team": "nlp", "environment": "dev"}
NO_TAGS: dict[str, str] = {}


def line_item(day: date, tags: Mapping[str, str], usd: float, service: str = EC2) -> LineItem:
    return LineItem(
        day=day,
        service=service,
        region="us-east-1",
        purchase_type="On Demand Instances",
        instance_type="g5.xlarge" if service == EC2 else None,
        linked_account=ACCOUNT_ID,
        tags=dict(tags),
        unblended_cost=usd,
        amortized_cost=usd,
        usage_quantity=24.0,
    )


def finance_line_items(today: date = TODAY, days: int = 60) -> list[LineItem]:
    """Daily spend of the `days` before `today`, simple enough to sum by hand.

    vision in dev: $10/day before `today`'s month, $12/day in it; nlp in staging: $100/day over the
    last 11 days only; nlp's partly tagged dev spend: $5 on even days of the month; recsys in
    staging: $20/day until 24 days before `today`, then nothing; untagged storage: $2/day.
    """
    items = []
    for offset in range(1, days + 1):
        day = today - timedelta(days=offset)
        items.append(line_item(day, VISION_DEV, 12.0 if day.month == today.month else 10.0))
        if offset <= 11:
            items.append(line_item(day, NLP_STAGING, 100.0))
        if day.day % 2 == 0:
            items.append(line_item(day, NLP_DEV_PARTIAL, 5.0))
        if offset >= 24:
            items.append(line_item(day, RECSYS_STAGING, 20.0))
        items.append(line_item(day, NO_TAGS, 2.0, service=S3))
    return items


def read_items(
    items: list[LineItem], today: date = TODAY, days: int = DAYS, start: date | None = None
) -> Spend:
    """The report's read of `items` on `today` through the Cost Explorer emulator (from `start`)."""
    emulator = CostExplorerEmulator(page_size=40)
    emulator.load(items, datetime.combine(today, time(9, 30), UTC))
    reader = costs.CostExplorerReader(EmulatedCostExplorer(emulator), sleep=SleepRecorder())
    period = report_period(days, today)
    return costs.read_spend(reader, start or period.fetch_start, period.end)


def carries(item: LineItem, tags: Mapping[str, str]) -> bool:
    return all(item.tags.get(key) == value for key, value in tags.items())


def spend_of(items: list[LineItem], tags: Mapping[str, str], start: date, end: date) -> float:
    """The line items' dollars of [start, end) carrying every tag value of `tags`."""
    return sum(item.unblended_cost for item in items if start <= item.day < end and carries(item, tags))


def month_figures(items: list[LineItem], tags: Mapping[str, str], today: date = TODAY) -> tuple[float, float]:
    """(month to date, month end at the last 7 days' average) of a mid-month report on `today`."""
    month_start = today.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    month_to_date = spend_of(items, tags, month_start, today)
    run_rate = spend_of(items, tags, today - timedelta(days=RUN_RATE_DAYS), today) / RUN_RATE_DAYS
    return month_to_date, month_to_date + run_rate * (next_month - today).days


def stack_file(
    team: str,
    owner: str,
    environment_usd: float,
    team_usd: Mapping[str, float],
    thresholds: list[int],
) -> dict[str, Any]:
    """A minimal valid Pulumi.<stack>.yaml document (infra.config.StackConfig's required keys)."""
    return {
        "config": {
            "aws:region": "us-east-1",
            "ml-platform:tags": {
                "team": team,
                "project": f"{team}-project",
                "cost-center": f"cc-{team}",
                "owner": owner,
            },
            "ml-platform:budgets": {
                "environmentMonthlyUsd": environment_usd,
                "teamMonthlyUsd": dict(team_usd),
                "alertThresholdsPct": thresholds,
                "alertEmails": ["finops@example.com"],
            },
        }
    }


def make_project(directory: Path, stacks: Mapping[str, dict[str, Any] | str]) -> Path:
    """A project directory: Pulumi.yaml and one Pulumi.<stack>.yaml per entry (a str is written as is)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Pulumi.yaml").write_text("name: ml-platform\nruntime: python\nmain: infra/\n")
    for stack, document in stacks.items():
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        (directory / f"Pulumi.{stack}.yaml").write_text(text)
    return directory


# The statuses' project: dev's nlp budget is under its first alert but forecast over, vision's is
# spent, staging's environment budget is past its first (50 %) alert.
FINANCE_STACKS: dict[str, dict[str, Any] | str] = {
    "dev": stack_file("vision", "vision@example.com", 1000, {"vision": 250, "nlp": 70}, [100, 80]),
    "staging": stack_file("nlp", "nlp@example.com", 2000, {"recsys": 500}, [50, 80, 100]),
    # None has a budget to show: one lacks tags and budgets, prod has a single feature-store node
    # (prod needs two), the last is a training run's name.
    "broken": "config:\n  aws:region: us-east-1\n",
    "prod": stack_file("nlp", "nlp@example.com", 9, {}, [80]),
    "train-r1": yaml.safe_dump(stack_file("vision", "v@example.com", 9, {}, [80])),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", FINANCE_STACKS)


@pytest.fixture(scope="module")
def items() -> list[LineItem]:
    return finance_line_items()


@pytest.fixture(scope="module")
def spend(items: list[LineItem]) -> Spend:
    return read_items(items)


def budgets_client() -> Any:
    return boto3.client("budgets", region_name="us-east-1")


def described(budgets: list[Budget]) -> list[tuple[str, float, dict[str, str], tuple[float, ...]]]:
    return [(b.name, b.limit_usd, dict(b.tags), b.thresholds_pct) for b in budgets]


# --- the stacks' config -------------------------------------------------------------------------------


def test_stack_config_budgets_are_each_stacks_environment_and_team_budgets(project: Path) -> None:
    budgets = stack_config_budgets(project)

    # Environments first, then teams, each by name; thresholds in ascending order.
    assert described(budgets) == [
        ("mlp-dev", 1000.0, {"environment": "dev"}, (80.0, 100.0)),
        ("mlp-staging", 2000.0, {"environment": "staging"}, (50.0, 80.0, 100.0)),
        ("mlp-dev-team-nlp", 70.0, {"team": "nlp", "environment": "dev"}, (80.0, 100.0)),
        ("mlp-dev-team-vision", 250.0, {"team": "vision", "environment": "dev"}, (80.0, 100.0)),
        ("mlp-staging-team-recsys", 500.0, {"team": "recsys", "environment": "staging"}, (50.0, 80.0, 100.0)),
    ]
    assert {budget.source for budget in budgets} == {STACK_CONFIG}
    assert [(b.kind, b.label) for b in budgets[1:3]] == [("environment", "staging"), ("team", "nlp in dev")]


def test_a_project_without_stack_files_has_no_budgets(tmp_path: Path) -> None:
    assert stack_config_budgets(make_project(tmp_path / "empty", {})) == []
    assert stack_config_budgets(tmp_path / "no-project-here") == []


# --- AWS Budgets ----------------------------------------------------------------------------------------


def create_stack_budgets(client: Any, budgets: list[Budget]) -> None:
    """The budgets as `CostGovernance` creates them: a tag FilterExpression, an ACTUAL alert per
    threshold and a FORECASTED alert at 100 %."""
    for budget in budgets:
        clauses = [
            {"Tags": {"Key": key, "Values": [value], "MatchOptions": ["EQUALS"]}}
            for key, value in budget.tags.items()
        ]
        notifications = [alert(pct) for pct in budget.thresholds_pct] + [alert(100, kind="FORECASTED")]
        client.create_budget(
            AccountId=ACCOUNT_ID,
            Budget={
                "BudgetName": budget.name,
                "BudgetLimit": {"Amount": f"{budget.limit_usd:.2f}", "Unit": "USD"},
                "TimeUnit": "MONTHLY",
                "BudgetType": "COST",
                "FilterExpression": clauses[0] if len(clauses) == 1 else {"And": clauses},
            },
            NotificationsWithSubscribers=[
                {
                    "Notification": notification,
                    "Subscribers": [{"SubscriptionType": "EMAIL", "Address": "finops@example.com"}],
                }
                for notification in notifications
            ],
        )


def test_aws_budgets_read_back_what_the_stacks_create(project: Path) -> None:
    expected = stack_config_budgets(project)
    with mock_aws():
        client = budgets_client()
        create_stack_budgets(client, expected)
        read = read_aws_budgets(client, ACCOUNT_ID)

    # Names, limits, the tags of each FilterExpression and the thresholds of its ACTUAL alerts only.
    assert described(read) == described(expected)
    assert len(read) == 5
    assert {budget.source for budget in read} == {AWS_BUDGETS}


def test_aws_budgets_read_back_what_seed_budgets_created(project: Path) -> None:
    with mock_aws():
        client = budgets_client()
        created = seed_budgets(client, ACCOUNT_ID, project)
        read = read_aws_budgets(client, ACCOUNT_ID)

    assert described(read) == described(created)
    environments = [budget for budget in read if budget.kind == "environment"]
    # The stacks' environment budgets; the sandbox's own teams have a budget in each environment.
    assert described(environments) == described(
        [budget for budget in stack_config_budgets(project) if budget.kind == "environment"]
    )
    teams = [budget for budget in read if budget.kind == "team"]
    assert teams
    thresholds = {budget.tags["environment"]: budget.thresholds_pct for budget in environments}
    for budget in teams:
        assert budget.name == f"mlp-{budget.tags['environment']}-team-{budget.tags['team']}"
        assert budget.thresholds_pct == thresholds[budget.tags["environment"]]
        assert budget.limit_usd > 0


def test_the_sandbox_seeds_the_repositorys_own_stacks() -> None:
    with mock_aws():
        client = budgets_client()
        created = seed_budgets(client)
        read = read_aws_budgets(client, ACCOUNT_ID)
    assert described(read) == described(created)
    repository = stack_config_budgets(Path(__file__).resolve().parents[1])
    assert {budget.name for budget in read} >= {b.name for b in repository if b.kind == "environment"}


def create_budget(client: Any, name: str, **budget: Any) -> None:
    client.create_budget(
        AccountId=ACCOUNT_ID,
        Budget={
            "BudgetName": name,
            "BudgetLimit": {"Amount": "300.00", "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
            **budget,
        },
    )


def alert(pct: float, kind: str = "ACTUAL", threshold_type: str = "PERCENTAGE") -> dict[str, Any]:
    return {
        "NotificationType": kind,
        "ComparisonOperator": "GREATER_THAN",
        "Threshold": pct,
        "ThresholdType": threshold_type,
    }


def test_only_actual_percentage_alerts_are_thresholds() -> None:
    with mock_aws():
        client = budgets_client()
        create_budget(client, "mlp-qa", FilterExpression={"Tags": {"Key": "environment", "Values": ["qa"]}})
        for notification in (
            alert(90),
            alert(40),
            alert(100, kind="FORECASTED"),  # the stacks' forecast alert: not a threshold of actual spend
            alert(250, threshold_type="ABSOLUTE_VALUE"),
        ):
            client.create_notification(
                AccountId=ACCOUNT_ID,
                BudgetName="mlp-qa",
                Notification=notification,
                Subscribers=[{"SubscriptionType": "EMAIL", "Address": "finops@example.com"}],
            )
        [budget] = read_aws_budgets(client, ACCOUNT_ID)
    assert budget == Budget("mlp-qa", 300.0, {"environment": "qa"}, (40.0, 90.0), AWS_BUDGETS)


def test_legacy_cost_filters_tag_key_value_is_parsed() -> None:
    with mock_aws():
        client = budgets_client()
        create_budget(
            client,
            "legacy-vision",
            CostFilters={"TagKeyValue": ["user:team$vision", "user:environment$dev"]},
        )
        create_budget(client, "legacy-prod", CostFilters={"TagKeyValue": ["user:environment$prod"]})
        read = read_aws_budgets(client, ACCOUNT_ID)
    assert described(read) == [
        ("legacy-prod", 300.0, {"environment": "prod"}, ()),
        ("legacy-vision", 300.0, {"team": "vision", "environment": "dev"}, ()),
    ]
    assert [budget.kind for budget in read] == ["environment", "team"]


def test_budgets_that_are_not_monthly_cost_budgets_of_a_team_or_environment_are_ignored() -> None:
    dev = {"Tags": {"Key": "environment", "Values": ["dev"], "MatchOptions": ["EQUALS"]}}
    with mock_aws():
        client = budgets_client()
        create_budget(client, "kept", FilterExpression=dev)
        create_budget(
            client,
            "usage",
            BudgetType="USAGE",
            BudgetLimit={"Amount": "10", "Unit": "GB"},
            FilterExpression=dev,
        )
        create_budget(client, "quarterly", TimeUnit="QUARTERLY", FilterExpression=dev)
        create_budget(client, "account-wide")  # no filter: not one environment's or team's spend
        create_budget(
            client,
            "ec2-only",
            FilterExpression={"Dimensions": {"Key": "SERVICE", "Values": [EC2]}},
        )
        create_budget(client, "project", FilterExpression={"Tags": {"Key": "project", "Values": ["recsys"]}})
        create_budget(
            client,
            "two-environments",
            FilterExpression={"Tags": {"Key": "environment", "Values": ["dev", "prod"]}},
        )
        create_budget(client, "euro", BudgetLimit={"Amount": "300", "Unit": "EUR"}, FilterExpression=dev)
        read = read_aws_budgets(client, ACCOUNT_ID)
    assert [budget.name for budget in read] == ["kept"]


def test_load_budgets_prefers_aws_budgets(project: Path) -> None:
    with mock_aws():
        create_stack_budgets(budgets_client(), stack_config_budgets(project))
        # No client given: the caller's Budgets client, in Budgets' region.
        budgets, note = load_budgets(ACCOUNT_ID, project_dir=project)
    assert note is None
    assert described(budgets) == described(stack_config_budgets(project))
    assert {budget.source for budget in budgets} == {AWS_BUDGETS}


def refusing_client(code: str, message: str) -> tuple[Any, Stubber]:
    """A Budgets client whose DescribeBudgets answers `code` (moto cannot refuse a request)."""
    client = budgets_client()
    stubber = Stubber(client)
    stubber.add_client_error(
        "describe_budgets",
        service_error_code=code,
        service_message=message,
        http_status_code=400,
        expected_params={"AccountId": ACCOUNT_ID},
    )
    return client, stubber


def test_access_denied_falls_back_to_the_stack_config_and_says_why(project: Path) -> None:
    client, stubber = refusing_client(
        "AccessDeniedException", "User is not authorized to perform: budgets:ViewBudget"
    )
    with stubber:
        budgets, note = load_budgets(ACCOUNT_ID, client=client, project_dir=project)
        stubber.assert_no_pending_responses()

    assert described(budgets) == described(stack_config_budgets(project))
    assert {budget.source for budget in budgets} == {STACK_CONFIG}
    assert note is not None
    assert note.startswith("AWS Budgets could not be read (")
    assert "access denied (DescribeBudgets)" in note
    assert note.endswith("limits from the stacks' config")


def test_any_other_budgets_error_also_falls_back_rather_than_failing_the_report(project: Path) -> None:
    client, stubber = refusing_client("ThrottlingException", "Rate exceeded")
    with stubber:
        budgets, note = load_budgets(ACCOUNT_ID, client=client, project_dir=project)
    assert described(budgets) == described(stack_config_budgets(project))
    assert note is not None and "ThrottlingException" in note and "Rate exceeded" in note


def test_empty_aws_budgets_falls_back_to_the_stack_config(project: Path) -> None:
    with mock_aws():
        client = budgets_client()
        empty = load_budgets(ACCOUNT_ID, client=client, project_dir=project)
        # A budget the report cannot use is no budget: still the stacks' config.
        create_budget(client, "account-wide")
        unusable = load_budgets(ACCOUNT_ID, client=client, project_dir=project)

    for budgets, note in (empty, unusable):
        assert described(budgets) == described(stack_config_budgets(project))
        assert {budget.source for budget in budgets} == {STACK_CONFIG}
        assert note == "AWS Budgets holds no environment or team budget; limits from the stacks' config"


def test_no_budget_anywhere_is_said_not_passed_over(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", {})
    with mock_aws():
        budgets, note = load_budgets(ACCOUNT_ID, client=budgets_client(), project_dir=project)
    assert budgets == []
    assert note == "AWS Budgets holds no environment or team budget; no stack's config defines one either"

    client, stubber = refusing_client("AccessDeniedException", "no")
    with stubber:
        budgets, note = load_budgets(ACCOUNT_ID, client=client, project_dir=project)
    assert budgets == []
    assert note is not None and "limits from" not in note and note.endswith("defines one either")


# --- statuses ---------------------------------------------------------------------------------------------


def test_the_fixtures_month_by_hand(items: list[LineItem]) -> None:
    """The figures below rest on these sums of the fixture (November 1st to 22nd, 8 days left)."""
    assert month_figures(items, {"environment": "dev"}) == pytest.approx(
        # vision 22 x $12, nlp's partly tagged $5 on the 11 even days; the last 7 days 7 x 12 + 4 x 5
        (22 * 12 + 11 * 5, 22 * 12 + 11 * 5 + (7 * 12 + 4 * 5) / 7 * 8)
    )
    assert month_figures(items, {"team": "nlp", "environment": "dev"}) == pytest.approx(
        (11 * 5, 11 * 5 + 4 * 5 / 7 * 8)
    )


def test_statuses_against_month_to_date_and_forecast(
    spend: Spend, items: list[LineItem], project: Path
) -> None:
    with mock_aws():
        create_stack_budgets(budgets_client(), stack_config_budgets(project))
        budgets, note = load_budgets(ACCOUNT_ID, project_dir=project)
    assert note is None
    built = report.build_report(spend, PERIOD, idle=[], untagged=[], budgets=budgets, budgets_note=note)

    statuses = {status["name"]: status for status in built.findings["spend"]["budgets"]}
    assert list(statuses) == [budget.name for budget in budgets]
    expected_status = {
        "mlp-dev": "ok",  # 319 of 1000, forecast 437.86
        "mlp-staging": "warning",  # 1100 of 2000: past its first alert, 50 %
        "mlp-dev-team-nlp": "warning",  # 55 of 70 is under its 80 % alert, but the forecast is 77.86
        "mlp-dev-team-vision": "over",  # 264 of 250
        "mlp-staging-team-recsys": "ok",  # nothing this month
    }
    for budget in budgets:
        status = statuses[budget.name]
        month_to_date, forecast = month_figures(items, budget.tags)
        assert status["month_to_date_usd"] == pytest.approx(month_to_date, abs=0.006), budget.name
        assert status["forecast_usd"] == pytest.approx(forecast, abs=0.006), budget.name
        assert status["used_share"] == pytest.approx(month_to_date / budget.limit_usd, abs=1e-4)
        assert status["forecast_share"] == pytest.approx(forecast / budget.limit_usd, abs=1e-4)
        assert status["status"] == expected_status[budget.name], budget.name
        assert (status["limit_usd"], status["thresholds_pct"]) == (
            budget.limit_usd,
            list(budget.thresholds_pct),
        )
        assert (status["kind"], status["label"], status["source"]) == (budget.kind, budget.label, AWS_BUDGETS)
        assert (status["environment"], status["team"]) == (
            budget.tags.get("environment"),
            budget.tags.get("team"),
        )
    assert statuses["mlp-dev-team-nlp"]["month_to_date_usd"] == 55.0
    assert statuses["mlp-staging"]["month_to_date_usd"] == 1100.0


@pytest.mark.parametrize(
    ("month_to_date", "forecast", "status"),
    [
        (79.99, 99.99, "ok"),
        (80.0, 80.0, "warning"),  # at the first alert
        (10.0, 100.0, "warning"),  # forecast to reach the limit
        (100.0, 100.0, "over"),  # the limit reached is over
        (130.0, 150.0, "over"),
    ],
)
def test_status_thresholds(month_to_date: float, forecast: float, status: str) -> None:
    budget = Budget("b", 100.0, {"environment": "dev"}, (80.0, 100.0), STACK_CONFIG)
    [result] = budget_statuses([budget], lambda tags: (month_to_date, forecast))
    assert result["status"] == status
    assert result["used_share"] == pytest.approx(month_to_date / 100.0)


def test_statuses_ask_the_spend_of_each_budgets_tags() -> None:
    asked = []
    budgets = [
        Budget("e", 10.0, {"environment": "dev"}, (), STACK_CONFIG),
        Budget("t", 10.0, {"team": "nlp", "environment": "dev"}, (), STACK_CONFIG),
    ]

    def spend_of(tags: Mapping[str, str]) -> tuple[float, float]:
        asked.append(dict(tags))
        return 9.5, 9.5

    # No alert threshold: the first alert is the limit itself.
    assert [s["status"] for s in budget_statuses(budgets, spend_of)] == ["ok", "ok"]
    assert asked == [{"environment": "dev"}, {"team": "nlp", "environment": "dev"}]


# --- findings.json ------------------------------------------------------------------------------------------


def test_findings_json_with_budgets(spend: Spend, project: Path, tmp_path: Path) -> None:
    budgets = stack_config_budgets(project)
    built = report.build_report(
        spend, PERIOD, idle=[], untagged=[], budgets=budgets, budgets_note="limits from the stacks' config"
    )
    report.write_report(built, tmp_path / "out")
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())

    spend_findings = findings["spend"]
    # The environments' limits only: the teams' budgets are parts of them.
    assert spend_findings["forecast"]["budget_usd"] == 1000.0 + 2000.0
    assert spend_findings["budgets_note"] == "limits from the stacks' config"
    assert [status["name"] for status in spend_findings["budgets"]] == [budget.name for budget in budgets]
    assert {status["source"] for status in spend_findings["budgets"]} == {STACK_CONFIG}
    assert spend_findings["budgets"] == json.loads(json.dumps(built.findings["spend"]["budgets"]))


def test_findings_json_without_budgets(spend: Spend) -> None:
    built = report.build_report(spend, PERIOD, idle=[], untagged=[])
    spend_findings = built.findings["spend"]
    assert spend_findings["budgets"] is None
    assert spend_findings["budgets_note"] is None
    assert spend_findings["forecast"] is not None
    assert spend_findings["forecast"]["budget_usd"] is None


def test_team_budgets_alone_set_no_forecast_budget(spend: Spend) -> None:
    team_only = [Budget("t", 70.0, {"team": "nlp", "environment": "dev"}, (80.0,), STACK_CONFIG)]
    built: Report = report.build_report(spend, PERIOD, idle=[], untagged=[], budgets=team_only)
    assert built.findings["spend"]["forecast"]["budget_usd"] is None
    assert [status["name"] for status in built.findings["spend"]["budgets"]] == ["t"]


def test_a_budget_whose_spend_could_not_be_read_is_null_not_zero() -> None:
    # The first view (team+environment) is throttled past its retries: spend by environment is missing.
    throttled = read_spend(make_line_items(days=45), throttle=3, max_attempts=3)
    assert "spend by environment" in [part.part for part in throttled.missing]
    dev = [Budget("mlp-dev", 1000.0, {"environment": "dev"}, (80.0, 100.0), STACK_CONFIG)]
    built = report.build_report(throttled, PERIOD, idle=[], untagged=[], budgets=dev)
    assert built.findings["spend"]["budgets"] is None
    assert (
        built.findings["spend"]["budgets_note"]
        == "spend by environment is missing, so no budget can be compared"
    )
