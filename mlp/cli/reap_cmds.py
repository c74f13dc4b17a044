"""`mlp reap`: destroy finished, expired, idle and orphaned training runs (dry-run by default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from mlp.cli import app
from mlp.cli.common import FormatOption, OutputFormat, RegionsOption, log, print_json


def _prod_opt_in() -> bool:
    """Prod runs are reaped only when Pulumi.prod.yaml says `training.reapProd: true`."""
    from infra.config import find_project_dir, load_stack_config
    from mlp.errors import ConfigError

    try:
        project = find_project_dir()
    except ConfigError:
        return False
    return (project / "Pulumi.prod.yaml").is_file() and load_stack_config("prod", project).training.reap_prod


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
        str | None, typer.Option("--backend", help="State backend URL (file://… or s3://…).")
    ] = None,
    slack_webhook: Annotated[
        str | None, typer.Option("--slack-webhook", envvar="MLP_SLACK_WEBHOOK", help="Also notify here.")
    ] = None,
) -> None:
    """Tear down training stacks whose runs completed, expired or idle, and sweep orphaned run resources."""
    from finops.delivery import post_to_slack, validate_webhook
    from finops.idle import scan_idle
    from finops.locks import locks_for
    from finops.reaper import Reaper, ReapPolicy, aws_facts, run_cost_usd
    from infra.training.automation import PulumiAutomationBackend, backend_url
    from mlp.aws import aws_errors, client, parse_regions

    webhook = validate_webhook(slack_webhook) if slack_webhook else None
    region_list = parse_regions(regions)
    state_url = backend_url(backend)
    stacks = PulumiAutomationBackend(state_url)
    now = datetime.now(UTC)

    def notify(message: str) -> None:
        log(f"notify: {message}")
        if webhook:
            post_to_slack(webhook, message)

    with aws_errors("reaping training runs"):
        idle = scan_idle(region_list)
        reaper = Reaper(
            stacks,
            regions=region_list,
            policy=ReapPolicy(grace=timedelta(minutes=grace_minutes), prod_opt_in=_prod_opt_in()),
            facts=aws_facts(stacks, region_list, {f["resource_id"]: f["idle_hours"] for f in idle.findings}),
            locks=locks_for(state_url, lambda: client("s3")),
            run_cost=lambda run_id: run_cost_usd(run_id, now),
            log=log,
            notify=notify,
        )
        result = reaper.run(apply=apply, now=now)
    if output_format is OutputFormat.json:
        print_json(result.to_json())
    elif not result.candidates:
        typer.echo("nothing to reap")
    if not apply and any(c.action == "destroy" for c in result.candidates):
        log("dry run: re-run with --apply to destroy")
    if result.leaked:
        raise typer.Exit(1)
