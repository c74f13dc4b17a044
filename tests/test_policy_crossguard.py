"""The CrossGuard path: the pack started the way `pulumi preview --policy-pack policy` starts it, driven
over its gRPC analyzer protocol as the Pulumi engine drives it, reports what `mlp check` reports.

The engine sends resource properties as protobuf Structs and explicit providers' object inputs
(`defaultTags`) JSON-encoded; this test does the same, so it also shows the offline view and the
engine's view agree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel

from infra.plan import plan_stack
from policy.evaluate import evaluate_plan
from policy.pack import PACK_NAME, rules

REPO_ROOT = Path(__file__).resolve().parent.parent
PLANS = Path(__file__).resolve().parent / "fixtures" / "plans"
PACK_CONFIG = {"stack-monthly-budget": {"enforcementLevel": "mandatory", "monthlyBudgetUsd": 100}}
LEVELS = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
}


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    # As Pulumi runs a Python pack: the pack directory's __main__.py, which prints its port and serves.
    process = subprocess.Popen(
        [sys.executable, "-u", "__main__.py"], cwd=REPO_ROOT / "policy", stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            stub.Configure(configure_request(PACK_CONFIG))
            yield stub
    finally:
        process.terminate()
        process.wait(timeout=10)


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def configure_request(pack_config: Mapping[str, Mapping[str, Any]]) -> analyzer_pb2.ConfigureAnalyzerRequest:
    """Every policy's level and settings, as the engine sends them (it always sets a level)."""
    policy_config = {}
    for rule in rules():
        settings = dict(pack_config.get(rule.name, {}))
        level = EnforcementLevel(settings.pop("enforcementLevel", rule.enforcement_level.value))
        proto_level = analyzer_pb2.MANDATORY if level is EnforcementLevel.MANDATORY else analyzer_pb2.ADVISORY
        policy_config[rule.name] = analyzer_pb2.PolicyConfig(
            enforcementLevel=proto_level, properties=struct(settings)
        )
    return analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=policy_config)


def engine_provider(
    resource: Mapping[str, Any], providers: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    provider = providers.get(resource.get("provider") or "")
    if provider is None:
        return {}
    # The engine hands a provider's object-valued inputs over as JSON text.
    properties = {
        k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in provider["inputs"].items()
    }
    return {
        "provider": analyzer_pb2.AnalyzerProviderResource(
            type=provider["type"], properties=struct(properties), urn=provider["urn"], name=provider["name"]
        )
    }


def crossguard_findings(
    stub: analyzer_pb2_grpc.AnalyzerStub, plan: Mapping[str, Any]
) -> list[tuple[str, str, str, str]]:
    resources = plan["resources"]
    providers = {r["urn"]: r for r in resources if r["type"].startswith("pulumi:providers:")}
    stack_urn = f"urn:pulumi:{plan['stack']}::ml-platform::pulumi:pulumi:Stack::ml-platform-{plan['stack']}"
    findings = []

    def collect(diagnostics: Any, default_urn: str) -> None:
        for diagnostic in diagnostics:
            assert diagnostic.policyPackName == PACK_NAME
            # The analyzer prefixes the policy's description to every message.
            message = diagnostic.message.removeprefix(diagnostic.description + "\n")
            level = LEVELS[diagnostic.enforcementLevel]
            findings.append((diagnostic.policyName, diagnostic.urn or default_urn, level, message))

    for resource in resources:
        options = analyzer_pb2.AnalyzerResourceOptions(parent=resource.get("parent") or "")
        request = analyzer_pb2.AnalyzeRequest(
            type=resource["type"],
            properties=struct(resource["inputs"]),
            urn=resource["urn"],
            name=resource["name"],
            options=options,
            **engine_provider(resource, providers),
        )
        collect(stub.Analyze(request).diagnostics, resource["urn"])
    stack_request = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=resource["type"],
                properties=struct(resource["inputs"]),
                urn=resource["urn"],
                name=resource["name"],
                parent=resource.get("parent") or "",
                propertyDependencies={
                    prop: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                    for prop, urns in resource.get("propertyDependencies", {}).items()
                },
                **engine_provider(resource, providers),
            )
            for resource in resources
        ]
    )
    collect(stub.AnalyzeStack(stack_request).diagnostics, stack_urn)
    return findings


def without_clock(findings: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Expiry limits are measured from each side's own clock, seconds apart."""
    return sorted(
        (p, u, lvl, re.sub(r"no later than \S+", "no later than <limit>", m)) for p, u, lvl, m in findings
    )


def offline_findings(plan: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    result = evaluate_plan(plan, PACK_CONFIG)
    return [(v.policy, v.resource, v.level, v.message) for v in result.violations]


FIXTURES = ["bad.json", *sorted(str(path.relative_to(PLANS)) for path in PLANS.glob("*/*.json"))]


def test_the_pack_announces_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == PACK_NAME
    assert [policy.name for policy in info.policies] == [rule.name for rule in rules()]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_crossguard_reports_what_mlp_check_reports(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, fixture: str
) -> None:
    plan = json.loads((PLANS / fixture).read_text())
    expected = without_clock(offline_findings(plan))
    assert without_clock(crossguard_findings(analyzer, plan)) == expected
    if fixture.endswith("violating.json") or fixture == "bad.json":
        assert expected, "a violating fixture must violate something"


def test_crossguard_passes_the_dev_environment_like_mlp_check(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    plan = plan_stack("dev", REPO_ROOT)
    findings = crossguard_findings(analyzer, plan)
    assert without_clock(findings) == without_clock(offline_findings(plan))
    # PACK_CONFIG makes the budget mandatory at $100, so dev's estimate is the one mandatory finding.
    assert [(policy, level) for policy, _, level, _ in findings] == [("stack-monthly-budget", "mandatory")]
