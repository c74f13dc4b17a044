"""`mlp idle` and `mlp untagged`: FinOps scans of the account. Findings are information: exit 0."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from finops.idle import DEFAULT_THRESHOLD_PCT, DEFAULT_WINDOW_HOURS, IdleScan, scan_idle, validate_thresholds
from finops.untagged import UntaggedScan, scan_untagged
from mlp.cli import app
from mlp.cli.common import (
    FormatOption,
    OutputFormat,
    RegionsOption,
    RequiredTagsOption,
    log,
    parse_required_tags,
    print_json,
)
from mlp.preflight import check_scan

# As finops.report words it (not imported: that module pulls in pandas, and this command starts fast).
NO_LIST_PRICE = "no list price"


@app.command("idle")
def idle_command(
    window_hours: Annotated[
        float, typer.Option("--window-hours", help="Hours a GPU must have stayed under the threshold.")
    ] = DEFAULT_WINDOW_HOURS,
    threshold_pct: Annotated[
        float, typer.Option("--threshold-pct", help="Utilization (%) under which a GPU counts as idle.")
    ] = DEFAULT_THRESHOLD_PCT,
    regions: RegionsOption = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Running GPU instances idle over the window, with the dollars they wasted."""
    validate_thresholds(window_hours, threshold_pct)
    region_list = check_scan(regions)
    log(f"scanning GPU instances in {', '.join(region_list)} ...")
    scan = scan_idle(region_list, window_hours=window_hours, threshold_pct=threshold_pct)
    log(f"{scan.instances_scanned} running GPU instances; {scan.cloudwatch_calls} GetMetricData calls")
    if output is OutputFormat.json:
        print_json(scan.to_json())
    else:
        _print_idle(scan)


@app.command("untagged")
def untagged_command(
    regions: RegionsOption = None,
    required_tags: RequiredTagsOption = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Resources missing mandatory cost tags, including never-tagged ones."""
    required = parse_required_tags(required_tags)
    region_list = check_scan(regions)
    log(f"scanning resources in {', '.join(region_list)} for tags {', '.join(required)} ...")
    scan = scan_untagged(region_list, required)
    log(f"{scan.resources_scanned} resources scanned, {len(scan.findings)} missing tags")
    if output is OutputFormat.json:
        print_json(scan.to_json())
    else:
        _print_untagged(scan)


def _console() -> Console:
    """Rich's console; wide when piped, so ARNs and ids are not cut at 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _money(value: float | None) -> str:
    return NO_LIST_PRICE if value is None else f"${value:,.2f}"


def _print_idle(scan: IdleScan) -> None:
    console = _console()
    if not scan.findings:
        console.print(
            f"No idle GPU instances: {scan.instances_scanned} scanned, none under "
            f"{scan.threshold_pct:g}% for {scan.window_hours:g} h."
        )
    else:
        table = Table(title=f"Idle GPU instances (< {scan.threshold_pct:g}% for {scan.window_hours:g} h)")
        for column in (
            "instance",
            "region",
            "type",
            "telemetry",
            "max util %",
            "idle h",
            "$/h",
            "wasted",
            "run / team",
        ):
            table.add_column(
                column, justify="right" if column in {"max util %", "idle h", "$/h", "wasted"} else "left"
            )
        for finding in scan.findings:
            util = finding.gpu_util_max if finding.telemetry == "gpu" else finding.cpu_util_max
            owner = finding.run_id or finding.tags.get("team") or "(untagged)"
            table.add_row(
                finding.resource_id,
                finding.region,
                finding.instance_type,
                finding.telemetry,
                f"{util:.1f}",
                f"{finding.idle_hours:.1f}",
                _money(finding.hourly_cost_usd),
                _money(finding.wasted_usd),
                owner,
            )
        table.add_section()
        unpriced = sum(1 for finding in scan.findings if finding.wasted_usd is None)
        count = f"{len(scan.findings)} idle" + (f", {unpriced} with {NO_LIST_PRICE}" if unpriced else "")
        # The total sums the priced instances only; the count says how many it leaves out.
        table.add_row("total", "", "", "", "", "", "", _money(scan.wasted_usd), count)
        console.print(table)
    for skipped in scan.not_judged:
        console.print(f"not judged: {skipped['resource_id']} ({skipped['region']}): {skipped['reason']}")


def _print_untagged(scan: UntaggedScan) -> None:
    console = _console()
    if not scan.findings:
        console.print(f"Every resource carries {', '.join(scan.required_tags)}.")
        return
    table = Table(title=f"Resources missing cost tags ({len(scan.findings)})")
    table.add_column("type", no_wrap=True)
    table.add_column("region", no_wrap=True)
    table.add_column("resource", overflow="fold")
    table.add_column("missing tags")
    for finding in scan.findings:
        table.add_row(finding.resource_type, finding.region, finding.arn, ", ".join(finding.missing_tags))
    console.print(table)
