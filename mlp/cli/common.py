"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS, invalid_tag


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="text for people; json on stdout for machines (logs go to stderr)."),
]
RegionsOption = Annotated[
    str | None,
    typer.Option(
        "--regions", help="Comma-separated AWS regions to read (default: the environment's region)."
    ),
]


RequiredTagsOption = Annotated[
    str | None,
    typer.Option(
        "--required-tags", help="Comma-separated tag keys every resource must carry (default: mandatory)."
    ),
]


def parse_required_tags(value: str | None) -> list[str]:
    """`--required-tags a,b` as a list of valid tag keys; the mandatory keys when absent."""
    if value is None:
        return list(DEFAULT_MANDATORY_TAGS)
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:
        raise UserError("--required-tags is empty; pass tag keys like --required-tags team,project")
    for key in keys:
        problem = invalid_tag(key, "")
        if problem:
            raise UserError(f"--required-tags: {problem}")
    return keys


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def log(message: str) -> None:
    """Progress and diagnostics: always stderr, so stdout stays parseable."""
    print(message, file=sys.stderr)
