"""The report's pages from their jinja2 templates: index.html and report.md.

index.html is the page finance opens every morning, forwards and prints: one self-contained file with
no script and no network fetch. Its charts are matplotlib figures rendered here to inline SVG with
their text kept as text (`svg.fonttype: none`), so labels stay selectable, searchable and sharp in
print, and the page weighs what its figures weigh rather than a charting bundle. Money reads
`$1,234.56`, a loss `-$500` with a true minus sign, on the page, on every axis and in report.md,
which holds the same headline and tables as text (also what goes to Slack).
"""

from __future__ import annotations

import calendar
import io
import itertools
import math
import re
import textwrap
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import matplotlib.dates as mdates
import pandas as pd
from markupsafe import Markup, escape
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import Formatter, MaxNLocator, PercentFormatter

from finops.analysis import RUN_RATE_DAYS, Forecast
from finops.budgets import BudgetStatus
from finops.costs import REQUEST_PRICE_USD, UNTAGGED_LABEL
from finops.delivery import HISTORY_NIGHTS
from finops.findings import IDLE_SCAN, LEFTOVERS_SCAN, NO_LIST_PRICE, UNTAGGED_SCAN, Report
from finops.run_costs import ON_DEMAND, SPOT, RunCost
from finops.showback import ShowbackRow
from mlp.pricing import HOURS_PER_MONTH
from mlp.tags import TEAM

TEMPLATES = Path(__file__).parent / "templates"
MINUS = "\u2212"
# Categorical colors, given to names in alphabetical order so a team keeps its color from night to night.
PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444", "#06b6d4", "#ec4899", "#84cc16"]
UNTAGGED_COLOR = "#9ca3af"
OTHER_COLOR = "#cbd5e1"
INCREASE_COLOR, DECREASE_COLOR = "#dc2626", "#059669"
STATUS_COLORS = {"ok": "#2563eb", "warning": "#f59e0b", "over": "#dc2626"}
STATUS_WORDS = {"ok": "On track", "warning": "Warning", "over": "Over budget"}
# FOCUS PricingCategory in the words of a finance reader, with one color each wherever it shows.
PRICING = {
    "Dynamic": ("Spot", "#10b981"),
    "Standard": ("On-demand", "#2563eb"),
    "Committed": ("Savings plan / reserved", "#8b5cf6"),
    "Other": ("Other (not an instance)", UNTAGGED_COLOR),
}
# More names than this in one chart read as noise: the smallest are summed into one "other" entry.
MAX_SERIES = 8
MAX_BARS = 12
FIGURE_WIDTH_IN = 6.4
CHART_STYLE = {
    "svg.fonttype": "none",
    # The SVG's clip-path ids hash this salt instead of a random one: the same report, the same page.
    "svg.hashsalt": "ml-platform-dashboard",
    # Money labels hold "$": never read as mathtext.
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "axes.labelcolor": "#374151",
    "axes.edgecolor": "#9ca3af",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}
# matplotlib's own ids ("patch_3", "text_12"): nothing refers to them, and a page of charts repeats them.
_AUTO_ID = re.compile(r' id="[A-Za-z][\w.]*_\d+"')
_ID_OR_REFERENCE = re.compile(r'(id="|url\(#|xlink:href="#)([\w.-]+)')
_GEOMETRY = re.compile(r' (d|x|y|width|height|transform|viewBox)="([^"]*)"')
_LONG_DECIMAL = re.compile(r"(\d+\.\d\d)\d+")


# --- money and other words ---------------------------------------------------------------------------


def usd(value: float | None, decimals: int = 2, missing: str = "n/a") -> str:
    """ "$1,234.56", or "-$500.00" with U+2212 for the minus (before the dollar); `missing` for None."""
    if value is None:
        return missing
    rounded = round(value, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0: no minus before "$0.00"
    sign = MINUS if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{decimals}f}"


def signed_usd(value: float, decimals: int = 2) -> str:
    """A change: "+$60.00", "-$5.00" (U+2212), "$0.00"."""
    text = usd(value, decimals)
    return text if text.startswith(MINUS) or round(value, decimals) == 0 else f"+{text}"


def percent(share: float | None, missing: str = "n/a") -> str:
    """A share (0.123) as "12.3%"."""
    return missing if share is None else f"{share * 100:.1f}%"


def signed_percent(pct: float | None) -> str:
    """A change already in percent (12.3) as "+12.3%"; "new" when there was nothing before."""
    if pct is None:
        return "new"
    return f"{MINUS}{abs(pct):.1f}%" if pct < 0 else f"+{pct:.1f}%"


def plural(count: int, noun: str, many: str | None = None) -> str:
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def _day(moment: date | datetime | None) -> str:
    return "" if moment is None else f"{moment:%-d %b %Y}"


