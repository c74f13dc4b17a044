"""The dashboard opened in Debian's headless Chromium: it renders, every chart is drawn, no console errors.

The page is the demo's (the nightly job on the seeded sandbox), so every chart has data. A screenshot
is kept in test-artifacts/dashboard.png. Three nights delivered to the sandbox's S3 on consecutive
days draw the trend of the last nights, tonight's point the line the delivery wrote.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from finops import delivery, focus, report
from finops.cost_source import FocusExportSource
from finops.demo import run_demo, sandbox_environment
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
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Any network fetch the page tried would fail and be logged on the console, failing the test.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",
)
# Chromium logs every console message (and uncaught exception) of the page as `...:CONSOLE...`.
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")


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


def drawn_svgs_per_chart(dom: str) -> dict[str, int]:
    """Plotly's rendered `main-svg` elements inside each chart div (charts follow one another)."""
    opening = re.compile(r'<div id="(chart-[\w-]+)" class="chart[^"]*"')
    starts = [(match.group(1), match.start()) for match in opening.finditer(dom)]
    counts = {}
    for index, (chart_id, start) in enumerate(starts):
        end = starts[index + 1][1] if index + 1 < len(starts) else len(dom)
        counts[chart_id] = dom[start:end].count('class="main-svg"')
    return counts


@pytest.fixture(scope="module")
def demo_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_demo(tmp_path_factory.mktemp("demo")).dashboard


def test_every_chart_is_drawn_without_console_errors(demo_dashboard: Path, tmp_path: Path) -> None:
    source = demo_dashboard.read_text()
    chart_ids = re.findall(r'<div id="(chart-[\w-]+)" class="chart"', source)
    assert len(chart_ids) >= 9, "the demo data should fill every chart"

    result = open_page(demo_dashboard, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "ML platform cost report" in result.stdout
    drawn = drawn_svgs_per_chart(result.stdout)
    assert sorted(drawn) == sorted(chart_ids)
    assert {chart_id: count for chart_id, count in drawn.items() if count == 0} == {}
    assert console_messages(result.stderr) == []


def test_screenshot_is_kept(demo_dashboard: Path, tmp_path: Path) -> None:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    screenshot = ARTIFACTS_DIR / "dashboard.png"
    screenshot.unlink(missing_ok=True)

    result = open_page(
        demo_dashboard, tmp_path, "--hide-scrollbars", "--window-size=1400,4000", f"--screenshot={screenshot}"
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a blank page compresses to a few kB


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
    drawn = drawn_svgs_per_chart(result.stdout)
    assert "chart-team" not in drawn
    assert drawn and all(count > 0 for count in drawn.values())
    assert console_messages(result.stderr) == []


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('dashboard is broken')</script></body></html>")
    result = open_page(page, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert any("dashboard is broken" in line for line in console_messages(result.stderr))


# --- three nights delivered: the trend -------------------------------------------------------------

NIGHTS = 3
TREND_BUCKET = "finance-nightly"
FIGURES = re.compile(r"const figures = (\{.*?\});\n", re.S)


def page_figures(html: str) -> dict[str, Any]:
    """The plotly figures the page draws, by chart div id, as embedded in its script."""
    match = FIGURES.search(html)
    assert match, "the page should embed its figures"
    return json.loads(match.group(1))


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
    assert "chart-trend" not in page_figures(first)
    assert "No trend yet: tonight is the first night of the history." in first
    tonight = outs[-1] / "index.html"
    [trend] = [page_figures(tonight.read_text())["chart-trend"]]
    total, idle_waste, untagged_share = trend["data"]
    assert total["x"] == [night["date"] for night in history]
    # Tonight's point is the line the delivery wrote for tonight, like every night before it.
    assert total["y"] == [night["total_usd"] for night in history]
    assert idle_waste["y"] == [night["idle_wasted_usd"] for night in history]
    assert untagged_share["y"] == pytest.approx([night["untagged_share"] * 100 for night in history])
    assert all(value > 0 for value in total["y"])

    result = open_page(tonight, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom")

    assert result.returncode == 0, result.stderr[-2000:]
    drawn = drawn_svgs_per_chart(result.stdout)
    assert drawn["chart-trend"] > 0
    assert result.stdout.count('class="trace scatter') >= 3
    assert console_messages(result.stderr) == []
