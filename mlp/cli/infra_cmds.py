"""`mlp plan`: the environment stack, run offline under Pulumi's mocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlp.cli import app
from mlp.cli.common import STACK_FLAGS, OutputFormat, print_json

# `table`, these commands' text output's name before --format was text|json everywhere: still accepted.
TABLE_SYNONYM = "table"


def plan_format(value: str) -> OutputFormat:
    if value == TABLE_SYNONYM:
        return OutputFormat.text
    try:
        return OutputFormat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use text (the table) or json") from None


PlanFormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        parser=plan_format,
        help="text: resource counts, tag coverage and cost ('table' is accepted too); json: the plan JSON.",
    ),
]
ProjectDirOption = Annotated[
    Path | None,
    typer.Option("--project-dir", help="Directory with Pulumi.yaml (default: this one or a parent)."),
]


@app.command("plan")
def plan(
    stack: Annotated[str, typer.Option(*STACK_FLAGS, help="Stack to plan: reads Pulumi.STACK.yaml.")],
    output_format: PlanFormatOption = OutputFormat.text,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the plan JSON to this file.")] = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Run the Pulumi program offline (mocks: no CLI, no credentials) and print the resource graph."""
    from infra.plan import load_and_plan

    config, result = load_and_plan(stack, project_dir)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if output_format is OutputFormat.json:
        print_json(result)
    else:
        render_plan_table(
            result,
            config.mandatory_tags,
            f"estimated monthly cost: ${result['estimated_monthly_cost_usd']:,.2f} (list prices, floor)",
        )


def render_plan_table(result: dict, required_tags: tuple[str, ...], cost_line: str) -> None:
    """The plan's resource counts and tag coverage, then `cost_line`: what the plan costs, as it counts."""
    from infra.summary import summarize

    summary = summarize(result, required_tags)
    console = Console()
    table = Table(title=f"{result['project']} / {result['stack']}: {len(result['resources'])} resources")
    table.add_column("type")
    table.add_column("count", justify="right")
    for resource_type, count in summary.counts_by_type:
        table.add_row(resource_type, str(count))
    console.print(table)
    console.print(
        f"tag coverage: {summary.fully_tagged}/{summary.taggable} taggable AWS resources carry "
        f"{', '.join(required_tags)} ({summary.coverage_pct:.1f}%), launched instances and volumes included"
    )
    for gap in summary.gaps:
        what = gap["name"] if gap["launched"] is None else f"{gap['launched']}s launched by {gap['name']}"
        console.print(f"  missing {', '.join(gap['missing'])} on {what} ({gap['type']})", style="red")
    console.print(cost_line)
