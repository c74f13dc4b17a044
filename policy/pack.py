"""The ml-platform policy pack: its rules, and its configuration for a stack.

The pack config has the shape of Pulumi's `--policy-pack-config` file: policy name -> {"enforcementLevel":
..., <rule properties>}. `pack_config_for_stack` derives it from `Pulumi.<stack>.yaml`, so the offline
check and `pulumi preview --policy-pack policy --policy-pack-config <file>` apply the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pulumi_policy import EnforcementLevel
from pydantic import ValidationError

from infra.config import StackConfig
from mlp.errors import UserError
from policy.rules import budget, cost_export, encryption, kubernetes, network, s3, services, tagging, training
from policy.rules.common import Rule

PACK_NAME = "ml-platform"
ENFORCEMENT_LEVEL = "enforcementLevel"
ALL_POLICIES = "all"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rules(clock: Callable[[], datetime] = utc_now) -> list[Rule]:
    """Every rule of the pack: the issue's order, each security-posture rule beside its kin, the budget last."""
    return [
        tagging.RULE,
        training.training_fleet_rule(clock),
        training.TERMINATE_RULE,
        training.TRAINING_ROLE_RULE,
        s3.BUCKET_RULE,
        s3.ACL_RULE,
        services.ELASTICACHE_RULE,
        services.EKS_RULE,
        services.INSTANCE_RULE,
        services.IMDS_HOP_LIMIT_RULE,
        encryption.KMS_KEY_POLICY_RULE,
        encryption.SNS_ENCRYPTION_RULE,
        cost_export.RULE,
        network.RULE,
        network.FLOW_LOG_RULE,
        kubernetes.POD_SECURITY_RULE,
        kubernetes.NETWORK_POLICY_RULE,
        budget.RULE,
    ]


def pack_config_for_stack(config: StackConfig) -> dict[str, dict[str, Any]]:
    """The pack config that applies a stack's own tag keys, training limits and budget."""
    training_config = config.training
    return {
        tagging.RULE.name: {"tags": list(config.mandatory_tags)},
        training.FLEET_RULE_NAME: {
            "allowedInstanceTypes": list(training_config.allowed_instance_types),
            "maxGpusPerRun": training_config.max_gpus_per_run,
            "maxRunHours": training_config.max_run_hours,
        },
        budget.RULE.name: {
            ENFORCEMENT_LEVEL: (
                EnforcementLevel.MANDATORY
                if config.budgets.enforce_plan_budget
                else EnforcementLevel.ADVISORY
            ).value,
            "monthlyBudgetUsd": config.budgets.environment_monthly_usd,
        },
    }


def policy_settings(name: str, value: Any) -> dict[str, Any]:
    """One policy's entry of a pack config as a dict; a bare string is an enforcement level."""
    if isinstance(value, str):
        return {ENFORCEMENT_LEVEL: value}
    if isinstance(value, Mapping):
        return dict(value)
    raise UserError(f"pack config: {name} must be an enforcement level or an object of settings")


def _level(name: str, entry: dict[str, Any]) -> EnforcementLevel | None:
    """Pop and parse the entry's enforcement level, if it sets one."""
    if ENFORCEMENT_LEVEL not in entry:
        return None
    raw_level = entry.pop(ENFORCEMENT_LEVEL)
    try:
        return EnforcementLevel(raw_level)
    except ValueError:
        allowed = ", ".join(item.value for item in EnforcementLevel)
        raise UserError(
            f"pack config: {name}.{ENFORCEMENT_LEVEL} {raw_level!r} is not one of {allowed}"
        ) from None


def split_pack_config(
    pack_config: Mapping[str, Any], known_rules: list[Rule]
) -> dict[str, tuple[EnforcementLevel | None, dict[str, Any]]]:
    """Per policy: the enforcement level the config sets (or None) and its validated properties.

    As in Pulumi's policy config, an `all` entry sets the level of every policy not set on its own.
    Raises UserError naming the policy and key when the config does not fit the pack.
    """
    by_name = {rule.name: rule for rule in known_rules}
    entries = {name: policy_settings(name, value) for name, value in pack_config.items()}
    every = entries.pop(ALL_POLICIES, {})
    default_level = _level(ALL_POLICIES, every)
    if every:
        raise UserError(f"pack config: {ALL_POLICIES} takes only {ENFORCEMENT_LEVEL}")
    result: dict[str, tuple[EnforcementLevel | None, dict[str, Any]]] = {
        name: (default_level, {}) for name in by_name if default_level is not None
    }
    for name, entry in entries.items():
        rule = by_name.get(name)
        if rule is None:
            raise UserError(f"pack config: no policy named {name!r}; policies are {', '.join(by_name)}")
        level = _level(name, entry) or default_level
        if entry and rule.config_model is None:
            raise UserError(f"pack config: policy {name} takes no settings, only {ENFORCEMENT_LEVEL}")
        try:
            rule.config(entry)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            key = ".".join(str(part) for part in error["loc"])
            raise UserError(f"pack config: {name}.{key}: {error['msg']}") from None
        result[name] = (level, entry)
    return result
