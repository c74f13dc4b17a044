"""The dashboard and report.md as a finance reader gets them, from a report with every part present.

The report is built from the seeded line items of `tests.test_costs` with budgets, training runs and
leftovers; every figure asserted is read from the report's own data, never copied from the output.
"""

from __future__ import annotations

import csv
import html
import io
import re
import urllib.parse
from datetime import UTC, date, datetime, timedelta

import pytest

from finops import dashboard, report
from finops.budgets import STACK_CONFIG, Budget
from finops.dashboard import MINUS, MoneyFormatter, render_dashboard, render_markdown, signed_usd, usd
from finops.findings import Report
from finops.run_costs import ON_DEMAND, SPOT, Interruption, RunCost, RunCosts, UsageLine
from finops.run_costs import Period as RunPeriod
from finops.scope import ScanScope
from finops.showback import SHOWBACK_COLUMNS
from mlp.pricing import HOURS_PER_MONTH
from tests.test_costs import NOW, make_line_items
from tests.test_report import IDLE, PERIOD, UNTAGGED_RESOURCES, read_spend

# What the demo page weighs is stated in the browser test; this report's page is smaller still.
MAX_PAGE_BYTES = 400_000
BUDGETS = [
    Budget("mlp-dev", 9_000.0, {"environment": "dev"}, (80.0, 100.0), STACK_CONFIG),
    Budget("mlp-prod", 6_000.0, {"environment": "prod"}, (50.0, 80.0, 100.0), STACK_CONFIG),
    Budget("mlp-dev-team-nlp", 2_000.0, {"team": "nlp", "environment": "dev"}, (80.0, 100.0), STACK_CONFIG),
]
LEFTOVERS = [
    {
        "stack": "train-r9",
        "run_id": "r9",
        "reason": "expired",
        "action": "destroy",
        "why": "2 resource(s) still billing $0.1600/h after expires-at 2026-11-20T00:00:00+00:00",
        "hourly_cost_usd": 0.16,
        "resources": [{"kind": "ec2:volume"}, {"kind": "ec2:volume"}],
        "tags": {"owner": "dana@example.com", "team": "vision"},
    }
]


def run_cost(run_id: str, **fields: object) -> RunCost:
    start = datetime(2026, 11, 20, 8, tzinfo=UTC)
    values: dict[str, object] = {
        "run_id": run_id,
        "account_id": "123456789012",
        "region": "us-east-1",
        "team": "nlp",
        "environment": "dev",
        "status": "completed",
        "start": start,
        "end": start + timedelta(hours=10),
        "wall_hours": 10.0,
        "expires_at": None,
        "bucket": None,
        "usage": (
            UsageLine("g5.xlarge", SPOT, 8.0, 0.4),
            UsageLine("g5.xlarge", ON_DEMAND, 2.0, 1.006),
        ),
        "instance_cost_usd": 5.21,
        "on_demand_equivalent_usd": 10.06,
        "billed_usd": 5.0,
        "billed_through": date(2026, 11, 21),
        "estimated_usd": 0.0,
        "estimated": False,
        "interruptions": (),
        "newest_checkpoint_at": None,
        "checkpoint_age_minutes": None,
        "checkpoint_stale": False,
        "budget_usd": 250.0,
    }
    values.update(fields)
    return RunCost(**values)  # type: ignore[arg-type]


INTERRUPTION = Interruption(
    instance_id="i-0spot",
    kind="interruption",
    evidence=("activity",),
    instance_type="g5.xlarge",
    purchase_option=SPOT,
    noticed_at=None,
    ended_at=None,
    last_checkpoint_at=None,
    lost_hours=0.5,
    lost_usd=0.2,
    replacement_instance_id=None,
    first_checkpoint_after_restart_at=None,
    restart_overhead_hours=None,
    restart_overhead_usd=None,
)
RUNS = [
    run_cost("nlp-r1"),
    run_cost(
        "nlp-r2",
        status="running",
        end=None,
        billed_usd=None,
        estimated_usd=300.0,
        estimated=True,
        checkpoint_age_minutes=95.0,
        checkpoint_stale=True,
        interruptions=(INTERRUPTION,),
    ),
]


