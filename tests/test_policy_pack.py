"""The pack's plumbing: the analyzer's view of props, unknowns at preview, pack config and metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE, UnknownValueError

from infra.config import load_stack_config
from infra.plan import plan_stack
from mlp.errors import UserError
from policy.analyzer_view import UNKNOWN_VALUE, analyzer_props, display, has_key, lookup, peek
from policy.evaluate import evaluate_plan, validate_plan
from policy.pack import pack_config_for_stack, rules, split_pack_config

PROVIDER_URN = "urn:pulumi:dev::ml-platform::pulumi:providers:aws::aws"
DEV_TAGS = {
    "team": "ml-platform",
    "project": "recsys",
    "environment": "dev",
    "cost-center": "CC-4410",
    "owner": "ml-platform@example.com",
    "managed-by": "pulumi",
}


def one_resource_plan(
    resource_type: str, inputs: dict[str, Any], provider_inputs: dict[str, Any]
) -> dict[str, Any]:
    return {
        "project": "ml-platform",
        "stack": "dev",
        "resources": [
            {"urn": PROVIDER_URN, "type": "pulumi:providers:aws", "name": "aws", "inputs": provider_inputs},
            {
                "urn": f"urn:pulumi:dev::ml-platform::{resource_type}::subject",
                "type": resource_type,
                "name": "subject",
                "provider": PROVIDER_URN,
                "inputs": inputs,
            },
        ],
    }


def test_props_take_the_analyzer_shape() -> None:
    props = analyzer_props({"maxSize": 4, "nested": {"ports": [22, 443]}, "flag": True, "name": "x"})
    # Through the protobuf Struct every number is a float, as under CrossGuard.
    assert lookup(props, "maxSize") == 4.0 and isinstance(lookup(props, "maxSize"), float)
    assert list(lookup(props, "nested", "ports")) == [22.0, 443.0]
    assert lookup(props, "nested", "ports", 1) == 443.0
    assert lookup(props, "flag") is True
    assert lookup(props, "absent", "deeper", default="d") == "d"
    assert display(lookup(props, "maxSize")) == "4"


def test_unknown_values_raise_on_read_but_count_as_set() -> None:
    props = analyzer_props({"authToken": UNKNOWN_STRING_VALUE, "encrypted": UNKNOWN_BOOLEAN_VALUE})
    assert has_key(props, "authToken")
    assert peek(props, "encrypted") is UNKNOWN_VALUE
    with pytest.raises(UnknownValueError) as error:
        lookup(props, "encrypted")
    assert error.value.message == "boolean value at .encrypted can't be known during preview"


def test_secrets_reach_the_rules_unwrapped() -> None:
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "s3cr3t"}
    assert lookup(analyzer_props({"authToken": secret}), "authToken") == "s3cr3t"


def test_a_policy_reading_an_unknown_is_reported_as_not_runnable_at_preview() -> None:
    inputs = {
        "engine": "redis",
        "nodeType": "cache.t4g.small",
        "atRestEncryptionEnabled": UNKNOWN_BOOLEAN_VALUE,
        "transitEncryptionEnabled": True,
        # A generated password is unknown at preview and still satisfies the AUTH requirement.
        "authToken": UNKNOWN_STRING_VALUE,
    }
    plan = one_resource_plan(
        "aws:elasticache/replicationGroup:ReplicationGroup", inputs, {"defaultTags": {"tags": DEV_TAGS}}
    )
    result = evaluate_plan(plan)
    assert [(v.policy, v.level, v.message) for v in result.violations] == [
        (
            "elasticache-encryption",
            "advisory",
            "can't run policy 'elasticache-encryption' during preview: "
            "boolean value at .atRestEncryptionEnabled can't be known during preview",
        )
    ]
    assert result.mandatory_count == 0


@pytest.mark.parametrize("encoded", [False, True])
def test_provider_default_tags_count_in_either_engine_form(encoded: bool) -> None:
    default_tags: Any = {"tags": {k: v for k, v in DEV_TAGS.items() if k != "owner"}}
    if encoded:
        default_tags = json.dumps(default_tags)
    plan = one_resource_plan("aws:sqs/queue:Queue", {"tags": {"Name": "q"}}, {"defaultTags": default_tags})
    messages = [v.message for v in evaluate_plan(plan).violations]
    assert len(messages) == 1
    assert messages[0].startswith(
        "Queue 'subject': tags is missing owner (has: Name, cost-center, environment"
    )


def test_the_default_provider_is_used_when_a_resource_names_none() -> None:
    plan = one_resource_plan("aws:sqs/queue:Queue", {}, {"defaultTags": {"tags": DEV_TAGS}})
    plan["resources"][0].update(urn=PROVIDER_URN.replace("::aws", "::default_7_51_0"), name="default_7_51_0")
    plan["resources"][1]["provider"] = None
    assert evaluate_plan(plan).violations == []


def test_budget_rule_prices_the_stack_exactly_as_the_plan_does() -> None:
    plan = plan_stack("dev")
    estimate = plan["estimated_monthly_cost_usd"]
    assert estimate > 0
    assert evaluate_plan(plan, {"stack-monthly-budget": {"monthlyBudgetUsd": estimate}}).violations == []
    [over] = evaluate_plan(plan, {"stack-monthly-budget": {"monthlyBudgetUsd": estimate - 0.01}}).violations
    assert over.message.startswith(f"stack: estimated monthly cost is ${estimate:,.2f}, over the budget of")


def test_pack_config_for_a_stack_carries_its_limits_and_budget_level() -> None:
    prod = load_stack_config("prod")
    config = pack_config_for_stack(prod)
    assert config["training-fleet-guardrails"] == {
        "allowedInstanceTypes": list(prod.training.allowed_instance_types),
        "maxGpusPerRun": prod.training.max_gpus_per_run,
        "maxRunHours": prod.training.max_run_hours,
    }
    assert config["mandatory-cost-tags"] == {"tags": list(prod.mandatory_tags)}
    assert config["stack-monthly-budget"] == {
        "enforcementLevel": "mandatory",
        "monthlyBudgetUsd": prod.budgets.environment_monthly_usd,
    }
    dev = load_stack_config("dev")
    assert pack_config_for_stack(dev)["stack-monthly-budget"]["enforcementLevel"] == "advisory"
    # What the stack derives is valid pack config.
    split_pack_config(config, rules())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"no-such-policy": {}}, "pack config: no policy named 'no-such-policy'"),
        (
            {"stack-monthly-budget": {"enforcementLevel": "loud"}},
            "pack config: stack-monthly-budget.enforcementLevel 'loud'",
        ),
        (
            {"training-fleet-guardrails": {"maxGpus": 4}},
            "pack config: training-fleet-guardrails.maxGpus: Extra inputs",
        ),
        (
            {"training-fleet-guardrails": {"maxGpusPerRun": 0}},
            "pack config: training-fleet-guardrails.maxGpusPerRun: Input should be greater than or equal",
        ),
        ({"s3-no-public-acl": {"strict": True}}, "pack config: policy s3-no-public-acl takes no settings"),
        (
            {"s3-no-public-acl": ["mandatory"]},
            "pack config: s3-no-public-acl must be an enforcement level or an object",
        ),
    ],
)
def test_bad_pack_config_is_one_clear_line(config: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as error:
        split_pack_config(config, rules())
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_every_policy_is_described_and_configurable_where_numbers_are_involved() -> None:
    policies = {rule.name: rule.policy() for rule in rules()}
    assert len(policies) == 18
    for name, policy in policies.items():
        assert policy.description and policy.severity is not None, name
        expected = EnforcementLevel.ADVISORY if name == "stack-monthly-budget" else EnforcementLevel.MANDATORY
        assert policy.enforcement_level == expected, name
    stack_level = {name for name, policy in policies.items() if isinstance(policy, StackValidationPolicy)}
    assert stack_level == {
        "training-role-managed-policies",
        "s3-bucket-security",
        "no-public-ingress",
        "vpc-flow-logs",
        "kubernetes-namespace-network-policy",
        "stack-monthly-budget",
    }
    assert all(isinstance(p, ResourceValidationPolicy) for n, p in policies.items() if n not in stack_level)
    schemas = {
        name: policy.config_schema.properties for name, policy in policies.items() if policy.config_schema
    }
    assert set(schemas) == {
        "mandatory-cost-tags",
        "training-fleet-guardrails",
        "training-role-managed-policies",
        "eks-cluster-hardening",
        "kubernetes-pod-security",
        "stack-monthly-budget",
    }
    assert schemas["training-fleet-guardrails"]["maxGpusPerRun"]["default"] == 8
    assert schemas["mandatory-cost-tags"]["tags"]["default"][0] == "team"
    assert schemas["training-role-managed-policies"]["allowedManagedPolicyArns"]["default"] == []
    assert schemas["kubernetes-pod-security"]["apiWorkloads"]["default"] == []


def test_a_stack_the_price_table_cannot_price_gets_a_budget_note_not_a_crash() -> None:
    plan = one_resource_plan(
        "aws:elasticache/replicationGroup:ReplicationGroup",
        {
            "nodeType": "cache.x99.huge",
            "atRestEncryptionEnabled": True,
            "transitEncryptionEnabled": True,
            "authToken": "t",
        },
        {"defaultTags": {"tags": DEV_TAGS}},
    )
    [violation] = evaluate_plan(plan).violations
    assert (violation.policy, violation.level) == ("stack-monthly-budget", "advisory")
    assert violation.message.startswith(
        "stack: estimated monthly cost is unknown (node type 'cache.x99.huge' has no"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'plan.json: not a plan: expected an object with a "resources" list'),
        ({"resources": ["x"]}, "plan.json: resources[0] is not an object"),
        ({"resources": [{"name": "b"}]}, "plan.json: resources[0].type is missing or not a string"),
        (
            {"resources": [{"type": "t", "name": "b", "inputs": []}]},
            "plan.json: resources[0].inputs must be an object",
        ),
    ],
)
def test_invalid_plan_documents_are_refused(document: Any, message: str) -> None:
    with pytest.raises(UserError) as error:
        validate_plan(document, "plan.json")
    assert str(error.value).startswith(message)
