"""IAM documents built in Python (no getPolicyDocument invokes), shared by every component."""

from __future__ import annotations

import json
from typing import Any

import pulumi


def assume_role_policy(service: str, conditions: dict[str, Any] | None = None) -> str:
    """Trust policy letting an AWS service (e.g. `ec2.amazonaws.com`) assume the role.

    `conditions` bind the service to this account's resources (`infra.kms.source_conditions`) where
    the service sends a source context; EC2's instance profiles send none.
    """
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if conditions:
        statement["Condition"] = conditions
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def irsa_assume_role_policy(
    oidc_provider_arn: pulumi.Input[str], oidc_issuer: pulumi.Input[str], namespace: str, service_account: str
) -> pulumi.Output[str]:
    """Trust policy for one Kubernetes service account through the cluster's OIDC provider (IRSA)."""

    def document(values: list[Any]) -> str:
        provider_arn, issuer = values
        host = issuer.removeprefix("https://")
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": provider_arn},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {
                            "StringEquals": {
                                f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                                f"{host}:aud": "sts.amazonaws.com",
                            }
                        },
                    }
                ],
            }
        )

    return pulumi.Output.all(oidc_provider_arn, oidc_issuer).apply(document)


def managed_policy_arn(name: str) -> str:
    return f"arn:aws:iam::aws:policy/{name}"


# Every training run's roles and instance profiles live under this IAM path, so a policy can bound
# what may touch run identities (the reaper's, a key policy) by path instead of by name.
RUN_ROLE_PATH = "/ml-platform/runs/"
