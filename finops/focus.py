"""Spend from the account's FOCUS 1.2 export (AWS Data Exports), as the same views Cost Explorer gives.

AWS Data Exports delivers the *FOCUS 1.2 with AWS columns* table (`FOCUS_1_2_AWS`) to S3 as Parquet:

    s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/<export-name>-00001.snappy.parquet
    s3://<bucket>/<prefix>/<export-name>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json

`--focus-uri` is the export's folder, `s3://<bucket>/<prefix>/<export-name>`. Only the billing periods
the read touches are listed and read. The line items of [start, end) are grouped by SQL into the views
of `costs.plan_views` (same `x_CostView` names and columns as the Cost Explorer reader: BilledCost is
UnblendedCost, EffectiveCost is AmortizedCost), so the report is built the same way over either source.

The SQL is written once, in DuckDB's dialect, by `view_sql`. Two engines run it:

- `duckdb` (default): in this process, out of core. The periods' Parquet objects are streamed through
  boto3 (so `AWS_ENDPOINT_URL` and the credentials are `mlp.aws`'s) to a scratch directory (a local
  `file://` export is read in place), and DuckDB reads them natively, only the columns a query names,
  within `SET memory_limit`, spilling to the scratch directory past it. The views' columns, tags
  extracted once, are grouped by day into one small table the views then roll up.
- `athena`: the export's table in the Glue catalog, partitioned by `billing_period`; the SQL is
  transpiled to Trino by sqlglot and filters on that partition, so Athena reads only those months.
  Athena aggregates in place, so its line items are not downloaded (`Spend.line_items` is None).

Line items (DuckDB): `Spend.line_items` is a `LineItems`, the period's rows as a DuckDB relation over
the scratch files, never a pandas frame of them. Whoever reads the spend closes it when the report is
written (`with spend.line_items:` or `.close()`); closing removes the scratch directory.

Tags: AWS writes user tags as `user:<key>` in the `Tags` map; the views read `user:<key>` for each
mandatory key, and the line items' `Tags` is a JSON object with the `user:` prefix removed.

Faults: a billing period with no Parquet object, or an object that cannot be read, is a named
`MissingPart` and the figures are those of the periods that were read; an Athena query that fails
leaves its view out, named missing, as a failed Cost Explorer view does. A URI that is not an export
folder is a `UserError`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import botocore.exceptions
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from boto3.s3.transfer import TransferConfig
from sqlglot import exp

import mlp.aws
from finops import costs
from finops.costs import MissingPart, Spend
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS

COST_EXPLORER_SOURCE = "cost-explorer"
FOCUS_SOURCE = "focus"
COST_SOURCES: tuple[str, ...] = (COST_EXPLORER_SOURCE, FOCUS_SOURCE)
DUCKDB_ENGINE = "duckdb"
ATHENA_ENGINE = "athena"
ENGINES: tuple[str, ...] = (DUCKDB_ENGINE, ATHENA_ENGINE)
FOCUS_URI_ENV = "MLP_FOCUS_URI"
FOCUS_URI_OPTION = "--focus-uri"
DEFAULT_ATHENA_WORKGROUP = "primary"
# DuckDB spills to the scratch directory past this instead of taking the machine's memory.
DEFAULT_MEMORY_LIMIT = "1GB"
# Objects downloaded at once; each is one managed transfer streaming to disk in parts.
DOWNLOAD_WORKERS = 8
TRANSFER_CONFIG = TransferConfig(max_concurrency=4, multipart_chunksize=16 * 1024 * 1024)

# The relation every query reads: a DuckDB view, or the Athena table put in its place.
EXPORT_RELATION = "focus_export"
# The views' columns of the period by day, tags extracted: what every view rolls up.
DAILY_SPEND_RELATION = "focus_daily_spend"
# The relation `LineItems.aggregate` queries are written against.
LINE_ITEMS_RELATION = "line_items"
PARTITION_COLUMN = "billing_period"
# The partition's folder name as AWS writes it (`BILLING_PERIOD=YYYY-MM`), hive-style.
HIVE_PARTITION = "BILLING_PERIOD"
USER_TAG_PREFIX = "user:"
# Cost Explorer's REGION for spend of no region (FOCUS leaves RegionId null).
GLOBAL_REGION = "global"
# Cost Explorer's PURCHASE_TYPE values, derived from FOCUS's pricing and commitment columns.
ON_DEMAND_PURCHASE = "On Demand Instances"
SPOT_PURCHASE = "Spot Instances"
SAVINGS_PLAN_PURCHASE = "Savings Plans"
RESERVED_PURCHASE = "Reserved Instances"
# The instance-hour meters (SkuMeter, CUR's usage type) whose suffix is the instance or node type.
INSTANCE_METER = (
    r"(?:BoxUsage|SpotUsage|DedicatedUsage|HostUsage|NodeUsage|InstanceUsage|SchedUsage):([^:]+)$"
)

DAY_COLUMN = "ChargeDay"
ISO_8601_UTC = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ExportLocation:
    """Where an export lives: `s3://bucket/prefix/export-name`, or `file:///dir/export-name`."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    @property
    def export_name(self) -> str:
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]

    def partition_prefix(self, billing_period: str) -> str:
        return f"{self.prefix}/data/BILLING_PERIOD={billing_period}/"

    @property
    def data_prefix(self) -> str:
        return f"{self.prefix}/data/BILLING_PERIOD="


