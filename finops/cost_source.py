"""Where the report's spend comes from: one interface over Cost Explorer and the FOCUS export.

Both answer the same `costs.Spend`; the nightly job reads whichever it is given and does not know
which. The FOCUS export's Spend also carries its line items (`Spend.line_items`, DuckDB only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from finops import costs, focus
from finops.costs import CostView, Spend
from finops.forecast import CostExplorerForecast, ForecastUnavailable, cost_explorer_forecast


class CostSource(Protocol):
    """Reads the spend of [start, end), calling `on_view` as each view starts."""

    @property
    def name(self) -> str:
        """How progress and messages name the source: "Cost Explorer", "FOCUS export"."""
        ...

    def read(
        self,
        start: date,
        end: date,
        *,
        mandatory_tags: Sequence[str],
        on_view: Callable[[CostView], None],
    ) -> Spend: ...

    def forecast(
        self, start: date, end: date, spend: Spend
    ) -> CostExplorerForecast | ForecastUnavailable | None:
        """The source's own forecast of [start, end) after `spend` was read; None when it has none."""
        ...


@dataclass(frozen=True)
class CostExplorerSource:
    """Cost Explorer, paid per request: final days from the cache, at most `max_requests` requests."""

    cache_dir: Path | None = None
    use_cache: bool = True
    max_requests: int = costs.DEFAULT_MAX_REQUESTS
    # Which days are final (and so cached) is decided against this day; None is today (UTC).
    today: date | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    name: str = "Cost Explorer"

    def read(
        self,
        start: date,
        end: date,
        *,
        mandatory_tags: Sequence[str],
        on_view: Callable[[CostView], None],
    ) -> Spend:
        return costs.fetch_spend(
            start,
            end,
            mandatory_tags=mandatory_tags,
            cache_dir=self.cache_dir,
            use_cache=self.use_cache,
            sleep=self.sleep,
            on_view=on_view,
            max_requests=self.max_requests,
            today=self.today,
        )

    def forecast(self, start: date, end: date, spend: Spend) -> CostExplorerForecast | ForecastUnavailable:
        """GetCostForecast, counted in `spend.requests` and within the same request budget."""
        if spend.requests >= self.max_requests:
            return ForecastUnavailable(f"the budget of {self.max_requests} Cost Explorer requests is spent")
        spend.requests += 1
        return cost_explorer_forecast(start, end)


@dataclass(frozen=True)
class FocusExportSource:
    """The account's FOCUS 1.2 export, aggregated by DuckDB here or by Athena in place."""

    export: focus.FocusSource
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    name: str = "FOCUS export"

    def read(
        self,
        start: date,
        end: date,
        *,
        mandatory_tags: Sequence[str],
        on_view: Callable[[CostView], None],
    ) -> Spend:
        return focus.read_focus_spend(
            self.export,
            start,
            end,
            mandatory_tags=mandatory_tags,
            engine=focus.make_engine(self.export, sleep=self.sleep),
            on_view=on_view,
        )

    def forecast(self, start: date, end: date, spend: Spend) -> None:
        """The export has no forecast API: the report states its run-rate method instead."""
        return None


def choose_cost_source(
    export: focus.FocusSource | None,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    max_requests: int = costs.DEFAULT_MAX_REQUESTS,
) -> CostSource:
    """The FOCUS export when one is chosen (`focus.choose_focus_source`), else Cost Explorer."""
    if export is not None:
        return FocusExportSource(export)
    return CostExplorerSource(cache_dir=cache_dir, use_cache=use_cache, max_requests=max_requests)
