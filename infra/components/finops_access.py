"""FinOpsAccess: what a member account grants the hosting account's report and reaper jobs.

Deployed once per member account (docs/finops-jobs.md), it creates two roles the jobs assume:

- `<role_name>` for the report: the same read-only inventory, cost and metric actions as the
  report's own role (`finops_jobs.report_read_statements`);
- `<role_name>-reaper` for the reaper: the same reads of run resources and the same deletes,
  conditioned on `ephemeral=true` and `managed-by=pulumi` (`finops_jobs.reaper_statements`).

Each trusts only its job's role ARN, with `sts:ExternalId` when one is given. What they may do is
the hosting roles' own tables, so the two sides cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.finops_jobs import (
    REAPER,
    REPORT,
    access_role_name,
    policy_document,
    reaper_statements,
    report_read_statements,
)


@dataclass(frozen=True)
class FinOpsAccessArgs:
    # `ml-platform:finops.accountsRole` of the hosting stack: the report assumes it by this name.
    role_name: str
    # The hosting stack's `finopsReportRoleArn` and `finopsReaperRoleArn` exports.
    report_role_arn: pulumi.Input[str]
    reaper_role_arn: pulumi.Input[str]
    # `ml-platform:finops.externalId` of the hosting stack, when it sets one.
    external_id: str | None = None


def trust_policy(job_role_arn: str, external_id: str | None) -> str:
    """Only the hosting account's job role, and only with the external id when one is agreed."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": job_role_arn},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return policy_document([statement])


class FinOpsAccess(pulumi.ComponentResource):
    """The report's read role and the reaper's role in one member account.

    Outputs: `report_access_role_arn`, `reaper_access_role_arn`.
    """

    report_access_role_arn: pulumi.Output[str]
    reaper_access_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: FinOpsAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ml-platform:infra:FinOpsAccess", name, None, opts)
        self._name = name
        self._args = args
        report = self._role(REPORT, args.report_role_arn, report_read_statements())
        reaper = self._role(REAPER, args.reaper_role_arn, reaper_statements())
        self.report_access_role_arn = report.arn
        self.reaper_access_role_arn = reaper.arn
        self.register_outputs(
            {
                "report_access_role_arn": self.report_access_role_arn,
                "reaper_access_role_arn": self.reaper_access_role_arn,
            }
        )

    def _role(
        self, job: str, job_role_arn: pulumi.Input[str], statements: Sequence[dict[str, Any]]
    ) -> aws.iam.Role:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{self._name}-{job}",
            name=access_role_name(self._args.role_name, job),
            description=f"The hosting account's {job} job, assumed across accounts",
            assume_role_policy=pulumi.Output.from_input(job_role_arn).apply(
                lambda arn: trust_policy(arn, self._args.external_id)
            ),
            max_session_duration=3600,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{self._name}-{job}", role=role.name, policy=policy_document(statements), opts=child
        )
        return role