@pytest.fixture(scope="module")
def full() -> Report:
    runs = RunCosts(
        period=RunPeriod(NOW - timedelta(days=30), NOW),
        scope=ScanScope(targets=[], accounts=[]),
        runs=RUNS,
        stale_after=timedelta(minutes=60),
    )
    return report.build_report(
        read_spend(make_line_items(days=45)),
        PERIOD,
        idle=IDLE,
        untagged=UNTAGGED_RESOURCES,
        leftovers=LEFTOVERS,
        generated_at=NOW,
        budgets=BUDGETS,
        runs=runs,
        stack_team_owners={"vision": "victor@example.com"},
    )


@pytest.fixture(scope="module")
def page(full: Report) -> str:
    return render_dashboard(full)


@pytest.fixture(scope="module")
def markdown(full: Report) -> str:
    return render_markdown(full)


def svgs(page: str) -> dict[str, str]:
    """Each chart's SVG by its chart id."""
    return dict(re.findall(r'<div class="chart" id="chart-([\w-]+)">(<svg.*?</svg>)</div>', page, re.S))


def card_text(page: str, card_id: str) -> str:
    """A headline card's words, as a reader sees them."""
    start = page.index('<div class="kpis">')
    cards = page[start : page.index("</section>", start)].split('<div class="kpi ')
    [card] = [card for card in cards if f'id="kpi-{card_id}"' in card]
    return html.unescape(re.sub(r"<[^>]+>", "", card))


def texts(svg: str, gid_suffix: str) -> list[str]:
    """The text of the SVG groups whose id ends with `gid_suffix`."""
    groups = re.findall(rf'<g id="[\w-]*{gid_suffix}"[^>]*>(.*?)</g>', svg, re.S)
    return [" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", group)).strip() for group in groups]


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (1000, 0, "$1,000"),
        (-500, 0, f"{MINUS}$500"),
        (1234.567, 2, "$1,234.57"),
        (-0.001, 2, "$0.00"),
        (None, 2, "n/a"),
    ],
)
def test_money_reads_as_money(value: float | None, decimals: int, expected: str) -> None:
    assert usd(value, decimals) == expected


def test_changes_carry_their_sign_before_the_dollar() -> None:
    assert signed_usd(60) == "+$60.00"
    assert signed_usd(-5) == f"{MINUS}$5.00"
    assert signed_usd(0) == "$0.00"


def test_axis_ticks_are_whole_dollars_or_cents_when_close() -> None:
    assert MoneyFormatter().format_ticks([-500.0, 0.0, 500.0, 1000.0]) == [
        f"{MINUS}$500",
        "$0",
        "$500",
        "$1,000",
    ]
    assert MoneyFormatter().format_ticks([0.0, 0.25, 0.5]) == ["$0.00", "$0.25", "$0.50"]


def test_the_page_has_no_script_no_fetch_and_weighs_little(page: str) -> None:
    assert "<script" not in page
    assert re.findall(r'(?:src|href)="(?!#|data:)[^"]*"', page) == []
    assert len(page.encode()) < MAX_PAGE_BYTES


def test_every_chart_titles_both_axes(page: str) -> None:
    charts = svgs(page)
    assert len(charts) >= 12, sorted(charts)
    for chart_id, svg in charts.items():
        assert [text for text in texts(svg, "-x-title") if text], chart_id
        assert [text for text in texts(svg, "-y-title") if text], chart_id


def test_ids_are_unique_across_the_charts(page: str) -> None:
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_money_axes_read_as_money(page: str) -> None:
    ticks = texts(svgs(page)["movers-team"], "-x-title")
    assert ticks == ["Change against the previous 14 days (USD)"]
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svgs(page)["movers-team"])
    money = [label for label in labels if "$" in label]
    assert money and all(re.fullmatch(rf"[+{MINUS}]?\$[\d,]+(\.\d\d)?", label) for label in money), money
    assert not any(re.search(r"\$-|\$\u2212", label) for label in labels)


def test_movers_are_one_chart_per_dimension(full: Report, page: str) -> None:
    dimensions = {mover["dimension"] for mover in full.analysis.top_movers}
    assert {chart_id for chart_id in svgs(page) if chart_id.startswith("movers-")} == {
        f"movers-{dimension}" for dimension in dimensions
    }
    for mover in full.analysis.top_movers:
        assert signed_usd(mover["change_usd"]) in svgs(page)[f"movers-{mover['dimension']}"]