def parse_focus_uri(uri: str) -> ExportLocation:
    """The export folder a `--focus-uri` names; a `UserError` saying how to fix anything else."""
    parsed = urlparse(uri.strip())
    example = "s3://my-billing-bucket/exports/focus-1-2"
    if parsed.scheme == "file":
        path = Path(parsed.path)
        return ExportLocation("file", str(path.parent).rstrip("/") or "/", path.name)
    prefix = parsed.path.strip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not prefix or parsed.query or parsed.fragment:
        raise UserError(
            f"{FOCUS_URI_OPTION} {uri!r}: use the FOCUS export's folder as s3://bucket/prefix/export-name "
            f"(the one holding data/ and metadata/), e.g. {example}"
        )
    return ExportLocation("s3", parsed.netloc, prefix)


def athena_table_name(export_name: str) -> str:
    """The Glue table of an export by default: its name as Athena allows (lowercase, underscores)."""
    return re.sub(r"[^a-z0-9_]", "_", export_name.lower())


@dataclass(frozen=True)
class AthenaSettings:
    workgroup: str = DEFAULT_ATHENA_WORKGROUP
    database: str = ""
    table: str = ""


@dataclass(frozen=True)
class FocusSource:
    """The FOCUS export a report reads, and the engine that aggregates it."""

    uri: str
    engine: str = DUCKDB_ENGINE
    athena: AthenaSettings = field(default_factory=AthenaSettings)

    def describe(self) -> str:
        return f"FOCUS export {self.uri} ({self.engine})"


def choose_focus_source(
    cost_source: str | None,
    focus_uri: str | None,
    *,
    engine: str | None = None,
    athena_workgroup: str | None = None,
    athena_database: str | None = None,
    athena_table: str | None = None,
) -> FocusSource | None:
    """The FOCUS source the flags ask for, or None for Cost Explorer.

    `focus_uri` falls back to `$MLP_FOCUS_URI`; the source is `focus` by default when there is a URI.
    """
    focus_uri = focus_uri or os.environ.get(FOCUS_URI_ENV) or None
    engine = engine or DUCKDB_ENGINE
    chosen = cost_source or (FOCUS_SOURCE if focus_uri else COST_EXPLORER_SOURCE)
    if chosen not in COST_SOURCES:
        raise UserError(f"--cost-source {chosen!r}: use one of {', '.join(COST_SOURCES)}")
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    if chosen == COST_EXPLORER_SOURCE:
        return None
    if not focus_uri:
        raise UserError(
            f"--cost-source {FOCUS_SOURCE} needs {FOCUS_URI_OPTION} s3://bucket/prefix/export-name "
            f"(or {FOCUS_URI_ENV}); or use --cost-source {COST_EXPLORER_SOURCE}"
        )
    location = parse_focus_uri(focus_uri)
    athena = AthenaSettings()
    if engine == ATHENA_ENGINE:
        if not athena_database:
            raise UserError(
                "--engine athena needs --athena-database, the Glue database of the export's table"
            )
        athena = AthenaSettings(
            workgroup=athena_workgroup or DEFAULT_ATHENA_WORKGROUP,
            database=athena_database,
            table=athena_table or athena_table_name(location.export_name),
        )
    return FocusSource(uri=location.uri, engine=engine, athena=athena)


def billing_periods(start: date, end: date) -> list[str]:
    """The `YYYY-MM` billing periods that the days [start, end) touch."""
    periods: list[str] = []
    month = start.replace(day=1)
    while month < end:
        periods.append(f"{month:%Y-%m}")
        month = (month + timedelta(days=32)).replace(day=1)
    return periods


