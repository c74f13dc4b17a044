"""Run a Pulumi program offline under Pulumi's own mocks and record the resource graph.

This is `mlp plan` and `mlp train plan`: the real program, the stack's real config, no CLI, no
credentials, no network. The result is the plan JSON (docs/plan-json.md), which `mlp check --plan` reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.config import PROJECT, StackConfig, parse_stack_config, read_stack_file, runtime_config_values
from infra.environment import build_environment
from infra.estimate import estimate_monthly_cost
from infra.mocks import PlanMocks

STACK_TYPE = "pulumi:pulumi:Stack"
SECRET_PLACEHOLDER = "[secret]"


def _redact_secrets(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {key: _redact_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_secrets(item) for item in value]
    return value


def _provider_urn(reference: str) -> str | None:
    # A provider reference is "<urn>::<id>".
    return reference.rsplit("::", 1)[0] if reference else None


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping what a plan needs: parent, provider and inputs."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.planned: list[dict[str, Any]] = []
        self.root_urn: str | None = None

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # The engine leaves the root stack out of its children's URNs; the plain mock monitor does not.
        return super().make_urn("" if parent == self.root_urn else parent, type_, name)

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            self.root_urn = response.urn
            return response
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        if request.type.startswith("pulumi:providers:"):
            # Providers receive object-valued inputs as JSON text; decode them for readers.
            inputs = {key: _decode_json(value) for key, value in inputs.items()}
        self.planned.append(
            {
                "urn": response.urn,
                "type": request.type,
                "name": request.name,
                "custom": bool(request.custom),
                "parent": request.parent if request.parent and request.parent != self.root_urn else None,
                "provider": _provider_urn(request.provider),
                "protect": bool(request.protect),
                "retainOnDelete": bool(request.retainOnDelete),
                # Explicit `depends_on` and input-derived dependencies alike, as the engine orders deletes.
                "dependencies": sorted(set(request.dependencies)),
                "inputs": _redact_secrets(inputs),
                # Which resources each input came from: policies follow these links (bucket -> its settings).
                "propertyDependencies": {
                    key: sorted(dependencies.urns)
                    for key, dependencies in request.propertyDependencies.items()
                    if dependencies.urns
                },
            }
        )
        return response


def _decode_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


@dataclass
class PlanResult:
    project: str
    stack: str
    resources: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": self.resources,
            "estimated_monthly_cost_usd": estimate_monthly_cost(self.resources),
        }


def run_offline(
    program: Callable[[], None],
    *,
    stack: str,
    region: str,
    config_values: dict[str, str],
    stack_outputs: dict[str, dict[str, Any]] | None = None,
) -> PlanResult:
    """Run `program` under mocks with the given config and return every resource it registered."""
    mocks = PlanMocks(region=region, stack_outputs=stack_outputs)
    monitor = _RecordingMonitor(mocks)
    # Each run starts from a clean runtime: no root stack, no outputs, no config of an earlier run.
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config_values)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    _sync_await(run_pulumi_func(program))
    root = settings.get_root_resource()
    exported = root.outputs if root is not None else {}
    outputs = _sync_await(pulumi.Output.from_input(exported).future()) if exported else {}
    return PlanResult(
        project=PROJECT, stack=stack, resources=monitor.planned, outputs=_redact_secrets(outputs or {})
    )


def plan_environment(config: StackConfig, raw_config: dict[str, Any]) -> PlanResult:
    """Plan the environment stack described by `config` (validated from `raw_config`)."""
    return run_offline(
        lambda: build_environment(config),
        stack=config.stack,
        region=config.region,
        config_values=runtime_config_values(raw_config),
    )


def load_and_plan(stack: str, project_dir: Path | None = None) -> tuple[StackConfig, dict[str, Any]]:
    """The validated config and the plan JSON (docs/plan-json.md) of `Pulumi.<stack>.yaml`."""
    raw = read_stack_file(stack, project_dir)
    config = parse_stack_config(stack, raw)
    return config, plan_environment(config, raw).to_json()


def plan_stack(stack: str, project_dir: Path | None = None) -> dict[str, Any]:
    """The plan JSON (docs/plan-json.md) of `Pulumi.<stack>.yaml`; raises UserError for bad config."""
    return load_and_plan(stack, project_dir)[1]
