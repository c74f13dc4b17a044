"""The sandbox's AWS Budgets: the budgets the project's environment stacks would create, made in moto.

The environments' budgets are the repository's stacks' own; the team budgets are for the sandbox's
teams (the stacks' example teams are not the sandbox's), sized so the demo shows every status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finops.budgets import Budget, stack_config_budgets
from finops.sandbox.server import ACCOUNT_ID
from mlp.tags import ENVIRONMENT, TEAM

# The repository's own Pulumi.<stack>.yaml files describe the environments the sandbox plays.
PROJECT_DIR = Path(__file__).resolve().parents[2]
TEAM_BUDGETS_USD: dict[tuple[str, str], float] = {
    ("nlp", "prod"): 2500.0,
    ("nlp", "dev"): 1500.0,
    ("recsys", "prod"): 3000.0,
    ("recsys", "dev"): 800.0,
    ("vision", "prod"): 2500.0,
    ("vision", "dev"): 1200.0,
}


def _filter_expression(budget: Budget) -> dict[str, Any]:
    clauses = [
        {"Tags": {"Key": key, "Values": [value], "MatchOptions": ["EQUALS"]}}
        for key, value in budget.tags.items()
    ]
    return clauses[0] if len(clauses) == 1 else {"And": clauses}


def sandbox_budgets(project_dir: Path = PROJECT_DIR) -> list[Budget]:
    """Each stack's environment budget, and a budget per sandbox team in it with the stack's thresholds."""
    environments = [budget for budget in stack_config_budgets(project_dir) if budget.kind == "environment"]
    teams = [
        Budget(
            f"mlp-{budget.tags[ENVIRONMENT]}-team-{team}",
            limit,
            {TEAM: team, ENVIRONMENT: budget.tags[ENVIRONMENT]},
            budget.thresholds_pct,
            budget.source,
        )
        for budget in environments
        for (team, environment), limit in sorted(TEAM_BUDGETS_USD.items())
        if environment == budget.tags[ENVIRONMENT]
    ]
    return environments + teams


def seed_budgets(client: Any, account_id: str = ACCOUNT_ID, project_dir: Path = PROJECT_DIR) -> list[Budget]:
    """Create the sandbox's budgets, with an ACTUAL alert per threshold, as `CostGovernance` does."""
    budgets = sandbox_budgets(project_dir)
    for budget in budgets:
        client.create_budget(
            AccountId=account_id,
            Budget={
                "BudgetName": budget.name,
                "BudgetLimit": {"Amount": f"{budget.limit_usd:.2f}", "Unit": "USD"},
                "TimeUnit": "MONTHLY",
                "BudgetType": "COST",
                "FilterExpression": _filter_expression(budget),
            },
            NotificationsWithSubscribers=[
                {
                    "Notification": {
                        "NotificationType": "ACTUAL",
                        "ComparisonOperator": "GREATER_THAN",
                        "Threshold": pct,
                        "ThresholdType": "PERCENTAGE",
                    },
                    "Subscribers": [{"SubscriptionType": "EMAIL", "Address": "finops@example.com"}],
                }
                for pct in budget.thresholds_pct
            ],
        )
    return budgets
