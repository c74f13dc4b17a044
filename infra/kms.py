"""Customer-managed KMS keys and their key policies: the one place either is built.

Every key gets an explicit policy. The account root may administer the key but not use it, so an
IAM policy alone never grants encryption; use is granted only to the `KeyUse`s a component names:

- `RoleUse`: IAM roles by ARN (EKS's cluster role for secrets envelope encryption);
- `ServiceUse`: an AWS service principal (Budgets, Cost Anomaly Detection publishing to SNS), bound to
  this account by `aws:SourceAccount` and, where AWS sets it, `aws:SourceArn`;
- `LogsUse`: CloudWatch Logs for one log group, by the encryption context it sends;
- `ViaServiceUse`: this account's principals, but only through one service (S3, ElastiCache), so a
  training role's `kms:Decrypt` works on checkpoint objects and nowhere else.

The account id and region come from invokes parented to the component, answered offline by the mocks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi
import pulumi_aws as aws

# What key administrators may do: manage, tag, rotate and schedule deletion, but neither encrypt,
# decrypt nor create grants (which would hand use to anyone the administrator chooses).
ADMIN_ACTIONS: tuple[str, ...] = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
ENVELOPE_ACTIONS: tuple[str, ...] = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
)
# Services that keep data for long-lived resources (ElastiCache, EKS) work through grants they create.
GRANTING_SERVICE_ACTIONS: tuple[str, ...] = (*ENVELOPE_ACTIONS, "kms:CreateGrant")
PUBLISHER_ACTIONS: tuple[str, ...] = ("kms:GenerateDataKey*", "kms:Decrypt")
EKS_SECRETS_ACTIONS: tuple[str, ...] = ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants")


@dataclass(frozen=True)
class KeyScope:
    """The account and region a key lives in."""

    account_id: str
    region: str

    @property
    def root_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:root"

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        """An ARN of this account, e.g. `arn("logs", "log-group:/aws/eks/x")`."""
        return f"arn:aws:{service}:{self.region if regional else ''}:{self.account_id}:{resource}"


def account_scope(parent: pulumi.Resource) -> pulumi.Output[KeyScope]:
    """The stack's account and region, looked up through invokes parented to `parent`."""
    opts = pulumi.InvokeOutputOptions(parent=parent)
    identity = aws.get_caller_identity_output(opts=opts)
    region = aws.get_region_output(opts=opts)
    return pulumi.Output.all(identity.account_id, region.region).apply(lambda values: KeyScope(*values))


@dataclass(frozen=True)
class SourceArn:
    """An ARN pattern, in this account, of the resources a service acts for (`budgets`, `*`)."""

    service: str
    resource: str
    # Global services (Budgets, Cost Explorer) leave the region out of their ARNs.
    regional: bool = True

    def render(self, scope: KeyScope) -> str:
        return scope.arn(self.service, self.resource, regional=self.regional)


def source_conditions(scope: KeyScope, source: SourceArn | None = None) -> dict[str, Any]:
    """Conditions binding a service principal to this account (and its sources), against confused deputies.

    Used by key policies, topic policies and role trust policies alike.
    """
    conditions: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": scope.account_id}}
    if source is not None:
        conditions["ArnLike"] = {"aws:SourceArn": source.render(scope)}
    return conditions


class KeyUse(Protocol):
    """Who may use a key, rendered as key-policy statements (values may be Pulumi inputs)."""

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class RoleUse:
    sid: str
    role_arn: pulumi.Input[str]
    actions: tuple[str, ...] = ENVELOPE_ACTIONS

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]:
        return [
            {
                "Sid": self.sid,
                "Effect": "Allow",
                "Principal": {"AWS": self.role_arn},
                "Action": list(self.actions),
                "Resource": "*",
            }
        ]


