"""The dashboard opened in Debian's headless Chromium, as finance opens it: at 1280 and 1920 px wide.

The page is the demo's (the nightly job on the seeded sandbox), so every chart has data. A probe
script, added to a copy of the page (the page itself has none), measures what the browser laid out:
no horizontal scrolling, both axis titles of every chart, the forecast card's month, the budgets'
alert-threshold marks. Full-page screenshots at both widths are kept in test-artifacts/. Three nights
delivered to the sandbox's S3 on consecutive days draw the trend, tonight's point the line the
delivery wrote.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from finops import delivery, focus, report
from finops.cost_source import FocusExportSource
from finops.dashboard import usd
from finops.demo import DemoRun, run_demo, sandbox_environment
from finops.sandbox import Sandbox, focus_export, seed_account
from finops.scope import resolve_scope
from tests.conftest import ARTIFACTS_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (`make chromium` installs it)"
    ),
]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Any network fetch the page tried would fail and be logged on the console, failing the test.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",
)
# Chromium logs every console message (and uncaught exception) of the page as `...:CONSOLE...`.
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")
WIDTHS = (1280, 1920)
# The demo's page, charts and tables included: a tenth of what one charting bundle weighed.
MAX_DEMO_PAGE_BYTES = 450_000
PROBE = """
<script>
  const svgs = [...document.querySelectorAll("svg.chart-svg")];
  const text = (root, selector) => [...root.querySelectorAll(selector)].map((node) => node.textContent.trim()).join(" ");
  const probe = {
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    charts: svgs.map((svg) => ({
      id: svg.parentElement.id,
      width: svg.getBoundingClientRect().width,
      xTitle: text(svg, '[id$="-x-title"] text'),
      yTitle: text(svg, '[id$="-y-title"] text'),
    })),
    thresholds: [...document.querySelectorAll('[id*="-threshold-"]')].map((node) => ({
      id: node.id, marks: node.querySelectorAll("path").length,
    })),
    monthCard: document.getElementById("kpi-month").innerText,
    overflowing: [...document.querySelectorAll(".card, .kpi")]
      .filter((card) => card.scrollWidth > card.clientWidth + 1).map((card) => card.id),
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(probe);
  document.body.append(out);
</script>
"""


def open_page(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


def probe(page: Path, tmp_path: Path, width: int) -> dict[str, Any]:
    """What Chromium laid out for `page` in a window `width` px wide (a probed copy of the page)."""
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = open_page(probed, tmp_path, f"--window-size={width},1000", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    return json.loads(unescape(found.group(1)))


def screenshot(page: Path, tmp_path: Path, width: int, height: int) -> Path:
    shot = tmp_path / f"dashboard-{width}.png"
    result = open_page(page, tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 100_000  # a blank page compresses to a few kB
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS_DIR / shot.name)
    return shot


def chart_ids(html: str) -> list[str]:
    return re.findall(r'<div class="chart" id="(chart-[\w-]+)"><svg', html)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return run_demo(tmp_path_factory.mktemp("demo"))


def test_the_page_is_small_and_fetches_nothing(demo: DemoRun, tmp_path: Path) -> None:
    assert demo.dashboard.stat().st_size < MAX_DEMO_PAGE_BYTES
    source = demo.dashboard.read_text()
    assert len(chart_ids(source)) >= 12, "the demo data should fill every chart"

    result = open_page(demo.dashboard, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "ML platform cost report" in result.stdout
    assert console_messages(result.stderr) == []


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_reads_at_width(demo: DemoRun, tmp_path: Path, width: int) -> None:
    laid_out = probe(demo.dashboard, tmp_path, width)

    assert laid_out["innerWidth"] == width
    assert laid_out["scrollWidth"] <= laid_out["innerWidth"], "the page scrolls sideways"
    assert laid_out["overflowing"] == [], "a card scrolls sideways"
    charts = laid_out["charts"]
    assert sorted(chart["id"] for chart in charts) == sorted(chart_ids(demo.dashboard.read_text()))
    for chart in charts:
        assert chart["xTitle"] and chart["yTitle"], chart
        assert chart["width"] > 300, chart

    forecast = demo.report.analysis.forecast
    assert forecast is not None
    assert forecast["month"] == f"{demo.report.period.last_day:%Y-%m}"
    assert forecast["month_label"] in laid_out["monthCard"]
    assert usd(forecast["month_to_date_usd"], 0) in laid_out["monthCard"]

    budgets = demo.report.budgets
    assert budgets, "the demo's stacks define budgets"
    drawn = {mark["id"]: mark["marks"] for mark in laid_out["thresholds"]}
    for kind in ("environment", "team"):
        rows = [row for row in budgets if row["kind"] == kind]
        for pct in {pct for row in rows for pct in row["thresholds_pct"]}:
            assert drawn[f"chart-budgets-{kind}-threshold-{pct:g}"] == sum(
                pct in row["thresholds_pct"] for row in rows
            )

    shot = screenshot(demo.dashboard, tmp_path, width, laid_out["scrollHeight"])
    assert shot.is_file()


def test_a_report_with_missing_parts_still_renders(tmp_path: Path) -> None:
    from tests.test_costs import make_line_items
    from tests.test_report import IDLE, PERIOD, UNTAGGED_RESOURCES, read_spend

    spend = read_spend(make_line_items(days=45), throttle=3, max_attempts=3)
    partial = report.build_report(spend, PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES)
    report.write_report(partial, tmp_path / "out")
    page = tmp_path / "out" / "index.html"

    result = open_page(page, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")

    assert result.returncode == 0
    assert "Missing from this report" in result.stdout
    drawn = chart_ids(result.stdout)
    assert "chart-team" not in drawn and "chart-environment" not in drawn
    assert "chart-service" in drawn and "chart-forecast" in drawn
    assert console_messages(result.stderr) == []


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('dashboard is broken')</script></body></html>")
    result = open_page(page, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert any("dashboard is broken" in line for line in console_messages(result.stderr))


# --- three nights delivered: the trend -------------------------------------------------------------

NIGHTS = 3
TREND_BUCKET = "finance-nightly"


def chart_description(html: str, chart_id: str) -> str:
    """The plain-text description the chart carries for screen readers: its figures."""
    found = re.search(rf'<desc id="chart-{chart_id}-desc">(.*?)</desc>', html, re.S)
    assert found, chart_id
    return unescape(found.group(1))


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[dict[str, Any]]]:
    """`mlp report --s3-uri` on three consecutive days of the sandbox: each night's folder, the history."""
    with Sandbox() as sandbox:
        manifest = seed_account(sandbox, now=datetime.now(UTC))
        target = delivery.parse_s3_uri(f"s3://{TREND_BUCKET}/ml-platform/")
        outs = []
        with sandbox_environment(sandbox):
            sandbox.client("s3").create_bucket(Bucket=TREND_BUCKET)
            scope = resolve_scope(None, list(manifest.regions))
            source = FocusExportSource(focus.choose_focus_source(focus.FOCUS_SOURCE, focus_export.EXPORT_URI))
            for nights_ago in reversed(range(NIGHTS)):
                out = tmp_path_factory.mktemp(f"night-{nights_ago}")
                report.run_nightly(
                    30,
                    out,
                    scope=scope,
                    source=source,
                    history_target=target,
                    now=manifest.now - timedelta(days=nights_ago),
                )
                delivery.deliver_to_s3(out, target, report.REPORT_FILES)
                outs.append(out)
            history = delivery.read_history(target)
    return outs, history


def test_three_nights_draw_a_trend_of_three_points(three_nights, tmp_path: Path) -> None:
    outs, history = three_nights
    days = [date.fromisoformat(night["date"]) for night in history]
    assert len(history) == NIGHTS
    assert days == [days[0] + timedelta(days=number) for number in range(NIGHTS)]

    first = (outs[0] / "index.html").read_text()
    assert "chart-trend-spend" not in chart_ids(first)
    assert "No trend yet: tonight is the first night of the history." in first
    tonight = outs[-1] / "index.html"
    html = tonight.read_text()
    # Tonight's point is the line the delivery wrote for tonight, like every night before it.
    assert chart_description(html, "trend-spend") == ", ".join(
        f"{night['date']}: {usd(night['total_usd'])}" for night in history
    )
    assert chart_description(html, "trend-idle") == ", ".join(
        f"{night['date']}: {usd(night['idle_wasted_usd'])}" for night in history
    )
    assert chart_description(html, "trend-untagged") == ", ".join(
        f"{night['date']}: {night['untagged_share'] * 100:.1f}%" for night in history
    )
    assert all(night["total_usd"] > 0 for night in history)

    result = open_page(tonight, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")

    assert result.returncode == 0, result.stderr[-2000:]
    assert {"chart-trend-spend", "chart-trend-untagged", "chart-trend-idle"} <= set(chart_ids(result.stdout))
    assert console_messages(result.stderr) == []
