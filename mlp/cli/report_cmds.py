"""`mlp report` (the nightly cost report) and `mlp demo` (the same job on the embedded sandbox)."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finops import delivery
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
    RequiredTagsOption,
    log,
    parse_required_tags,
    pick_regions,
    print_json,
    scope_from_options,
)

if TYPE_CHECKING:
    from finops.findings import Report

# The report and the demo pull in pandas, matplotlib and moto: imported inside the commands so every
# other `mlp` command starts fast.


def _summary(report: Report, out_dir: Path) -> list[str]:
    from finops.focus import COST_EXPLORER_SOURCE

    spend = report.findings["spend"]

    def usd(value: float | None) -> str:
        return "n/a" if value is None else f"${value:,.2f}"

    lines = [
        f"Cost report {report.period.label()}",
        f"  total spend        {usd(spend['total_usd'])}",
        f"  untagged spend     {usd(spend['untagged_usd'])}, {len(report.untagged)} untagged resources",
        f"  spot savings       {usd(spend['spot_savings_usd'])}",
        f"  idle GPUs          {report.idle_summary()}",
        f"  expired runs       {len(report.leftovers)} still own resources, "
        f"${sum(run['hourly_cost_usd'] for run in report.leftovers):,.4f}/h (mlp reap)",
        f"  Cost Explorer      {report.spend.requests} requests (${report.spend.cost_usd:,.2f}), "
        f"{report.spend.cached_view_days} view-days cached"
        if report.spend.source == COST_EXPLORER_SOURCE
        else f"  cost source        {report.spend.source} (no Cost Explorer request)",
    ]
    forecast = spend["forecast"]
    if forecast:
        budget = f" against a budget of {usd(forecast['budget_usd'])}" if forecast["budget_usd"] else ""
        lines.insert(
            2,
            f"  {forecast['month_label']:<18} {usd(forecast['month_to_date_usd'])} so far, "
            f"forecast {usd(forecast['forecast_usd'])}{budget}",
        )
    if report.runs is not None:
        runs = report.runs.to_json()["totals"]
        over = f", over budget: {', '.join(runs['over_budget'])}" if runs["over_budget"] else ""
        lines.insert(
            -1,
            f"  training runs      {runs['runs']} costing {usd(runs['cost_usd'])}, interruptions lost "
            f"{usd(runs['lost_work_usd'])}{over}",
        )
    lines[1:1] = [f"  {line}" for line in [*report.scope_lines(), *report.unscanned_spend_lines()]]
    lines.append(f"Dashboard: {(out_dir / 'index.html').resolve()}")
    return lines


def _warn_missing(report: Report) -> None:
    for part in report.analysis.missing:
        log(f"mlp: warning: {part.part} is missing from the report: {part.reason}")
    if report.analysis.no_spend:
        log(f"mlp: warning: {report.analysis.no_spend_notice()}")


@app.command("report")
def report_command(
    days: Annotated[int, typer.Option("--days", help="Days of spend, ending yesterday.")] = 30,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for index.html, report.md, CSV, JSON.")
    ] = Path("mlp-report"),
    regions: RegionsOption = None,
    region: RegionOption = None,
    accounts: AccountsOption = None,
    org_role: OrgRoleOption = None,
    external_id: ExternalIdOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    output_format: FormatOption = OutputFormat.text,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Where finished Cost Explorer days are kept "
            "(default $MLP_COST_CACHE_DIR or ~/.cache/ml-platform/cost-explorer).",
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask Cost Explorer for every day.")] = False,
    s3_uri: Annotated[
        str | None,
        typer.Option(
            "--s3-uri",
            help="Also upload the report to s3://bucket/prefix/YYYY-MM-DD/, copy it to latest/ and "
            "add its line to history.jsonl.",
        ),
    ] = None,
    slack_webhook: Annotated[
        str | None,
        typer.Option(
            "--slack-webhook",
            envvar=delivery.SLACK_WEBHOOK_ENV,
            show_envvar=True,
            help="Also post the report's summary to this Slack incoming webhook.",
        ),
    ] = None,
    slack_webhook_secret: Annotated[
        str | None,
        typer.Option(
            "--slack-webhook-secret",
            envvar=delivery.SLACK_WEBHOOK_SECRET_ENV,
            show_envvar=True,
            help="Read the Slack webhook from this Secrets Manager secret ARN (the scheduled job's way).",
        ),
    ] = None,
    required_tags: RequiredTagsOption = None,
    max_ce_requests: Annotated[
        int,
        typer.Option(
            "--max-ce-requests",
            help="Most Cost Explorer requests (each one billed) the report may make; "
            "views beyond it are named missing.",
        ),
    ] = 200,
    cost_source: Annotated[
        str | None,
        typer.Option(
            "--cost-source",
            help="Where spend comes from: cost-explorer or focus "
            "(default: focus when --focus-uri or $MLP_FOCUS_URI is set, else cost-explorer).",
        ),
    ] = None,
    focus_uri: Annotated[
        str | None,
        typer.Option(
            "--focus-uri",
            help="The FOCUS 1.2 export's folder, s3://bucket/prefix/export-name (holding data/ and "
            "metadata/); default $MLP_FOCUS_URI.",
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="What aggregates the FOCUS export: duckdb (default, here) or athena."),
    ] = None,
    athena_workgroup: Annotated[
        str | None,
        typer.Option("--athena-workgroup", help="Athena workgroup for --engine athena (default primary)."),
    ] = None,
    athena_database: Annotated[
        str | None,
        typer.Option("--athena-database", help="Glue database of the export's table (--engine athena)."),
    ] = None,
    athena_table: Annotated[
        str | None,
        typer.Option("--athena-table", help="The export's Glue table (default: the export's name)."),
    ] = None,
    heartbeat: Annotated[
        bool,
        typer.Option(
            "--heartbeat",
            help="After a complete report (exit 0), put JobSucceeded=1 (Job=report) in CloudWatch "
            "for the job's alarm.",
        ),
    ] = False,
    profile: ProfileOption = None,
) -> None:
    """Write the nightly cost report: spend, idle GPUs, untagged resources, dashboard."""
    from finops.analysis import report_period
    from finops.cost_source import choose_cost_source
    from finops.costs import validate_max_requests
    from finops.focus import choose_focus_source
    from finops.report import REPORT_FILES, run_nightly
    from finops.scope import parse_regions_option, validate_concurrency
    from mlp.preflight import check_report

    regions = pick_regions(regions, region)
    validate_max_requests(max_ce_requests)
    validate_concurrency(concurrency)
    focus_source = choose_focus_source(
        cost_source,
        focus_uri,
        engine=engine,
        athena_workgroup=athena_workgroup,
        athena_database=athena_database,
        athena_table=athena_table,
    )

    mandatory_tags = parse_required_tags(required_tags)
    report_period(days, date.today())  # --days first: the cheapest flag to get wrong
    # Every flag, directory and the credentials are checked before the first paid request.
    plan = check_report(
        # `all` is the default said out loud: preflight checks named regions only.
        regions=regions if parse_regions_option(regions) else None,
        out=out,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        s3_uri=s3_uri,
        slack_webhook=slack_webhook,
        slack_webhook_secret=slack_webhook_secret,
    )
    target, webhook = plan.s3_target, plan.webhook
    source = choose_cost_source(
        focus_source, cache_dir=cache_dir, use_cache=not no_cache, max_requests=max_ce_requests
    )
    scope = scope_from_options(accounts, org_role, regions, external_id)
    log(f"scanning {len(scope.targets)} account-regions of {len(scope.accounts)} accounts")
    with progress.display(progress.should_show(output_format is OutputFormat.json)) as shown:
        report = run_nightly(
            days,
            out,
            scope=scope,
            source=source,
            mandatory_tags=mandatory_tags,
            concurrency=concurrency,
            history_target=target,
            on_step=shown.follow_steps,
        )
    _warn_missing(report)
    if target is not None:
        delivered = delivery.deliver_to_s3(out, target, REPORT_FILES)
        log(
            f"uploaded {len(delivered.uploaded)} files to {delivered.night.uri}"
            f"{' and latest/' if delivered.is_latest else ''}; {delivered.history_uri} holds "
            f"{delivered.nights_recorded} nights"
        )
    if webhook is not None:
        delivery.post_summary(webhook, out, target)
        log("posted the summary to Slack")
    if output_format is OutputFormat.json:
        print_json(report.findings)
    else:
        typer.echo("\n".join(_summary(report, out)))
    if report.analysis.missing:
        # The files are written, but a report with holes is not tonight's report: say so to cron.
        raise typer.Exit(1)
    if heartbeat:
        # Last, and only on exit 0: a report with holes or a failed delivery leaves the alarm to fire.
        from finops.heartbeat import publish_success

        publish_success("report")


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo report.")] = Path("build/demo"),
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Keep the sandbox up after the report, until Ctrl-C."),
    ] = False,
    cost_source: Annotated[
        str | None,
        typer.Option(
            "--cost-source",
            help="Read the sandbox's spend from its FOCUS export (focus, with DuckDB; the default) "
            "or from its cost-explorer.",
        ),
    ] = None,
) -> None:
    """Run the nightly job on an embedded, seeded AWS sandbox (moto on 127.0.0.1) and print the dashboard."""
    from finops.demo import DemoRun, run_demo, wait_for_interrupt
    from finops.sandbox import Sandbox

    def keep_serving(sandbox: Sandbox, run: DemoRun) -> None:
        typer.echo("\n".join(_summary(run.report, run.out_dir)))
        typer.echo(f"Sandbox endpoint: {sandbox.endpoint} (Ctrl-C to stop). Point the CLI at it with:")
        exports = " ".join(f"{name}={value}" for name, value in sandbox.environ().items())
        typer.echo(f"  export {exports}")
        sys.stdout.flush()
        wait_for_interrupt()

    with progress.display(progress.should_show(json_output=False)) as shown:

        def serve_after_the_job(sandbox: Sandbox, run: DemoRun) -> None:
            shown.close()
            keep_serving(sandbox, run)

        run = run_demo(
            out,
            on_step=shown.follow_steps,
            cost_source=cost_source,
            while_running=serve_after_the_job if keep_running else None,
            log=shown.log,
        )
    _warn_missing(run.report)
    if not keep_running:
        typer.echo("\n".join(_summary(run.report, run.out_dir)))
    log(f"demo: seeded in {run.seed_seconds:.1f}s, nightly job in {run.job_seconds:.1f}s")