# --- The SQL (DuckDB dialect; the Athena engine transpiles it) -----------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def identifier_sql(name: str) -> str:
    """A column name as SQL (DuckDB and Trino both quote with double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def tag_sql(key: str) -> str:
    """The value of a user tag, '' when absent or empty (Cost Explorer's `key$` bucket)."""
    return f"COALESCE(Tags[{_literal(USER_TAG_PREFIX + key)}], '')"


# The export's columns each dimension is computed from; the daily spend keeps them as they are.
DIMENSION_INPUTS = {
    "SERVICE": ("ServiceName",),
    "REGION": ("RegionId",),
    "PURCHASE_TYPE": ("PricingCategory", "CommitmentDiscountType"),
    "INSTANCE_TYPE": ("SkuMeter",),
    "LINKED_ACCOUNT": ("SubAccountId", "SubAccountName"),
}
PURCHASE_TYPE_SQL = (
    f"CASE WHEN PricingCategory = 'Dynamic' THEN {_literal(SPOT_PURCHASE)} "
    f"WHEN CommitmentDiscountType = 'Savings Plan' THEN {_literal(SAVINGS_PLAN_PURCHASE)} "
    f"WHEN CommitmentDiscountType = 'Reserved' THEN {_literal(RESERVED_PURCHASE)} "
    f"ELSE {_literal(ON_DEMAND_PURCHASE)} END"
)
INSTANCE_TYPE_SQL = (
    f"COALESCE(NULLIF(regexp_extract(SkuMeter, {_literal(INSTANCE_METER)}, 1), ''), "
    f"{_literal(costs.NO_INSTANCE_TYPE)})"
)
DIMENSION_SQL = {
    "SERVICE": "ServiceName",
    "REGION": f"COALESCE(RegionId, {_literal(GLOBAL_REGION)})",
    "PURCHASE_TYPE": PURCHASE_TYPE_SQL,
    "INSTANCE_TYPE": INSTANCE_TYPE_SQL,
    "LINKED_ACCOUNT": "COALESCE(SubAccountId, '')",
}
# What Cost Explorer describes a dimension's value with (its `DimensionValueAttributes`): a frame
# column and its aggregate, the id where the export has no name, as Cost Explorer falls back to.
DIMENSION_ATTRIBUTES = {
    "LINKED_ACCOUNT": ("SubAccountName", "MAX(COALESCE(NULLIF(SubAccountName, ''), SubAccountId, ''))"),
}


def period_filter_sql(periods: Sequence[str], start: date, end: date) -> str:
    """The partitions (what Athena prunes on) and the charge days [start, end)."""
    partitions = ", ".join(_literal(period) for period in periods)
    return (
        f"{PARTITION_COLUMN} IN ({partitions}) "
        f"AND ChargePeriodStart >= TIMESTAMP {_literal(f'{start} 00:00:00')} "
        f"AND ChargePeriodStart < TIMESTAMP {_literal(f'{end} 00:00:00')}"
    )


def _view_tag_keys(view: costs.CostView, mandatory_tags: Sequence[str]) -> list[str]:
    """The tags a view groups by, and the mandatory ones the untagged view filters on."""
    keys = list(view.tag_keys)
    if view.name == costs.UNTAGGED_VIEW:
        keys += [key for key in mandatory_tags if key not in keys]
    return keys


def daily_spend_sql(
    views: Sequence[costs.CostView],
    periods: Sequence[str],
    start: date,
    end: date,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
) -> str:
    """The line items of [start, end) summed by day and by every column the views group on.

    One pass over the export for all the views: each tag is looked up in the `Tags` map once, and only
    the columns the views need are read (what Athena bills and what DuckDB decodes).
    """
    inputs = [
        column
        for dimension in DIMENSION_INPUTS
        if any(dimension == key for view in views for kind, key in view.group_by if kind == "DIMENSION")
        for column in DIMENSION_INPUTS[dimension]
    ]
    tag_keys = list(dict.fromkeys(key for view in views for key in _view_tag_keys(view, mandatory_tags)))
    keys = [
        f"CAST(ChargePeriodStart AS DATE) AS {DAY_COLUMN}",
        *inputs,
        *(f"{tag_sql(key)} AS {identifier_sql(costs.tag_column(key))}" for key in tag_keys),
        "BillingCurrency",
    ]
    sums = ["SUM(BilledCost) AS BilledCost", "SUM(EffectiveCost) AS EffectiveCost"]
    if any(costs.USAGE_METRIC in view.metrics for view in views):
        sums.append("SUM(COALESCE(ConsumedQuantity, 0)) AS ConsumedQuantity")
    ordinals = ", ".join(str(index) for index in range(1, len(keys) + 1))
    return (
        f"SELECT {', '.join([*keys, *sums])} FROM {EXPORT_RELATION} "
        f"WHERE {period_filter_sql(periods, start, end)} GROUP BY {ordinals}"
    )


def _group_sql(kind: str, key: str) -> str:
    return identifier_sql(costs.tag_column(key)) if kind == "TAG" else DIMENSION_SQL[key]


def group_columns(view: costs.CostView) -> list[str]:
    """The frame column of each GroupBy key of a view, in order."""
    return [
        costs.tag_column(key) if kind == "TAG" else costs.DIMENSION_COLUMNS[key]
        for kind, key in view.group_by
    ]


def _attributes(view: costs.CostView) -> list[tuple[str, str]]:
    return [DIMENSION_ATTRIBUTES[key] for kind, key in view.group_by if key in DIMENSION_ATTRIBUTES]


def view_columns(view: costs.CostView) -> list[str]:
    """The columns `view_sql` answers, in order (Athena's result labels are not trusted for case)."""
    columns = [DAY_COLUMN, *group_columns(view), "BillingCurrency", "BilledCost", "EffectiveCost"]
    if costs.USAGE_METRIC in view.metrics:
        columns.append("ConsumedQuantity")
    return [*columns, *(column for column, _ in _attributes(view))]


def rollup_sql(view: costs.CostView, mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS) -> str:
    """One view of `costs.plan_views` as a daily GROUP BY over the daily spend (`daily_spend_sql`)."""
    groups = [_group_sql(kind, key) for kind, key in view.group_by]
    selects = [
        DAY_COLUMN,
        *(f"{sql} AS group_{index}" for index, sql in enumerate(groups)),
        "BillingCurrency",
        "SUM(BilledCost) AS BilledCost",
        "SUM(EffectiveCost) AS EffectiveCost",
    ]
    if costs.USAGE_METRIC in view.metrics:
        selects.append("SUM(ConsumedQuantity) AS ConsumedQuantity")
    # Last, after the aggregates: the GROUP BY ordinals below count the group keys only.
    selects += [f"{sql} AS {identifier_sql(column)}" for column, sql in _attributes(view)]
    where = ""
    if view.name == costs.UNTAGGED_VIEW:
        # Cost Explorer's ABSENT filter: spend missing at least one mandatory tag.
        absent = (f"{identifier_sql(costs.tag_column(key))} = ''" for key in mandatory_tags)
        where = " WHERE " + " OR ".join(absent)
    ordinals = ", ".join(str(index) for index in range(1, len(groups) + 3))
    return (
        f"SELECT {', '.join(selects)} FROM {DAILY_SPEND_RELATION}{where} "
        f"GROUP BY {ordinals} ORDER BY {ordinals}"
    )


def view_sql(
    view: costs.CostView,
    periods: Sequence[str],
    start: date,
    end: date,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
) -> str:
    """One view on its own (what Athena runs): its daily spend, only its columns, then its rollup."""
    daily = daily_spend_sql([view], periods, start, end, mandatory_tags)
    return f"WITH {DAILY_SPEND_RELATION} AS ({daily}) {rollup_sql(view, mandatory_tags)}"


def line_items_sql(periods: Sequence[str], start: date, end: date) -> str:
    """The export's own rows of [start, end), `Tags` as JSON without the `user:` prefix (DuckDB only).

    In the export's order: sorting every column of a month would cost more than the whole read.
    """
    # to_json writes a key as `"<key>":` after `{` or `,`, and escapes every quote inside a string, so
    # `{"user:` and `,"user:` only ever open a key: two string replaces, not a rebuilt map a row.
    normalised = "to_json(Tags)"
    for opener in ("{", ","):
        key_start = opener + '"'
        prefixed = _literal(key_start + USER_TAG_PREFIX)
        normalised = f"replace({normalised}, {prefixed}, {_literal(key_start)})"
    return (
        f"SELECT * EXCLUDE ({PARTITION_COLUMN}) REPLACE ({normalised} AS Tags) FROM {EXPORT_RELATION} "
        f"WHERE {period_filter_sql(periods, start, end)}"
    )


def _map_subscript_to_element_at(node: exp.Expression) -> exp.Expression:
    # DuckDB's map['k'] is NULL for a missing key, Trino's fails the query; element_at is Trino's NULL.
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1 and node.expressions[0].is_string:
        return exp.Anonymous(this="element_at", expressions=[node.this, node.expressions[0]])
    return node


def athena_sql(sql: str, *, database: str, table: str) -> str:
    """A query of `view_sql` in Trino's dialect, reading `database.table`."""
    tree = sqlglot.parse_one(sql, read="duckdb").transform(_map_subscript_to_element_at)
    for relation in tree.find_all(exp.Table):
        if relation.name == EXPORT_RELATION:
            relation.replace(exp.table_(table, db=database, quoted=True))
    return tree.sql(dialect="trino")


# --- Reading the export's objects -----------------------------------------------------------------


class ObjectStore(Protocol):
    def has_keys(self, prefix: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def local_path(self, key: str, scratch: Path) -> Path: ...


class S3Store:
    """The export's bucket through `mlp.aws` (endpoint, credentials, retries)."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self.client = client or mlp.aws.client("s3")

    def has_keys(self, prefix: str) -> bool:
        with mlp.aws.aws_errors(f"listing s3://{self.bucket}/{prefix}"):
            return bool(
                self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1).get("Contents")
            )

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with mlp.aws.aws_errors(f"listing s3://{self.bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def local_path(self, key: str, scratch: Path) -> Path:
        """The object streamed to `scratch/<key>` by a managed transfer: parts, never the whole in memory."""
        path = scratch / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with mlp.aws.aws_errors(f"reading s3://{self.bucket}/{key}"):
            self.client.download_file(self.bucket, key, str(path), Config=TRANSFER_CONFIG)
        return path


class LocalStore:
    """An export on local disk, laid out as in S3 (`file://`), read where it is."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def list_keys(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = self.root / folder
        if not base.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root))
            for entry in base.iterdir()
            if entry.name.startswith(start)
            for path in (entry.rglob("*") if entry.is_dir() else [entry])
            if path.is_file()
        )

    def has_keys(self, prefix: str) -> bool:
        return bool(self.list_keys(prefix))

    def local_path(self, key: str, scratch: Path) -> Path:
        return self.root / key


