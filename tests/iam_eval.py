"""A small IAM identity-policy evaluator for tests: enough to show what a role's statements allow.

Explicit Deny wins, then any Allow, else implicit deny. Actions and resources match with `*` and `?`
wildcards (actions case-insensitively, as IAM does); conditions support StringEquals, StringLike and
ArnLike, each key's values OR-ed, keys and operators AND-ed. A key the request does not carry fails
its condition, as IAM evaluates a missing key for these operators.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _wildcard(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    regex = fnmatch.translate(pattern)
    return re.match(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _operator(name: str, expected: str, actual: str) -> bool:
    if name == "StringEquals":
        return expected == actual
    if name in ("StringLike", "ArnLike"):
        return _wildcard(expected, actual)
    raise NotImplementedError(f"condition operator {name} is not supported by this evaluator")


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def on_tagged(cls, action: str, resource: str, tags: Mapping[str, str]) -> Request:
        return cls(action, resource, {f"aws:ResourceTag/{key}": value for key, value in tags.items()})


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, keys in conditions.items():
        for key, expected in keys.items():
            actual = context.get(key)
            if actual is None or not any(_operator(operator, value, actual) for value in _listed(expected)):
                return False
    return True


def matches(statement: Mapping[str, Any], request: Request) -> bool:
    actions = _listed(statement.get("Action", []))
    resources = _listed(statement.get("Resource", []))
    return (
        any(_wildcard(action, request.action, case_sensitive=False) for action in actions)
        and any(_wildcard(resource, request.resource) for resource in resources)
        and _conditions_hold(statement.get("Condition", {}), request.context)
    )


def allowed(statements: Sequence[Mapping[str, Any]], request: Request) -> bool:
    relevant = [statement for statement in statements if matches(statement, request)]
    if any(statement["Effect"] == "Deny" for statement in relevant):
        return False
    return any(statement["Effect"] == "Allow" for statement in relevant)
