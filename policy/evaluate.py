"""The offline evaluator behind `mlp check`: the pack's own policy objects, run over a plan JSON.

It calls each `ResourceValidationPolicy`/`StackValidationPolicy` the way the CrossGuard analyzer
does (`pulumi_policy.policy._PolicyAnalyzerServicer.Analyze` / `AnalyzeStack`): props and provider
props through the analyzer's deserialization, per-policy config, enforcement levels overridden by the
pack config, and a policy that reads a value unknown at preview reported as an advisory note.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.proxy import UnknownValueError

from mlp.errors import UserError
from policy.analyzer_view import analyzer_props
from policy.pack import rules, split_pack_config, utc_now

STACK_TYPE = "pulumi:pulumi:Stack"
PROVIDER_TYPE_PREFIX = "pulumi:providers:"


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str  # URN, or the name when the plan gives no URN
    type: str
    level: str  # "mandatory" | "advisory"
    message: str


@dataclass(frozen=True)
class CheckResult:
    violations: list[Violation]
    checked_resources: int

    @property
    def mandatory_count(self) -> int:
        return sum(1 for item in self.violations if item.level == EnforcementLevel.MANDATORY.value)

    def to_json(self) -> dict[str, Any]:
        return {
            "violations": [asdict(item) for item in self.violations],
            "checked_resources": self.checked_resources,
        }


def read_json_file(path: Path, flag: str, hint: str = "") -> Any:
    """A JSON file named by a flag; unreadable, non-UTF-8, malformed or absurdly deep is one UserError line."""
    suffix = f"; {hint}" if hint else ""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read it ({exc.strerror}){suffix}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{flag} {path}: not UTF-8 (byte {exc.start}){suffix}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} {path}: not JSON (line {exc.lineno}: {exc.msg}){suffix}") from None
    except RecursionError:
        raise UserError(f"{flag} {path}: nested too deeply to be a plan or pack config{suffix}") from None


def load_plan(path: Path) -> dict[str, Any]:
    """Read and validate a plan JSON file; any problem is one UserError line naming the file."""
    document = read_json_file(path, "--plan", "pass a plan JSON from `mlp plan --format json`")
    return validate_plan(document, f"--plan {path}")


def validate_plan(document: Any, source: str) -> dict[str, Any]:
    """Check the plan JSON shape (docs/plan-json.md); `source` names the plan in the error."""
    if not isinstance(document, dict) or not isinstance(document.get("resources"), list):
        raise UserError(
            f'{source}: not a plan: expected an object with a "resources" list (see docs/plan-json.md)'
        )
    for index, resource in enumerate(document["resources"]):
        where = f"{source}: resources[{index}]"
        if not isinstance(resource, dict):
            raise UserError(f"{where} is not an object; each resource has urn, type, name and inputs")
        for key in ("type", "name"):
            if not isinstance(resource.get(key), str) or not resource[key]:
                raise UserError(f"{where}.{key} is missing or not a string")
        for key in ("urn", "parent", "provider"):
            if resource.get(key) is not None and not isinstance(resource[key], str):
                raise UserError(f"{where}.{key} must be a string or null")
        if not isinstance(resource.get("inputs", {}), dict):
            raise UserError(f"{where}.inputs must be an object of input names to values")
        dependencies = resource.get("propertyDependencies", {})
        if not isinstance(dependencies, dict) or not all(
            isinstance(urns, list) for urns in dependencies.values()
        ):
            raise UserError(f"{where}.propertyDependencies must map input names to lists of URNs")
    return document


def _resource_id(resource: Mapping[str, Any]) -> str:
    return resource.get("urn") or resource["name"]


def _stack_urn(plan: Mapping[str, Any]) -> str:
    project, stack = plan.get("project", "project"), plan.get("stack", "stack")
    return f"urn:pulumi:{stack}::{project}::{STACK_TYPE}::{project}-{stack}"


class _PlanView:
    """The plan's resources as the analyzer would receive them."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        self.resources: list[Mapping[str, Any]] = plan["resources"]
        self.providers = {
            _resource_id(item): PolicyProviderResource(
                item["type"], analyzer_props(item.get("inputs") or {}), _resource_id(item), item["name"]
            )
            for item in self.resources
            if item["type"].startswith(PROVIDER_TYPE_PREFIX)
        }

    def provider_of(self, resource: Mapping[str, Any]) -> PolicyProviderResource | None:
        reference = resource.get("provider")
        if reference:
            # A provider reference may also be "<urn>::<id>".
            return self.providers.get(reference) or self.providers.get(reference.rsplit("::", 1)[0])
        if resource["type"].startswith(PROVIDER_TYPE_PREFIX) or ":" not in resource["type"]:
            return None
        # No explicit provider: the engine uses the package's default provider.
        default_type = PROVIDER_TYPE_PREFIX + resource["type"].split(":", 1)[0]
        return next(
            (
                p
                for p in self.providers.values()
                if p.resource_type == default_type and p.name.startswith("default")
            ),
            None,
        )

    @staticmethod
    def options(resource: Mapping[str, Any]) -> PolicyResourceOptions:
        return PolicyResourceOptions(
            bool(resource.get("protect")),
            [],
            None,
            [],
            PolicyCustomTimeouts(0, 0, 0),
            [],
            resource.get("parent"),
        )

    def stack_resources(self) -> list[PolicyResource]:
        view = [
            PolicyResource(
                item["type"],
                analyzer_props(item.get("inputs") or {}),
                _resource_id(item),
                item["name"],
                self.options(item),
                self.provider_of(item),
                None,
                [],
                {},
            )
            for item in self.resources
        ]
        by_urn = {resource.urn: resource for resource in view}
        for item, resource in zip(self.resources, view, strict=True):
            resource.parent = by_urn.get(item.get("parent") or "")
            for prop, urns in (item.get("propertyDependencies") or {}).items():
                resource.property_dependencies[prop] = [by_urn[urn] for urn in urns if urn in by_urn]
        return view


