"""The report's pages from their jinja2 templates: index.html and report.md.

index.html is one self-contained page finance can open anywhere. Charts are plotly figures; plotly.js
is embedded once in the page (no CDN, no network fetch) and the figures' JSON is drawn by one script at
the end of the page, once the layout has settled, so every chart takes the width of its card.
report.md holds the same figures as text (also what goes to Slack).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from finops.analysis import RUN_RATE_DAYS
from finops.costs import REQUEST_PRICE_USD, UNTAGGED_LABEL
from finops.delivery import HISTORY_NIGHTS
from finops.findings import (
    IDLE_SCAN,
    LEFTOVERS_SCAN,
    NO_LIST_PRICE,
    UNTAGGED_SCAN,
    Report,
)
from mlp.tags import TEAM

TEMPLATES = Path(__file__).parent / "templates"
PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#64748b"]
UNTAGGED_COLOR = "#9ca3af"
CHART_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


@dataclass
class Chart:
    """One dashboard tile: a plotly figure (as JSON) or a sentence saying why there is none (note)."""

    chart_id: str
    title: str
    figure: str | None = None
    note: str | None = None

    @property
    def div_id(self) -> str:
        return f"chart-{self.chart_id}"


@cache
def plotly_js() -> str:
    return plotly.offline.get_plotlyjs()


def _layout(figure: go.Figure, **extra: Any) -> go.Figure:
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "colorway": PALETTE,
        # Room at the top for plotly's toolbar, which would otherwise cover the data.
        "margin": {"l": 50, "r": 20, "t": 34, "b": 40},
        "height": 320,
        "legend": {"orientation": "h", "y": -0.18},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "hovermode": "x unified",
    }
    figure.update_layout(**{**layout, **extra})
    return figure


def _chart(chart_id: str, title: str, figure: go.Figure) -> Chart:
    return Chart(chart_id, title, figure=figure.to_json())


def _script_json(value: str) -> str:
    """JSON safe inside a <script> element: tag values and names must not be able to close it."""
    return value.replace("<", "\\u003c")


def _missing(chart_id: str, title: str, what: str) -> Chart:
    return Chart(chart_id, title, note=f"Missing: {what} could not be read from Cost Explorer (see above).")


def _label_color(label: str, index: int) -> str:
    return UNTAGGED_COLOR if label == UNTAGGED_LABEL else PALETTE[index % len(PALETTE)]


def _stacked_daily(chart_id: str, title: str, table: pd.DataFrame | None, kind: str) -> Chart:
    if table is None:
        return _missing(chart_id, title, title.lower())
    figure = go.Figure()
    for index, label in enumerate(table.columns):
        color = _label_color(str(label), index)
        values = table[label].round(2)
        if kind == "area":
            figure.add_trace(
                go.Scatter(
                    x=table.index,
                    y=values,
                    name=str(label),
                    stackgroup="spend",
                    mode="lines",
                    line={"color": color},
                )
            )
        else:
            figure.add_trace(go.Bar(x=table.index, y=values, name=str(label), marker_color=color))
    return _chart(chart_id, title, _layout(figure, barmode="stack", yaxis_tickprefix="$"))


def _by_service(report: Report) -> Chart:
    values = report.analysis.by_service
    title = "Spend by service"
    if values is None:
        return _missing("service", title, "spend by service")
    names = list(values)[::-1]
    figure = go.Figure(
        go.Bar(
            x=[round(values[name], 2) for name in names],
            y=names,
            orientation="h",
            marker_color=PALETTE[0],
        )
    )
    return _chart("service", title, _layout(figure, xaxis_tickprefix="$", hovermode="closest"))


def _spot(report: Report) -> Chart:
    title = "Spend by pricing (spot = Dynamic)"
    table = report.analysis.daily_by_pricing
    if table is None:
        return _missing("spot", title, "spot share and spot savings")
    colors = {"Standard": PALETTE[0], "Dynamic": PALETTE[2], "Committed": PALETTE[4], "Other": PALETTE[8]}
    figure = go.Figure()
    for label in table.columns:
        figure.add_trace(
            go.Bar(
                x=table.index, y=table[label].round(2), name=str(label), marker_color=colors.get(str(label))
            )
        )
    return _chart("spot", title, _layout(figure, barmode="stack", yaxis_tickprefix="$"))


def _untagged_dollars(report: Report) -> Chart:
    title = "Untagged share of spend"
    analysis = report.analysis
    if analysis.untagged_usd is None or analysis.total_usd is None:
        return _missing("untagged-usd", title, "untagged spend")
    tagged = max(analysis.total_usd - analysis.untagged_usd, 0.0)
    figure = go.Figure(
        go.Pie(
            labels=["Carries every mandatory tag", "Missing a mandatory tag"],
            values=[round(tagged, 2), round(analysis.untagged_usd, 2)],
            hole=0.55,
            marker={"colors": [PALETTE[2], PALETTE[3]]},
            sort=False,
        )
    )
    return _chart("untagged-usd", title, _layout(figure, hovermode="closest"))


def _untagged_resources(report: Report) -> Chart:
    title = "Resources missing mandatory tags"
    if not report.untagged:
        note = report.scan_note(UNTAGGED_SCAN) or "Every scanned resource carries the mandatory tags."
        return Chart("untagged-resources", title, note=note)
    counts = Counter(finding.resource_type for finding in report.untagged)
    names = sorted(counts, key=lambda name: counts[name])
    figure = go.Figure(
        go.Bar(x=[counts[name] for name in names], y=names, orientation="h", marker_color=PALETTE[3])
    )
    return _chart("untagged-resources", title, _layout(figure, hovermode="closest", xaxis_title="resources"))


def _idle(report: Report) -> Chart:
    title = "Idle GPU waste"
    gaps = report.scan_note(IDLE_SCAN)
    if not report.idle:
        return Chart("idle", title, note=gaps or "No idle GPU instances.")
    # A bar of $0 would read as "costs nothing": unpriced instances are counted in words instead.
    findings = sorted(
        (finding for finding in report.idle if finding.wasted_usd is not None),
        key=lambda finding: finding.wasted_usd or 0.0,
    )
    if not findings:
        return Chart("idle", title, note=f"{len(report.idle)} idle GPU instances, all with {NO_LIST_PRICE}.")
    labels = [f"{finding.resource_id} ({finding.instance_type})" for finding in findings]
    teams = [finding.tags.get(TEAM, "untagged") for finding in findings]
    figure = go.Figure(
        go.Bar(
            x=[round(finding.wasted_usd or 0.0, 2) for finding in findings],
            y=labels,
            orientation="h",
            marker_color=PALETTE[1],
            customdata=teams,
            hovertemplate="%{y}<br>team %{customdata}<br>$%{x:,.2f} wasted<extra></extra>",
        )
    )
    return _chart("idle", title, _layout(figure, hovermode="closest", xaxis_tickprefix="$"))


def _movers(report: Report) -> Chart:
    title = f"Top movers versus the previous {report.period.days} days"
    movers = report.analysis.top_movers
    if not movers:
        if report.analysis.total_usd is None:
            return _missing("movers", title, "spend by team, environment and service")
        return Chart("movers", title, note="No spend in either period.")
    ordered = movers[::-1]
    figure = go.Figure(
        go.Bar(
            x=[mover["change_usd"] for mover in ordered],
            y=[f"{mover['dimension']}: {mover['name']}" for mover in ordered],
            orientation="h",
            marker_color=[PALETTE[3] if mover["change_usd"] > 0 else PALETTE[2] for mover in ordered],
        )
    )
    return _chart("movers", title, _layout(figure, hovermode="closest", xaxis_tickprefix="$"))


def _forecast(report: Report) -> Chart:
    forecast = report.analysis.forecast
    title = "Month-end forecast"
    if forecast is None or report.analysis.daily_total is None:
        return _missing("forecast", title, "total spend")
    period = report.period
    month_start = pd.Timestamp(period.month_start, tz="UTC")
    daily = report.analysis.daily_total
    actual = daily[daily.index >= month_start].cumsum().round(2)
    figure = go.Figure()
    if len(actual):
        figure.add_trace(go.Scatter(x=actual.index, y=actual, name="month to date", mode="lines+markers"))
    last_day = pd.Timestamp(period.end + timedelta(days=forecast["days_left"] - 1), tz="UTC")
    start_x = actual.index[-1] if len(actual) else pd.Timestamp(period.end, tz="UTC") - pd.Timedelta(days=1)
    figure.add_trace(
        go.Scatter(
            x=[start_x, last_day],
            y=[forecast["month_to_date_usd"], forecast["forecast_usd"]],
            name="forecast at the recent run rate",
            mode="lines+markers",
            line={"dash": "dash", "color": PALETTE[1]},
        )
    )
    return _chart("forecast", title, _layout(figure, yaxis_tickprefix="$"))


def _trend(report: Report) -> Chart:
    """The delivered nights and tonight's: total spend and idle waste in dollars, the untagged share in %."""
    title = f"The last {HISTORY_NIGHTS} nights"
    nights = report.trend
    if report.history is None:
        return Chart(
            "trend", title, note="No trend: the report is not delivered (--s3-uri keeps its history)."
        )
    if len(nights) < 2:
        return Chart("trend", title, note="No trend yet: tonight is the first night of the history.")
    dates = [night["date"] for night in nights]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=dates, y=[night["total_usd"] for night in nights], name="total spend", mode="lines+markers"
        )
    )
    figure.add_trace(
        go.Scatter(
            x=dates,
            y=[night["idle_wasted_usd"] for night in nights],
            name="idle GPU waste",
            mode="lines+markers",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=dates,
            y=[
                None if night["untagged_share"] is None else night["untagged_share"] * 100 for night in nights
            ],
            name="untagged share (%)",
            mode="lines+markers",
            yaxis="y2",
            line={"dash": "dot", "color": PALETTE[3]},
        )
    )
    return _chart(
        "trend",
        title,
        _layout(
            figure,
            yaxis_tickprefix="$",
            yaxis2={"overlaying": "y", "side": "right", "ticksuffix": "%", "rangemode": "tozero"},
        ),
    )


