"""The FinOps jobs as prod plans them: CronJobs, IRSA roles, the reaper's delete boundary, reports
bucket, finance role and alarms; and the inventory's boto3 calls all mapped to the roles' actions."""

from __future__ import annotations

import ast
import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import parliament
import pytest

from finops.inventory import REGISTRY
from infra.components.finops_access import trust_policy
from infra.components.finops_jobs import (
    ARN_BOUNDED_ACTIONS,
    INVENTORY_ACCESS,
    METRIC_NAME,
    METRIC_NAMESPACE,
    REAPER,
    REPORT,
    REPORTS_PREFIX,
    STACK_DESTROY_ACCESS,
    access_role_name,
    reaper_statements,
    report_read_statements,
    tag_conditions,
)
from infra.config import parse_stack_config, read_stack_file
from infra.iam import RUN_ROLE_PATH
from infra.mocks import ACCOUNT_ID
from infra.plan import plan_environment, plan_stack
from mlp.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.iam_eval import Request, allowed
from tests.plan_helpers import inputs, of_type, one

CRON_JOB = "kubernetes:batch/v1:CronJob"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
RUN_TAGS = {"ephemeral": "true", "managed-by": "pulumi", "run-id": "r-1"}
# sqs:ReceiveMessage is of the Read access level: the run-cost reads peek with a zero visibility timeout.
READ_VERBS = ("Describe", "Get", "List", "Receive")


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    return plan_stack("prod", REPO_ROOT)


@pytest.fixture(scope="module")
def config():
    return parse_stack_config("prod", read_stack_file("prod", REPO_ROOT)).finops