def object_store(location: ExportLocation) -> ObjectStore:
    return LocalStore(location.bucket) if location.scheme == "file" else S3Store(location.bucket)


@dataclass
class ExportPartitions:
    """The billing periods found (with their Parquet keys) and those missing, named."""

    keys: dict[str, list[str]]
    missing: list[MissingPart]


def find_partitions(store: ObjectStore, location: ExportLocation, periods: Sequence[str]) -> ExportPartitions:
    """Lists each period's partition; a URI with no partition at all is the user's to fix."""
    try:
        if not store.has_keys(location.data_prefix):
            raise UserError(
                f"{FOCUS_URI_OPTION} {location.uri}: no FOCUS export there (nothing under "
                f"{location.data_prefix}YYYY-MM/); pass the export's folder, the one holding data/ and metadata/"
            )
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise UserError(
            f"{FOCUS_URI_OPTION} {location.uri}: cannot list the export ({code}); check the bucket name "
            "and that these credentials may read it"
        ) from exc
    keys: dict[str, list[str]] = {}
    missing: list[MissingPart] = []
    for period in periods:
        prefix = location.partition_prefix(period)
        parquet = [key for key in store.list_keys(prefix) if key.endswith(".parquet")]
        if parquet:
            keys[period] = parquet
        else:
            missing.append(
                MissingPart(
                    f"FOCUS export {period}",
                    f"no Parquet object under {location.scheme}://{location.bucket}/{prefix}: the export "
                    "has not delivered this month (an export starts with the month it was created)",
                )
            )
    return ExportPartitions(keys=keys, missing=missing)


