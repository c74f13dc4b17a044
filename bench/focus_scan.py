"""Time the FOCUS cost source's views over a generated month of FOCUS 1.2 rows, DuckDB against pandas.

    .venv/bin/python bench/focus_scan.py [ROWS] [--dir DIR]

Writes ROWS line items (default 1,000,000) of one billing period as Parquet, laid out as AWS Data
Exports delivers them, under DIR (default a temporary directory), with ~50 accounts, 5,000 resources,
30 services, 6 tag keys and hourly GPU lines. Then reads the export through `finops.focus` (DuckDB:
every view of the report plus the line items) and does the views' aggregation with pandas, printing
rows, seconds, rows/s and peak RSS of each. Not a test.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from finops import costs, focus
from finops.sandbox.focus_export import SCHEMA
from mlp.tags import DEFAULT_MANDATORY_TAGS

MONTH = date(2026, 1, 1)
DAYS = 31
ACCOUNTS, RESOURCES, SERVICES = 50, 5_000, 30
CHUNK_ROWS = 500_000
GPU_TYPES = ("g5.xlarge", "g5.12xlarge", "p4d.24xlarge", "g6.2xlarge")
TAG_VALUES = {
    "team": ["vision", "nlp", "recsys", "search", "ads", "platform"],
    "project": [f"project-{n}" for n in range(20)],
    "environment": ["dev", "staging", "prod"],
    "cost-center": [f"cc-{1000 + n}" for n in range(12)],
    "owner": [f"owner{n}@example.com" for n in range(40)],
    "managed-by": ["pulumi", "terraform"],
}


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate_chunk(rows: int, rng: np.random.Generator) -> pa.Table:
    """`rows` FOCUS line items: a third hourly GPU instance lines, the rest daily lines of 30 services."""
    resource_ids = rng.integers(0, RESOURCES, rows)
    gpu = rng.random(rows) < 0.35
    services = np.where(gpu, 0, rng.integers(1, SERVICES, rows))
    service_names = np.array(
        ["Amazon Elastic Compute Cloud - Compute", *(f"Service {n}" for n in range(1, SERVICES))]
    )
    hours = np.where(gpu, rng.integers(0, DAYS * 24, rows), rng.integers(0, DAYS, rows) * 24)
    start = pd.Timestamp(MONTH, tz=UTC) + pd.to_timedelta(hours, unit="h")
    spot = gpu & (rng.random(rows) < 0.4)
    gpu_types = np.array(GPU_TYPES)[resource_ids % len(GPU_TYPES)]
    meters = np.where(
        gpu,
        np.where(spot, "SpotUsage:", "BoxUsage:") + gpu_types,
        np.char.add("Meter-", services.astype(str)),
    )
    billed = np.round(rng.gamma(2.0, 1.5, rows), 6)
    tag_maps = []
    for index in range(rows):
        pairs = [
            (f"user:{key}", values[(resource_ids[index] * (position + 7)) % len(values)])
            for position, (key, values) in enumerate(TAG_VALUES.items())
            # One resource in nine lacks a key: some spend is untagged.
            if (resource_ids[index] + position) % 9
        ]
        tag_maps.append(pairs)
    columns = {
        "BilledCost": billed,
        "EffectiveCost": np.round(billed * np.where(spot, 1.0, 0.95), 6),
        "ListCost": billed,
        "BillingCurrency": np.full(rows, "USD"),
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + pd.to_timedelta(np.where(gpu, 1, 24), unit="h"),
        "BillingPeriodStart": np.full(rows, pd.Timestamp(MONTH, tz=UTC)),
        "BillingPeriodEnd": np.full(rows, pd.Timestamp(date(2026, 2, 1), tz=UTC)),
        "ChargeCategory": np.full(rows, "Usage"),
        "ServiceName": service_names[services],
        "RegionId": np.array(["us-east-1", "us-west-2", "eu-west-1"])[resource_ids % 3],
        "ResourceId": np.char.add("r-", resource_ids.astype(str)),
        "SubAccountId": np.char.add("1000000000", (resource_ids % ACCOUNTS).astype(str)),
        "PricingCategory": np.where(spot, "Dynamic", "Standard"),
        "ConsumedQuantity": np.where(gpu, 1.0, rng.random(rows) * 100),
        "SkuMeter": meters,
        "Tags": tag_maps,
    }
    arrays = [
        pa.array(columns[field.name], type=field.type)
        if field.name in columns
        else pa.nulls(rows, field.type)
        for field in SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_export(root: Path, rows: int) -> str:
    """The export under `root`; returns its `file://` URI."""
    export = root / "focus" / "bench-focus"
    partition = export / "data" / f"BILLING_PERIOD={MONTH:%Y-%m}"
    partition.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20260101)
    for number, offset in enumerate(range(0, rows, CHUNK_ROWS), start=1):
        table = generate_chunk(min(CHUNK_ROWS, rows - offset), rng)
        pq.write_table(table, partition / f"bench-focus-{number:05d}.snappy.parquet", compression="snappy")
    return f"file://{export}"


def pandas_views(root: Path) -> int:
    """The views' aggregation with pandas over the same Parquet (tags flattened per key first)."""
    frame = pq.read_table(root).to_pandas()
    tag_dicts = frame["Tags"].map(dict)
    keys = costs.report_tag_keys(DEFAULT_MANDATORY_TAGS)
    for key in keys:
        frame[costs.tag_column(key)] = tag_dicts.map(lambda tags, key=key: tags.get(f"user:{key}", ""))
    frame["day"] = frame["ChargePeriodStart"].dt.floor("D")
    frame["x_InstanceType"] = (
        frame["SkuMeter"].str.extract(focus.INSTANCE_METER, expand=False).fillna("NoInstanceType")
    )
    frame["x_PurchaseType"] = np.where(
        frame["PricingCategory"] == "Dynamic", "Spot Instances", "On Demand Instances"
    )
    groups = 0
    for view in costs.plan_views(DEFAULT_MANDATORY_TAGS):
        columns = focus.group_columns(view)
        rows = frame
        if view.name == costs.UNTAGGED_VIEW:
            rows = frame[(frame[[costs.tag_column(key) for key in DEFAULT_MANDATORY_TAGS]] == "").any(axis=1)]
        groups += len(
            rows.groupby(["day", *columns])[["BilledCost", "EffectiveCost", "ConsumedQuantity"]].sum()
        )
    return groups