def _level(policy: Policy, configured: EnforcementLevel | None) -> EnforcementLevel:
    level = configured or policy.enforcement_level or EnforcementLevel.ADVISORY
    # As in the analyzer: a remediation that still violates is reported as mandatory.
    return EnforcementLevel.MANDATORY if level == EnforcementLevel.REMEDIATE else level


def evaluate_plan(
    plan: Mapping[str, Any],
    pack_config: Mapping[str, Any] | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> CheckResult:
    """Every policy of the pack over every resource of `plan` (the plan JSON of docs/plan-json.md)."""
    pack_rules = rules(clock)
    settings = split_pack_config(pack_config or {}, pack_rules)
    view = _PlanView(plan)
    types = {_resource_id(item): item["type"] for item in view.resources}
    violations: list[Violation] = []

    def reporter(
        policy: Policy, level: EnforcementLevel, default_urn: str
    ) -> Callable[[str, str | None], None]:
        def report(message: str, urn: str | None = None) -> None:
            target = urn or default_urn
            violations.append(
                Violation(policy.name, target, types.get(target, STACK_TYPE), level.value, message)
            )

        return report

    def not_runnable(policy: Policy, urn: str, error: UnknownValueError) -> Violation:
        message = f"can't run policy '{policy.name}' during preview: {error.message}"
        return Violation(
            policy.name, urn, types.get(urn, STACK_TYPE), EnforcementLevel.ADVISORY.value, message
        )

    for rule in pack_rules:
        policy = rule.policy()
        configured_level, properties = settings.get(rule.name, (None, {}))
        level = _level(policy, configured_level)
        if level == EnforcementLevel.DISABLED:
            continue
        if isinstance(policy, ResourceValidationPolicy):
            for item in view.resources:
                urn = _resource_id(item)
                args = ResourceValidationArgs(
                    item["type"],
                    analyzer_props(item.get("inputs") or {}),
                    urn,
                    item["name"],
                    view.options(item),
                    view.provider_of(item),
                    dict(properties),
                )
                try:
                    policy.validate(args, reporter(policy, level, urn))
                except UnknownValueError as error:
                    violations.append(not_runnable(policy, urn, error))
        else:
            stack_urn = _stack_urn(plan)
            try:
                policy.validate(
                    StackValidationArgs(view.stack_resources(), dict(properties)),
                    reporter(policy, level, stack_urn),
                )
            except UnknownValueError as error:
                violations.append(not_runnable(policy, stack_urn, error))
    return CheckResult(violations, len(view.resources))
