"""Time the FOCUS cost source over generated months of FOCUS 1.2 rows: DuckDB, DuckDB with the FOCUS
file, and pandas; and estimate what each Athena query would scan.

    .venv/bin/python bench/focus_scan.py [--rows 1000000 10000000 30000000] [--skip-pandas-above N]

Each size is one billing period of line items laid out as AWS Data Exports delivers them
(`data/BILLING_PERIOD=2026-01/*.snappy.parquet`, 1 M rows a file, 128 Ki rows a row group), with ~50
accounts, 5,000 resources, 30 services, 6 tag keys and hourly GPU lines. It is generated once into
`build/bench/focus-<rows>/` and reused. Every measurement runs in a fresh subprocess, so its peak
RSS (VmHWM) is its own. Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from finops import costs, focus, focus_file
from finops.sandbox.focus_export import SCHEMA
from mlp.tags import DEFAULT_MANDATORY_TAGS

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / "build" / "bench"
EXPORT_NAME = "bench-focus"
MONTH, NEXT_MONTH = date(2026, 1, 1), date(2026, 2, 1)
DAYS = 31
REPORT_DAYS = 30
ACCOUNTS, RESOURCES, SERVICES = 50, 5_000, 30
# Resources below this are GPU instances (a third of the line items: they bill by the hour).
GPU_RESOURCES = 1_750
# Teams run workloads of many resources; a workload's resources carry the same tags.
WORKLOADS = 400
FILE_ROWS = 1_000_000
ROW_GROUP_ROWS = 128 * 1024
DEFAULT_SIZES = (1_000_000, 10_000_000, 30_000_000)
# pandas holds every needed column in memory: past this it would take more than this machine can share.
DEFAULT_PANDAS_MAX_ROWS = 10_000_000
GPU_TYPES = ("g5.xlarge", "g5.12xlarge", "p4d.24xlarge", "g6.2xlarge")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SERVICE_NAMES = pa.array(
    ["Amazon Elastic Compute Cloud - Compute", *(f"Service {n}" for n in range(1, SERVICES))]
)
METERS = pa.array(
    [f"{usage}:{kind}" for usage in ("BoxUsage", "SpotUsage") for kind in GPU_TYPES]
    + [f"Meter-{n}" for n in range(SERVICES)]
)
RESOURCE_NAMES = pa.array([f"r-{n:05d}" for n in range(RESOURCES)])
ACCOUNT_IDS = pa.array([f"{100000000000 + n}" for n in range(ACCOUNTS)])
TAG_VALUES = {
    "team": ["vision", "nlp", "recsys", "search", "ads", "platform"],
    "project": [f"project-{n}" for n in range(20)],
    "environment": ["dev", "staging", "prod"],
    "cost-center": [f"cc-{1000 + n}" for n in range(12)],
    "owner": [f"owner{n}@example.com" for n in range(40)],
    "managed-by": ["pulumi", "terraform"],
}
# Columns the views read: what pandas loads, as DuckDB's projection does.
VIEW_COLUMNS = [
    "ChargePeriodStart",
    "BilledCost",
    "EffectiveCost",
    "ConsumedQuantity",
    "BillingCurrency",
    "ServiceName",
    "RegionId",
    "PricingCategory",
    "CommitmentDiscountType",
    "SkuMeter",
    "Tags",
]


# --- Generation ------------------------------------------------------------------------------------


def resource_tags() -> pa.MapArray:
    """Each resource's `user:` tags, those of its workload; one workload in nine lacks a key."""
    offsets, keys, values = [0], [], []
    for resource_id in range(RESOURCES):
        workload = resource_id % WORKLOADS
        for position, (key, choices) in enumerate(TAG_VALUES.items()):
            if (workload + position) % 9:
                keys.append(f"{focus.USER_TAG_PREFIX}{key}")
                values.append(choices[(workload * (position + 7) + workload // 13) % len(choices)])
        offsets.append(len(keys))
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys), pa.array(values))


def generate_file(rows: int, rng: np.random.Generator, tags_by_resource: pa.MapArray) -> pa.Table:
    """`rows` line items of random resources: GPU instances bill hourly, the other services daily."""
    resource_ids = rng.integers(0, RESOURCES, rows)
    gpu = resource_ids < GPU_RESOURCES
    # A resource is of one service; the GPU instances are EC2's (service 0).
    services = np.where(gpu, 0, 1 + resource_ids % (SERVICES - 1))
    hours = np.where(gpu, rng.integers(0, DAYS * 24, rows), rng.integers(0, DAYS, rows) * 24)
    start = np.datetime64(MONTH.isoformat(), "ms") + hours.astype("timedelta64[h]")
    spot = gpu & (rng.random(rows) < 0.4)
    meter_index = np.where(
        gpu, spot * len(GPU_TYPES) + resource_ids % len(GPU_TYPES), 2 * len(GPU_TYPES) + services
    )
    billed = np.round(rng.gamma(2.0, 1.5, rows), 6)
    columns: dict[str, np.ndarray | pa.Array] = {
        "BilledCost": billed,
        "EffectiveCost": np.round(billed * np.where(spot, 1.0, 0.95), 6),
        "ListCost": billed,
        "ContractedCost": billed,
        "BillingCurrency": pa.array(["USD"]).take(np.zeros(rows, np.int8)),
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + np.where(gpu, 1, 24).astype("timedelta64[h]"),
        "BillingPeriodStart": np.full(rows, np.datetime64(MONTH.isoformat(), "ms")),
        "BillingPeriodEnd": np.full(rows, np.datetime64(NEXT_MONTH.isoformat(), "ms")),
        "ChargeCategory": pa.array(["Usage"]).take(np.zeros(rows, np.int8)),
        "ServiceName": SERVICE_NAMES.take(services),
        "RegionId": pa.array(REGIONS).take(resource_ids % len(REGIONS)),
        "ResourceId": RESOURCE_NAMES.take(resource_ids),
        "SubAccountId": ACCOUNT_IDS.take(resource_ids % ACCOUNTS),
        "PricingCategory": pa.array(["Standard", "Dynamic"]).take(spot.astype(np.int8)),
        "ConsumedQuantity": np.where(gpu, 1.0, np.round(rng.random(rows) * 100, 3)),
        "SkuMeter": METERS.take(meter_index),
        "Tags": tags_by_resource.take(resource_ids),
    }
    arrays = [
        pa.array(columns[field.name]).cast(field.type)
        if field.name in columns
        else pa.nulls(rows, field.type)
        for field in SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def export_root(rows: int) -> Path:
    """The cached export of `rows` rows: `build/bench/focus-<rows>/<export>` (generated if absent)."""
    root = CACHE_DIR / f"focus-{rows}"
    export = root / EXPORT_NAME
    done = root / "complete"
    if done.is_file():
        return export
    partition = export / "data" / f"BILLING_PERIOD={MONTH:%Y-%m}"
    partition.mkdir(parents=True, exist_ok=True)
    for stale in partition.glob("*.parquet"):
        stale.unlink()
    rng = np.random.default_rng(20260101 + rows)
    tags_by_resource = resource_tags()
    started = time.perf_counter()
    for number, offset in enumerate(range(0, rows, FILE_ROWS), start=1):
        table = generate_file(min(FILE_ROWS, rows - offset), rng, tags_by_resource)
        pq.write_table(
            table,
            partition / f"{EXPORT_NAME}-{number:05d}.snappy.parquet",
            compression="snappy",
            row_group_size=ROW_GROUP_ROWS,
        )
    done.write_text(f"{rows}\n")
    print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f} s into {export}", flush=True)
    return export


# --- Measurements (each in its own process) ----------------------------------------------------------


def report_range() -> tuple[date, date]:
    """A 30-day report ending with the generated month."""
    return NEXT_MONTH - timedelta(days=REPORT_DAYS), NEXT_MONTH


def duckdb_views(export: Path) -> str:
    start, end = report_range()
    spend = focus.read_focus_spend(f"file://{export}", start, end)
    assert not spend.missing and spend.line_items is not None
    spend.line_items.close()
    return f"{len(spend.frame):,} view rows"


def duckdb_views_and_file(export: Path) -> str:
    start, end = report_range()
    spend = focus.read_focus_spend(f"file://{export}", start, end)
    assert not spend.missing and spend.line_items is not None
    with spend.line_items as line_items, tempfile.TemporaryDirectory(prefix="focus-bench-out-") as out:
        dataset = focus_file.line_items_dataset(line_items, start, end)
        written = dataset.write(Path(out) / focus_file.PARQUET_NAME, "parquet")
        size, items = written.stat().st_size, pq.ParquetFile(written).metadata.num_rows
    return f"{len(spend.frame):,} view rows, {items:,} line items, {size / 2**20:,.0f} MiB file"


def pandas_views(export: Path) -> str:
    """The views with pandas: the needed columns only, each tag looked up once, then one groupby a view."""
    start, end = report_range()
    table = pq.read_table(export / "data", columns=VIEW_COLUMNS)
    tag_keys = costs.report_tag_keys(DEFAULT_MANDATORY_TAGS)
    tags = table["Tags"]
    table = table.drop_columns(["Tags"])
    for key in tag_keys:
        values = pc.fill_null(pc.map_lookup(tags, f"{focus.USER_TAG_PREFIX}{key}", "first"), "")
        table = table.append_column(costs.tag_column(key), values)
    del tags
    frame = table.to_pandas(strings_to_categorical=True)
    del table
    starts = frame["ChargePeriodStart"]
    frame = frame[(starts >= pd.Timestamp(start, tz=UTC)) & (starts < pd.Timestamp(end, tz=UTC))]
    frame["day"] = frame["ChargePeriodStart"].dt.floor("D")
    meters = frame["SkuMeter"].cat.categories
    instance = meters.str.extract(focus.INSTANCE_METER, expand=False).fillna(costs.NO_INSTANCE_TYPE)
    frame["x_InstanceType"] = frame["SkuMeter"].map(dict(zip(meters, instance, strict=True)))
    frame["x_PurchaseType"] = np.where(
        frame["PricingCategory"] == "Dynamic",
        focus.SPOT_PURCHASE,
        np.where(
            frame["CommitmentDiscountType"] == "Savings Plan",
            focus.SAVINGS_PLAN_PURCHASE,
            np.where(
                frame["CommitmentDiscountType"] == "Reserved",
                focus.RESERVED_PURCHASE,
                focus.ON_DEMAND_PURCHASE,
            ),
        ),
    )
    frame["RegionId"] = (
        frame["RegionId"].cat.add_categories([focus.GLOBAL_REGION]).fillna(focus.GLOBAL_REGION)
    )
    groups = 0
    for view in costs.plan_views(DEFAULT_MANDATORY_TAGS):
        rows = frame
        if view.name == costs.UNTAGGED_VIEW:
            untagged = (frame[[costs.tag_column(key) for key in DEFAULT_MANDATORY_TAGS]] == "").any(axis=1)
            rows = frame[untagged]
        sums = rows.groupby(["day", *focus.group_columns(view), "BillingCurrency"], observed=True)[
            ["BilledCost", "EffectiveCost", "ConsumedQuantity"]
        ].sum()
        groups += len(sums)
    return f"{groups:,} view rows"


MEASUREMENTS: dict[str, Callable[[Path], str]] = {
    "duckdb: views": duckdb_views,
    "duckdb: views + FOCUS file": duckdb_views_and_file,
    "pandas: views": pandas_views,
}


def peak_rss_mib() -> float:
    """This process's high-water resident set (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(measurement: str, rows: int) -> None:
    export = export_root(rows)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    detail = MEASUREMENTS[measurement](export)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss_mib": peak_rss_mib(), "detail": detail}))


def measure(measurement: str, rows: int) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", measurement, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- Athena: bytes each query would scan ---------------------------------------------------------


def athena_scan_estimates(export: Path) -> list[tuple[str, int, int]]:
    """(view, bytes scanned, partitions kept) of each transpiled query, from the Parquet metadata.

    Athena bills the compressed bytes of the columns a query reads in the partitions it keeps; here
    those are read off the column chunks of the generated files.
    """
    start, end = report_range()
    chunk_bytes: dict[str, dict[str, int]] = {}
    for path in sorted((export / "data").glob("BILLING_PERIOD=*/*.parquet")):
        period = path.parent.name.split("=", 1)[1]
        sizes = chunk_bytes.setdefault(period, {})
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for index in range(row_group.num_columns):
                chunk = row_group.column(index)
                column = chunk.path_in_schema.split(".", 1)[0].lower()
                sizes[column] = sizes.get(column, 0) + chunk.total_compressed_size
    estimates = []
    for view in costs.plan_views(DEFAULT_MANDATORY_TAGS):
        text = focus.athena_sql(
            focus.view_sql(view, focus.billing_periods(start, end), start, end),
            database="billing",
            table=focus.athena_table_name(EXPORT_NAME),
        )
        tree = sqlglot.parse_one(text, read="trino")
        columns = {column.name.lower() for column in tree.find_all(exp.Column)}
        kept = {
            literal.name
            for predicate in tree.find_all(exp.In)
            if predicate.this.name.lower() == focus.PARTITION_COLUMN
            for literal in predicate.expressions
        }
        scanned = sum(
            size
            for period in kept
            for column, size in chunk_bytes.get(period, {}).items()
            if column in columns
        )
        estimates.append((view.name, scanned, len(kept & set(chunk_bytes))))
    return estimates


# --- The table -------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--skip-pandas-above", type=int, default=DEFAULT_PANDAS_MAX_ROWS)
    parser.add_argument("--child", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.rows[0])
        return
    # CPU seconds too: on a shared machine the wall clock also measures the neighbours.
    print(
        f"{'measurement':<28} {'rows':>11}  {'seconds':>8}  {'CPU s':>7}  {'rows/s':>12}  {'peak RSS':>10}  detail"
    )
    for rows in args.rows:
        export_root(rows)
        for measurement in MEASUREMENTS:
            if measurement.startswith("pandas") and rows > args.skip_pandas_above:
                print(f"{measurement:<28} {rows:>11,}  skipped: pandas holds every row in memory")
                continue
            result = measure(measurement, rows)
            if "error" in result:
                print(f"{measurement:<28} {rows:>11,}  failed: {result['error']}")
                continue
            seconds = float(result["seconds"])
            print(
                f"{measurement:<28} {rows:>11,}  {seconds:>7.2f}s  {float(result['cpu']):>6.1f}s  "
                f"{rows / seconds:>12,.0f}  "
                f"{float(result['peak_rss_mib']):>7,.0f} MiB  {result['detail']}",
                flush=True,
            )
    print("\nAthena, a 30-day report: bytes each query would scan (an estimate from the Parquet metadata")
    print("of the columns each transpiled query names, in the partitions its billing_period filter keeps;")
    print("Athena itself is not reachable here). $5 per TB scanned, 10 MB minimum per query.")
    for rows in args.rows:
        export = export_root(rows)
        total = sum(path.stat().st_size for path in (export / "data").rglob("*.parquet"))
        print(f"  {rows:,} rows, export {total / 2**20:,.0f} MiB:")
        for view, scanned, partitions in athena_scan_estimates(export):
            billed = max(scanned, 10 * 10**6)
            print(
                f"    {view:<28} {scanned / 2**20:>9,.1f} MiB  {partitions} partition(s)  "
                f"${billed / 10**12 * 5:.5f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
