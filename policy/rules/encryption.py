"""KMS keys carry an explicit key policy that opens no `kms:*` to everyone; SNS topics are encrypted.

A key without `policy` gets AWS's default key policy, which hands the key to any IAM policy of the
account: the platform writes its key policies out instead. A wildcard principal is acceptable only
when a Condition narrows it (e.g. `aws:PrincipalAccount` or `kms:ViaService`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import Severity

from policy.analyzer_view import display, has_key, items_of, lookup
from policy.rules.common import Resource, Rule, violation

KMS_KEY_TYPE = "aws:kms/key:Key"
SNS_TOPIC_TYPE = "aws:sns/topic:Topic"
KEY_POLICY_FIX = (
    "write an explicit key policy granting kms:* only to named principals (the account root or roles)"
)
ALL_KMS_ACTIONS = ("kms:*", "*")


def _is_everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    return isinstance(principal, Mapping) and any(
        value == "*" or "*" in items_of(value) for value in principal.values()
    )


def _grants_all_kms_actions(statement: Mapping[str, Any]) -> bool:
    actions = statement.get("Action")
    return any(action in ALL_KMS_ACTIONS for action in items_of(actions) or [actions])


def _open_statements(document: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The statements that allow every KMS action to everyone, unconditionally."""
    statements = document.get("Statement") if isinstance(document, Mapping) else None
    for index, statement in enumerate(items_of(statements) or [statements]):
        if (
            isinstance(statement, Mapping)
            and statement.get("Effect") == "Allow"
            and _is_everyone(statement.get("Principal"))
            and _grants_all_kms_actions(statement)
            and not statement.get("Condition")
        ):
            yield index, statement


def check_kms_key_policy(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type != KMS_KEY_TYPE:
        return
    policy = lookup(resource.props, "policy")
    if policy is None:
        yield violation(resource, "policy", "not set (AWS's default key policy)", KEY_POLICY_FIX)
        return
    try:
        document = json.loads(policy) if isinstance(policy, str) else policy
    except json.JSONDecodeError as error:
        yield violation(resource, "policy", f"not JSON ({error.msg})", KEY_POLICY_FIX)
        return
    for index, statement in _open_statements(document):
        yield violation(
            resource,
            f"policy.Statement[{index}]",
            f"{display(statement.get('Action'))} to Principal {display(statement.get('Principal'))} "
            "without a Condition",
            KEY_POLICY_FIX + ", or narrow the wildcard principal with a Condition",
        )


def check_sns_topic_encryption(resource: Resource, _config: None) -> Iterator[str]:
    # Set but unknown at preview (a key created in the same update) still counts as set.
    if resource.type == SNS_TOPIC_TYPE and not has_key(resource.props, "kmsMasterKeyId"):
        yield violation(
            resource,
            "kmsMasterKeyId",
            "not set",
            "encrypt the topic with a customer KMS key whose policy lets its publishers use it",
        )


KMS_KEY_POLICY_RULE = Rule(
    name="kms-key-policy",
    description=(
        "KMS keys carry an explicit key policy that parses as JSON and grants no kms:* to everyone "
        "without a condition."
    ),
    severity=Severity.HIGH,
    check=check_kms_key_policy,
)

SNS_ENCRYPTION_RULE = Rule(
    name="sns-topic-encryption",
    description="SNS topics are encrypted at rest with a KMS key.",
    severity=Severity.MEDIUM,
    check=check_sns_topic_encryption,
)