def _policy(plan: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return json.loads(inputs(plan, ROLE_POLICY, name)["policy"])["Statement"]


def _pod(plan: dict[str, Any], job: str) -> dict[str, Any]:
    return inputs(plan, CRON_JOB, f"finops-{job}")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _reports_bucket(plan: dict[str, Any]) -> str:
    return inputs(plan, "aws:s3/bucketPolicy:BucketPolicy", "finops-reports-tls-only")["bucket"]


def _service_of(action: str) -> tuple[str, str]:
    service, name = action.split(":", 1)
    return service, name


# -- Kubernetes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("job", "schedule_key"), [(REPORT, "report_schedule"), (REAPER, "reap_schedule")])
def test_cron_jobs_run_the_digest_on_schedule_confined(prod, config, job: str, schedule_key: str) -> None:
    cron = inputs(prod, CRON_JOB, f"finops-{job}")
    spec = cron["spec"]
    assert cron["metadata"]["namespace"] == config.namespace
    assert spec["schedule"] == getattr(config, schedule_key)
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["activeDeadlineSeconds"] > 0 and job_spec["backoffLimit"] in (0, 1)
    pod = _pod(prod, job)
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == job
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == config.image and "@sha256:" in container["image"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert (
        set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    )
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/scratch"
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert pod["volumes"][0]["emptyDir"]
    for labels in (cron["metadata"]["labels"], spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]):
        assert labels["team"] == "ml-platform" and labels["project"] == "recsys"


def test_the_jobs_flags_are_the_configured_scope(prod, config) -> None:
    report = _pod(prod, REPORT)["containers"][0]
    reaper = _pod(prod, REAPER)["containers"][0]
    assert report["command"] == reaper["command"] == ["mlp"]
    bucket = _reports_bucket(prod)
    assert report["args"] == [
        "report",
        "--out",
        "/scratch/report",
        "--s3-uri",
        f"s3://{bucket}/{REPORTS_PREFIX}",
        "--cost-source",
        "cost-explorer",
        "--regions",
        ",".join(config.regions),
        "--heartbeat",
    ]
    assert reaper["args"] == [
        "reap",
        "--apply",
        "--backend",
        config.state_backend_url,
        "--regions",
        "us-east-1,us-west-2",
        "--heartbeat",
    ]


def test_the_namespace_is_restricted_and_denies_all_but_dns_and_https_egress(prod, config) -> None:
    labels = inputs(prod, "kubernetes:core/v1:Namespace", "finops-ns")["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "audit", "warn")} == {
        "restricted"
    }
    policies = {
        item["inputs"]["metadata"]["name"]: item["inputs"]["spec"]
        for item in of_type(prod, "kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if item["inputs"]["metadata"]["namespace"] == config.namespace
    }
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = policies["jobs-egress"]
    assert egress["policyTypes"] == ["Egress"] and "ingress" not in egress
    ports = [{(port["protocol"], port["port"]) for port in rule["ports"]} for rule in egress["egress"]]
    assert ports == [{("UDP", 53), ("TCP", 53)}, {("TCP", 443)}]


# -- IRSA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", [REPORT, REAPER])
def test_each_job_role_trusts_only_its_service_account(prod, config, job: str) -> None:
    role = inputs(prod, ROLE, f"finops-{job}")
    (statement,) = json.loads(role["assumeRolePolicy"])["Statement"]
    provider = inputs(prod, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    host = provider["url"].removeprefix("https://")
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{host}")
    assert statement["Condition"] == {
        "StringEquals": {
            f"{host}:sub": f"system:serviceaccount:{config.namespace}:{job}",
            f"{host}:aud": "sts.amazonaws.com",
        }
    }
    account = inputs(prod, "kubernetes:core/v1:ServiceAccount", f"finops-{job}")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        f"arn:aws:iam::123456789012:role/finops-{job}-"
    )


# -- the roles' statements -------------------------------------------------------------------------


def _all_statements(prod) -> dict[str, list[dict[str, Any]]]:
    return {name: _policy(prod, f"finops-{name}") for name in (REPORT, REAPER, "finance")}


def test_no_statement_grants_a_whole_service(prod) -> None:
    for name, statements in _all_statements(prod).items():
        for statement in statements:
            assert statement["Effect"] == "Allow", name
            for action in (
                [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            ):
                assert action != "*" and not action.endswith(":*"), (name, action)


def _actions(statement: dict[str, Any]) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def _resources(statement: dict[str, Any]) -> list[str]:
    return [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]


def test_the_report_role_reads_and_writes_only_its_reports(prod) -> None:
    bucket_arn = _reports_bucket(prod)
    for statement in _policy(prod, f"finops-{REPORT}"):
        for action in _actions(statement):
            if _service_of(action)[1].startswith(READ_VERBS):
                continue
            if action == "s3:PutObject":
                assert _resources(statement) == [f"arn:aws:s3:::{bucket_arn}/reports/*"]
            elif action == "kms:GenerateDataKey":
                assert (
                    statement["Condition"]["StringEquals"]["kms:ViaService"] == "s3.us-east-1.amazonaws.com"
                )
            elif action == "cloudwatch:PutMetricData":
                assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}
            elif action == "budgets:ViewBudget":  # a read (DescribeBudgets) though its verb is View
                assert _resources(statement) == [f"arn:aws:budgets::{ACCOUNT_ID}:budget/*"]
            else:
                pytest.fail(f"the report role may {action}")


def _arn_bound(action: str) -> tuple[str, ...] | None:
    for bound in ARN_BOUNDED_ACTIONS:
        if action in bound.actions:
            return bound.resources
    return None


def test_every_reaper_write_is_tag_conditioned_or_bounded_as_listed(prod, config) -> None:
    for statement in _policy(prod, f"finops-{REAPER}"):
        writes = [a for a in _actions(statement) if not _service_of(a)[1].startswith(READ_VERBS)]
        if not writes or writes == ["cloudwatch:PutMetricData"] or writes == ["kms:Decrypt"]:
            continue
        if statement.get("Condition") == tag_conditions():
            for action in writes:
                bound = _arn_bound(action)
                if bound is not None:
                    assert _resources(statement) == list(bound), action
            continue
        # Not tag-conditioned: the state objects, bounded to training stacks' keys.
        assert all(_arn_bound(action) for action in writes), statement
        for resource in _resources(statement):
            assert resource.startswith(f"arn:aws:s3:::{config.state_backend_url.removeprefix('s3://')}/")
            assert "/train-*" in resource, resource


def test_finance_reads_reports_and_nothing_else(prod, config) -> None:
    role = inputs(prod, ROLE, "finops-finance")
    (trust,) = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"AWS": list(config.finance_role_trusted_arns)}
    statements = {statement["Sid"]: statement for statement in _policy(prod, "finops-finance")}
    assert set(statements) == {"ReportsList", "ReportsGet", "ReportsDecrypt"}
    assert statements["ReportsList"]["Condition"] == {"StringLike": {"s3:prefix": ["reports/", "reports/*"]}}
    assert statements["ReportsGet"]["Resource"].endswith("/reports/*")
    assert statements["ReportsDecrypt"]["Action"] == ["kms:Decrypt"]
    assert not of_type(prod, "aws:s3/bucketWebsiteConfiguration:BucketWebsiteConfiguration")


# -- the reports bucket and the alarms -------------------------------------------------------------


def test_the_reports_bucket_is_private_encrypted_versioned_and_expires_old_reports(prod, config) -> None:
    key = one(prod, "aws:kms/key:Key", "finops-reports-key")
    assert key["inputs"]["enableKeyRotation"] is True and key["retainOnDelete"] is True
    (rule,) = inputs(
        prod,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "finops-reports-encryption",
    )["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    public = inputs(
        prod, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "finops-reports-public-access"
    )
    assert all(
        public[flag]
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    ownership = inputs(
        prod, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "finops-reports-ownership"
    )
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    versioning = inputs(prod, "aws:s3/bucketVersioning:BucketVersioning", "finops-reports-versioning")
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    (deny,) = json.loads(
        inputs(prod, "aws:s3/bucketPolicy:BucketPolicy", "finops-reports-tls-only")["policy"]
    )["Statement"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = {
        rule["id"]: rule
        for rule in inputs(
            prod,
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            "finops-reports-lifecycle",
        )["rules"]
    }
    nights = rules["expire-old-nights"]
    assert (nights["filter"], nights["expiration"]) == (
        {"prefix": "reports/2"},
        {"days": config.report_retention_days},
    )
    overwritten = rules["expire-overwritten-versions"]
    assert overwritten["filter"] == {"prefix": "reports/"}
    assert overwritten["noncurrentVersionExpiration"]["noncurrentDays"] == config.report_retention_days
    # Only dated nights expire: latest/ and history.jsonl are matched by no expiring prefix.
    expiring = [rule["filter"]["prefix"] for rule in rules.values() if "expiration" in rule]
    for kept in ("reports/latest/index.html", "reports/history.jsonl"):
        assert not any(kept.startswith(prefix) for prefix in expiring)
    assert any("reports/2026-12-01/index.html".startswith(prefix) for prefix in expiring)


@pytest.mark.parametrize(("job", "hours"), [(REPORT, 26), (REAPER, 3)])
def test_a_missed_run_alarms_to_the_alerts_topic(prod, job: str, hours: int) -> None:
    alarm = inputs(prod, "aws:cloudwatch/metricAlarm:MetricAlarm", f"finops-{job}-missed")
    topic = one(prod, "aws:sns/topic:Topic")
    assert (alarm["namespace"], alarm["metricName"], alarm["dimensions"]) == (
        METRIC_NAMESPACE,
        METRIC_NAME,
        {"Job": job},
    )
    assert alarm["statistic"] == "Sum" and alarm["comparisonOperator"] == "LessThanThreshold"
    assert alarm["threshold"] == 1 and alarm["period"] * alarm["evaluationPeriods"] == hours * 3600
    assert alarm["treatMissingData"] == "breaching"
    assert alarm["alarmActions"] == [alarm["alarmActions"][0]] and alarm["alarmActions"][0].startswith(
        "arn:aws:sns:"
    )
    assert topic


def test_dev_has_none_of_it() -> None:
    dev = plan_stack("dev", REPO_ROOT)
    assert not [item for item in dev["resources"] if item["name"].startswith("finops")]


# -- the inventory mapping -------------------------------------------------------------------------


def test_the_mapping_covers_every_kind_and_deletes_exactly_the_run_resources() -> None:
    assert set(INVENTORY_ACCESS) == set(REGISTRY)
    assert {kind for kind, access in INVENTORY_ACCESS.items() if access.deletes} == {
        kind for kind, declaration in REGISTRY.items() if declaration.delete is not None
    }


@cache
def _operations() -> dict[str, set[str]]:
    """boto3 method name -> the IAM action names (without service) it may be, over the inventory's services."""
    session = botocore.session.get_session()
    names: dict[str, set[str]] = {}
    for service in (
        "autoscaling",
        "ec2",
        "eks",
        "elasticache",
        "elb",
        "elbv2",
        "events",
        "iam",
        "resourcegroupstaggingapi",
        "s3",
        "sqs",
    ):
        for operation in session.get_service_model(service).operation_names:
            names.setdefault(botocore.xform_name(operation), set()).add(operation)
    return names


def _inventory_calls() -> set[str]:
    """Every boto3 operation finops/inventory/*.py calls, as a method or through a paginator."""
    calls = set()
    for path in (REPO_ROOT / "finops" / "inventory").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _operations()
            ):
                calls.add(node.func.attr)
            # Paginated operations and those handed to helpers are named as strings.
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _operations():
                calls.add(node.value)
    return calls


def test_every_boto3_call_of_the_inventory_is_a_mapped_action() -> None:
    mapped = {
        _service_of(access.action)[1]
        for kind in INVENTORY_ACCESS.values()
        for access in (*kind.reads, *kind.deletes)
    } | {"ListBuckets"}
    # list_buckets is s3:ListAllMyBuckets; get_resources is tag:GetResources.
    unmapped = {call for call in _inventory_calls() if not _operations()[call] & mapped}
    assert "list_buckets" in _inventory_calls() and "s3:ListAllMyBuckets" in {
        access.action for access in INVENTORY_ACCESS["s3:bucket"].reads
    }
    assert unmapped == set()


def _example(resource_pattern: str) -> str:
    return resource_pattern.replace("*", "x1")


def _reaper_deletes() -> list[tuple[str, str]]:
    return sorted(
        {
            (access.action, access.resource)
            for kind in INVENTORY_ACCESS.values()
            for access in (*kind.deletes, *STACK_DESTROY_ACCESS.deletes)
        }
    )


@pytest.mark.parametrize(("action", "resource"), _reaper_deletes())
def test_the_reaper_deletes_ephemeral_pulumi_resources_only(prod, action: str, resource: str) -> None:
    statements = _policy(prod, f"finops-{REAPER}")
    target = _example(resource)
    assert allowed(statements, Request.on_tagged(action, target, RUN_TAGS))
    assert not allowed(statements, Request.on_tagged(action, target, {**RUN_TAGS, "ephemeral": "false"}))
    assert not allowed(statements, Request.on_tagged(action, target, {"ephemeral": "true"}))
    assert not allowed(statements, Request.on_tagged(action, target, {}))


@pytest.mark.parametrize("action", ["iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy"])
def test_a_tagged_role_outside_the_run_path_is_not_the_reapers(prod, action: str) -> None:
    statements = _policy(prod, f"finops-{REAPER}")
    assert allowed(
        statements, Request.on_tagged(action, f"arn:aws:iam::123456789012:role{RUN_ROLE_PATH}run-1", RUN_TAGS)
    )
    assert not allowed(
        statements, Request.on_tagged(action, "arn:aws:iam::123456789012:role/admin", RUN_TAGS)
    )
    assert not allowed(
        statements, Request.on_tagged(action, "arn:aws:iam::123456789012:role/ml-platform/admin", RUN_TAGS)
    )


def test_the_reaper_writes_training_stacks_state_only(prod, config) -> None:
    statements = _policy(prod, f"finops-{REAPER}")
    state = f"arn:aws:s3:::{config.state_backend_url.removeprefix('s3://')}"
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert allowed(statements, Request(action, f"{state}/.pulumi/stacks/ml-platform/train-r1.json"))
        assert allowed(statements, Request(action, f"{state}/.ml-platform-locks/train-r1.lock"))
        assert not allowed(statements, Request(action, f"{state}/.pulumi/stacks/ml-platform/prod.json"))
        assert not allowed(statements, Request(action, f"{state}/.pulumi/stacks/other-project/train-r1.json"))
    assert allowed(statements, Request("s3:GetObject", f"{state}/.pulumi/stacks/ml-platform/prod.json"))


def test_only_the_reapers_deletes_are_permissions_management(prod) -> None:
    """parliament flags the reaper's role and queue-policy deletes; they are exactly its listed deletes."""
    flagged = set()
    document = json.dumps({"Version": "2012-10-17", "Statement": _policy(prod, f"finops-{REAPER}")})
    for finding in parliament.analyze_policy_string(document, include_community_auditors=True).findings:
        assert finding.issue == "PERMISSIONS_MANAGEMENT_ACTIONS", finding.issue
        flagged |= set(finding.location["actions"])
    assert flagged == {
        "iam:deleteinstanceprofile",
        "iam:deleterole",
        "iam:deleterolepolicy",
        "iam:detachrolepolicy",
        "iam:removerolefrominstanceprofile",
        "sqs:setqueueattributes",
    }


# -- member accounts and config --------------------------------------------------------------------


def test_member_account_roles_grant_the_hosting_roles_tables() -> None:
    assert access_role_name("mlp-finops", REPORT) == "mlp-finops"
    assert access_role_name("mlp-finops", REAPER) == "mlp-finops-reaper"
    (statement,) = json.loads(trust_policy("arn:aws:iam::111111111111:role/r", "x-1"))["Statement"]
    assert statement["Principal"] == {"AWS": "arn:aws:iam::111111111111:role/r"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "x-1"}}
    assert (
        "Condition" not in json.loads(trust_policy("arn:aws:iam::111111111111:role/r", None))["Statement"][0]
    )
    assert all(
        statement.get("Condition") == tag_conditions()
        for statement in reaper_statements()
        if "Delete" in statement["Sid"]
    )
    assert not [
        s
        for s in report_read_statements()
        for a in _actions(s)
        if not _service_of(a)[1].startswith(READ_VERBS)
    ]


def _prod_with(**finops: Any) -> tuple[Any, dict[str, Any]]:
    raw = copy.deepcopy(read_stack_file("prod", REPO_ROOT))
    raw["ml-platform:finops"] = {**raw["ml-platform:finops"], **finops}
    return parse_stack_config("prod", raw), raw


def test_scope_focus_and_secret_add_exactly_their_grants() -> None:
    config, raw = _prod_with(
        accountsRole="mlp-finops",
        externalId="ext-1",
        costSource="focus",
        focusUri="s3://payer-exports/focus/mlp-focus-1-2",
        slackWebhookSecretArn="arn:aws:secretsmanager:us-east-1:123456789012:secret:finops/slack-AbCdEf",
        regions="all",
    )
    plan = plan_environment(config, raw).to_json()
    report = {statement["Sid"]: statement for statement in _policy(plan, f"finops-{REPORT}")}
    reaper = {statement["Sid"]: statement for statement in _policy(plan, f"finops-{REAPER}")}
    assert report["AssumeMemberAccountRole"]["Resource"] == "arn:aws:iam::*:role/mlp-finops"
    assert reaper["AssumeMemberAccountRole"]["Resource"] == "arn:aws:iam::*:role/mlp-finops-reaper"
    assert report["FocusExportGet"]["Resource"] == "arn:aws:s3:::payer-exports/focus/mlp-focus-1-2/*"
    assert report["SlackWebhookRead"]["Resource"] == config.finops.slack_webhook_secret_arn
    args = _pod(plan, REPORT)["containers"][0]["args"]
    assert args[args.index("--cost-source") + 1] == "focus"
    assert args[args.index("--focus-uri") + 1] == config.finops.focus_uri
    assert args[args.index("--regions") + 1] == "all"
    # Each job assumes its own member-account role, with the external id the roles require.
    assert args[args.index("--org-role") + 1] == "mlp-finops"
    reap_args = _pod(plan, REAPER)["containers"][0]["args"]
    assert reap_args[reap_args.index("--org-role") + 1] == "mlp-finops-reaper"
    assert args[args.index("--external-id") + 1] == reap_args[reap_args.index("--external-id") + 1] == "ext-1"
    # The report job reads the webhook from the secret itself; the reaper has no use for it.
    env = {item["name"]: item["value"] for item in _pod(plan, REPORT)["containers"][0]["env"]}
    assert env["MLP_SLACK_WEBHOOK_SECRET_ARN"] == config.finops.slack_webhook_secret_arn
    reaper_env = {item["name"] for item in _pod(plan, REAPER)["containers"][0]["env"]}
    assert "MLP_SLACK_WEBHOOK_SECRET_ARN" not in reaper_env


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlp:latest"}, "finops.image: .* by digest"),
        ({"reportSchedule": "0 2 * *"}, "finops.reportSchedule: .* 5 fields"),
        ({"costSource": "focus"}, "finops.focusUri"),
        ({"stateBackendUrl": None}, "finops.stateBackendUrl: missing"),
        ({"financeRoleTrustedArns": ["arn:aws:iam::123:role/x"]}, "finops.financeRoleTrustedArns"),
        ({"athenaDatabase": "mlp_focus"}, "finops.athenaWorkgroup"),
        ({"athenaWorkgroup": "mlp-focus"}, "finops.athenaDatabase"),
    ],
)
def test_bad_finops_config_is_one_line_naming_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _prod_with(**change)


