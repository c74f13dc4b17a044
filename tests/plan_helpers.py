"""Lookups over plan JSON shared by the tests of environment and training plans."""

from __future__ import annotations

from typing import Any


def of_type(plan: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [item for item in plan["resources"] if item["type"] == resource_type]


def one(plan: dict[str, Any], resource_type: str, name: str | None = None) -> dict[str, Any]:
    matches = [item for item in of_type(plan, resource_type) if name is None or item["name"] == name]
    assert len(matches) == 1, (
        f"expected one {resource_type} {name or ''}, found {[m['name'] for m in matches]}"
    )
    return matches[0]


def inputs(plan: dict[str, Any], resource_type: str, name: str | None = None) -> dict[str, Any]:
    return one(plan, resource_type, name)["inputs"]
