"""`mlp runs cost`: what each training run cost, what spot saved it and what interruptions cost it."""

from __future__ import annotations

from typing import Annotated

import typer

from finops.scope import DEFAULT_CONCURRENCY
from mlp import progress
from mlp.cli import app
from mlp.cli.common import (
    AccountsOption,
    ConcurrencyOption,
    ExternalIdOption,
    FormatOption,
    OrgRoleOption,
    OutputFormat,
    ProfileOption,
    RegionOption,
    RegionsOption,
    Typer,
    pick_regions,
    print_json,
    scope_from_options,
)

runs_app = Typer(help="Training runs after the fact: their costs and interruptions.")
app.add_typer(runs_app, name="runs")

# finops.run_costs' defaults, spelled out: importing finops here would slow every command's start.
DEFAULT_DAYS = 30
DEFAULT_MAX_CE_REQUESTS = 5
DEFAULT_STALE_AFTER_MINUTES = 60


@runs_app.command("cost")
def cost(
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run.")] = None,
    days: Annotated[
        int, typer.Option("--days", help="Runs active in the last this many days.")
    ] = DEFAULT_DAYS,
    regions: RegionsOption = None,
    region: RegionOption = None,
    accounts: AccountsOption = None,
    org_role: OrgRoleOption = None,
    external_id: ExternalIdOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    output_format: FormatOption = OutputFormat.text,
    max_ce_requests: Annotated[
        int,
        typer.Option("--max-ce-requests", help="Most Cost Explorer requests (each one billed) to make."),
    ] = DEFAULT_MAX_CE_REQUESTS,
    stale_after_minutes: Annotated[
        int,
        typer.Option(
            "--stale-after-minutes", help="A running run whose newest checkpoint is older than this is stale."
        ),
    ] = DEFAULT_STALE_AFTER_MINUTES,
    profile: ProfileOption = None,
) -> None:
    """Per run in the period: instance-hours, billed and estimated cost, on-demand equivalent and saving,
    interruptions with the work they lost, checkpoint freshness and the budget flag; exit 1 on a gap."""
    from datetime import timedelta

    from finops.costs import validate_max_requests
    from finops.run_costs import Period, run_costs
    from finops.scope import validate_concurrency
    from infra.training.request import validate_run_id
    from mlp.errors import UserError

    regions = pick_regions(regions, region)
    period = Period.last_days(days)
    if run_id is not None:
        validate_run_id(run_id)
    validate_max_requests(max_ce_requests)
    if stale_after_minutes < 1:
        raise UserError(f"--stale-after-minutes {stale_after_minutes}: use a positive number of minutes")
    validate_concurrency(concurrency)
    scope = scope_from_options(accounts, org_role, regions, external_id)
    with progress.display(progress.should_show(output_format is OutputFormat.json)):
        result = run_costs(
            scope,
            period,
            run_id=run_id,
            max_ce_requests=max_ce_requests,
            stale_after=timedelta(minutes=stale_after_minutes),
            concurrency=concurrency,
        )
    if output_format is OutputFormat.json:
        print_json(result.to_json())
    else:
        for line in result.lines():
            typer.echo(line)
    if result.scope.gaps:
        raise typer.Exit(1)
