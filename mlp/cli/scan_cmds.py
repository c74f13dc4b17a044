"""`mlp idle` and `mlp untagged`: FinOps scans of every account and region of the scope.

Findings are information (exit 0); an account or account-region that could not be scanned makes the
result partial (exit 1), its findings absent and the rest there.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from finops.idle import DEFAULT_THRESHOLD_PCT, DEFAULT_WINDOW_HOURS, IdleScan, scan_idle, validate_thresholds
from finops.scope import DEFAULT_CONCURRENCY, ScanScope, validate_concurrency
from finops.untagged import UntaggedScan, scan_untagged
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
from mlp.preflight import check_scan

# As finops.report words it (not imported: that module pulls in pandas, and this command starts fast).
NO_LIST_PRICE = "no list price"
PARTIAL_EXIT = 1


@app.command("idle")
def idle_command(
    window_hours: Annotated[
        float, typer.Option("--window-hours", help="Hours a GPU must have stayed under the threshold.")
    ] = DEFAULT_WINDOW_HOURS,
    threshold_pct: Annotated[
        float, typer.Option("--threshold-pct", help="Utilization (%) under which a GPU counts as idle.")
    ] = DEFAULT_THRESHOLD_PCT,
    regions: RegionsOption = None,
    region: RegionOption = None,
    accounts: AccountsOption = None,
    org_role: OrgRoleOption = None,
    external_id: ExternalIdOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    output: FormatOption = OutputFormat.text,
    profile: ProfileOption = None,
) -> None:
    """Running GPU instances idle over the window, with the dollars they wasted."""
    validate_thresholds(window_hours, threshold_pct)
    scope = _scope(accounts, org_role, pick_regions(regions, region), external_id, concurrency)
    log(f"scanning GPU instances in {len(scope.targets)} account-regions ...")
    with (
        progress.display(progress.should_show(output is OutputFormat.json)),
        progress.task("Idle GPUs", unit="GetMetricData calls") as calls,
    ):
        scan = scan_idle(
            scope,
            window_hours=window_hours,
            threshold_pct=threshold_pct,
            concurrency=concurrency,
            on_calls=calls.advance,
        )
    log(f"{scan.instances_scanned} running GPU instances; {scan.cloudwatch_calls} GetMetricData calls")
    if output is OutputFormat.json:
        print_json(scan.to_json())
    else:
        _print_scope(scan.scope)
        _print_idle(scan)
    _exit_if_partial(scan.scope)


@app.command("untagged")
def untagged_command(
    regions: RegionsOption = None,
    region: RegionOption = None,
    required_tags: RequiredTagsOption = None,
    accounts: AccountsOption = None,
    org_role: OrgRoleOption = None,
    external_id: ExternalIdOption = None,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    output: FormatOption = OutputFormat.text,
    profile: ProfileOption = None,
) -> None:
    """Resources missing mandatory cost tags, including never-tagged ones."""
    required = parse_required_tags(required_tags)
    scope = _scope(accounts, org_role, pick_regions(regions, region), external_id, concurrency)
    log(f"scanning {len(scope.targets)} account-regions for tags {', '.join(required)} ...")
    with (
        progress.display(progress.should_show(output is OutputFormat.json)),
        progress.task("Untagged resources", unit="resources") as listed,
    ):
        scan = scan_untagged(scope, required, concurrency=concurrency, on_listed=listed.advance)
    log(f"{scan.resources_scanned} resources scanned, {len(scan.findings)} missing tags")
    if output is OutputFormat.json:
        print_json(scan.to_json())
    else:
        _print_scope(scan.scope)
        _print_untagged(scan)
    _exit_if_partial(scan.scope)


def _scope(
    accounts: AccountsOption,
    org_role: OrgRoleOption,
    regions: str | None,
    external_id: ExternalIdOption,
    concurrency: int,
) -> ScanScope:
    """Every flag checked first (exit 2 on a bad one), then the accounts and their regions resolved."""
    check_scan(regions)
    validate_concurrency(concurrency)
    return scope_from_options(accounts, org_role, regions, external_id)


def _exit_if_partial(scope: ScanScope) -> None:
    if scope.gaps:
        log(f"partial result: {len(scope.gaps)} part(s) of the scope could not be scanned (named above)")
        raise typer.Exit(PARTIAL_EXIT)


def _console() -> Console:
    """Rich's console; wide when piped, so ARNs and ids are not cut at 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=220)


def _print_scope(scope: ScanScope) -> None:
    """What was scanned, what could not be (gaps), and what was left out on purpose (skipped regions)."""
    console = _console()
    console.print(scope.describe(), markup=False, highlight=False)
    skipped: dict[str, list[str]] = defaultdict(list)
    for region in scope.skipped:
        skipped[f"{region.account_id}: {region.reason}"].append(region.region)
    for where, names in skipped.items():
        console.print(f"skipped in account {where}: {', '.join(names)}", markup=False, highlight=False)


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
            "account",
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
                finding.account_name or finding.account_id,
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
        table.add_row("total", "", "", "", "", "", "", "", _money(scan.wasted_usd), count)
        console.print(table)
    for skipped in scan.not_judged:
        where = f"{skipped['account_id']} {skipped['region']}"
        console.print(f"not judged: {skipped['resource_id']} ({where}): {skipped['reason']}")


def _print_untagged(scan: UntaggedScan) -> None:
    console = _console()
    if not scan.findings:
        console.print(f"Every resource carries {', '.join(scan.required_tags)}.")
        return
    table = Table(title=f"Resources missing cost tags ({len(scan.findings)})")
    table.add_column("type", no_wrap=True)
    table.add_column("account", no_wrap=True)
    table.add_column("region", no_wrap=True)
    table.add_column("resource", overflow="fold")
    table.add_column("missing tags")
    for finding in scan.findings:
        table.add_row(
            finding.resource_type,
            finding.account_name or finding.account_id,
            finding.region,
            finding.arn,
            ", ".join(finding.missing_tags),
        )
    console.print(table)
