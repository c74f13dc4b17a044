"""Every IAM document the plans hold, linted by parliament (Duo Labs' IAM policy linter).

Trust policies, identity policies and resource policies (bucket, topic, queue, key, secret) are found
wherever they sit in a resource's inputs, so a new component's documents are linted without a list to
keep up to date.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import parliament
import pytest

from infra.config import parse_stack_config, read_stack_file
from infra.plan import plan_stack
from infra.training.program import plan_training_run
from infra.training.request import build_request
from tests.conftest import REPO_ROOT

TRUST_POLICY_INPUT = "assumeRolePolicy"
KEY_TYPE = "aws:kms/key:Key"
# parliament reads every document as an identity policy. The findings that reading gets wrong (and the
# one a role exists for), each
# scoped to (resource type or None for any, input name, issue, detail pattern or None for any):
KNOWN_FALSE_POSITIVES = {
    # A trust policy names a Principal instead of a Resource, as AWS requires.
    (None, TRUST_POLICY_INPUT, "MALFORMED", "Statement contains neither Resource nor NotResource"),
    # parliament knows SAML providers and a few web identity hosts, not IAM OIDC providers (IRSA's).
    (
        "aws:iam/role:Role",
        TRUST_POLICY_INPUT,
        "UNKNOWN_FEDERATION_SOURCE",
        r"arn:aws:iam::[0-9]{12}:oidc-provider/oidc\.eks\.[a-z0-9-]+\.amazonaws\.com/id/[0-9A-F]+",
    ),
    # In a key policy "Resource": "*" means the key itself; it is the only form AWS accepts.
    (KEY_TYPE, "policy", "RESOURCE_STAR", None),
    # The administration statement exists to manage the key (its policy included), never to use it.
    (KEY_TYPE, "policy", "PERMISSIONS_MANAGEMENT_ACTIONS", None),
    # The reaper deletes run roles and instance profiles (bounded to /ml-platform/runs/ by ARN) and
    # clears a run queue's policy: permissions management is its job.
    ("aws:iam/rolePolicy:RolePolicy", "finops-finops-reaper.policy", "PERMISSIONS_MANAGEMENT_ACTIONS", None),
    # Pulling a private image needs a registry token, which ecr:GetAuthorizationToken is.
    ("aws:iam/rolePolicy:RolePolicy", "policy", "CREDENTIALS_EXPOSURE", None),
}


def known_false_positive(resource_type: str, where: str, issue: str, detail: str) -> bool:
    input_name = where.rsplit(".", 1)[-1]
    return any(
        kind in (None, resource_type)
        # An entry names an input ("policy") or one resource's input ("reaper.policy").
        and name in (input_name, where)
        and known_issue == issue
        and (pattern is None or re.fullmatch(pattern, detail) is not None)
        for kind, name, known_issue, pattern in KNOWN_FALSE_POSITIVES
    )


def iam_documents(value: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, document) for every policy document in `value`, JSON text or already decoded."""
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            value = json.loads(value)
        except ValueError:
            return
    if isinstance(value, dict):
        if "Statement" in value:
            yield where, value
            return
        for key, item in value.items():
            yield from iam_documents(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iam_documents(item, f"{where}[{index}]")


def plan_documents(plan: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (resource["type"], where, document)
        for resource in plan["resources"]
        for where, document in iam_documents(resource["inputs"], resource["name"])
    ]


def findings(document: dict[str, Any]) -> list[tuple[str, str]]:
    policy = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
    return [(finding.issue, str(finding.detail)) for finding in policy.findings]


def unexpected_findings(documents: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    problems = []
    for resource_type, where, document in documents:
        for issue, detail in findings(document):
            if known_false_positive(resource_type, where, issue, detail):
                continue
            problems.append(f"{resource_type} {where}: {issue} {detail}")
    return problems


def training_plan(**training_settings: Any) -> dict[str, Any]:
    raw = copy.deepcopy(read_stack_file("dev", REPO_ROOT))
    raw["ml-platform:training"] = {**raw["ml-platform:training"], **training_settings}
    request = build_request(
        parse_stack_config("dev", raw),
        run_id="iam-lint-01",
        instance_types=["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        count=2,
        max_hours=8.0,
        created_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        command="python train.py",
    )
    return plan_training_run(request, raw).to_json()


PLANS = {
    "dev": lambda: plan_stack("dev", REPO_ROOT),
    "prod": lambda: plan_stack("prod", REPO_ROOT),
    "training": training_plan,
    "training-with-session-manager-and-ecr": lambda: training_plan(
        sessionManager=True, imageRepositories=["ml-platform/trainer"]
    ),
}


@pytest.fixture(scope="module", params=list(PLANS))
def documents(request: pytest.FixtureRequest) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
    return request.param, plan_documents(PLANS[request.param]())


def test_every_iam_document_of_the_plans_lints_clean(documents) -> None:
    name, found = documents
    assert unexpected_findings(found) == [], name


def test_the_linter_reads_trust_identity_and_resource_policies(documents) -> None:
    name, found = documents
    kinds = {where.rsplit(".", 1)[-1] for _, where, _ in found}
    assert TRUST_POLICY_INPUT in kinds, name
    assert "policy" in kinds, name
    if name.startswith("training"):
        assert {"aws:iam/rolePolicy:RolePolicy", "aws:sqs/queuePolicy:QueuePolicy"} <= {
            resource_type for resource_type, _, _ in found
        }
    else:
        assert {"aws:s3/bucketPolicy:BucketPolicy", KEY_TYPE, "aws:sns/topicPolicy:TopicPolicy"} <= {
            resource_type for resource_type, _, _ in found
        }


def test_the_linter_is_live_on_a_document_a_reviewer_would_reject() -> None:
    # Object actions on the bucket ARN itself (no /*) match nothing: a real, common mistake.
    wrong = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket"}],
    }
    assert "RESOURCE_MISMATCH" in {issue for issue, _ in findings(wrong)}
    assert unexpected_findings([("aws:iam/rolePolicy:RolePolicy", "role.policy", wrong)]) != []


def test_only_trust_policies_get_the_missing_resource_allowance() -> None:
    statement = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
    document = {"Version": "2012-10-17", "Statement": [statement]}
    assert unexpected_findings([("aws:iam/role:Role", f"role.{TRUST_POLICY_INPUT}", document)]) == []
    assert unexpected_findings([("aws:iam/rolePolicy:RolePolicy", "role.policy", document)]) != []


def test_only_key_policies_may_say_resource_star() -> None:
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}],
    }
    assert unexpected_findings([(KEY_TYPE, "key.policy", everything)]) == []
    assert unexpected_findings([("aws:iam/rolePolicy:RolePolicy", "role.policy", everything)]) != []


# EC2 assumes instance roles through instance profiles and sends no source context to condition on.
SERVICES_WITHOUT_SOURCE_CONTEXT = frozenset({"ec2.amazonaws.com"})
SOURCE_KEYS = ("aws:SourceAccount", "aws:SourceArn")


def test_every_service_principal_is_bound_to_this_account_or_its_resources(documents) -> None:
    name, found = documents
    unbound = []
    for resource_type, where, document in found:
        for statement in document["Statement"]:
            principal = statement.get("Principal")
            services = principal.get("Service", []) if isinstance(principal, dict) else []
            for service in [services] if isinstance(services, str) else services:
                keys = {key for block in (statement.get("Condition") or {}).values() for key in block}
                if service not in SERVICES_WITHOUT_SOURCE_CONTEXT and not keys & set(SOURCE_KEYS):
                    unbound.append(f"{resource_type} {where}: {service}")
    assert unbound == [], name
