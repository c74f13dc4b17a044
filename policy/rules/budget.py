"""Rule 9: the stack's estimated monthly cost stays under its budget.

The estimate is `infra.estimate`, the same function that fills the plan's `estimated_monthly_cost_usd`,
applied to the resources the stack validation sees. Advisory by default; a stack with
`ml-platform:budgets.enforcePlanBudget: true` gets it as mandatory (pack config `enforcementLevel`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import EnforcementLevel, Severity
from pydantic import Field

from infra.config import BudgetsConfig
from infra.estimate import estimate_monthly_cost
from mlp.errors import UserError
from policy.rules.common import Resource, Rule, RuleConfig


class BudgetConfig(RuleConfig):
    monthly_budget_usd: float = Field(
        BudgetsConfig.model_fields["environment_monthly_usd"].default,
        gt=0,
        description="The stack's monthly budget in USD (ml-platform:budgets.environmentMonthlyUsd).",
    )


def check_monthly_budget(
    resources: Sequence[Resource], config: BudgetConfig
) -> Iterator[tuple[str | None, str]]:
    try:
        estimate = estimate_monthly_cost({"type": r.type, "inputs": r.props} for r in resources)
    except UserError as error:
        yield (
            None,
            f"stack: estimated monthly cost is unknown ({error}); price it in mlp.pricing or change it",
        )
        return
    if estimate > config.monthly_budget_usd:
        yield (
            None,
            (
                f"stack: estimated monthly cost is ${estimate:,.2f}, "
                f"over the budget of ${config.monthly_budget_usd:,.2f}; "
                "shrink node counts or instance types, or raise ml-platform:budgets.environmentMonthlyUsd"
            ),
        )


RULE = Rule(
    name="stack-monthly-budget",
    description="The stack's estimated monthly cost stays under its configured budget.",
    severity=Severity.MEDIUM,
    check=check_monthly_budget,
    config_model=BudgetConfig,
    enforcement_level=EnforcementLevel.ADVISORY,
    stack_level=True,
)
