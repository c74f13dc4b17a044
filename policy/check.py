"""`mlp check`: choose the plan and the pack config, evaluate, and render the result.

- `--stack S` plans `Pulumi.S.yaml` offline and applies S's tag keys, training limits and budget.
- `--plan FILE` checks a plan JSON file with the pack defaults; adding `--stack S` applies S's
  config to it instead (e.g. a training-run plan checked against dev's limits).
- `--pack-config FILE` (Pulumi's `--policy-pack-config` format) overrides per policy on top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.config import load_stack_config
from infra.plan import load_and_plan
from mlp.errors import UserError
from policy.evaluate import CheckResult, evaluate_plan, load_plan, read_json_file
from policy.pack import pack_config_for_stack, policy_settings, utc_now


def read_pack_config(path: Path) -> dict[str, Any]:
    document = read_json_file(path, "--pack-config")
    if not isinstance(document, dict):
        raise UserError(f"--pack-config {path}: expected an object of policy name -> settings")
    return document


def merge_pack_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Per policy, the override's settings on top of the base's."""
    merged: dict[str, Any] = {name: dict(value) for name, value in base.items()}
    for name, value in override.items():
        merged[name] = {**merged.get(name, {}), **policy_settings(name, value)}
    return merged


def resolve(
    stack: str | None, plan_file: Path | None, project_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan to check and the pack config derived from the stack (empty: pack defaults)."""
    if plan_file is not None:
        config = pack_config_for_stack(load_stack_config(stack, project_dir)) if stack is not None else {}
        return load_plan(plan_file), config
    if stack is None:
        raise UserError("mlp check needs --stack STACK (plan it offline) or --plan FILE (a plan JSON)")
    stack_config, plan = load_and_plan(stack, project_dir)
    return plan, pack_config_for_stack(stack_config)


def run_check(
    stack: str | None,
    plan_file: Path | None,
    *,
    pack_config_file: Path | None = None,
    project_dir: Path | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> tuple[CheckResult, dict[str, Any]]:
    """Evaluate the pack; returns the result and the pack config that was applied."""
    plan, pack_config = resolve(stack, plan_file, project_dir)
    if pack_config_file is not None:
        pack_config = merge_pack_config(pack_config, read_pack_config(pack_config_file))
    return evaluate_plan(plan, pack_config, clock=clock), pack_config


def format_text(result: CheckResult) -> str:
    """Violations grouped by resource, mandatory first within each, then a one-line summary."""
    lines: list[str] = []
    by_resource: dict[tuple[str, str], list[Any]] = {}
    for violation in result.violations:
        by_resource.setdefault((violation.resource, violation.type), []).append(violation)
    for (resource, resource_type), found in by_resource.items():
        lines.append(f"{resource} ({resource_type})")
        for violation in sorted(found, key=lambda item: item.level != "mandatory"):
            lines.append(f"  [{violation.level}] {violation.policy}: {violation.message}")
    advisory = len(result.violations) - result.mandatory_count
    if result.violations:
        lines.append(
            f"{result.checked_resources} resources checked: {result.mandatory_count} mandatory and "
            f"{advisory} advisory violation(s) in {len(by_resource)} resource(s)"
        )
    else:
        lines.append(f"{result.checked_resources} resources checked: no violations")
    return "\n".join(lines)