def _staged(store: ObjectStore, key: str, scratch: Path) -> Path:
    path = store.local_path(key, scratch)
    pq.read_metadata(path)  # the footer: an object that is not Parquet fails here, not in a view
    return path


def stage_partitions(
    store: ObjectStore, location: ExportLocation, partitions: ExportPartitions, scratch: Path
) -> dict[str, list[Path]]:
    """Each period's objects as local files, downloaded in parallel into `scratch` (S3) or in place.

    A period with an object that cannot be fetched or is not Parquet is left out, named missing.
    """
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
        futures = {
            period: [pool.submit(_staged, store, key, scratch) for key in keys]
            for period, keys in partitions.keys.items()
        }
        files: dict[str, list[Path]] = {}
        for period, staged in futures.items():
            try:
                files[period] = [future.result() for future in staged]
            except (botocore.exceptions.ClientError, UserError, pa.ArrowException, OSError) as exc:
                partitions.missing.append(
                    MissingPart(
                        f"FOCUS export {period}",
                        f"an object under {location.uri}/data/BILLING_PERIOD={period}/ could not be read "
                        f"({' '.join(str(exc).split())[:200]})",
                    )
                )
    return files


# --- Line items -----------------------------------------------------------------------------------


class LineItems:
    """The FOCUS export's line items of a period as a DuckDB relation, never loaded whole.

    `aggregate(sql)` runs DuckDB SQL over the relation `line_items` and answers a pandas frame;
    `write(path, fmt)` streams the rows to Parquet or CSV with DuckDB's COPY. One built by
    `read_focus_spend` owns its connection and scratch directory until `close()` (or the end of a
    `with` block); one built by `select` borrows its parent's and closes nothing.
    """

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, sql: str, resources: ExitStack | None = None
    ) -> None:
        self.connection = connection
        self.sql = sql
        self._resources = resources or ExitStack()
        self._length: int | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> LineItems:
        """Line items held in a pandas frame (tests, small data), on a connection of their own."""
        connection = _connect()
        connection.register("line_items_frame", frame)
        resources = ExitStack()
        resources.callback(connection.close)
        return cls(connection, "SELECT * FROM line_items_frame", resources)

    def _relation(self) -> None:
        # Every LineItems of a connection queries the one name `line_items`: point it at this one's rows.
        self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {LINE_ITEMS_RELATION} AS {self.sql}")

    def aggregate(self, sql: str) -> pd.DataFrame:
        """The answer of a DuckDB query over the relation `line_items`."""
        self._relation()
        return self.connection.execute(sql).df()

    def select(self, sql: str) -> LineItems:
        """The rows a DuckDB query over `line_items` answers, as line items on the same connection."""
        return LineItems(self.connection, f"WITH {LINE_ITEMS_RELATION} AS ({self.sql}) {sql}")

    def write(self, path: Path, fmt: Literal["parquet", "csv"]) -> Path:
        """The rows to `path`, streamed by DuckDB; CSV timestamps in ISO 8601 UTC, as FOCUS asks."""
        options = {
            "parquet": "FORMAT parquet, COMPRESSION snappy",
            "csv": f"FORMAT csv, HEADER, TIMESTAMPFORMAT {_literal(ISO_8601_UTC)}",
        }[fmt]
        self._relation()
        self.connection.execute(
            f"COPY (SELECT * FROM {LINE_ITEMS_RELATION}) TO {_literal(str(path))} ({options})"
        )
        return path

    @property
    def columns(self) -> list[str]:
        self._relation()
        return [row[0] for row in self.connection.execute(f"DESCRIBE {LINE_ITEMS_RELATION}").fetchall()]

    def __len__(self) -> int:
        if self._length is None:
            (self._length,) = self.aggregate(f"SELECT count(*) FROM {LINE_ITEMS_RELATION}").iloc[0]
        return int(self._length)

    def close(self) -> None:
        """Close the connection and remove the scratch directory, if this one owns them."""
        self._resources.close()

    def __enter__(self) -> LineItems:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


