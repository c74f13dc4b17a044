"""Spend from the account's FOCUS 1.2 export (AWS Data Exports), as the same views Cost Explorer gives.

AWS Data Exports delivers the *FOCUS 1.2 with AWS columns* table (`FOCUS_1_2_AWS`) to S3 as Parquet:

    s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/<export-name>-00001.snappy.parquet
    s3://<bucket>/<prefix>/<export-name>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json

`--focus-uri` is the export's folder, `s3://<bucket>/<prefix>/<export-name>`. Only the billing periods
the read touches are listed and read. The line items of [start, end) are grouped by SQL into the views
of `costs.plan_views` (same `x_CostView` names and columns as the Cost Explorer reader: BilledCost is
UnblendedCost, EffectiveCost is AmortizedCost), so the report is built the same way over either source.

The SQL is written once, in DuckDB's dialect, by `view_sql`. Two engines run it:

- `duckdb` (default): in this process; each billing period's Parquet objects are read through boto3
  (so `AWS_ENDPOINT_URL` and the credentials are `mlp.aws`'s) into Arrow and registered as one view.
- `athena`: the export's table in the Glue catalog, partitioned by `billing_period`; the SQL is
  transpiled to Trino by sqlglot and filters on that partition, so Athena reads only those months.
  Athena aggregates in place, so its line items are not downloaded (`Spend.line_items` is None).

Tags: AWS writes user tags as `user:<key>` in the `Tags` map; the views read `user:<key>` for each
mandatory key, and the line items' `Tags` is a JSON object with the `user:` prefix removed.

Faults: a billing period with no Parquet object, or an object that cannot be read, is a named
`MissingPart` and the figures are those of the periods that were read; an Athena query that fails
leaves its view out, named missing, as a failed Cost Explorer view does. A URI that is not an export
folder is a `UserError`.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import botocore.exceptions
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
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
# DuckDB spills past this instead of taking the machine's memory; a month of a large org fits.
DEFAULT_MEMORY_LIMIT = "4GB"

# The relation every query reads: a DuckDB view, or the Athena table put in its place.
EXPORT_RELATION = "focus_export"
PARTITION_COLUMN = "billing_period"
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


def tag_sql(key: str) -> str:
    """The value of a user tag, '' when absent or empty (Cost Explorer's `key$` bucket)."""
    return f"COALESCE(Tags[{_literal(USER_TAG_PREFIX + key)}], '')"


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
}


def period_filter_sql(periods: Sequence[str], start: date, end: date) -> str:
    """The partitions (what Athena prunes on) and the charge days [start, end)."""
    partitions = ", ".join(_literal(period) for period in periods)
    return (
        f"{PARTITION_COLUMN} IN ({partitions}) "
        f"AND ChargePeriodStart >= TIMESTAMP {_literal(f'{start} 00:00:00')} "
        f"AND ChargePeriodStart < TIMESTAMP {_literal(f'{end} 00:00:00')}"
    )


def _group_sql(kind: str, key: str) -> str:
    return tag_sql(key) if kind == "TAG" else DIMENSION_SQL[key]


def group_columns(view: costs.CostView) -> list[str]:
    """The frame column of each GroupBy key of a view, in order."""
    return [
        costs.tag_column(key) if kind == "TAG" else costs.DIMENSION_COLUMNS[key]
        for kind, key in view.group_by
    ]


def view_columns(view: costs.CostView) -> list[str]:
    """The columns `view_sql` answers, in order (Athena's result labels are not trusted for case)."""
    columns = [DAY_COLUMN, *group_columns(view), "BillingCurrency", "BilledCost", "EffectiveCost"]
    return [*columns, "ConsumedQuantity"] if costs.USAGE_METRIC in view.metrics else columns


def view_sql(
    view: costs.CostView,
    periods: Sequence[str],
    start: date,
    end: date,
    mandatory_tags: Sequence[str] = DEFAULT_MANDATORY_TAGS,
) -> str:
    """One view of `costs.plan_views` as a daily GROUP BY over the export's line items."""
    groups = [_group_sql(kind, key) for kind, key in view.group_by]
    selects = [
        f"CAST(ChargePeriodStart AS DATE) AS {DAY_COLUMN}",
        *(f"{sql} AS group_{index}" for index, sql in enumerate(groups)),
        "BillingCurrency",
        "SUM(BilledCost) AS BilledCost",
        "SUM(EffectiveCost) AS EffectiveCost",
    ]
    if costs.USAGE_METRIC in view.metrics:
        selects.append("SUM(COALESCE(ConsumedQuantity, 0)) AS ConsumedQuantity")
    where = period_filter_sql(periods, start, end)
    if view.name == costs.UNTAGGED_VIEW:
        # Cost Explorer's ABSENT filter: spend missing at least one mandatory tag.
        where += " AND (" + " OR ".join(f"{tag_sql(key)} = ''" for key in mandatory_tags) + ")"
    ordinals = ", ".join(str(index) for index in range(1, len(groups) + 3))
    return (
        f"SELECT {', '.join(selects)} FROM {EXPORT_RELATION} WHERE {where} "
        f"GROUP BY {ordinals} ORDER BY {ordinals}"
    )


