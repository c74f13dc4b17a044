"""The whole pack over a stack with the FOCUS cost export on (the rule's fixtures are in test_policy_rules)."""

from __future__ import annotations

from infra.config import parse_stack_config, read_stack_file
from infra.plan import plan_environment
from policy.evaluate import evaluate_plan


def test_a_stack_with_the_cost_export_passes_the_whole_pack() -> None:
    raw = read_stack_file("dev")
    raw["ml-platform:costExport"] = {"enabled": True}
    plan = plan_environment(parse_stack_config("dev", raw), raw).to_json()
    assert any(item["type"] == "aws:athena/workgroup:Workgroup" for item in plan["resources"])
    result = evaluate_plan(plan)
    assert [(v.policy, v.message) for v in result.violations] == []
    assert result.checked_resources == len(plan["resources"])
