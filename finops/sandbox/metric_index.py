"""A faster GetMetricData for moto while a sandbox runs: same answers, indexed by metric.

moto compares every stored datapoint with every query and every period, so one 500-query call over
24 hourly periods on a 5,000-instance account costs about 10^10 comparisons. This groups the window's
datapoints by metric identity once per call and hands moto's own code just the matching group per
query, so results (statistics, timestamps, labels) stay exactly moto's.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
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


@dataclass
class _Index:
    signature: tuple[int, int, datetime, datetime]
    by_name: dict[tuple[str, str], list[Any]] = field(default_factory=lambda: defaultdict(list))
    by_dimensions: dict[tuple[str, Hashable], list[Any]] = field(default_factory=lambda: defaultdict(list))
    wildcard: list[Any] = field(default_factory=list)


# One index per backend, rebuilt when datapoints were added or the time range changes: a scan asks
# many calls with the same range, and moto only ever appends datapoints.
_indexes: weakref.WeakKeyDictionary[CloudWatchBackend, _Index] = weakref.WeakKeyDictionary()


def _index(backend: CloudWatchBackend, start: datetime, end: datetime) -> _Index:
    signature = (len(backend.metric_data), len(backend.aws_metric_data), start, end)
    with _lock:
        cached = _indexes.get(backend)
    if cached is not None and cached.signature == signature:
        return cached
    index = _Index(signature)
    for datum in backend.get_all_metrics():
        if not start <= datum.timestamp < end:
            continue
        index.by_name[(datum.namespace, datum.name)].append(datum)
        key = _dimensions_key(datum.dimensions)
        if key is None:
            index.wildcard.append(datum)
        else:
            index.by_dimensions[(datum.name, key)].append(datum)
    with _lock:
        _indexes[backend] = index
    return index


def _indexed_get_metric_data(
    self: CloudWatchBackend,
    queries: list[dict[str, Any]],
    start_time: datetime,
    end_time: datetime,
    scan_by: str = "TimestampAscending",
) -> list[dict[str, Any]]:
    if not queries or any("MetricStat" not in query for query in queries):
        return _original_get_metric_data(self, queries, start_time, end_time, scan_by)
    index = _index(self, start_time.replace(microsecond=0), end_time.replace(microsecond=0))
    results: list[dict[str, Any]] = []
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        dimensions = metric.get("Dimensions") or []
        if any(d.get("Value") is None for d in dimensions):
            candidates = self.get_all_metrics()
        elif dimensions:
            key = frozenset((d["Name"], d["Value"]) for d in dimensions)
            candidates = index.by_dimensions.get((metric["MetricName"], key), []) + index.wildcard
        else:
            candidates = index.by_name.get((metric["Namespace"], metric["MetricName"]), [])
        view = _MetricsView(candidates)
        results.extend(_original_get_metric_data(view, [query], start_time, end_time, scan_by))  # type: ignore[arg-type]
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