def test_the_docs_list_every_arn_bounded_action() -> None:
    text = Path(REPO_ROOT / "docs" / "finops-jobs.md").read_text()
    for bound in ARN_BOUNDED_ACTIONS:
        for action in bound.actions:
            assert f"`{action}`" in text, action


def test_prod_exports_the_jobs_outputs() -> None:
    config, raw = _prod_with()
    outputs = plan_environment(config, raw).outputs
    assert outputs["finopsReportsUri"].endswith(f"/{REPORTS_PREFIX}")
    for key in ("finopsReportRoleArn", "finopsReaperRoleArn", "finopsFinanceRoleArn"):
        assert outputs[key].startswith("arn:aws:iam::"), key


def test_the_athena_engine_queries_the_cost_exports_workgroup_and_nothing_more() -> None:
    from tests.test_iam_lint import plan_documents, unexpected_findings

    config, raw = _prod_with(
        costSource="focus",
        focusUri="s3://mlp-payer-cost-export-x1/focus/mlp-focus",
        athenaWorkgroup="mlp-prod-focus",
        athenaDatabase="mlp_prod_focus",
    )
    plan = plan_environment(config, raw).to_json()
    args = _pod(plan, REPORT)["containers"][0]["args"]
    engine = args[args.index("--engine") :][:6]
    assert engine == [
        "--engine",
        "athena",
        "--athena-workgroup",
        "mlp-prod-focus",
        "--athena-database",
        "mlp_prod_focus",
    ]
    report = {statement["Sid"]: statement for statement in _policy(plan, f"finops-{REPORT}")}
    assert (
        report["AthenaQueries"]["Resource"]
        == "arn:aws:athena:us-east-1:123456789012:workgroup/mlp-prod-focus"
    )
    # The table defaults to the export's name, the URI's last part.
    assert report["GlueCatalogRead"]["Resource"][-1] == (
        "arn:aws:glue:us-east-1:123456789012:table/mlp_prod_focus/mlp-focus"
    )
    assert report["AthenaResults"]["Resource"] == "arn:aws:s3:::mlp-payer-cost-export-x1/athena-results/*"
    assert {"athena:DeleteWorkGroup", "glue:DeleteTable"}.isdisjoint(
        action for statement in report.values() for action in _actions(statement)
    )
    # Without the Athena settings the role has none of it.
    plain = {
        statement["Sid"]
        for statement in _policy(plan_environment(*_prod_with()).to_json(), f"finops-{REPORT}")
    }
    assert not {"AthenaQueries", "GlueCatalogRead", "AthenaResults"} & plain
    assert unexpected_findings(plan_documents(plan)) == []