def duckdb_views(uri: str, start: date, end: date) -> int:
    """The views alone on DuckDB (no line items), over the export as `finops.focus` loads it."""
    location = focus.parse_focus_uri(uri)
    store = focus.object_store(location)
    periods = focus.billing_periods(start, end)
    partitions = focus.find_partitions(store, location, periods)
    engine = focus.DuckDBEngine()
    engine.load(focus.read_partitions(store, location, partitions))
    return sum(len(engine.query(focus.view_sql(view, periods, start, end))) for view in costs.plan_views())


def timed(label: str, rows: int, work) -> object:
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    print(
        f"{label:<28} {rows:>11,} rows  {seconds:7.2f} s  {rows / seconds:>12,.0f} rows/s  "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="focus-bench-") as scratch:
        root = args.dir or Path(scratch)
        uri = timed("generate + write Parquet", args.rows, lambda: write_export(root, args.rows))
        start, end = MONTH, MONTH + timedelta(days=DAYS)
        spend = timed(
            "duckdb: views + line items", args.rows, lambda: focus.read_focus_spend(uri, start, end)
        )
        timed("duckdb: views only", args.rows, lambda: duckdb_views(uri, start, end))
        assert isinstance(spend, costs.Spend) and not spend.missing
        print(f"  {len(spend.frame):,} view rows, {len(spend.line_items):,} line items")
        data = Path(uri.removeprefix("file://")) / "data"
        groups = timed("pandas: views", args.rows, lambda: pandas_views(data))
        print(f"  {groups:,} pandas groups; started {datetime.now(UTC):%H:%M:%S} UTC")


if __name__ == "__main__":
    main(sys.argv[1:])
