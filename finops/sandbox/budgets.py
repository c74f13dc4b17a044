"""The sandbox's AWS Budgets: the budgets the project's environment stacks would create, made in moto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finops.budgets import Budget, stack_config_budgets
from finops.sandbox.server import ACCOUNT_ID

# The repository's own Pulumi.<stack>.yaml files describe the environments the sandbox plays.
PROJECT_DIR = Path(__file__).resolve().parents[2]


def _filter_expression(budget: Budget) -> dict[str, Any]:
    clauses = [
        {"Tags": {"Key": key, "Values": [value], "MatchOptions": ["EQUALS"]}}
        for key, value in budget.tags.items()
    ]
    return clauses[0] if len(clauses) == 1 else {"And": clauses}


def seed_budgets(client: Any, account_id: str = ACCOUNT_ID, project_dir: Path = PROJECT_DIR) -> list[Budget]:
    """Create each stack's budgets, with an ACTUAL alert per threshold, as `CostGovernance` does."""
    budgets = stack_config_budgets(project_dir)
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