# --- Engines ---------------------------------------------------------------------------------------


class QueryFailed(Exception):
    """A query that did not answer; its view becomes a missing part with this reason."""


def _connect(
    memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(f"SET memory_limit = {_literal(memory_limit)}")
    connection.execute(f"SET threads = {threads or os.cpu_count() or 1}")
    # Charge days are UTC days, as Cost Explorer's are.
    connection.execute("SET TimeZone = 'UTC'")
    return connection


class DuckDBEngine:
    """The SQL in this process over the export's Parquet files, within a memory limit."""

    name = DUCKDB_ENGINE

    def __init__(self, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None) -> None:
        self.connection = _connect(memory_limit, threads)

    def load(self, files: dict[str, list[Path]], scratch: Path) -> None:
        """The periods' files as the one relation the SQL reads, with their partition column."""
        self.connection.execute(f"SET temp_directory = {_literal(str(scratch / 'spill'))}")
        paths = ", ".join(_literal(str(path)) for period_files in files.values() for path in period_files)
        # The files listed, not a glob: a period left out as unreadable must stay out. BY NAME: a month
        # may carry a column an older month lacks.
        self.connection.execute(
            f"CREATE OR REPLACE VIEW {EXPORT_RELATION} AS SELECT * FROM read_parquet([{paths}], "
            f"hive_partitioning = true, hive_types = {{{_literal(HIVE_PARTITION)}: VARCHAR}}, "
            "union_by_name = true)"
        )

    def define(self, relation: str, sql: str) -> None:
        """`relation` computed once as a table, for the queries that follow to read."""
        self.query(f"CREATE OR REPLACE TEMP TABLE {relation} AS {sql}")

    def query(self, sql: str) -> pd.DataFrame:
        try:
            return self.connection.execute(sql).df()
        except duckdb.Error as exc:
            raise QueryFailed(f"DuckDB could not run the query ({' '.join(str(exc).split())[:200]})") from exc

    def line_items(self, sql: str, scratch: tempfile.TemporaryDirectory[str]) -> LineItems:
        """The rows of `sql` as line items that own this connection and the scratch directory."""
        resources = ExitStack()
        resources.callback(scratch.cleanup)
        resources.callback(self.connection.close)  # callbacks run last first: closed, then removed
        return LineItems(self.connection, sql, resources)


ATHENA_DONE_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ATHENA_NUMBER_TYPES = frozenset(
    {"double", "float", "real", "decimal", "bigint", "integer", "int", "smallint", "tinyint"}
)


class AthenaEngine:
    """The SQL on Athena: start, poll until done, page the results.

    boto3's Athena client from `mlp.aws`, not PyAthena: PyAthena builds its own boto3 session (past
    the one place that sets endpoint, retries and error lines) and waits with its own sleeps, where
    this polls with an injectable `sleep` and names a query that fails instead of raising.
    """

    name = ATHENA_ENGINE

    def __init__(
        self,
        settings: AthenaSettings,
        *,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = 1.0,
        max_polls: int = 900,
    ) -> None:
        self.settings = settings
        self.client = client or mlp.aws.client("athena")
        self.sleep = sleep
        self.poll_seconds = poll_seconds
        self.max_polls = max_polls
        self.query_ids: list[str] = []

    def query(self, sql: str) -> pd.DataFrame:
        text = athena_sql(sql, database=self.settings.database, table=self.settings.table)
        with mlp.aws.aws_errors("starting an Athena query"):
            query_id = self.client.start_query_execution(
                QueryString=text,
                QueryExecutionContext={"Database": self.settings.database},
                WorkGroup=self.settings.workgroup,
            )["QueryExecutionId"]
        self.query_ids.append(query_id)
        self._wait(query_id)
        return self._results(query_id)

    def _wait(self, query_id: str) -> None:
        for _ in range(self.max_polls):
            with mlp.aws.aws_errors("polling an Athena query"):
                status = self.client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"][
                    "Status"
                ]
            state = status.get("State", "")
            if state == "SUCCEEDED":
                return
            if state in ATHENA_DONE_STATES:
                reason = status.get("StateChangeReason") or "no reason given"
                raise QueryFailed(f"Athena query {query_id} {state}: {' '.join(reason.split())[:200]}")
            self.sleep(self.poll_seconds)
        raise QueryFailed(f"Athena query {query_id} still running after {self.max_polls} polls")

    def _results(self, query_id: str) -> pd.DataFrame:
        rows: list[list[str | None]] = []
        types: list[str] = []
        with mlp.aws.aws_errors("reading Athena results"):
            for page in self.client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
                result_set = page["ResultSet"]
                if not types:
                    types = [
                        column["Type"].lower() for column in result_set["ResultSetMetadata"]["ColumnInfo"]
                    ]
                    # The first row of a SELECT's first page is its column labels.
                    page_rows = result_set["Rows"][1:]
                else:
                    page_rows = result_set["Rows"]
                rows += [[cell.get("VarCharValue") for cell in row["Data"]] for row in page_rows]
        frame = pd.DataFrame(rows, columns=range(len(types)))
        for index, kind in enumerate(types):
            if kind in ATHENA_NUMBER_TYPES:
                frame[index] = pd.to_numeric(frame[index]).astype("float64")
            elif kind in ("date", "timestamp"):
                frame[index] = pd.to_datetime(frame[index])
        return frame


