"""`mlp reap`: destroy finished, expired, idle and orphaned training runs (dry-run by default).

It covers every account and region of the scope options, as the scans do; a target it cannot read
is a named gap and exits 1, the other accounts still reaped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from finops.scope import DEFAULT_CONCURRENCY
from mlp import progress
from mlp.cli import app
from mlp.cli.common import (
    AccountsOption,
    BackendOption,
    ConcurrencyOption,
    ExternalIdOption,
    FormatOption,
    OrgRoleOption,
    OutputFormat,
    ProfileOption,
    RegionOption,
    RegionsOption,
    log,
    pick_regions,
    print_json,
    scope_from_options,
)


@app.command("reap")
def reap(
    apply: Annotated[
        bool, typer.Option("--apply", help="Act; without it, only print what would be done and why.")
    ] = False,
    grace_minutes: Annotated[
        int, typer.Option("--grace-minutes", min=0, help="Wait this long after expiry or idleness.")
    ] = 60,
    regions: RegionsOption = None,
    region: RegionOption = None,
    accounts: AccountsOption = None,
    org_role: OrgRoleOption = None,
    external_id: ExternalIdOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    output_format: FormatOption = OutputFormat.text,
    backend: BackendOption = None,
    slack_webhook: Annotated[
        str | None, typer.Option("--slack-webhook", envvar="MLP_SLACK_WEBHOOK", help="Also notify here.")
    ] = None,
    heartbeat: Annotated[
        bool,
        typer.Option(
            "--heartbeat",
            help="With --apply, after a run that exits 0, put JobSucceeded=1 (Job=reap) in CloudWatch "
            "for the job's alarm.",
        ),
    ] = False,
    profile: ProfileOption = None,
) -> None:
    """Tear down training runs that completed, expired or idled, and sweep expired orphans, in every account
    and region of the scope; exit 1 on any error, leak, refusal or gap."""
    from finops.delivery import post_to_slack, validate_webhook
    from finops.reaper import reap as run_reaper
    from finops.scope import validate_concurrency

    if heartbeat and not apply:
        from mlp.errors import UserError

        # A dry run proves nothing was reaped: its heartbeat would hide a reaper that never acts.
        raise UserError("--heartbeat reports a reaping run: add --apply, or drop --heartbeat")
    webhook = validate_webhook(slack_webhook) if slack_webhook else None
    validate_concurrency(concurrency)
    scope = scope_from_options(accounts, org_role, pick_regions(regions, region), external_id)

    def notify(message: str) -> None:
        log(f"notify: {message}")
        if webhook:
            post_to_slack(webhook, message)

    with progress.display(progress.should_show(output_format is OutputFormat.json)):
        result = run_reaper(
            apply=apply,
            grace=timedelta(minutes=grace_minutes),
            scope=scope,
            backend=backend,
            notify=notify,
            log=log,
            concurrency=concurrency,
        )
    if output_format is OutputFormat.json:
        print_json(result.to_json())
    else:
        typer.echo(result.scope.describe())
        if not result.candidates:
            typer.echo("nothing to reap")
        for receipt in result.receipts:
            for line in receipt.lines():
                typer.echo(line)
    if not apply and any(c.action == "destroy" for c in result.candidates):
        log("dry run: re-run with --apply to destroy")
    if result.failed:
        raise typer.Exit(1)
    if heartbeat:
        from finops.heartbeat import publish_success

        publish_success("reap")
