"""`mlp train plan|launch|status|list|destroy`: ephemeral training stacks, one per run."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlp import pricing
from mlp.cli import app
from mlp.cli.common import FormatOption, OutputFormat, RegionsOption, Typer, log, print_json
from mlp.cli.infra_cmds import PlanFormat, render_plan_table
from mlp.tags import TRAINING_TAGS

train_app = Typer(help="Ephemeral spot GPU training runs: one Pulumi stack per run.")
app.add_typer(train_app, name="train")


EnvOption = Annotated[
    str, typer.Option("--env", help="Environment stack whose limits and network the run uses.")
]
RunIdOption = Annotated[str, typer.Option("--run-id", help="DNS-safe run id, at most 40 characters.")]
TypesOption = Annotated[
    str, typer.Option("--instance-types", help="At least three allowed GPU types, comma-separated.")
]
CountOption = Annotated[int, typer.Option("--count", help="Instances in the fleet.")]
HoursOption = Annotated[float, typer.Option("--max-hours", help="Hard limit; the run expires after it.")]
BaseOption = Annotated[
    int, typer.Option("--on-demand-base", help="Instances on demand for a run that must not wait.")
]
CommandOption = Annotated[
    str, typer.Option("--command", help="Training command; writes checkpoints to $CHECKPOINT_DIR.")
]
ImageOption = Annotated[
    str | None, typer.Option("--image", help="Container image to run the command in (GPU docker).")
]
FeatureStoreOption = Annotated[
    bool,
    typer.Option(
        "--feature-store",
        help="Give the trainer FEATURE_STORE_HOST, FEATURE_STORE_PORT and FEATURE_STORE_AUTH_TOKEN.",
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="State backend URL (file://… or s3://bucket/prefix); default $MLP_BACKEND_URL, then "
        "$PULUMI_BACKEND_URL, then file://~/.ml-platform/state.",
    ),
]


def _request(
    env: str,
    run_id: str,
    instance_types: str,
    count: int,
    max_hours: float,
    on_demand_base: int,
    command: str,
    image: str | None,
    feature_store: bool,
):
    from infra.config import parse_stack_config, read_stack_file
    from infra.training.request import build_request

    raw = read_stack_file(env, option="--env")
    config = parse_stack_config(env, raw)
    request = build_request(
        config,
        run_id=run_id,
        instance_types=instance_types.split(","),
        count=count,
        max_hours=max_hours,
        created_at=datetime.now(UTC),
        command=command,
        image=image,
        on_demand_base=on_demand_base,
        feature_store=feature_store,
    )
    return request, raw


def _cost_lines(request, cost) -> list[str]:
    return [
        f"run {request.run_id}: {request.count} x [{', '.join(request.instance_types)}] for at most {request.max_hours:g} h",
        f"  spot:      ${cost.spot_hourly_usd:,.2f}/h, worst case ${cost.spot_worst_case_usd:,.2f} ({cost.spot_source})",
        f"  on-demand: ${cost.on_demand_hourly_usd:,.2f}/h, worst case ${cost.on_demand_worst_case_usd:,.2f}",
        f"  budget per run in {request.environment.environment}: ${request.environment.training.per_run_budget_usd:,.2f}",
        f"  prices: {pricing.PRICE_SOURCE}",
    ]


@train_app.command("plan")
def plan(
    env: EnvOption,
    run_id: RunIdOption,
    instance_types: TypesOption,
    count: CountOption,
    max_hours: HoursOption,
    on_demand_base: BaseOption = 0,
    command: CommandOption = "python train.py",
    image: ImageOption = None,
    feature_store: FeatureStoreOption = False,
    output_format: Annotated[PlanFormat, typer.Option("--format")] = PlanFormat.table,
) -> None:
    """Run the training program offline under mocks: the same code path `launch` deploys."""
    from infra.training.program import plan_training_run
    from infra.training.request import check_budget, estimate_cost

    request, raw = _request(
        env, run_id, instance_types, count, max_hours, on_demand_base, command, image, feature_store
    )
    cost = estimate_cost(request)
    check_budget(request, cost)
    result = plan_training_run(request, raw).to_json()
    if output_format is PlanFormat.json:
        print_json(result)
        return
    render_plan_table(result, (*request.environment.mandatory_tags, *TRAINING_TAGS))
    for line in _cost_lines(request, cost):
        typer.echo(line)


@train_app.command("launch")
def launch(
    env: EnvOption,
    run_id: RunIdOption,
    instance_types: TypesOption,
    count: CountOption,
    max_hours: HoursOption,
    command: CommandOption,
    image: ImageOption = None,
    on_demand_base: BaseOption = 0,
    feature_store: FeatureStoreOption = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run to _COMPLETE or expiry, then destroy its stack.")
    ] = False,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=5)] = 60.0,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
) -> None:
    """Deploy the new stack train-RUN_ID (spot fleet + interruption queue); with --wait, tear it down at the end."""
    from finops.teardown import destroy_named_run
    from infra.training.automation import PulumiAutomationBackend, backend_url
    from infra.training.lifecycle import launch as launch_run
    from infra.training.program import build_training_run
    from infra.training.request import check_budget, estimate_cost
    from mlp.aws import aws_errors, client

    request, _ = _request(
        env, run_id, instance_types, count, max_hours, on_demand_base, command, image, feature_store
    )
    url = backend_url(backend)
    stacks = PulumiAutomationBackend(url)
    cost = estimate_cost(request, client("ec2", request.environment.region, max_attempts=2))
    check_budget(request, cost)
    for line in _cost_lines(request, cost):
        log(line)
    region = request.environment.region
    with aws_errors(f"launching {request.stack}"):
        result = launch_run(
            request,
            lambda: build_training_run(request),
            stacks,
            s3=client("s3", region),
            wait=wait,
            clock=lambda: datetime.now(UTC),
            sleep=time.sleep,
            log=log,
            poll_seconds=poll_seconds,
            teardown=lambda: destroy_named_run(
                request.stack, request.run_id, stacks, regions=[region], backend_url=url, log=log
            ),
        )
    log(f"{result.stack}: {result.why}")
    if result.receipt is not None:
        _print_receipt(result.receipt, output_format)


def _print_receipt(receipt, output_format: OutputFormat) -> None:
    """Print the destroy receipt; a leak exits 1."""
    if output_format is OutputFormat.json:
        print_json(receipt.to_json())
    else:
        for line in receipt.lines():
            typer.echo(line)
    if receipt.leaks or receipt.errors:
        raise typer.Exit(1)


@train_app.command("status")
def status(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
) -> None:
    """The run's state, instances, newest checkpoint and completion marker (no Pulumi CLI needed)."""
    from infra.training.automation import backend_url
    from infra.training.state import DiyStateBackend
    from infra.training.status import run_status
    from mlp.aws import aws_errors, client
    from mlp.errors import UserError

    stacks = DiyStateBackend(backend_url(backend))
    try:
        with aws_errors(f"reading run {run_id}"):
            report = run_status(stacks, run_id, client=client)
    except UserError as error:
        # A run missing because its backend or stack file is unreadable: the reason, in the same line.
        raise UserError("; ".join([error.message, *stacks.warnings])) from error
    for warning in stacks.warnings:
        log(warning)
    if output_format is OutputFormat.json:
        print_json(report)
        return
    console = Console()
    console.print(
        f"{report['stack']}: {report['state']} (expires {report['expires_at']}), desired {report['desired_capacity']}"
    )
    for instance in report["instances"]:
        console.print(
            f"  {instance['instance_id']} {instance['instance_type']} {instance['lifecycle']} {instance['health']}"
        )
    checkpoint = report["latest_checkpoint"]
    console.print(
        f"  newest checkpoint: {checkpoint['key']} at {checkpoint['last_modified']}"
        if checkpoint
        else "  no checkpoint yet"
    )
    if report["completion"]:
        console.print(f"  completion: {report['completion']['why']}")


