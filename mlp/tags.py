"""The cost-tag schema: the one definition of the mandatory tags, used by infra, policy and finops.

Keys and defaults are the documented contract. A stack may override the key list through
`ml-platform:mandatoryTags`; the training tags are always added on top for ephemeral stacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

TEAM = "team"
PROJECT = "project"
ENVIRONMENT = "environment"
COST_CENTER = "cost-center"
OWNER = "owner"
MANAGED_BY = "managed-by"
RUN_ID = "run-id"
EXPIRES_AT = "expires-at"
EPHEMERAL = "ephemeral"
PULUMI_STACK = "pulumi-stack"

MANAGED_BY_VALUE = "pulumi"
EPHEMERAL_VALUE = "true"

DEFAULT_MANDATORY_TAGS: tuple[str, ...] = (TEAM, PROJECT, ENVIRONMENT, COST_CENTER, OWNER, MANAGED_BY)
TRAINING_TAGS: tuple[str, ...] = (RUN_ID, EXPIRES_AT, EPHEMERAL)
# Kubernetes workloads carry these as labels for per-workload cost allocation.
WORKLOAD_LABELS: tuple[str, ...] = (TEAM, PROJECT)

# AWS tag rules: keys 1-128 chars, values 0-256 chars, no "aws:" prefix in any case. Used with
# fullmatch: `$` would also accept a trailing newline.
_TAG_KEY = re.compile(r"(?!(?i:aws:))[\w.:/=+\-@ ]{1,128}")
_TAG_VALUE = re.compile(r"[\w.:/=+\-@ ]{0,256}")


def normalize_tags(value: Any) -> dict[str, str]:
    """Tags in any shape AWS or Pulumi uses, as a plain dict.

    Accepts a mapping, a list of `{"key"/"Key", "value"/"Value"}` items (ASG tags, boto3 `Tags`)
    or None.
    """
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    tags: dict[str, str] = {}
    for item in value:
        if not isinstance(item, Mapping):
            continue
        key = item.get("key", item.get("Key"))
        if key is None:
            continue
        tag_value = item.get("value", item.get("Value"))
        tags[str(key)] = "" if tag_value is None else str(tag_value)
    return tags


def missing_tags(tags: Any, required: Iterable[str]) -> list[str]:
    """The required keys that are absent or have an empty value, in the order required lists them."""
    present = normalize_tags(tags)
    return [key for key in required if not present.get(key, "").strip()]


def invalid_tag(key: str, value: str) -> str | None:
    """Why a tag key/value pair would be refused by AWS, or None when it is fine."""
    if not _TAG_KEY.fullmatch(key):
        return f"tag key {key!r} must be 1-128 characters of letters, digits, spaces and _.:/=+-@ (no 'aws:')"
    if not _TAG_VALUE.fullmatch(value):
        return f"tag {key!r} value {value!r} must be at most 256 characters of letters, digits, spaces and _.:/=+-@"
    return None


def format_expires_at(moment: datetime) -> str:
    """ISO 8601 UTC with a Z suffix and second precision, the `expires-at` tag format."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expires_at(value: str) -> datetime:
    """Parse an `expires-at` tag; raises ValueError when it is not ISO 8601 with a timezone."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"expires-at {value!r} has no timezone; use UTC like 2026-01-31T18:00:00Z")
    return moment.astimezone(UTC)


def training_tags(base: Mapping[str, str], run_id: str, expires_at: datetime, stack: str) -> dict[str, str]:
    """The tags of every resource of a training stack: the environment's plus the ephemeral markers."""
    return {
        **base,
        RUN_ID: run_id,
        EXPIRES_AT: format_expires_at(expires_at),
        EPHEMERAL: EPHEMERAL_VALUE,
        PULUMI_STACK: stack,
    }


def is_ephemeral(tags: Any) -> bool:
    """True only when the tags prove a resource belongs to a training run."""
    present = normalize_tags(tags)
    return present.get(EPHEMERAL) == EPHEMERAL_VALUE and bool(present.get(RUN_ID, "").strip())