def charts(report: Report) -> list[Chart]:
    analysis = report.analysis
    return [
        _trend(report),
        _stacked_daily("team", "Daily spend by team", analysis.daily_by_team, "area"),
        _stacked_daily("environment", "Daily spend by environment", analysis.daily_by_environment, "bar"),
        _by_service(report),
        _spot(report),
        _untagged_dollars(report),
        _untagged_resources(report),
        _idle(report),
        _movers(report),
        _forecast(report),
    ]


def _price(value: float | None, unit: str = "") -> str:
    """A finding's own dollars: None there means no list price, not a missing part."""
    return NO_LIST_PRICE if value is None else f"${value:,.2f}{unit}"


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
    environment.filters["usd"] = lambda value: missing_usd if value is None else f"${value:,.2f}"
    environment.filters["pct"] = lambda value: "n/a" if value is None else f"{value * 100:.1f}%"
    environment.filters["price"] = _price
    environment.filters["signed"] = lambda value: f"{value:+,.2f}"
    environment.filters["hourly"] = lambda value: f"${value:,.4f}/h"
    return environment


def render_dashboard(report: Report) -> str:
    """The whole page as one string: plotly.js inline once, then every chart and table."""
    template = _environment("n/a").get_template("dashboard.html.j2")
    tiles = charts(report)
    figures = ",".join(f'"{chart.div_id}":{chart.figure}' for chart in tiles if chart.figure is not None)
    return template.render(
        report=report,
        spend=report.findings["spend"],
        line_items=report.line_items,
        charts=tiles,
        figures_json=_script_json("{" + figures + "}"),
        chart_config=json.dumps(CHART_CONFIG),
        plotly_js=plotly_js(),
        request_cost_usd=report.spend.requests * REQUEST_PRICE_USD,
        gaps={scan: report.scan_note(scan) for scan in (IDLE_SCAN, UNTAGGED_SCAN, LEFTOVERS_SCAN)},
        no_list_price=NO_LIST_PRICE,
    )


def render_markdown(report: Report) -> str:
    """report.md: the figures of the dashboard as text (also what goes to Slack)."""
    return (
        _environment("n/a (missing)")
        .get_template("report.md.j2")
        .render(
            report=report,
            run_rate_days=RUN_RATE_DAYS,
            request_price_usd=REQUEST_PRICE_USD,
            TEAM=TEAM,
            UNTAGGED_LABEL=UNTAGGED_LABEL,
            IDLE_SCAN=IDLE_SCAN,
            UNTAGGED_SCAN=UNTAGGED_SCAN,
            LEFTOVERS_SCAN=LEFTOVERS_SCAN,
        )
    )
