"""`mlp check`: the policy pack, evaluated offline over a stack's plan or a plan JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlp.cli import app
from mlp.cli.common import STACK_FLAGS, FormatOption, OutputFormat, log, print_json
from mlp.cli.infra_cmds import ProjectDirOption


@app.command("check")
def check(
    stack: Annotated[
        str | None,
        typer.Option(
            *STACK_FLAGS,
            help="Plan Pulumi.STACK.yaml offline and apply STACK's tags, training limits and budget.",
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan", help="Check this plan JSON (mlp plan / mlp train plan --format json) instead."
        ),
    ] = None,
    pack_config: Annotated[
        Path | None,
        typer.Option(
            "--pack-config", help="Policy settings in Pulumi's --policy-pack-config format, applied on top."
        ),
    ] = None,
    pack_config_out: Annotated[
        Path | None,
        typer.Option(
            "--pack-config-out",
            help="Write the applied pack config here, for pulumi preview --policy-pack-config.",
        ),
    ] = None,
    output_format: FormatOption = OutputFormat.text,
    project_dir: ProjectDirOption = None,
) -> None:
    """Evaluate every policy of the pack offline; exit 1 on any mandatory violation."""
    from policy.check import format_text, run_check

    result, applied_config = run_check(stack, plan, pack_config_file=pack_config, project_dir=project_dir)
    if pack_config_out is not None:
        pack_config_out.parent.mkdir(parents=True, exist_ok=True)
        pack_config_out.write_text(json.dumps(applied_config, indent=2) + "\n")
        log(f"pack config written to {pack_config_out}")
    if output_format is OutputFormat.json:
        print_json(result.to_json())
    else:
        typer.echo(format_text(result))
    if result.mandatory_count:
        raise typer.Exit(1)
