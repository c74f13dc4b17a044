"""Budget against actual: each environment's and team's monthly budget beside its month-to-date spend.

The limits come from AWS Budgets (`DescribeBudgets`, the budgets the environment stacks create: one per
environment filtered on its `environment` tag, one per team filtered on `team` and `environment`), or,
when Budgets cannot be read, from the stacks' own config (`ml-platform:budgets` of every
`Pulumi.<stack>.yaml`), which is what those budgets are made from. The actuals are always the report's
own spend, so the budgets and every other figure of the report agree; AWS Budgets' `CalculatedSpend`
lags and would not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import botocore.exceptions

from finops.inventory.core import pages
from infra.config import environment_stacks, load_stack_config
from mlp import aws
from mlp.errors import ConfigError, UserError
from mlp.tags import ENVIRONMENT, TEAM

AWS_BUDGETS = "AWS Budgets"
STACK_CONFIG = "stack config"
# Budgets is a global service with its endpoint in us-east-1.
BUDGETS_REGION = "us-east-1"
# Cost Explorer's legacy filter names a tag as "user:<key>$<value>".
USER_TAG_PREFIX = "user:"


@dataclass(frozen=True)
class Budget:
    """One monthly cost budget: its limit, the tags its spend carries, its alert thresholds (%)."""

    name: str
    limit_usd: float
    tags: Mapping[str, str]
    thresholds_pct: tuple[float, ...]
    source: str

    @property
    def kind(self) -> str:
        return "team" if TEAM in self.tags else "environment"

    @property
    def label(self) -> str:
        environment = self.tags.get(ENVIRONMENT, "every environment")
        return f"{self.tags[TEAM]} in {environment}" if TEAM in self.tags else environment


class BudgetStatus(TypedDict):
    name: str
    kind: str
    environment: str | None
    team: str | None
    label: str
    limit_usd: float
    month_to_date_usd: float
    forecast_usd: float
    used_share: float | None
    forecast_share: float | None
    thresholds_pct: list[float]
    status: str  # "ok" | "warning" | "over"
    source: str


def _filter_tags(budget: Mapping[str, Any]) -> dict[str, str] | None:
    """The tag values a budget's spend must carry, from FilterExpression or the legacy CostFilters."""
    tags: dict[str, str] = {}
    expression = budget.get("FilterExpression") or {}
    for clause in [expression, *expression.get("And", [])]:
        tag = clause.get("Tags") or {}
        values = tag.get("Values") or []
        if tag.get("Key") and len(values) == 1:
            tags[tag["Key"]] = values[0]
    for value in (budget.get("CostFilters") or {}).get("TagKeyValue", []):
        key, _, tag_value = value.removeprefix(USER_TAG_PREFIX).partition("$")
        if key and tag_value:
            tags.setdefault(key, tag_value)
    return tags if ENVIRONMENT in tags or TEAM in tags else None


def read_aws_budgets(client: Any, account_id: str) -> list[Budget]:
    """The account's monthly USD cost budgets filtered on `environment` or `team` (the stacks' budgets)."""
    found = []
    for page in pages(client, "describe_budgets", AccountId=account_id):
        for budget in page.get("Budgets", []):
            limit = budget.get("BudgetLimit") or {}
            tags = _filter_tags(budget)
            if (
                budget.get("BudgetType") != "COST"
                or budget.get("TimeUnit") != "MONTHLY"
                or limit.get("Unit") != "USD"
                or tags is None
            ):
                continue
            thresholds = sorted(
                float(notification["Threshold"])
                for notification_page in pages(
                    client,
                    "describe_notifications_for_budget",
                    AccountId=account_id,
                    BudgetName=budget["BudgetName"],
                )
                for notification in notification_page.get("Notifications", [])
                if notification.get("ThresholdType", "PERCENTAGE") == "PERCENTAGE"
                and notification.get("NotificationType") == "ACTUAL"
            )
            found.append(
                Budget(budget["BudgetName"], float(limit["Amount"]), tags, tuple(thresholds), AWS_BUDGETS)
            )
    return sorted(found, key=lambda budget: (budget.kind != "environment", budget.name))


def stack_config_budgets(project_dir: Path | None = None) -> list[Budget]:
    """The budgets every environment stack of the project defines, as `CostGovernance` names them."""
    found = []
    for stack in sorted(environment_stacks(project_dir)):
        try:
            config = load_stack_config(stack, project_dir)
        except ConfigError:
            continue  # a stack file that does not validate has no budget to show
        budgets = config.budgets
        thresholds = tuple(float(pct) for pct in sorted(budgets.alert_thresholds_pct))
        environment = config.environment
        found.append(
            Budget(
                f"mlp-{environment}",
                float(budgets.environment_monthly_usd),
                {ENVIRONMENT: environment},
                thresholds,
                STACK_CONFIG,
            )
        )
        found += [
            Budget(
                f"mlp-{environment}-team-{team}",
                float(limit),
                {TEAM: team, ENVIRONMENT: environment},
                thresholds,
                STACK_CONFIG,
            )
            for team, limit in sorted(budgets.team_monthly_usd.items())
        ]
    return sorted(found, key=lambda budget: (budget.kind != "environment", budget.name))


def load_budgets(
    account_id: str, *, client: Any | None = None, project_dir: Path | None = None
) -> tuple[list[Budget], str | None]:
    """AWS Budgets' budgets of the stacks, else the stacks' config; the note says why the fallback
    (any error reading AWS Budgets, or none of its budgets usable) and when there is no budget at all."""
    try:
        with aws.aws_errors("reading AWS Budgets"):
            budgets = read_aws_budgets(client or aws.client("budgets", BUDGETS_REGION), account_id)
    except (UserError, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        # Like the forecast, the budgets are one card: their failure must not cost the paid-for report.
        why = f"AWS Budgets could not be read ({exc})"
    else:
        if budgets:
            return budgets, None
        why = "AWS Budgets holds no environment or team budget"
    fallback = stack_config_budgets(project_dir)
    return fallback, f"{why}; " + (
        "limits from the stacks' config" if fallback else "no stack's config defines one either"
    )


def budget_statuses(
    budgets: Sequence[Budget], spend_of: Callable[[Mapping[str, str]], tuple[float, float]]
) -> list[BudgetStatus]:
    """Each budget beside `spend_of(tags)`: the month-to-date and month-end forecast of that spend."""
    statuses = []
    for budget in budgets:
        month_to_date, forecast = spend_of(budget.tags)
        limit = budget.limit_usd
        used = month_to_date / limit if limit > 0 else None
        first_alert = min(budget.thresholds_pct, default=100.0) / 100
        if month_to_date >= limit:
            status = "over"
        elif forecast >= limit or (used is not None and used >= first_alert):
            status = "warning"
        else:
            status = "ok"
        statuses.append(
            BudgetStatus(
                name=budget.name,
                kind=budget.kind,
                environment=budget.tags.get(ENVIRONMENT),
                team=budget.tags.get(TEAM),
                label=budget.label,
                limit_usd=round(limit, 2),
                month_to_date_usd=round(month_to_date, 2),
                forecast_usd=round(forecast, 2),
                used_share=None if used is None else round(used, 4),
                forecast_share=round(forecast / limit, 4) if limit > 0 else None,
                thresholds_pct=list(budget.thresholds_pct),
                status=status,
                source=budget.source,
            )
        )
    return statuses