def _moment(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%-d %b %H:%M}"


class MoneyFormatter(Formatter):
    """Axis ticks as money: whole dollars, or cents when the ticks are less than a dollar apart."""

    decimals = 0

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        ticks = sorted(values)
        step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0)
        self.decimals = 0 if step >= 1 else 2
        return [self(value) for value in values]

    def __call__(self, x: float, pos: int | None = None) -> str:
        return usd(x, self.decimals)


# --- the chart engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """One chart tile: its inline SVG, or a sentence saying why there is none; `caption` says how to read it."""

    chart_id: str
    title: str
    svg: Markup | None = None
    note: str | None = None
    caption: str | None = None


def _axes(rows: int | None = None, height_in: float = 3.0) -> tuple[Figure, Axes]:
    """A figure with one axes; `rows` of horizontal bars set its height so every label has its line."""
    if rows is not None:
        height_in = 0.95 + 0.3 * rows
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), layout="constrained")
    return figure, figure.subplots()


def _titles(axes: Axes, x: str, y: str) -> None:
    """Both axis titles, with ids the page's checks find them by."""
    axes.set_xlabel(x).set_gid("x-title")
    axes.set_ylabel(y).set_gid("y-title")


def _money_axis(axis: Any) -> None:
    axis.set_major_formatter(MoneyFormatter())


def _date_axis(axes: Axes, days: int) -> None:
    """Day ticks, at most about seven of them, every day for a short range."""
    axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, math.ceil(days / 7))))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%-d %b"))
    axes.grid(axis="x", visible=False)


def _swatch(axes: Axes, label: str, color: str, alpha: float = 1.0) -> None:
    """A legend entry that draws nothing: for what a chart's colors mean rather than one of its bars."""
    axes.add_patch(Rectangle((0, 0), 0, 0, color=color, alpha=alpha, label=label))


