"""A faster GetMetricData for moto while a sandbox runs: same answers, indexed by metric.

moto compares every stored datapoint with every query and every period, so one 500-query call over
24 hourly periods on a 5,000-instance account costs about 10^10 comparisons. This groups the window's
datapoints by metric identity once per call and hands moto's own code just the matching group per
query, so results (statistics, timestamps, labels) stay exactly moto's.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable
from datetime import datetime
from typing import Any

from moto.cloudwatch.models import CloudWatchBackend

_original_get_metric_data = CloudWatchBackend.get_metric_data
_lock = threading.Lock()
_installed = 0


class _MetricsView:
    """Stands in for the backend inside moto's get_metric_data, exposing only some datapoints."""

    def __init__(self, metrics: list[Any]) -> None:
        self._metrics = metrics

    def get_all_metrics(self) -> list[Any]:
        return self._metrics


def _dimensions_key(dimensions: Any) -> Hashable | None:
    pairs = [(getattr(d, "name", None), getattr(d, "value", None)) for d in dimensions]
    if any(value is None for _, value in pairs):
        return None  # moto treats a missing value as a wildcard: no exact key
    return frozenset(pairs)


def _indexed_get_metric_data(
    self: CloudWatchBackend,
    queries: list[dict[str, Any]],
    start_time: datetime,
    end_time: datetime,
    scan_by: str = "TimestampAscending",
) -> list[dict[str, Any]]:
    if not queries or any("MetricStat" not in query for query in queries):
        return _original_get_metric_data(self, queries, start_time, end_time, scan_by)
    start, end = start_time.replace(microsecond=0), end_time.replace(microsecond=0)
    by_name: dict[tuple[str, str], list[Any]] = defaultdict(list)
    by_dimensions: dict[tuple[str, Hashable], list[Any]] = defaultdict(list)
    wildcard: list[Any] = []
    for datum in self.get_all_metrics():
        if not start <= datum.timestamp < end:
            continue
        by_name[(datum.namespace, datum.name)].append(datum)
        key = _dimensions_key(datum.dimensions)
        if key is None:
            wildcard.append(datum)
        else:
            by_dimensions[(datum.name, key)].append(datum)
    results: list[dict[str, Any]] = []
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        dimensions = metric.get("Dimensions") or []
        if any(d.get("Value") is None for d in dimensions):
            candidates = self.get_all_metrics()
        elif dimensions:
            key = frozenset((d["Name"], d["Value"]) for d in dimensions)
            candidates = by_dimensions.get((metric["MetricName"], key), []) + wildcard
        else:
            candidates = by_name.get((metric["Namespace"], metric["MetricName"]), [])
        results.extend(
            _original_get_metric_data(_MetricsView(candidates), [query], start_time, end_time, scan_by)
        )  # type: ignore[arg-type]
    return results


def install() -> None:
    """Use the indexed GetMetricData (nestable; each install needs one uninstall)."""
    global _installed
    with _lock:
        _installed += 1
        CloudWatchBackend.get_metric_data = _indexed_get_metric_data  # type: ignore[method-assign]


def uninstall() -> None:
    global _installed
    with _lock:
        _installed = max(0, _installed - 1)
        if _installed == 0:
            CloudWatchBackend.get_metric_data = _original_get_metric_data  # type: ignore[method-assign]