def test_pricing_is_in_words(page: str) -> None:
    pricing = svgs(page)["pricing"]
    assert {"Spot", "On-demand", "Savings plan / reserved"} <= set(re.findall(r">([^<>]+)</text>", pricing))
    for jargon in ("Dynamic", "Committed", "Standard"):
        assert jargon not in page


def test_untagged_is_grey_wherever_it_shows(page: str) -> None:
    for chart_id in ("team", "environment"):
        assert dashboard.UNTAGGED_COLOR in svgs(page)[chart_id]


def test_the_forecast_card_names_the_current_month(full: Report, page: str) -> None:
    forecast = full.analysis.forecast
    assert forecast is not None
    assert forecast["month"] == f"{PERIOD.last_day:%Y-%m}"
    text = card_text(page, "month")
    assert forecast["month_label"] in text
    assert usd(forecast["forecast_usd"], 0) in text
    assert forecast["method_note"] in text
    chart = svgs(page)["forecast"]
    for line in ("actual-line", "forecast-line", "budget-line", "previous-month-line"):
        assert f'id="chart-forecast-{line}"' in chart, line


def test_idle_card_states_the_monthly_rate_window_and_threshold(full: Report, page: str) -> None:
    rate = full.idle_rate
    card = card_text(page, "idle")
    assert f"{usd(rate['monthly_usd'], 0)}/month" in card
    assert f"{rate['instances']} GPUs under {rate['threshold_pct']:g}% for {rate['window_hours']:g} h" in card
    assert rate["monthly_usd"] == pytest.approx(
        sum(finding.hourly_cost_usd or 0.0 for finding in IDLE) * HOURS_PER_MONTH, abs=0.01
    )


def test_budgets_draw_every_alert_threshold(full: Report, page: str) -> None:
    assert full.budgets
    charts = svgs(page)
    for kind in ("environment", "team"):
        rows = [row for row in full.budgets if row["kind"] == kind]
        svg = charts[f"budgets-{kind}"]
        for pct in {pct for row in rows for pct in row["thresholds_pct"]}:
            marks = re.search(rf'<g id="chart-budgets-{kind}-threshold-{pct:g}"[^>]*>(.*?)</g>', svg, re.S)
            assert marks, (kind, pct)
            assert marks.group(1).count("<path") == sum(pct in row["thresholds_pct"] for row in rows)
        for row in rows:
            assert usd(row["month_to_date_usd"], 0) in svg and usd(row["limit_usd"], 0) in svg
    assert STACK_CONFIG in page


def test_the_showback_csv_link_downloads_the_showback_rows(full: Report, page: str) -> None:
    link = re.search(r'<a class="download" id="showback-csv" download="([^"]+)" href="([^"]+)"', page)
    assert link
    assert link.group(1).endswith(".csv")
    prefix = "data:text/csv;charset=utf-8,"
    assert link.group(2).startswith(prefix)
    rows = list(csv.DictReader(io.StringIO(urllib.parse.unquote(link.group(2)[len(prefix) :]))))

    expected = [
        {"dimension": dimension, **{column: str(row[column]) for column in SHOWBACK_COLUMNS[1:]}}  # type: ignore[literal-required]
        for dimension, table in (
            ("cost-center", full.showback.by_cost_center),
            ("team", full.showback.by_team),
        )
        for row in table or []
    ]
    for row in expected:
        row["change_pct"] = "" if row["change_pct"] == "None" else row["change_pct"]
    assert rows == expected
    assert {row["dimension"] for row in rows} == {"cost-center", "team"}
    assert sum(float(row["period_usd"]) for row in rows if row["dimension"] == "team") == pytest.approx(
        full.analysis.total_usd, abs=0.05
    )


