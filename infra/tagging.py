"""Where the mandatory tags go, decided from pulumi_aws itself rather than from a hand-kept list.

Three facts drive tagging:
- a resource is *taggable* when its pulumi_aws class takes a `tags` input;
- the AWS provider's `default_tags` reach a taggable resource only when the class also has the
  computed `tags_all` output (the Auto Scaling group, for one, has neither `tags_all` nor map tags);
- instances and volumes launched from launch templates, ASGs and EKS node groups never see default
  tags: they get theirs from ASG tags with `propagate_at_launch` and from `tag_specifications`.

These functions are pure so that the program, the tests, the policy pack and `mlp plan` share them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlp.tags import missing_tags, normalize_tags

AWS_PROVIDER_TYPE = "pulumi:providers:aws"
ASG_TYPE = "aws:autoscaling/group:Group"
# Resources that AWS launches on our behalf and that must be tagged at launch.
LAUNCH_TAG_RESOURCE_TYPES: tuple[str, ...] = (
    "instance",
    "volume",
    "network-interface",
    "spot-instances-request",
)
NODE_GROUP_TAG_KINDS: tuple[str, ...] = ("instance", "volume", "network-interface")


@functools.cache
def _aws_class_registry() -> dict[str, tuple[str, str]]:
    """Map every pulumi_aws resource token to (module, class name), from the package's own registry."""
    spec = importlib.util.find_spec("pulumi_aws")
    if spec is None or spec.origin is None:
        raise RuntimeError("pulumi_aws is not installed")
    source = Path(spec.origin).read_text()
    match = re.search(r'resource_modules="""(.*?)"""', source, re.S)
    if match is None:
        raise RuntimeError("pulumi_aws no longer exposes its resource module registry")
    registry: dict[str, tuple[str, str]] = {}
    for module in json.loads(match.group(1)):
        for token, class_name in module["classes"].items():
            registry[token] = (module["fqn"], class_name)
    return registry


@functools.cache
def _init_parameters(type_token: str) -> frozenset[str]:
    entry = _aws_class_registry().get(type_token)
    if entry is None:
        return frozenset()
    module_name, class_name = entry
    cls = getattr(importlib.import_module(module_name), class_name)
    return frozenset(inspect.signature(cls._internal_init).parameters)


@functools.cache
def _has_tags_all(type_token: str) -> bool:
    entry = _aws_class_registry().get(type_token)
    if entry is None:
        return False
    module_name, class_name = entry
    cls = getattr(importlib.import_module(module_name), class_name)
    return isinstance(getattr(cls, "tags_all", None), property)


def is_aws_resource(type_token: str) -> bool:
    return type_token.startswith("aws:")


def is_taggable(type_token: str) -> bool:
    """True when the pulumi_aws class of this resource type accepts tags."""
    return is_aws_resource(type_token) and "tags" in _init_parameters(type_token)


def receives_default_tags(type_token: str) -> bool:
    """True when the provider's `default_tags` are merged into this resource's tags."""
    return is_taggable(type_token) and _has_tags_all(type_token)


def provider_default_tags(provider_inputs: Mapping[str, Any] | None) -> dict[str, str]:
    """The `defaultTags.tags` of an AWS provider's inputs (engine names; JSON-encoded or not)."""
    if not provider_inputs:
        return {}
    default_tags = provider_inputs.get("defaultTags") or provider_inputs.get("default_tags")
    if isinstance(default_tags, str):
        default_tags = json.loads(default_tags)
    if not isinstance(default_tags, Mapping):
        return {}
    return normalize_tags(default_tags.get("tags"))


def effective_tags(
    type_token: str, inputs: Mapping[str, Any], default_tags: Mapping[str, str]
) -> dict[str, str]:
    """The tags AWS will record on the resource: provider defaults (where they reach) then its own."""
    merged: dict[str, str] = dict(default_tags) if receives_default_tags(type_token) else {}
    merged.update(normalize_tags(inputs.get("tags")))
    return merged


def asg_tags(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """ASG tag blocks that propagate to every instance the group launches."""
    return [{"key": key, "value": value, "propagate_at_launch": True} for key, value in tags.items()]


def launch_tag_specifications(
    tags: Mapping[str, str], kinds: tuple[str, ...] = LAUNCH_TAG_RESOURCE_TYPES
) -> list[dict[str, Any]]:
    """Launch-template tag specifications so instances, volumes, ENIs and spot requests carry the tags.

    EKS managed node groups reject `spot-instances-request` there: they pass `NODE_GROUP_TAG_KINDS`.
    """
    return [{"resource_type": kind, "tags": dict(tags)} for kind in kinds]


def launched_resource_tags(type_token: str, inputs: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The tags each kind of resource launched *from* this template or group would carry.

    Keys are the launched kinds ("instance", "volume", ...); only launch templates and ASGs launch.
    """
    if type_token == "aws:ec2/launchTemplate:LaunchTemplate":
        # Every template launches instances, volumes and ENIs; spot requests only where it says so.
        launched: dict[str, dict[str, str]] = {kind: {} for kind in NODE_GROUP_TAG_KINDS}
        for spec in inputs.get("tagSpecifications") or []:
            launched[spec.get("resourceType")] = normalize_tags(spec.get("tags"))
        return launched
    if type_token == ASG_TYPE:
        propagated = {
            str(item.get("key")): str(item.get("value", ""))
            for item in inputs.get("tags") or []
            if item.get("propagateAtLaunch")
        }
        return {"instance": propagated}
    return {}


def plan_default_tags(resources: list[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Default tags of every AWS provider in a plan, by provider URN."""
    return {
        item["urn"]: provider_default_tags(item.get("inputs"))
        for item in resources
        if item.get("type") == AWS_PROVIDER_TYPE
    }


def untagged_in_plan(
    resources: list[Mapping[str, Any]], required: tuple[str, ...] | list[str]
) -> list[dict[str, Any]]:
    """Every taggable resource of a plan, and every kind it launches, that would miss a required tag.

    Each item: `urn`, `type`, `name`, `launched` (None for the resource itself, else the launched kind)
    and `missing` keys. An empty list is 100 % coverage.
    """
    defaults = plan_default_tags(resources)
    gaps: list[dict[str, Any]] = []
    for item in resources:
        type_token = item["type"]
        if not item.get("custom") or not is_taggable(type_token):
            continue
        inputs = item.get("inputs") or {}
        tags = effective_tags(type_token, inputs, defaults.get(item.get("provider") or "", {}))
        missing = missing_tags(tags, required)
        if missing:
            gaps.append(
                {
                    "urn": item["urn"],
                    "type": type_token,
                    "name": item["name"],
                    "launched": None,
                    "missing": missing,
                }
            )
        for kind, launched in launched_resource_tags(type_token, inputs).items():
            missing = missing_tags(launched, required)
            if missing and not (type_token == ASG_TYPE and kind == "instance" and not launched):
                gaps.append(
                    {
                        "urn": item["urn"],
                        "type": type_token,
                        "name": item["name"],
                        "launched": kind,
                        "missing": missing,
                    }
                )
    return gaps