Engine = DuckDBEngine | AthenaEngine


def make_engine(source: FocusSource, *, sleep: Callable[[float], None] = time.sleep) -> Engine:
    if source.engine == ATHENA_ENGINE:
        return AthenaEngine(source.athena, sleep=sleep)
    return DuckDBEngine()


# --- The cost source ------------------------------------------------------------------------------


def _tags_json(tag_columns: Sequence[str], values: Sequence[str]) -> str:
    tags = {
        column[len(costs.TAG_COLUMN_PREFIX) :]: value
        for column, value in zip(tag_columns, values, strict=True)
        if value
    }
    return json.dumps(tags, sort_keys=True)


def _view_rows(view: costs.CostView, answer: pd.DataFrame) -> list[dict[str, Any]]:
    """The answer's rows as `costs.focus_frame` takes them; column lists zipped, not pandas rows."""
    answer = answer.set_axis(view_columns(view), axis=1)
    days = [day.date() for day in pd.to_datetime(answer.pop(DAY_COLUMN))]
    names = list(answer.columns)
    tag_columns = [costs.tag_column(key) for key in view.tag_keys]
    tags_json: dict[tuple[str, ...], str] = {}  # a view's rows share few tag combinations
    rows = []
    columns = zip(*(answer[name].tolist() for name in names), strict=True)
    for day, values in zip(days, columns, strict=True):
        record = dict(zip(names, values, strict=True))
        tags = tuple(record[column] for column in tag_columns)
        if tags not in tags_json:
            tags_json[tags] = _tags_json(tag_columns, tags)
        record["ChargePeriodStart"] = day
        record["x_CostView"] = view.name
        record["x_Estimated"] = False  # the export has no estimated flag; a restated day is rewritten
        record["Tags"] = tags_json[tags]
        rows.append(record)
    return rows


