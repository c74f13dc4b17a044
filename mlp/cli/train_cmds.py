"""`mlp train plan|launch|status|list|destroy`: ephemeral training stacks, one per run."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlp.cli import app
from mlp.cli.common import (
    STACK_FLAGS,
    BackendOption,
    FormatOption,
    OutputFormat,
    ProfileOption,
    RegionOption,
    Typer,
    log,
    pick_regions,
    print_json,
)
from mlp.cli.infra_cmds import PlanFormatOption, render_plan_table
from mlp.pricing import PRICE_SOURCE
from mlp.tags import TRAINING_TAGS

train_app = Typer(help="Ephemeral spot GPU training runs: one Pulumi stack per run.")
app.add_typer(train_app, name="train")


StackOption = Annotated[
    str | None,
    typer.Option(
        *STACK_FLAGS,
        help="Environment stack (Pulumi.STACK.yaml) whose limits and network the run uses. Required; "
        "--env, its old name, is still accepted.",
    ),
]
# The old name of --stack: a flag of its own, so an error names the flag the user typed.
EnvOption = Annotated[str | None, typer.Option("--env", hidden=True, help="The old name of --stack.")]
RunIdArgument = Annotated[
    str, typer.Argument(metavar="RUN_ID", help="The run's id (its stack is train-RUN_ID).")
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


def _named_stack(stack: str | None, env: str | None) -> tuple[str, str]:
    """The environment stack, and the flag it was given with."""
    from mlp.errors import UserError

    if env is not None:
        if stack is not None:
            raise UserError(
                "--stack and --env both name the environment stack (--env is its old name); pass one"
            )
        return env, "--env"
    if stack is None:
        raise UserError(
            "--stack: name the environment stack the run uses, e.g. --stack dev (Pulumi.dev.yaml)"
        )
    return stack, "--stack"


def _request(
    stack: str | None,
    env: str | None,
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

    name, flag = _named_stack(stack, env)
    raw = read_stack_file(name, option=flag)
    config = parse_stack_config(name, raw)
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
        f"  cost: {cost.summary()} (per run in {request.environment.environment})",
        *_price_lines(cost),
    ]


def _price_lines(cost) -> list[str]:
    """What the cost compares with and where its prices come from."""
    return [
        f"  on demand it would be ${cost.on_demand_hourly_usd:,.2f}/hour, at most ${cost.on_demand_worst_case_usd:,.2f}",
        f"  prices: {cost.priced_as} (the dearest type allowed), spot {cost.spot_source}; {PRICE_SOURCE}",
    ]


@train_app.command("plan")
def plan(
    *,
    stack: StackOption = None,
    env: EnvOption = None,
    run_id: RunIdOption,
    instance_types: TypesOption,
    count: CountOption,
    max_hours: HoursOption,
    on_demand_base: BaseOption = 0,
    command: CommandOption = "python train.py",
    image: ImageOption = None,
    feature_store: FeatureStoreOption = False,
    output_format: PlanFormatOption = OutputFormat.text,
) -> None:
    """Run the training program offline under mocks: the same code path `launch` deploys, and what the run costs."""
    from infra.training.program import plan_training_run
    from infra.training.request import check_budget, estimate_cost

    request, raw = _request(
        stack, env, run_id, instance_types, count, max_hours, on_demand_base, command, image, feature_store
    )
    cost = estimate_cost(request)
    check_budget(request, cost)
    result = {**plan_training_run(request, raw).to_json(), "cost": cost.to_json()}
    if output_format is OutputFormat.json:
        print_json(result)
        return
    render_plan_table(
        result, (*request.environment.mandatory_tags, *TRAINING_TAGS), f"run cost: {cost.summary()}"
    )
    for line in _price_lines(cost):
        typer.echo(line)


@train_app.command("launch")
def launch(
    *,
    stack: StackOption = None,
    env: EnvOption = None,
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
    poll_seconds: Annotated[
        float,
        typer.Option("--poll-seconds", min=5, help="With --wait, look at the run this often (seconds)."),
    ] = 60.0,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
    profile: ProfileOption = None,
) -> None:
    """Deploy the new stack train-RUN_ID (spot fleet + interruption queue); with --wait, tear it down at the end."""
    from finops.teardown import destroy_named_run
    from infra.training.automation import PulumiAutomationBackend, backend_url
    from infra.training.lifecycle import launch as launch_run
    from infra.training.program import build_training_run
    from infra.training.request import check_budget, estimate_cost
    from mlp.aws import aws_errors, client

    request, _ = _request(
        stack, env, run_id, instance_types, count, max_hours, on_demand_base, command, image, feature_store
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
    run_id: RunIdArgument,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
    profile: ProfileOption = None,
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
def list_runs(
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
    profile: ProfileOption = None,
) -> None:
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
    run_id: RunIdArgument,
    apply: Annotated[
        bool, typer.Option("--apply", help="Act; without it, only say what would be destroyed.")
    ] = False,
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            help="Comma-separated regions to look for the run's resources in (default: the run's own).",
        ),
    ] = None,
    region: RegionOption = None,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
    profile: ProfileOption = None,
) -> None:
    """Destroy and remove a run's stack (dry-run by default) once its resources are proven its own; checkpoints stay."""
    from finops.teardown import destroy_named_run
    from infra.training.automation import PulumiAutomationBackend, backend_url
    from infra.training.lifecycle import destroy_run, run_regions
    from infra.training.state import DiyStateBackend
    from mlp.aws import aws_errors, parse_regions

    regions = pick_regions(regions, region)
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
