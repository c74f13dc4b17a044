"""The Kubernetes objects an environment stack would apply, as plain manifests, from its offline plan.

The plan records each Kubernetes resource's inputs as the provider receives them: `apiVersion`,
`kind`, `metadata` and the rest, camelCase as the API expects. Only two things differ from what
`kubectl apply` takes: numbers arrive as floats (protobuf has no integers), and a value the plan
could not know or a secret would be a placeholder, which no manifest may contain. This is what
scanners (checkov's Kubernetes framework) read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime import rpc

from infra.plan import SECRET_PLACEHOLDER, load_and_plan

KUBERNETES_TYPE_PREFIX = "kubernetes:"
# The keys Kubernetes manifests lead with; the rest follow in the order the plan recorded them.
LEADING_KEYS = ("apiVersion", "kind", "metadata")


class UnrenderableManifest(ValueError):
    """A planned Kubernetes object holds a value that is not known at plan time, or a secret."""


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value in (rpc.UNKNOWN, SECRET_PLACEHOLDER):
        raise UnrenderableManifest(f"{where} is not known at plan time or is a secret")
    return value


def manifests_from_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object of `plan` (plan JSON, docs/plan-json.md), in registration order."""
    manifests = []
    for resource in plan["resources"]:
        if not (resource["custom"] and resource["type"].startswith(KUBERNETES_TYPE_PREFIX)):
            continue
        manifest = _plain(resource["inputs"], resource["name"])
        if not manifest.get("metadata", {}).get("name"):
            # The provider would auto-name it at apply time; a manifest must name it now.
            raise UnrenderableManifest(f"{resource['name']} has no metadata.name")
        leading = {key: manifest.pop(key) for key in LEADING_KEYS}
        manifests.append({**leading, **manifest})
    return manifests


def stack_manifests(stack: str, project_dir: Path | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects `Pulumi.<stack>.yaml` would apply, planned offline under mocks."""
    return manifests_from_plan(load_and_plan(stack, project_dir)[1])


def manifests_yaml(manifests: list[dict[str, Any]]) -> str:
    """One multi-document YAML stream, as `kubectl apply -f` takes it."""
    return yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)


def write_manifests(manifests: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifests_yaml(manifests))
    return path
