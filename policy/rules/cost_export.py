"""Athena workgroups encrypt their query results, enforce their configuration and cap each query's scan.

Query results over billing data are billing data: without enforcement a client may write them
unencrypted elsewhere, and without a bytes-scanned cutoff one careless query over years of FOCUS
rows is billed by the terabyte.
"""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from policy.analyzer_view import display, is_true, lookup
from policy.rules.common import Resource, Rule, violation

ATHENA_WORKGROUP_TYPE = "aws:athena/workgroup:Workgroup"
ENCRYPTED_RESULT_OPTIONS = ("SSE_KMS", "CSE_KMS")


def check_athena_workgroup(resource: Resource, _config: None) -> Iterator[str]:
    if resource.type != ATHENA_WORKGROUP_TYPE:
        return
    # AWS defaults an absent enforceWorkgroupConfiguration to true.
    enforced = lookup(resource.props, "configuration", "enforceWorkgroupConfiguration", default=True)
    if not is_true(enforced):
        yield violation(
            resource,
            "configuration.enforceWorkgroupConfiguration",
            display(enforced),
            "set it true so clients cannot override result encryption or the scan cutoff",
        )
    option = lookup(
        resource.props, "configuration", "resultConfiguration", "encryptionConfiguration", "encryptionOption"
    )
    if option not in ENCRYPTED_RESULT_OPTIONS:
        yield violation(
            resource,
            "configuration.resultConfiguration.encryptionConfiguration.encryptionOption",
            display(option) if option is not None else "not set",
            "encrypt query results with a customer-managed key: SSE_KMS (or CSE_KMS) with kmsKeyArn",
        )
    cutoff = lookup(resource.props, "configuration", "bytesScannedCutoffPerQuery")
    if cutoff is None:
        yield violation(
            resource,
            "configuration.bytesScannedCutoffPerQuery",
            "not set",
            "cap the bytes one query may scan (ml-platform:costExport.bytesScannedCutoffGb)",
        )


RULE = Rule(
    name="athena-workgroup-guardrails",
    description="Athena workgroups encrypt results with KMS, enforce their configuration and cap bytes scanned.",
    severity=Severity.HIGH,
    check=check_athena_workgroup,
)