def line_items_sql(periods: Sequence[str], start: date, end: date) -> str:
    """The export's own rows of [start, end), `Tags` as JSON without the `user:` prefix (DuckDB only)."""
    prefix = _literal("^" + re.escape(USER_TAG_PREFIX))
    normalised = (
        "to_json(map_from_entries(list_transform(map_entries(Tags), "
        f"lambda tag: {{'key': regexp_replace(tag.key, {prefix}, ''), 'value': tag.value}})))"
    )
    return (
        f"SELECT * EXCLUDE ({PARTITION_COLUMN}) REPLACE ({normalised} AS Tags) FROM {EXPORT_RELATION} "
        f"WHERE {period_filter_sql(periods, start, end)} ORDER BY ChargePeriodStart"
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

    def read_table(self, key: str) -> pa.Table: ...


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

    def read_table(self, key: str) -> pa.Table:
        with mlp.aws.aws_errors(f"reading s3://{self.bucket}/{key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))


class LocalStore:
    """An export copied to local disk, laid out as in S3 (`file://`; the bench uses it)."""

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

    def read_table(self, key: str) -> pa.Table:
        return pq.read_table(self.root / key)


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


def read_partitions(
    store: ObjectStore, location: ExportLocation, partitions: ExportPartitions
) -> dict[str, list[pa.Table]]:
    """Each period's objects as Arrow; a period with an unreadable object is left out, named missing."""
    tables: dict[str, list[pa.Table]] = {}
    for period, keys in partitions.keys.items():
        try:
            tables[period] = [store.read_table(key) for key in keys]
        except (botocore.exceptions.ClientError, UserError, pa.ArrowException, OSError) as exc:
            partitions.missing.append(
                MissingPart(
                    f"FOCUS export {period}",
                    f"an object under {location.uri}/data/BILLING_PERIOD={period}/ could not be read "
                    f"({' '.join(str(exc).split())[:200]})",
                )
            )
    return tables


# --- Engines ---------------------------------------------------------------------------------------


class QueryFailed(Exception):
    """A query that did not answer; its view becomes a missing part with this reason."""


class DuckDBEngine:
    """The SQL in this process over the export's Arrow tables."""

    name = DUCKDB_ENGINE

    def __init__(self, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> None:
        import duckdb

        self.connection = duckdb.connect()
        self.connection.execute(f"SET memory_limit = {_literal(memory_limit)}")
        # Charge days are UTC days, as Cost Explorer's are.
        self.connection.execute("SET TimeZone = 'UTC'")

    def load(self, tables: dict[str, list[pa.Table]]) -> None:
        """Register the periods' tables as the one relation the SQL reads, with their partition column."""
        selects = []
        for period, period_tables in tables.items():
            for index, table in enumerate(period_tables):
                name = f"part_{period.replace('-', '_')}_{index}"
                self.connection.register(name, table)
                selects.append(f"SELECT *, {_literal(period)} AS {PARTITION_COLUMN} FROM {name}")
        # BY NAME: a month's export may carry a column an older month lacks.
        self.connection.execute(
            f"CREATE OR REPLACE VIEW {EXPORT_RELATION} AS {' UNION ALL BY NAME '.join(selects)}"
        )

    def query(self, sql: str) -> pd.DataFrame:
        import duckdb

        try:
            return self.connection.execute(sql).df()
        except duckdb.Error as exc:
            raise QueryFailed(f"DuckDB could not run the query ({' '.join(str(exc).split())[:200]})") from exc


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

    def load(self, tables: dict[str, list[pa.Table]]) -> None:
        """Nothing to load: Athena reads the export where it is."""

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


def _view_rows(view: costs.CostView, answer: pd.DataFrame) -> list[dict[str, Any]]:
    columns = view_columns(view)
    answer = answer.set_axis(columns, axis=1)
    tag_columns = [costs.tag_column(key) for key in view.tag_keys]
    rows = []
    for record in answer.to_dict("records"):
        record["ChargePeriodStart"] = pd.Timestamp(record.pop(DAY_COLUMN)).date()
        record["x_CostView"] = view.name
        record["x_Estimated"] = False  # the export has no estimated flag; a restated day is rewritten
        tags = {
            column[len(costs.TAG_COLUMN_PREFIX) :]: record[column] for column in tag_columns if record[column]
        }
        record["Tags"] = json.dumps(tags, sort_keys=True)
        rows.append(record)
    return rows


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
    are named in `Spend.missing`; a bad URI raises `UserError`.
    """
    if isinstance(source, str):
        source = FocusSource(uri=source)
    location = parse_focus_uri(source.uri)
    store = store or object_store(location)
    engine = engine or make_engine(source)
    periods = billing_periods(start, end)
    partitions = find_partitions(store, location, periods)
    if engine.name == DUCKDB_ENGINE:
        tables = read_partitions(store, location, partitions)
    else:
        tables = {period: [] for period in partitions.keys}
    present = [period for period in periods if period in tables]
    missing = list(partitions.missing)
    rows: list[dict[str, Any]] = []
    complete: set[str] = set()
    line_items = None
    if present:
        engine.load(tables)
    for view in costs.plan_views(mandatory_tags):
        if on_view is not None:
            on_view(view)
        if not present:
            reason = f"no billing period of {location.uri} between {start} and {end} could be read"
            missing += [MissingPart(part, reason) for part in view.parts]
            continue
        try:
            answer = engine.query(view_sql(view, present, start, end, mandatory_tags))
        except QueryFailed as exc:
            missing += [MissingPart(part, str(exc)) for part in view.parts]
            continue
        complete.add(view.name)
        rows += _view_rows(view, answer)
    if present and engine.name == DUCKDB_ENGINE:
        line_items = engine.query(line_items_sql(present, start, end))
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