def test_the_report_and_the_reaper_read_what_run_costs_need_and_the_report_forecasts(prod) -> None:
    report, reaper = _policy(prod, f"finops-{REPORT}"), _policy(prod, f"finops-{REAPER}")
    run = "mlp-train-r7-interruptions"
    for statements in (report, reaper):
        assert allowed(statements, Request("autoscaling:DescribeScalingActivities", "*"))
        assert allowed(statements, Request("s3:ListBucket", "arn:aws:s3:::mlp-prod-checkpoints-abc"))
        assert allowed(statements, Request("s3:ListAllMyBuckets", "*"))
        assert allowed(statements, Request("s3:GetBucketTagging", "arn:aws:s3:::mlp-prod-checkpoints-abc"))
        assert allowed(statements, Request("sqs:ReceiveMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:{run}"))
        # Only the runs' interruption queues: never another queue's messages.
        assert not allowed(
            statements, Request("sqs:ReceiveMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:orders")
        )
    assert allowed(report, Request("ce:GetCostForecast", "*"))
    assert allowed(report, Request("budgets:ViewBudget", f"arn:aws:budgets::{ACCOUNT_ID}:budget/mlp-prod"))
    assert not allowed(
        reaper, Request("budgets:ViewBudget", f"arn:aws:budgets::{ACCOUNT_ID}:budget/mlp-prod")
    )
