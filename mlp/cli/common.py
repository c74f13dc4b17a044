"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer


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


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def log(message: str) -> None:
    """Progress and diagnostics: always stderr, so stdout stays parseable."""
    print(message, file=sys.stderr)
