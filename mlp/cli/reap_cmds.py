"""`mlp reap`: destroy finished, expired, idle and orphaned training runs (dry-run by default)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from mlp.cli import app
from mlp.cli.common import FormatOption, OutputFormat, RegionsOption, log, print_json


@app.command("reap")
def reap(
    apply: Annotated[
        bool, typer.Option("--apply", help="Act; without it, only print what would be done and why.")
    ] = False,
    grace_minutes: Annotated[
        int, typer.Option("--grace-minutes", min=0, help="Wait this long after expiry or idleness.")
    ] = 60,
    regions: RegionsOption = None,
    output_format: FormatOption = OutputFormat.text,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="State backend URL (file://… or s3://…); default $MLP_BACKEND_URL, $PULUMI_BACKEND_URL.",
        ),
    ] = None,
    slack_webhook: Annotated[
        str | None, typer.Option("--slack-webhook", envvar="MLP_SLACK_WEBHOOK", help="Also notify here.")
    ] = None,
) -> None:
    """Tear down training runs that completed, expired or idled, and sweep expired orphans; exit 1 on any error or leak."""
    from finops.delivery import post_to_slack, validate_webhook
    from finops.reaper import reap as run_reaper
    from mlp.aws import parse_regions

    webhook = validate_webhook(slack_webhook) if slack_webhook else None

    def notify(message: str) -> None:
        log(f"notify: {message}")
        if webhook:
            post_to_slack(webhook, message)

    result = run_reaper(
        apply=apply,
        grace=timedelta(minutes=grace_minutes),
        regions=parse_regions(regions),
        backend=backend,
        notify=notify,
        log=log,
    )
    if output_format is OutputFormat.json:
        print_json(result.to_json())
    elif not result.candidates:
        typer.echo("nothing to reap")
    else:
        for receipt in result.receipts:
            for line in receipt.lines():
                typer.echo(line)
    if not apply and any(c.action == "destroy" for c in result.candidates):
        log("dry run: re-run with --apply to destroy")
    if result.failed:
        raise typer.Exit(1)
