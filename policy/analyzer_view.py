"""Props exactly as the CrossGuard analyzer hands them to the rules, built from a plan's plain inputs.

The Pulumi engine sends a resource's properties to the policy pack as a protobuf `Struct`; the pack
turns it into Python with `json_format.MessageToDict`, `pulumi_policy.deserialize.deserialize_properties`
and wraps it in `unknown_checking_proxy`. Doing the same round trip offline gives the rules the
analyzer's view: every number is a float, secrets are unwrapped, and reading a value that is unknown
at preview raises `UnknownValueError`. A rule that passes here therefore passes under
`pulumi preview --policy-pack policy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy


class Unknown:
    """A value the analyzer cannot know during preview, as `peek` returns it."""

    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN_VALUE = Unknown()


def analyzer_props(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resource's inputs as the analyzer sees them (protobuf round trip, deserialized, proxied)."""
    message = struct_pb2.Struct()
    message.update(dict(inputs))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(message)))


def lookup(props: Any, *path: str | int, default: Any = None) -> Any:
    """The value at `path`, or `default` when any step is absent or null.

    A value unknown at preview raises `UnknownValueError`, as reading it under CrossGuard does, so
    the policy is reported as not runnable during preview instead of guessing. Presence is tested by
    iterating keys, which reads no value (`key in proxy` would read it and raise).
    """
    current = props
    for step in path:
        if isinstance(step, int):
            items = items_of(current)
            if step >= len(items):
                return default
            current = items[step]
        else:
            if not has_key(current, step):
                return default
            current = current[step]
    return default if current is None else current


def peek(props: Any, *path: str | int, default: Any = None) -> Any:
    """Like `lookup`, but a value unknown at preview comes back as `UNKNOWN_VALUE` instead of raising."""
    try:
        return lookup(props, *path, default=default)
    except UnknownValueError:
        return UNKNOWN_VALUE


def has_key(props: Any, key: str) -> bool:
    """True when `key` is set (to anything, even a value unknown at preview)."""
    return isinstance(props, Mapping) and key in list(iter(props))


def items_of(value: Any) -> list[Any]:
    """A list-valued property as a list (empty when absent or not a list)."""
    if value is None or isinstance(value, Mapping | str | Unknown) or not isinstance(value, Iterable):
        return []
    return list(value)


def display(value: Any) -> str:
    """A property value the way a violation message shows it: floats that are integers as integers."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "not set"}[value]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {display(value[k])}" for k in value) + "}"
    if isinstance(value, Iterable):
        return "[" + ", ".join(display(item) for item in value) + "]"
    return str(value)


def is_true(value: Any) -> bool:
    """Booleans arrive as bools, but some AWS fields (launch-template `ebs.encrypted`) are "true" strings."""
    return value is True or (isinstance(value, str) and value.lower() == "true")