def _legend(figure: Figure, axes: Axes) -> None:
    """The legend under the chart, in as many columns as its longest entry leaves room for."""
    handles, labels = axes.get_legend_handles_labels()
    if labels:
        columns = max(1, min(len(labels), 90 // (max(len(label) for label in labels) + 6)))
        figure.legend(handles, labels, loc="outside lower center", ncols=columns)


def _compact_geometry(match: re.Match[str]) -> str:
    numbers = _LONG_DECIMAL.sub(r"\1", match.group(2))
    return f' {match.group(1)}="{numbers}"'


def _inline_svg(figure: Figure, chart_id: str, title: str, description: str) -> Markup:
    """The figure as an SVG element for the page: ids scoped to the chart, sized by its card, titled."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    # Its style sheet would apply to the whole page; the page's own carries the same rule, once.
    svg = re.sub(r"<defs>\s*<style.*?</style>\s*</defs>", "", svg, flags=re.S)
    svg = _AUTO_ID.sub("", svg)
    prefix = f"chart-{chart_id}"
    svg = _ID_OR_REFERENCE.sub(lambda match: f"{match.group(1)}{prefix}-{match.group(2)}", svg)
    # No screen or printer shows a difference past a hundredth of a point.
    svg = _GEOMETRY.sub(_compact_geometry, svg)
    svg = re.sub(r"\s*\n\s*", " ", svg).replace("> <", "><").strip()
    # The card sizes the chart (CSS), the viewBox keeps its proportions.
    svg = re.sub(r' width="[\d.]+pt" height="[\d.]+pt"', "", svg, count=1)
    opening = svg.index(">")
    return Markup(
        f'<svg class="chart-svg" role="img" aria-labelledby="{prefix}-title {prefix}-desc"'
        f'{svg[4:opening]}><title id="{prefix}-title">{escape(title)}</title>'
        f'<desc id="{prefix}-desc">{escape(description)}</desc>{svg[opening + 1 :]}'
    )


def _chart(
    chart_id: str, title: str, figure: Figure, caption: str | None = None, description: str | None = None
) -> Chart:
    return Chart(
        chart_id,
        title,
        svg=_inline_svg(figure, chart_id, title, description or caption or title),
        caption=caption,
    )


def _colors(names: Iterable[str]) -> dict[str, str]:
    """A color per name: the palette in alphabetical order, untagged grey."""
    named = sorted({name for name in names if name != UNTAGGED_LABEL})
    colors = {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(named)}
    colors[UNTAGGED_LABEL] = UNTAGGED_COLOR
    return colors


def _with_other(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """The biggest columns, the rest summed into "other <what>" (untagged always kept on its own)."""
    if len(table.columns) <= MAX_SERIES:
        return table
    keep = list(table.columns[: MAX_SERIES - 1])
    if UNTAGGED_LABEL in table.columns and UNTAGGED_LABEL not in keep:
        keep[-1] = UNTAGGED_LABEL
    rest = [column for column in table.columns if column not in keep]
    return table[keep].assign(**{f"{len(rest)} other {what}": table[rest].sum(axis=1)})


def _note(chart_id: str, title: str, note: str) -> Chart:
    return Chart(chart_id, title, note=note)


def _missing(chart_id: str, title: str, what: str) -> Chart:
    return _note(chart_id, title, f"Missing: {what} could not be read from the cost source (see above).")


def _stacked_daily(
    chart_id: str, title: str, table: pd.DataFrame | None, what: str, colors: dict[str, str]
) -> Chart:
    if table is None:
        return _missing(chart_id, title, title[0].lower() + title[1:])
    table = _with_other(table, what)
    figure, axes = _axes()
    days = [timestamp.date() for timestamp in table.index]
    bottom = [0.0] * len(days)
    for label in table.columns:
        values = table[label].to_list()
        axes.bar(
            days,
            values,
            bottom=bottom,
            width=0.8,
            label=str(label),
            color=colors.get(str(label), OTHER_COLOR),
        )
        bottom = [base + value for base, value in zip(bottom, values, strict=True)]
    _titles(axes, "Day (UTC)", "Spend per day (USD)")
    _money_axis(axes.yaxis)
    _date_axis(axes, len(days))
    _legend(figure, axes)
    return _chart(chart_id, title, figure, description=f"{title}, {_day(days[0])} to {_day(days[-1])}.")


def _horizontal_bars(
    chart_id: str,
    title: str,
    bars: Sequence[tuple[str, float, str]],
    *,
    x_title: str,
    y_title: str,
    label: Any = usd,
    money: bool = True,
    caption: str | None = None,
    legend: dict[str, str] | None = None,
) -> Chart:
    """One bar per (name, value, color), the first on top, each labelled with `label(value)`."""
    names = [textwrap.fill(name, 30, break_long_words=False) for name, _, _ in bars][::-1]
    figure, axes = _axes(rows=len(bars) * max(name.count("\n") + 1 for name in names))
    values = [value for _, value, _ in bars][::-1]
    container = axes.barh(names, values, color=[color for _, _, color in bars][::-1], height=0.6)
    axes.bar_label(container, labels=[label(value) for value in values], padding=3, fontsize=8)
    # Room beyond the bars' ends for their labels, none on the side without bars.
    low, high = min(0.0, *values), max(0.0, *values)
    room = 0.3 * ((high - low) or 1.0)
    # All zero: one unit of axis, not a degenerate one.
    axes.set_xlim(low - room if low < 0 else 0.0, high + room if high > 0 else (0.0 if low < 0 else 1.0))
    axes.grid(axis="y", visible=False)
    axes.grid(axis="x", visible=True)
    if low < 0:
        axes.axvline(0, color="#6b7280", linewidth=0.8)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=not money))
    if money:
        _money_axis(axes.xaxis)
    _titles(axes, x_title, y_title)
    if legend:
        for name, color in legend.items():
            _swatch(axes, name, color)
        _legend(figure, axes)
    return _chart(chart_id, title, figure, caption)


def _capped(items: Sequence[tuple[str, float]], what: str) -> list[tuple[str, float]]:
    """The biggest bars, the rest summed into one."""
    if len(items) <= MAX_BARS:
        return list(items)
    rest = items[MAX_BARS - 1 :]
    return [*items[: MAX_BARS - 1], (f"{len(rest)} other {what}", sum(value for _, value in rest))]


def _by_service(report: Report) -> Chart:
    title = "Spend by service"
    values = report.analysis.by_service
    if values is None:
        return _missing("service", title, "spend by service")
    if not values:
        return _note("service", title, "No spend.")
    bars = _capped(list(values.items()), "services")
    return _horizontal_bars(
        "service",
        title,
        [(name, amount, PALETTE[0]) for name, amount in bars],
        x_title=f"Spend in the {report.period.days} days (USD)",
        y_title="Service",
    )


def _pricing(report: Report) -> Chart:
    title = "Spend by pricing: spot, on-demand, savings plans"
    table = report.analysis.daily_by_pricing
    if table is None:
        return _missing("pricing", title, "spot share and spot savings")
    renamed = table.rename(columns={key: words for key, (words, _) in PRICING.items()})
    colors = {words: color for words, color in PRICING.values()}
    analysis = report.analysis
    caption = (
        f"Spot is {percent(analysis.spot_share)} of instance spend and saved "
        f"{usd(analysis.spot_savings_usd)} against on-demand list prices."
    )
    return replace(_stacked_daily("pricing", title, renamed, "prices", colors), caption=caption)


def _untagged_by_tag(report: Report) -> Chart:
    title = "Untagged spend by missing tag"
    by_tag = report.analysis.untagged_by_tag
    if report.analysis.untagged_usd is None:
        return _missing("untagged-tags", title, "untagged spend")
    if not any(by_tag.values()):
        return _note("untagged-tags", title, "Every dollar of the period carries every mandatory tag.")
    bars = sorted(by_tag.items(), key=lambda item: -item[1])
    return _horizontal_bars(
        "untagged-tags",
        title,
        [(tag, amount, UNTAGGED_COLOR) for tag, amount in bars],
        x_title="Spend without the tag (USD)",
        y_title="Mandatory tag",
        caption=f"{percent(report.untagged_share)} of the period's spend misses at least one of these tags.",
    )


def _untagged_resources(report: Report) -> Chart:
    title = "Resources missing mandatory tags"
    if not report.untagged:
        note = report.scan_note(UNTAGGED_SCAN) or "Every scanned resource carries the mandatory tags."
        return _note("untagged-resources", title, note)
    counts: dict[str, int] = {}
    for finding in report.untagged:
        counts[finding.resource_type] = counts.get(finding.resource_type, 0) + 1
    bars = _capped(sorted(counts.items(), key=lambda item: (-item[1], item[0])), "types")
    return _horizontal_bars(
        "untagged-resources",
        title,
        [(kind, count, UNTAGGED_COLOR) for kind, count in bars],
        x_title="Resources",
        y_title="Resource type",
        label=lambda value: f"{value:g}",
        money=False,
    )


def _idle(report: Report, team_colors: dict[str, str]) -> Chart:
    title = "Idle GPUs: cost per month if left running"
    gaps = report.scan_note(IDLE_SCAN)
    if not report.idle:
        return _note("idle", title, gaps or "No idle GPU instances.")
    # A bar of $0 would read as "costs nothing": unpriced instances are counted in words instead.
    priced = sorted(
        (finding for finding in report.idle if finding.hourly_cost_usd is not None),
        key=lambda finding: -(finding.hourly_cost_usd or 0.0),
    )[:MAX_BARS]
    if not priced:
        return _note(
            "idle", title, f"{plural(len(report.idle), 'idle GPU instance')}, all with {NO_LIST_PRICE}."
        )
    teams = [finding.tags.get(TEAM) or UNTAGGED_LABEL for finding in priced]
    rate = report.idle_rate
    return _horizontal_bars(
        "idle",
        title,
        [
            (
                f"{finding.resource_id} ({finding.instance_type})",
                (finding.hourly_cost_usd or 0.0) * HOURS_PER_MONTH,
                team_colors.get(team, OTHER_COLOR),
            )
            for finding, team in zip(priced, teams, strict=True)
        ],
        x_title="Cost per month if left running (USD)",
        y_title="Instance",
        caption=(
            f"GPU under {rate['threshold_pct']:g}% for {rate['window_hours']:g} h; colored by team."
            + (f" {gaps}." if gaps else "")
        ),
        legend={team: team_colors.get(team, OTHER_COLOR) for team in dict.fromkeys(teams)},
    )


MOVER_TITLES = {TEAM: "team", "environment": "environment", "service": "service"}


def _movers(report: Report) -> list[Chart]:
    """One chart per dimension: a team's change never sits on the same axis as a service's."""
    movers = report.analysis.top_movers
    if not movers:
        title = f"Biggest changes versus the previous {report.period.days} days"
        if report.analysis.total_usd is None:
            return [_missing("movers", title, "spend by team, environment and service")]
        return [_note("movers", title, "No spend in either period.")]
    charts = []
    for dimension, word in MOVER_TITLES.items():
        rows = [mover for mover in movers if mover["dimension"] == dimension]
        if not rows:
            continue
        charts.append(
            _horizontal_bars(
                f"movers-{dimension}",
                f"Biggest changes by {word} versus the previous {report.period.days} days",
                [
                    (
                        mover["name"],
                        mover["change_usd"],
                        INCREASE_COLOR if mover["change_usd"] > 0 else DECREASE_COLOR,
                    )
                    for mover in rows
                ],
                x_title=f"Change against the previous {report.period.days} days (USD)",
                y_title=word.capitalize(),
                label=signed_usd,
            )
        )
    return charts


def forecast_method(forecast: Forecast) -> str:
    return f"Method: {forecast['method_note']}."


def _month_days(month: str) -> tuple[date, date]:
    year, number = (int(part) for part in month.split("-"))
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def _forecast(report: Report) -> Chart:
    forecast = report.analysis.forecast
    if forecast is None:
        return _missing("forecast", "Month-end forecast", "total spend")
    title = f"{forecast['month_label']}: spend so far and the month-end forecast"
    first, last = _month_days(forecast["month"])
    figure, axes = _axes(height_in=3.2)
    days = [date.fromisoformat(day["date"]) for day in forecast["daily"]]
    running, cumulative = 0.0, []
    for day in forecast["daily"]:
        running += day["usd"]
        cumulative.append(running)
    if days:
        axes.plot(
            days,
            cumulative,
            color=PALETTE[0],
            marker="o",
            markersize=4,
            linewidth=2,
            label="Spent so far",
            gid="actual-line",
        )
    start = (days[-1], cumulative[-1]) if days else (first, 0.0)
    if forecast["lower_usd"] is not None and forecast["upper_usd"] is not None:
        axes.fill_between(
            [start[0], last], [start[1], forecast["lower_usd"]], [start[1], forecast["upper_usd"]],
            color=PALETTE[1], alpha=0.18, linewidth=0, label="Forecast range",
        )  # fmt: skip
    axes.plot(
        [start[0], last], [start[1], forecast["forecast_usd"]], color=PALETTE[1], linestyle="--", linewidth=2,
        label=f"Forecast: {usd(forecast['forecast_usd'], 0)}", gid="forecast-line",
    )  # fmt: skip
    previous = forecast["previous_month"]
    if previous is not None:
        axes.axhline(
            previous["usd"],
            color="#6b7280",
            linestyle=":",
            linewidth=1.5,
            label=f"{previous['month_label']} total: {usd(previous['usd'], 0)}",
            gid="previous-month-line",
        )
    if forecast["budget_usd"] is not None:
        axes.axhline(
            forecast["budget_usd"],
            color=INCREASE_COLOR,
            linestyle="-.",
            linewidth=1.5,
            label=f"Budget: {usd(forecast['budget_usd'], 0)}",
            gid="budget-line",
        )
    # Half a day either side: the 1st's point clear of the axis, the month's last day inside the frame.
    axes.set_xlim(first - timedelta(hours=12), last + timedelta(hours=12))
    axes.set_ylim(bottom=0)
    _titles(axes, f"Day of {forecast['month_label']} (UTC)", "Spend since the 1st (USD)")
    _money_axis(axes.yaxis)
    _date_axis(axes, (last - first).days + 1)
    _legend(figure, axes)
    description = (
        f"{usd(forecast['month_to_date_usd'])} spent in {forecast['month_label']} so far; forecast "
        f"{usd(forecast['forecast_usd'])} by {_day(last)}"
        + (f"; budget {usd(forecast['budget_usd'])}" if forecast["budget_usd"] is not None else "")
        + (f"; {previous['month_label']} total {usd(previous['usd'])}" if previous else "")
        + "."
    )
    return _chart("forecast", title, figure, forecast_method(forecast), description)


def _budget_chart(chart_id: str, title: str, rows: Sequence[BudgetStatus], y_title: str) -> Chart:
    """Month to date (solid) and forecast (light) as shares of each budget, its alert thresholds marked."""
    figure, axes = _axes(rows=2 * len(rows))
    positions = list(range(len(rows)))[::-1]
    used = [(row["used_share"] or 0.0) * 100 for row in rows]
    forecast = [(row["forecast_share"] or 0.0) * 100 for row in rows]
    colors = [STATUS_COLORS[row["status"]] for row in rows]
    axes.barh(positions, used, height=0.62, color=colors, zorder=3)
    axes.barh(positions, forecast, height=0.62, color=colors, alpha=0.28, zorder=2)
    # The legend says what solid and light mean and what each color is, whatever the first row's status.
    statuses = {row["status"] for row in rows}
    _swatch(axes, "Month to date", "#374151")
    _swatch(axes, "Forecast to month end", "#374151", alpha=0.28)
    for status in STATUS_COLORS:
        if status in statuses:
            _swatch(axes, STATUS_WORDS[status], STATUS_COLORS[status])
    thresholds = sorted({pct for row in rows for pct in row["thresholds_pct"]})
    for index, pct in enumerate(thresholds):
        marked = [
            position for position, row in zip(positions, rows, strict=True) if pct in row["thresholds_pct"]
        ]
        marks = axes.vlines(
            [pct] * len(marked), [y - 0.42 for y in marked], [y + 0.42 for y in marked],
            colors="#111827", linewidth=1.6, label="Alert threshold" if index == 0 else None, zorder=4,
        )  # fmt: skip
        marks.set_gid(f"threshold-{pct:g}")
    # The dollars beside the plot, clear of the bars and the marks whatever their lengths.
    for position, row in zip(positions, rows, strict=True):
        axes.text(
            1.02, position,
            f"{usd(row['month_to_date_usd'], 0)} of {usd(row['limit_usd'], 0)}\nforecast {usd(row['forecast_usd'], 0)}",
            transform=axes.get_yaxis_transform(), va="center", fontsize=8, color="#374151",
        )  # fmt: skip
    axes.set_yticks(positions, [row["label"] for row in rows])
    axes.set_xlim(0, max([100.0, *forecast, *used, *thresholds]) * 1.08)
    axes.xaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
    axes.grid(axis="y", visible=False)
    axes.grid(axis="x", visible=True)
    _titles(axes, "Share of the monthly budget", y_title)
    _legend(figure, axes)
    description = "; ".join(
        f"{row['label']}: {usd(row['month_to_date_usd'])} of {usd(row['limit_usd'])} ({percent(row['used_share'])}), "
        f"forecast {usd(row['forecast_usd'])}, alerts at {', '.join(f'{pct:g}%' for pct in row['thresholds_pct'])}"
        for row in rows
    )
    sources = sorted({row["source"] for row in rows})
    return _chart(chart_id, title, figure, f"Limits from {' and '.join(sources)}.", description)


def _budgets(report: Report) -> list[Chart]:
    if not report.budgets:
        note = report.budgets_note or "No environment or team budget is known for this account."
        return [_note("budgets", "Budgets", note)]
    charts = []
    for kind, title, y_title in (
        ("environment", "Budgets by environment, this month", "Environment"),
        ("team", "Budgets by team, this month", "Team in environment"),
    ):
        rows = [row for row in report.budgets if row["kind"] == kind]
        if rows:
            charts.append(_budget_chart(f"budgets-{kind}", title, rows, y_title))
    return charts


def _nightly(
    chart_id: str,
    title: str,
    nights: Sequence[dict[str, Any]],
    key: str,
    y_title: str,
    *,
    share: bool = False,
) -> Chart:
    """One figure of every night; `share` for a share of spend (drawn in percent), else dollars."""
    figure, axes = _axes(height_in=2.6)
    days = [date.fromisoformat(night["date"]) for night in nights]
    values = [None if night[key] is None else night[key] * (100 if share else 1) for night in nights]
    # A night whose figure was missing is a hole in the line, not a zero.
    axes.plot(
        days,
        [float("nan") if value is None else value for value in values],
        color=PALETTE[0],
        marker="o",
        markersize=3,
        linewidth=1.8,
    )
    axes.set_ylim(bottom=0)
    _titles(axes, "Night of the report (UTC)", y_title)
    _date_axis(axes, len(days))
    if share:
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
    else:
        _money_axis(axes.yaxis)
    words = ["n/a" if value is None else f"{value:.1f}%" if share else usd(value) for value in values]
    description = ", ".join(f"{night['date']}: {word}" for night, word in zip(nights, words, strict=True))
    return _chart(chart_id, title, figure, description=description)


def trend_charts(report: Report) -> list[Chart]:
    """The delivered nights and tonight's: spend of each night's period, untagged share, idle waste."""
    title = f"The last {HISTORY_NIGHTS} nights"
    if report.history is None:
        return [_note("trend", title, "No trend: the report is not delivered (--s3-uri keeps its history).")]
    nights = report.trend
    if len(nights) < 2:
        return [_note("trend", title, "No trend yet: tonight is the first night of the history.")]
    days = report.period.days
    return [
        _nightly(
            "trend-spend",
            f"Spend of the {days} days before each night",
            nights,
            "total_usd",
            f"Spend over {days} days (USD)",
        ),
        _nightly(
            "trend-untagged",
            "Untagged share of spend, night by night",
            nights,
            "untagged_share",
            "Untagged share",
            share=True,
        ),
        _nightly(
            "trend-idle",
            "Idle GPU waste found each night",
            nights,
            "idle_wasted_usd",
            "Wasted while idle (USD)",
        ),
    ]


def charts(report: Report) -> dict[str, list[Chart]]:
    """Every chart of the page by the section it sits in."""
    analysis = report.analysis
    teams = [
        *(analysis.by_team or {}),
        *(finding.tags.get(TEAM) or UNTAGGED_LABEL for finding in report.idle),
    ]
    team_colors = _colors(teams)
    with matplotlib.rc_context(CHART_STYLE):
        return {
            "budget": [_forecast(report), *_budgets(report)],
            "spend": [
                _stacked_daily("team", "Daily spend by team", analysis.daily_by_team, "teams", team_colors),
                _stacked_daily(
                    "environment",
                    "Daily spend by environment",
                    analysis.daily_by_environment,
                    "environments",
                    _colors(analysis.by_environment or {}),
                ),
                _by_service(report),
                _pricing(report),
                *_movers(report),
            ],
            "waste": [_idle(report, team_colors), _untagged_by_tag(report), _untagged_resources(report)],
            "trend": trend_charts(report),
        }


# --- the headline, the tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """One headline figure: what it is, the figure and its unit, a line or two of context; `tone` colors its edge."""

    card_id: str
    label: str
    value: str
    details: tuple[str, ...]
    tone: str = ""
    unit: str = ""


def _spend_card(report: Report) -> Card:
    days = report.period.days
    total, previous = report.analysis.total_usd, report.analysis.previous_total_usd
    details = [
        f"{_day(report.period.start)} to {_day(report.period.last_day)}; "
        f"amortized {usd(report.analysis.total_effective_usd)}"
    ]
    if total is not None and previous is not None:
        change = total - previous
        direction = "up" if change > 0 else "down"
        share = f" ({signed_percent(change / previous * 100)})" if previous else ""
        details.append(f"{direction} {usd(abs(change))}{share} on the previous {days} days' {usd(previous)}")
    return Card("spend", f"Spend, last {days} days", usd(total), tuple(details))


def _month_card(report: Report) -> Card:
    forecast = report.analysis.forecast
    if forecast is None:
        return Card("month", "This month", "n/a", ("total spend is missing",))
    budget = forecast["budget_usd"]
    value = usd(forecast["month_to_date_usd"], 0) + ("" if budget is None else f" of {usd(budget, 0)}")
    _, last = _month_days(forecast["month"])
    outlook = f"Forecast {usd(forecast['forecast_usd'], 0)} by {last:%-d %B}"
    if forecast["lower_usd"] is not None and forecast["upper_usd"] is not None:
        outlook += f" (range {usd(forecast['lower_usd'], 0)} to {usd(forecast['upper_usd'], 0)})"
    if budget:
        outlook += f", {percent(forecast['forecast_usd'] / budget)} of the budget"
    tone = ""
    if budget:
        tone = (
            "bad"
            if forecast["forecast_usd"] > budget
            else "warn"
            if forecast["month_to_date_usd"] > 0.8 * budget
            else "good"
        )
    budget_words = "month to date vs budget" if budget is not None else "month to date (no budget known)"
    return Card(
        "month",
        f"{forecast['month_label']}: {budget_words}",
        value,
        (outlook, forecast_method(forecast)),
        tone,
    )


def _untagged_card(report: Report) -> Card:
    details = [
        f"{usd(report.analysis.untagged_usd)} misses a mandatory tag ({', '.join(report.required_tags)})"
    ]
    details.append(
        f"{plural(len(report.untagged), 'resource')} to tag"
        + (f"; {report.scan_note(UNTAGGED_SCAN)}" if report.scan_note(UNTAGGED_SCAN) else "")
    )
    share = report.untagged_share
    return Card(
        "untagged", "Untagged spend", percent(share), tuple(details), "warn" if share and share > 0.05 else ""
    )


def _idle_card(report: Report) -> Card:
    rate = report.idle_rate
    details = [
        f"if left running; {plural(rate['instances'], 'GPU')} under {rate['threshold_pct']:g}% for {rate['window_hours']:g} h"
    ]
    if report.idle_unpriced:
        details.append(f"{report.idle_unpriced} with {NO_LIST_PRICE}, not in the figure")
    if report.scan_note(IDLE_SCAN):
        details.append(str(report.scan_note(IDLE_SCAN)))
    if rate["instances"] and report.idle_unpriced == rate["instances"]:
        # No idle GPU has a price: "$0/month" would read as no waste at all.
        return Card("idle", "Idle GPUs", "not priced", tuple(details), "bad")
    return Card(
        "idle",
        "Idle GPUs",
        usd(rate["monthly_usd"], 0),
        tuple(details),
        "bad" if rate["instances"] else "good",
        unit="/month",
    )


def _leaks_card(report: Report) -> Card:
    hourly = sum(float(run.get("hourly_cost_usd") or 0.0) for run in report.leftovers)
    count = len(report.leftovers)
    details = [f"expired training runs still owning resources: {usd(hourly * HOURS_PER_MONTH, 0)}/month"]
    if report.scan_note(LEFTOVERS_SCAN):
        details.append(str(report.scan_note(LEFTOVERS_SCAN)))
    return Card("leaks", "Leaks", plural(count, "run"), tuple(details), "bad" if count else "good")


def _recovered_card(report: Report) -> Card:
    recovered = report.recovered
    if recovered is None:
        return Card("recovered", "Reaper recovered", "n/a", ("the training runs were not read",))
    return Card(
        "recovered",
        "Reaper recovered",
        usd(recovered["monthly_usd"], 0),
        (f"{plural(recovered['runs'], 'expired run')} ended and no longer billing",),
        "good" if recovered["runs"] else "",
        unit="/month",
    )


def _spot_card(report: Report) -> Card:
    analysis = report.analysis
    return Card(
        "spot",
        "Spot savings",
        usd(analysis.spot_savings_usd),
        (f"spot is {percent(analysis.spot_share)} of instance spend; saved against on-demand prices",),
    )


def headline(report: Report) -> list[Card]:
    return [
        _spend_card(report),
        _month_card(report),
        _idle_card(report),
        _untagged_card(report),
        _leaks_card(report),
        _recovered_card(report),
        _spot_card(report),
    ]


def showback_csv_uri(report: Report) -> str:
    """The showback CSV as a data: URI, so the link downloads it with the page opened offline."""
    return "data:text/csv;charset=utf-8," + urllib.parse.quote(report.showback.csv())


@dataclass(frozen=True)
class RunRow:
    """One training run as its table row shows it."""

    run: RunCost
    spot_hours: float
    on_demand_hours: float

    @property
    def cost_basis(self) -> str:
        """Where the run's cost comes from: all billed, all estimated, or the estimated part of it."""
        run = self.run
        if run.billed_usd is None:
            return "estimated"
        return f"{usd(run.estimated_usd)} estimated" if run.estimated else "billed"

    @property
    def checkpoint(self) -> str:
        age = self.run.checkpoint_age_minutes
        if age is None:
            return ""
        return f"{age / 60:.1f} h ago" if age >= 90 else f"{age:.0f} min ago"


def run_rows(report: Report) -> list[RunRow]:
    if report.runs is None:
        return []
    rows = []
    for run in report.runs.runs:
        hours = {SPOT: 0.0, ON_DEMAND: 0.0}
        for line in run.usage:
            if line.purchase_option in hours:
                hours[line.purchase_option] += line.hours
        rows.append(RunRow(run, hours[SPOT], hours[ON_DEMAND]))
    return rows


def _change_cell(row: ShowbackRow) -> str:
    return f"{signed_usd(row['change_usd'])} ({signed_percent(row['change_pct'])})"


@cache
def _environment(missing_usd: str) -> jinja2.Environment:
    """The templates' environment; `missing_usd` is what a figure whose source is missing shows."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["usd"] = lambda value, decimals=2: usd(value, decimals, missing_usd)
    environment.filters["signed"] = signed_usd
    environment.filters["pct"] = percent
    environment.filters["signed_pct"] = signed_percent
    environment.filters["price"] = lambda value, unit="": (
        NO_LIST_PRICE if value is None else usd(value) + unit
    )
    environment.filters["hourly"] = lambda value: f"{usd(value, 4)}/h"
    # An action's cost per month is None when nothing prices it (no list price, no line items).
    environment.filters["monthly"] = lambda value: "not priced" if value is None else usd(value)
    environment.filters["day"] = _day
    environment.filters["moment"] = _moment
    environment.filters["change"] = _change_cell
    return environment


def _context(report: Report) -> dict[str, Any]:
    """What both pages show, computed once here so the page and report.md say the same."""
    return {
        "report": report,
        "cards": headline(report),
        "run_rows": run_rows(report),
        "idle_rate": report.idle_rate,
        "gaps": {scan: report.scan_note(scan) for scan in (IDLE_SCAN, UNTAGGED_SCAN, LEFTOVERS_SCAN)},
        "request_cost_usd": report.spend.requests * REQUEST_PRICE_USD,
        "run_rate_days": RUN_RATE_DAYS,
        "TEAM": TEAM,
        "UNTAGGED_LABEL": UNTAGGED_LABEL,
        "IDLE_SCAN": IDLE_SCAN,
        "UNTAGGED_SCAN": UNTAGGED_SCAN,
        "LEFTOVERS_SCAN": LEFTOVERS_SCAN,
        "no_list_price": NO_LIST_PRICE,
        "hours_per_month": HOURS_PER_MONTH,
    }


def render_dashboard(report: Report) -> str:
    """index.html: the headline, then every section, its charts inline SVG; no script, no fetch."""
    return (
        _environment("n/a")
        .get_template("dashboard.html.j2")
        .render(**_context(report), charts=charts(report), showback_csv=showback_csv_uri(report))
    )


def render_markdown(report: Report) -> str:
    """report.md: the dashboard's headline and tables as text (also what goes to Slack)."""
    return _environment("n/a (missing)").get_template("report.md.j2").render(**_context(report))
