"""`mlp plan`: the environment stack, run offline under Pulumi's mocks."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlp.cli import app
from mlp.cli.common import print_json


class PlanFormat(StrEnum):
    json = "json"
    table = "table"


ProjectDirOption = Annotated[
    Path | None,
    typer.Option("--project-dir", help="Directory with Pulumi.yaml (default: this one or a parent)."),
]


@app.command("plan")
def plan(
    stack: Annotated[str, typer.Option("--stack", help="Stack to plan: reads Pulumi.STACK.yaml.")],
    output_format: Annotated[
        PlanFormat, typer.Option("--format", help="json: the plan JSON; table: counts and tag coverage.")
    ] = PlanFormat.table,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the plan JSON to this file.")] = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Run the Pulumi program offline (mocks: no CLI, no credentials) and print the resource graph."""
    from infra.plan import load_and_plan

    config, result = load_and_plan(stack, project_dir)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if output_format is PlanFormat.json:
        print_json(result)
    else:
        render_plan_table(result, config.mandatory_tags)


def render_plan_table(result: dict, required_tags: tuple[str, ...]) -> None:
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
    console.print(f"estimated monthly cost: ${summary.estimated_monthly_cost_usd:,.2f} (list prices, floor)")