def test_the_showback_tables_show_each_row(full: Report, page: str) -> None:
    for table_id, rows in (
        ("table-showback-cost-center", full.showback.by_cost_center),
        ("table-showback-team", full.showback.by_team),
    ):
        table = page[page.index(f'id="{table_id}"') :]
        table = table[: table.index("</table>")]
        for row in rows or []:
            assert row["name"] in table
            for column in ("month_to_date_usd", "forecast_usd", "period_usd", "previous_usd"):
                assert usd(row[column]) in table  # type: ignore[literal-required]
            assert signed_usd(row["change_usd"]) in table


def test_every_item_has_its_owner_and_a_plain_action(full: Report, page: str) -> None:
    table = page[page.index('id="table-actions"') : page.index('id="spend"')]
    assert len(full.actions) == len(IDLE) + len(UNTAGGED_RESOURCES) + len(LEFTOVERS)
    for item in full.actions:
        assert item.text in table
        if item.owner:
            assert item.owner in table
    leftover = next(item for item in full.actions if item.kind == "leftover")
    assert leftover.owner == "dana@example.com"
    # The engineer's command is for the engineers' section, not the finance table.
    assert "mlp reap --apply" not in table
    assert "mlp reap --apply" in page[page.index('id="engineers"') :]


def test_the_training_runs_table(full: Report, page: str) -> None:
    table = page[page.index('id="table-runs"') : page.index('id="trend"')]
    finished, running = RUNS
    assert finished.run_id in table and running.run_id in table
    assert f"{usd(finished.cost_usd)}<br><small>billed</small>" in table
    assert f"{usd(running.cost_usd)}<br><small>estimated</small>" in table
    assert usd(finished.saving_usd) in table
    assert '<td class="num">8.0</td><td class="num">2.0</td>' in table  # spot, on-demand hours
    assert f"{usd(running.lost_work_usd)} lost" in table
    assert "1.6 h ago" in table and "stale" in table
    assert "over budget" in table  # the running run's estimate is past its $250 per run
    assert full.runs is not None and running.over_budget
    totals = html.unescape(re.sub(r"<[^>]+>", "", table[table.index('id="runs-totals"') :]))
    assert f"cost {usd(sum(run.cost_usd for run in RUNS))}" in " ".join(totals.split())
    assert f"over budget: {running.run_id}" in totals


def test_the_leak_and_reaper_cards(full: Report, page: str) -> None:
    leaks = card_text(page, "leaks")
    assert "1 run" in leaks
    monthly = sum(run["hourly_cost_usd"] for run in LEFTOVERS) * HOURS_PER_MONTH
    assert f"{usd(monthly, 0)}/month" in leaks
    recovered = full.recovered
    assert recovered is not None
    assert f"{usd(recovered['monthly_usd'], 0)}/month" in card_text(page, "recovered")


def test_report_md_mirrors_the_headline_and_tables(full: Report, markdown: str) -> None:
    for card in dashboard.headline(full):
        assert f"- {card.label}: **{card.value}{card.unit}**" in markdown
    assert "## Budgets" in markdown and "## Showback by cost-center" in markdown
    for budget in full.budgets or []:
        assert (
            f"| {budget['label']} | {budget['kind']} | {budget['source']} | {usd(budget['limit_usd'])} |"
            in markdown
        )
    for row in full.showback.by_team or []:
        assert f"| {row['name']} | {usd(row['month_to_date_usd'])} | {usd(row['forecast_usd'])} |" in markdown
    for item in full.actions:
        assert item.text in markdown
    assert "## Training runs" in markdown
    for run in RUNS:
        assert f"| {run.run_id} | {run.team} | {run.environment} | {run.status} |" in markdown
    assert "STALE" in markdown and "OVER BUDGET" in markdown


def test_report_md_money_always_has_a_dollar(full: Report, markdown: str) -> None:
    movers = markdown[markdown.index("## Biggest changes") :]
    movers = movers[: movers.index("\n## ")]
    rows = [line for line in movers.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(full.analysis.top_movers)
    for line, mover in zip(rows, full.analysis.top_movers, strict=True):
        assert line.endswith(
            f"| {usd(mover['previous_usd'])} | {usd(mover['current_usd'])} | {signed_usd(mover['change_usd'])} |"
        )
    # No bare amount: every figure with cents in a table cell is money with its dollar sign.
    bare = re.findall(r"\| [+\-\u2212]?[\d,]+\.\d\d \|", markdown)
    assert bare == []