@dataclass(frozen=True)
class ServiceUse:
    """A service principal (`budgets.amazonaws.com`) acting for `source` resources of this account."""

    sid: str
    principal: str
    actions: tuple[str, ...]
    source: SourceArn | None = None

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]:
        return [
            {
                "Sid": self.sid,
                "Effect": "Allow",
                "Principal": {"Service": self.principal},
                "Action": list(self.actions),
                "Resource": "*",
                "Condition": source_conditions(scope, self.source),
            }
        ]


@dataclass(frozen=True)
class LogsUse:
    """CloudWatch Logs encrypting one log group, named up front so key and group need not wait on each other."""

    log_group_name: str

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]:
        principal = {"Service": f"logs.{scope.region}.amazonaws.com"}
        log_group_arn = scope.arn("logs", f"log-group:{self.log_group_name}")
        # Only the data-key calls carry the log group's encryption context; DescribeKey has none, so it is
        # bound to the account alone (as AWS's own CloudWatch Logs policies split it).
        return [
            {
                "Sid": "AllowCloudWatchLogs",
                "Effect": "Allow",
                "Principal": principal,
                "Action": [action for action in ENVELOPE_ACTIONS if action != "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {
                    **source_conditions(scope),
                    "StringEquals": {
                        **source_conditions(scope)["StringEquals"],
                        "kms:EncryptionContext:aws:logs:arn": log_group_arn,
                    },
                },
            },
            {
                "Sid": "AllowCloudWatchLogsDescribe",
                "Effect": "Allow",
                "Principal": principal,
                "Action": "kms:DescribeKey",
                "Resource": "*",
                "Condition": source_conditions(scope),
            },
        ]


@dataclass(frozen=True)
class ViaServiceUse:
    """Principals of this account whose IAM policies allow it, only in requests made through `service`."""

    service: str
    actions: tuple[str, ...] = ENVELOPE_ACTIONS

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]:
        return [
            {
                "Sid": f"AllowUseVia{self.service.capitalize()}",
                "Effect": "Allow",
                "Principal": {"AWS": scope.root_arn},
                "Action": list(self.actions),
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": f"{self.service}.{scope.region}.amazonaws.com",
                        "kms:CallerAccount": scope.account_id,
                    }
                },
            }
        ]


def key_policy(scope: KeyScope, uses: Sequence[KeyUse]) -> pulumi.Output[str]:
    """The key policy JSON: root administers, each of `uses` uses."""
    administration = {
        "Sid": "AllowAccountAdministration",
        "Effect": "Allow",
        "Principal": {"AWS": scope.root_arn},
        "Action": list(ADMIN_ACTIONS),
        "Resource": "*",
    }
    document = {
        "Version": "2012-10-17",
        "Statement": [administration, *(statement for use in uses for statement in use.statements(scope))],
    }
    return pulumi.Output.from_input(document).apply(json.dumps)


def customer_managed_key(
    resource_name: str,
    *,
    parent: pulumi.Resource,
    description: str,
    uses: Sequence[KeyUse],
    protect: bool = False,
    retain_on_delete: bool = False,
) -> aws.kms.Key:
    """A rotating symmetric key with an explicit policy, parented to the component that uses it."""
    scope = account_scope(parent)
    return aws.kms.Key(
        resource_name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=30,
        policy=scope.apply(lambda resolved: key_policy(resolved, uses)),
        opts=pulumi.ResourceOptions(parent=parent, protect=protect, retain_on_delete=retain_on_delete),
    )


def encrypted_log_group(
    resource_name: str,
    *,
    parent: pulumi.ComponentResource,
    log_group_name: str,
    retention_days: int,
    description: str,
) -> aws.cloudwatch.LogGroup:
    """A log group under its own key, which only CloudWatch Logs may use, and only for this group.

    The key and the group share `resource_name`; the group is named up front so neither waits on the other.
    """
    key = customer_managed_key(
        resource_name, parent=parent, description=description, uses=[LogsUse(log_group_name)]
    )
    return aws.cloudwatch.LogGroup(
        resource_name,
        name=log_group_name,
        retention_in_days=retention_days,
        kms_key_id=key.arn,
        opts=pulumi.ResourceOptions(parent=parent),
    )
