"""Rule athena-workgroup-guardrails over its fixtures and over the planned FOCUS cost export.

The evaluator runs the pack's rules; until the pack registers this rule, the tests hand it the
rule directly, through the same CrossGuard wrapper and analyzer view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import parse_stack_config, read_stack_file
from infra.plan import plan_environment
from policy import evaluate
from policy.evaluate import CheckResult, evaluate_plan
from policy.rules.cost_export import RULE

PLANS = Path(__file__).resolve().parent / "fixtures" / "plans" / RULE.name
ENFORCE_FIX = "set it true so clients cannot override result encryption or the scan cutoff"
ENCRYPT_FIX = "encrypt query results with a customer-managed key: SSE_KMS (or CSE_KMS) with kmsKeyArn"
CUTOFF_FIX = "cap the bytes one query may scan (ml-platform:costExport.bytesScannedCutoffGb)"
ENCRYPTION = "configuration.resultConfiguration.encryptionConfiguration.encryptionOption"


@pytest.fixture(autouse=True)
def only_this_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate, "rules", lambda clock: [RULE])


def check(plan: dict[str, Any]) -> CheckResult:
    return evaluate_plan(plan)


def found(result: CheckResult) -> list[tuple[str, str, str]]:
    return [(v.resource.rsplit("::", 1)[-1], v.level, v.message) for v in result.violations]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((PLANS / name).read_text())


def test_compliant_workgroups_pass() -> None:
    result = check(fixture("compliant.json"))
    assert found(result) == []
    assert result.checked_resources == len(fixture("compliant.json")["resources"])


def test_violating_workgroups_report_each_missing_guardrail() -> None:
    assert found(check(fixture("violating.json"))) == [
        (
            "adhoc",
            "mandatory",
            f"Workgroup 'adhoc': configuration.enforceWorkgroupConfiguration is false; {ENFORCE_FIX}",
        ),
        ("adhoc", "mandatory", f"Workgroup 'adhoc': {ENCRYPTION} is 'SSE_S3'; {ENCRYPT_FIX}"),
        (
            "adhoc",
            "mandatory",
            f"Workgroup 'adhoc': configuration.bytesScannedCutoffPerQuery is not set; {CUTOFF_FIX}",
        ),
        ("notebooks", "mandatory", f"Workgroup 'notebooks': {ENCRYPTION} is not set; {ENCRYPT_FIX}"),
        (
            "notebooks",
            "mandatory",
            f"Workgroup 'notebooks': configuration.bytesScannedCutoffPerQuery is not set; {CUTOFF_FIX}",
        ),
    ]


def test_the_planned_cost_export_workgroup_is_compliant() -> None:
    raw = read_stack_file("dev")
    raw["ml-platform:costExport"] = {"enabled": True}
    config = parse_stack_config("dev", raw)
    plan = plan_environment(config, raw).to_json()
    assert any(item["type"] == "aws:athena/workgroup:Workgroup" for item in plan["resources"])
    assert found(check(plan)) == []