def _duckdb_answers(
    engine: DuckDBEngine,
    views: Sequence[costs.CostView],
    present: Sequence[str],
    start: date,
    end: date,
    mandatory_tags: Sequence[str],
) -> Iterable[tuple[costs.CostView, pd.DataFrame | QueryFailed]]:
    """Every view from one daily-spend table: the export is scanned once, not once per view."""
    try:
        engine.define(DAILY_SPEND_RELATION, daily_spend_sql(views, present, start, end, mandatory_tags))
    except QueryFailed as exc:
        yield from ((view, exc) for view in views)
        return
    for view in views:
        try:
            yield view, engine.query(rollup_sql(view, mandatory_tags))
        except QueryFailed as exc:
            yield view, exc


def _athena_answers(
    engine: AthenaEngine,
    views: Sequence[costs.CostView],
    present: Sequence[str],
    start: date,
    end: date,
    mandatory_tags: Sequence[str],
) -> Iterable[tuple[costs.CostView, pd.DataFrame | QueryFailed]]:
    """One query a view, each scanning only its own columns."""
    for view in views:
        try:
            yield view, engine.query(view_sql(view, present, start, end, mandatory_tags))
        except QueryFailed as exc:
            yield view, exc


def read_focus_spend(
    source: FocusSource | str,
    start: date,
    end: date,
    *,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
    engine: Engine | None = None,
    store: ObjectStore | None = None,
    on_view: Callable[[costs.CostView], None] | None = None,
) -> Spend:
    """Spend of [start, end) from a FOCUS export, as `costs.read_spend` gives it from Cost Explorer.

    `source` is a `FocusSource` or just the export's URI (DuckDB). Missing periods and failed queries
    are named in `Spend.missing`; a bad URI raises `UserError`. With DuckDB, `Spend.line_items` holds
    the scratch directory until the caller closes it.
    """
    if isinstance(source, str):
        source = FocusSource(uri=source)
    location = parse_focus_uri(source.uri)
    store = store or object_store(location)
    engine = engine or make_engine(source)
    periods = billing_periods(start, end)
    partitions = find_partitions(store, location, periods)
    views = costs.plan_views(mandatory_tags)
    line_items = None
    with ExitStack() as cleanup:
        if isinstance(engine, DuckDBEngine):
            scratch = tempfile.TemporaryDirectory(prefix="mlp-focus-")
            cleanup.callback(scratch.cleanup)  # unless the line items take it
            files = stage_partitions(store, location, partitions, Path(scratch.name))
            present = [period for period in periods if period in files]
        else:
            present = [period for period in periods if period in partitions.keys]
        if not present:
            nothing = QueryFailed(
                f"no billing period of {location.uri} between {start} and {end} could be read"
            )
            answers: Iterable[tuple[costs.CostView, pd.DataFrame | QueryFailed]] = (
                (view, nothing) for view in views
            )
        elif isinstance(engine, DuckDBEngine):
            engine.load(files, Path(scratch.name))
            answers = _duckdb_answers(engine, views, present, start, end, mandatory_tags)
        else:
            answers = _athena_answers(engine, views, present, start, end, mandatory_tags)
        missing = list(partitions.missing)
        rows: list[dict[str, Any]] = []
        complete: set[str] = set()
        for view, answer in answers:
            if on_view is not None:
                on_view(view)
            if isinstance(answer, QueryFailed):
                missing += [MissingPart(part, str(answer)) for part in view.parts]
                continue
            complete.add(view.name)
            rows += _view_rows(view, answer)
        if present and isinstance(engine, DuckDBEngine):
            line_items = engine.line_items(line_items_sql(present, start, end), scratch)
            cleanup.pop_all()
    return Spend(
        start=start,
        end=end,
        mandatory_tags=tuple(mandatory_tags),
        frame=costs.focus_frame(rows, costs.report_tag_keys(mandatory_tags)),
        missing=missing,
        complete_views=complete,
        source=FOCUS_SOURCE,
        line_items=line_items,
    )