@train_app.command("list")
def list_runs(output_format: FormatOption = OutputFormat.text, backend: BackendOption = None) -> None:
    """Training stacks on the backend with their run tags, read from the state files (no Pulumi CLI needed)."""
    from infra.training.automation import backend_url
    from infra.training.lifecycle import training_stacks
    from infra.training.state import DiyStateBackend
    from mlp.aws import aws_errors

    stacks = DiyStateBackend(backend_url(backend))
    with aws_errors("listing the training stacks"):
        runs = training_stacks(stacks)
    for warning in stacks.warnings:
        log(warning)
    if output_format is OutputFormat.json:
        print_json(
            {"runs": [{"stack": s.name, "tags": s.tags, "resource_count": s.resource_count} for s in runs]}
        )
        return
    table = Table("stack", "run-id", "environment", "expires-at", "resources")
    for summary in runs:
        table.add_row(
            summary.name,
            summary.tags.get("run-id", ""),
            summary.tags.get("environment", ""),
            summary.tags.get("expires-at", ""),
            str(summary.resource_count or 0),
        )
    Console().print(table)


@train_app.command("destroy")
def destroy(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    apply: Annotated[
        bool, typer.Option("--apply", help="Act; without it, only say what would be destroyed.")
    ] = False,
    regions: RegionsOption = None,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
) -> None:
    """Destroy and remove a run's stack (dry-run by default) once its resources are proven its own; checkpoints stay."""
    from finops.teardown import destroy_named_run
    from infra.training.automation import PulumiAutomationBackend, backend_url
    from infra.training.lifecycle import destroy_run, run_regions
    from infra.training.state import DiyStateBackend
    from mlp.aws import aws_errors, parse_regions

    url = backend_url(backend)
    reader = DiyStateBackend(url)
    with aws_errors(f"destroying run {run_id}"):
        message, receipt = destroy_run(
            reader,
            run_id,
            apply=apply,
            teardown=lambda stack: destroy_named_run(
                stack,
                run_id,
                PulumiAutomationBackend(url),
                regions=run_regions(reader, stack, parse_regions(regions) if regions else None),
                backend_url=url,
                log=log,
            ),
        )
    log(message)
    if receipt is not None:
        _print_receipt(receipt, output_format)
