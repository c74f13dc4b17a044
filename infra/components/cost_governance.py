"""CostGovernance: cost-allocation tags, budgets per environment and team, and anomaly detection."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import BudgetsConfig
from infra.kms import (
    PUBLISHER_ACTIONS,
    KeyScope,
    ServiceUse,
    SourceArn,
    account_scope,
    customer_managed_key,
    source_conditions,
)
from mlp.tags import ENVIRONMENT, PULUMI_STACK, RUN_ID, TEAM

# Budgets and Cost Anomaly Detection publish into the topic, each only for this account. AWS documents a
# source ARN (global: no region) for Budgets; for Cost Anomaly Detection only the source account.
ALERT_PUBLISHERS = (
    ServiceUse(
        "AllowBudgets", "budgets.amazonaws.com", PUBLISHER_ACTIONS, SourceArn("budgets", "*", regional=False)
    ),
    ServiceUse("AllowCostAnomalyDetection", "costalerts.amazonaws.com", PUBLISHER_ACTIONS),
)


def alert_topic_policy(topic_arn: str, scope: KeyScope) -> str:
    """Each publisher may publish, for this account's budgets and anomaly subscriptions only."""
    statements = [
        {
            "Sid": publisher.sid,
            "Effect": "Allow",
            "Principal": {"Service": publisher.principal},
            "Action": "SNS:Publish",
            "Resource": topic_arn,
            "Condition": source_conditions(scope, publisher.source),
        }
        for publisher in ALERT_PUBLISHERS
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


@dataclass(frozen=True)
class CostGovernanceArgs:
    environment: str
    config: BudgetsConfig
    mandatory_tags: Sequence[str]
    activate_cost_allocation_tags: bool


def _tag_filter(tags: Mapping[str, str]) -> dict:
    """A budget filter matching spend that carries every given tag value."""
    expressions = [
        {"tags": {"key": key, "values": [value], "match_options": ["EQUALS"]}} for key, value in tags.items()
    ]
    return expressions[0] if len(expressions) == 1 else {"ands": expressions}


class CostGovernance(pulumi.ComponentResource):
    """Outputs: `alert_topic_arn`, `budget_names`."""

    alert_topic_arn: pulumi.Output[str]
    budget_names: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: CostGovernanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:CostGovernance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config, environment = args.config, args.environment
        self._config = config

        if args.activate_cost_allocation_tags:
            # run-id and pulumi-stack too, so each training run's cost can be read back.
            for key in dict.fromkeys([*args.mandatory_tags, RUN_ID, PULUMI_STACK]):
                aws.costexplorer.CostAllocationTag(
                    f"{name}-tag-{key}", tag_key=key, status="Active", opts=child
                )

        # The AWS-managed SNS key cannot be used by Budgets, so the topic has a key of its own.
        key = customer_managed_key(
            f"{name}-alerts",
            parent=self,
            description=f"ml-platform {environment} cost alerts topic",
            uses=ALERT_PUBLISHERS,
        )
        topic = aws.sns.Topic(
            f"{name}-alerts", name=f"mlp-{environment}-cost-alerts", kms_master_key_id=key.arn, opts=child
        )
        aws.sns.TopicPolicy(
            f"{name}-alerts",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account_scope(self)).apply(
                lambda values: alert_topic_policy(*values)
            ),
            opts=child,
        )
        for index, email in enumerate(config.alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{index}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )

        budgets = [
            self._budget(
                f"{name}-{environment}",
                f"mlp-{environment}",
                config.environment_monthly_usd,
                {ENVIRONMENT: environment},
                topic,
            )
        ]
        for team, limit in sorted(config.team_monthly_usd.items()):
            budgets.append(
                self._budget(
                    f"{name}-team-{team}",
                    f"mlp-{environment}-team-{team}",
                    limit,
                    {TEAM: team, ENVIRONMENT: environment},
                    topic,
                )
            )

        monitor = aws.costexplorer.AnomalyMonitor(
            f"{name}-anomalies",
            name=f"mlp-{environment}",
            monitor_type="CUSTOM",
            monitor_specification=json.dumps(
                {"Tags": {"Key": ENVIRONMENT, "Values": [environment], "MatchOptions": ["EQUALS"]}}
            ),
            opts=child,
        )
        aws.costexplorer.AnomalySubscription(
            f"{name}-anomalies",
            name=f"mlp-{environment}-anomalies",
            frequency="IMMEDIATE",
            monitor_arn_lists=[monitor.arn],
            subscribers=[{"type": "SNS", "address": topic.arn}],
            threshold_expression={
                "dimension": {
                    "key": "ANOMALY_TOTAL_IMPACT_ABSOLUTE",
                    "values": [str(config.anomaly_threshold_usd)],
                    "match_options": ["GREATER_THAN_OR_EQUAL"],
                }
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[topic]),
        )

        self.alert_topic_arn = topic.arn
        self.budget_names = [budget.name for budget in budgets]
        self.register_outputs({"alert_topic_arn": self.alert_topic_arn, "budget_names": self.budget_names})

    def _budget(
        self,
        resource_name: str,
        budget_name: str,
        limit_usd: float,
        tags: Mapping[str, str],
        topic: aws.sns.Topic,
    ) -> aws.budgets.Budget:
        config = self._config
        notifications = [
            {
                "comparison_operator": "GREATER_THAN",
                "notification_type": "ACTUAL",
                "threshold": pct,
                "threshold_type": "PERCENTAGE",
                "subscriber_email_addresses": list(config.alert_emails),
                "subscriber_sns_topic_arns": [topic.arn],
            }
            for pct in config.alert_thresholds_pct
        ]
        # A forecast alert warns while there is still time to act.
        notifications.append({**notifications[-1], "notification_type": "FORECASTED", "threshold": 100})
        return aws.budgets.Budget(
            resource_name,
            name=budget_name,
            budget_type="COST",
            limit_amount=f"{limit_usd:.2f}",
            limit_unit="USD",
            time_unit="MONTHLY",
            filter_expression=_tag_filter(tags),
            notifications=notifications,
            opts=pulumi.ResourceOptions(parent=self),
        )
