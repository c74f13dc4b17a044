"""The FOCUS export as a cost source: the views' SQL on DuckDB over a small export, with figures
computed by hand; the Athena text as Trino; the Athena query lifecycle on moto; faults as missing parts.
"""

from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from botocore.stub import Stubber
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api import state_manager

from finops import costs, focus
from finops.analysis import Period, analyze_spend
from finops.sandbox.focus_export import SCHEMA
from mlp.cli import main
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS

BUCKET = "billing"
URI = f"s3://{BUCKET}/exports/focus-test"
START, END = date(2026, 1, 30), date(2026, 2, 2)
EC2 = "Amazon Elastic Compute Cloud - Compute"
FULL = {"project": "p", "cost-center": "cc-1", "owner": "o@example.com", "managed-by": "pulumi"}


def tags(**values: str) -> list[tuple[str, str]]:
    return [(f"user:{key.replace('_', '-')}", value) for key, value in values.items()]


def row(day: str, billed: float, **fields: Any) -> dict[str, Any]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return {
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start,
        "BilledCost": billed,
        "EffectiveCost": fields.pop("effective", billed),
        "BillingCurrency": "USD",
        "ChargeCategory": "Usage",
        "PricingCategory": "Standard",
        "RegionId": "us-east-1",
        **fields,
    }


FULL_TAGS = tags(project="p", cost_center="cc-1", owner="o@example.com", managed_by="pulumi")
# Hand-built: two days of January and one of February inside [START, END), one row on each side.
ROWS = {
    "2026-01": [
        row("2026-01-29T00:00:00", 100.0, ServiceName=EC2, SkuMeter="BoxUsage:g5.xlarge"),  # before START
        row("2026-01-30T00:00:00", 10.0, ServiceName=EC2, SkuMeter="BoxUsage:g5.xlarge", ConsumedQuantity=10.0,
            Tags=[*tags(team="vision", environment="prod"), *FULL_TAGS]),
        row("2026-01-30T12:00:00", 2.5, ServiceName=EC2, SkuMeter="BoxUsage:g5.xlarge", ConsumedQuantity=2.0,
            Tags=[*tags(team="vision", environment="prod"), *FULL_TAGS]),
        row("2026-01-31T00:00:00", 4.0, ServiceName=EC2, RegionId="us-west-2", PricingCategory="Dynamic",
            SkuMeter="USW2-SpotUsage:p4d.24xlarge", ConsumedQuantity=1.0, Tags=tags(team="nlp")),
        row("2026-01-31T00:00:00", 0.75, ServiceName="Amazon EKS", SkuMeter="AmazonEKS-Hours:perCluster",
            Tags=[("user:team", ""), ("aws:createdBy", "root"), *tags(environment="dev")]),
    ],
    "2026-02": [
        row("2026-02-01T00:00:00", 1.25, ServiceName="Amazon S3", SkuMeter="TimedStorage-ByteHrs"),
        row("2026-02-01T00:00:00", 3.0, effective=2.16, ServiceName=EC2, SkuMeter="BoxUsage:m6i.xlarge",
            PricingCategory="Committed", CommitmentDiscountType="Savings Plan", ConsumedQuantity=3.0,
            Tags=[*tags(team="recsys", environment="dev"), *FULL_TAGS]),
        row("2026-02-02T00:00:00", 50.0, ServiceName=EC2, SkuMeter="BoxUsage:g5.xlarge"),  # END is exclusive
    ],
}  # fmt: skip


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
    return buffer.getvalue()


def put_export(s3: Any, periods: dict[str, list[dict[str, Any]]], prefix: str = "exports/focus-test") -> None:
    s3.create_bucket(Bucket=BUCKET)
    for period, rows in periods.items():
        key = f"{prefix}/data/BILLING_PERIOD={period}/focus-test-00001.snappy.parquet"
        s3.put_object(Bucket=BUCKET, Key=key, Body=parquet(rows))


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def spend(s3: Any) -> costs.Spend:
    put_export(s3, ROWS)
    return focus.read_focus_spend(URI, START, END)


def totals(spend: costs.Spend, view: str, column: str) -> dict[str, float]:
    rows = spend.frame[spend.frame["x_CostView"] == view]
    return {str(key): round(value, 6) for key, value in rows.groupby(column)["BilledCost"].sum().items()}


def test_every_view_sums_the_line_items_of_the_period(spend: costs.Spend) -> None:
    assert spend.source == "focus"
    assert spend.missing == []
    assert spend.complete_views == {view.name for view in costs.plan_views(DEFAULT_MANDATORY_TAGS)}
    # 10 + 2.5 + 4 + 0.75 + 1.25 + 3: the rows of 29 January and 2 February are outside.
    for view in spend.complete_views - {costs.UNTAGGED_VIEW}:
        assert spend.frame.loc[spend.frame["x_CostView"] == view, "BilledCost"].sum() == pytest.approx(21.5)
    assert totals(spend, "tags:team+environment", "x_Tag_team") == {
        "": 2.0,  # S3 has no tags, EKS has an empty team
        "nlp": 4.0,
        "recsys": 3.0,
        "vision": 12.5,
    }
    assert totals(spend, costs.SERVICE_REGION_VIEW, "RegionId") == {"us-east-1": 17.5, "us-west-2": 4.0}
    # Untagged: the spot line (team only), EKS (no owner...) and S3 (nothing).
    assert totals(spend, costs.UNTAGGED_VIEW, "ServiceName") == {
        "Amazon EKS": 0.75,
        "Amazon S3": 1.25,
        EC2: 4.0,
    }


def test_the_purchase_view_is_cost_explorer_s_purchase_type_and_instance_type(spend: costs.Spend) -> None:
    purchase = spend.frame[spend.frame["x_CostView"] == costs.PURCHASE_VIEW]
    by_type = purchase.groupby(["x_PurchaseType", "x_InstanceType", "PricingCategory"])[
        ["BilledCost", "EffectiveCost", "ConsumedQuantity"]
    ].sum()
    assert by_type.round(6).to_dict("index") == {
        ("On Demand Instances", "NoInstanceType", "Standard"): {
            "BilledCost": 2.0,
            "EffectiveCost": 2.0,
            "ConsumedQuantity": 0.0,
        },
        ("On Demand Instances", "g5.xlarge", "Standard"): {
            "BilledCost": 12.5,
            "EffectiveCost": 12.5,
            "ConsumedQuantity": 12.0,
        },
        ("Savings Plans", "m6i.xlarge", "Committed"): {
            "BilledCost": 3.0,
            "EffectiveCost": 2.16,
            "ConsumedQuantity": 3.0,
        },
        ("Spot Instances", "p4d.24xlarge", "Dynamic"): {
            "BilledCost": 4.0,
            "EffectiveCost": 4.0,
            "ConsumedQuantity": 1.0,
        },
    }


def test_the_report_analysis_runs_unchanged_over_the_focus_views(spend: costs.Spend) -> None:
    analysis = analyze_spend(spend, Period(START, END))
    assert analysis.total_usd == pytest.approx(21.5)
    assert analysis.total_effective_usd == pytest.approx(20.66)
    assert analysis.by_team == pytest.approx({"vision": 12.5, "nlp": 4.0, "recsys": 3.0, "(untagged)": 2.0})
    assert analysis.untagged_usd == pytest.approx(6.0)
    assert analysis.spot_usd == pytest.approx(4.0)
    assert analysis.daily_total.round(6).tolist() == [12.5, 4.75, 4.25]


def test_line_items_keep_focus_columns_with_user_tags_normalised(spend: costs.Spend) -> None:
    items = spend.line_items
    assert isinstance(items, focus.LineItems)
    assert len(items) == 6
    assert set(SCHEMA.names) <= set(items.columns)
    assert "billing_period" not in {column.lower() for column in items.columns}
    rows = items.aggregate("SELECT * FROM line_items")
    assert rows["BilledCost"].sum() == pytest.approx(21.5)
    first = json.loads(rows.iloc[0]["Tags"])
    assert first == {"team": "vision", "environment": "prod", **FULL}
    eks = json.loads(rows.loc[rows["ServiceName"] == "Amazon EKS", "Tags"].iloc[0])
    assert eks == {"team": "", "aws:createdBy": "root", "environment": "dev"}


def test_line_items_aggregate_in_sql_over_the_period(spend: costs.Spend) -> None:
    assert spend.line_items is not None
    by_service = spend.line_items.aggregate(
        "SELECT ServiceName, SUM(BilledCost) AS billed, SUM(EffectiveCost) AS effective, COUNT(*) AS n "
        "FROM line_items GROUP BY ServiceName ORDER BY ServiceName"
    )
    # By hand from ROWS: EC2 10 + 2.5 + 4 + 3 (effective 2.16), EKS 0.75, S3 1.25.
    assert by_service.round(6).to_dict("records") == [
        {"ServiceName": "Amazon EKS", "billed": 0.75, "effective": 0.75, "n": 1},
        {"ServiceName": EC2, "billed": 19.5, "effective": 18.66, "n": 4},
        {"ServiceName": "Amazon S3", "billed": 1.25, "effective": 1.25, "n": 1},
    ]
    by_team = spend.line_items.aggregate(
        "SELECT COALESCE(json_extract_string(Tags, '$.team'), '(no tags)') AS team, "
        "SUM(BilledCost) AS billed FROM line_items GROUP BY ALL ORDER BY team"
    )
    assert by_team.round(6).values.tolist() == [
        ["", 0.75],
        ["(no tags)", 1.25],
        ["nlp", 4.0],
        ["recsys", 3.0],
        ["vision", 12.5],
    ]


def texts(values: pd.Series) -> list[str | None]:
    return [None if pd.isna(value) else value for value in values]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_line_items_write_the_period_s_rows(spend: costs.Spend, tmp_path: Path, fmt: str) -> None:
    assert spend.line_items is not None
    path = spend.line_items.write(tmp_path / f"items.{fmt}", fmt)
    written = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    expected = spend.line_items.aggregate("SELECT * FROM line_items")
    assert list(written.columns) == list(expected.columns)
    assert len(written) == 6
    assert written["BilledCost"].tolist() == expected["BilledCost"].tolist()
    assert texts(written["Tags"]) == texts(expected["Tags"])
    starts = pd.to_datetime(written["ChargePeriodStart"], utc=True)
    assert starts.tolist() == expected["ChargePeriodStart"].tolist()
    if fmt == "csv":
        assert "2026-01-30T12:00:00Z" in path.read_text()


def test_closing_the_line_items_removes_the_scratch_directory(s3: Any) -> None:
    put_export(s3, ROWS)
    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def recorded(**options: Any) -> tempfile.TemporaryDirectory[str]:
        directory = real(**options)
        made.append(directory.name)
        return directory

    with patch.object(focus.tempfile, "TemporaryDirectory", recorded):
        spend = focus.read_focus_spend(URI, START, END)
    (scratch,) = made
    # The objects were streamed to the scratch directory, laid out as in S3.
    assert (
        sorted(path.name for path in Path(scratch).rglob("*.parquet"))
        == ["focus-test-00001.snappy.parquet"] * 2
    )
    assert spend.line_items is not None
    with spend.line_items as items:
        assert len(items) == 6
    assert not Path(scratch).exists()


def test_a_local_export_is_read_in_place(tmp_path: Path) -> None:
    export = tmp_path / "exports" / "focus-test"
    for period, rows in ROWS.items():
        partition = export / "data" / f"BILLING_PERIOD={period}"
        partition.mkdir(parents=True)
        (partition / "focus-test-00001.snappy.parquet").write_bytes(parquet(rows))
    store = focus.LocalStore(str(tmp_path / "exports"))
    fetched: list[Path] = []

    class Recording(focus.LocalStore):
        def local_path(self, key: str, scratch: Path) -> Path:
            fetched.append(super().local_path(key, scratch))
            return fetched[-1]

    spend = focus.read_focus_spend(f"file://{export}", START, END, store=Recording(str(store.root)))
    assert spend.line_items is not None
    with spend.line_items as items:
        assert items.aggregate("SELECT SUM(BilledCost) AS billed FROM line_items")["billed"][0] == 21.5
        # The files DuckDB reads are the export's own: nothing was copied.
        assert sorted(fetched) == sorted(export.rglob("*.parquet"))
        read = items.connection.execute(
            f"SELECT DISTINCT filename FROM read_parquet('{export}/data/*/*.parquet', filename = true)"
        ).fetchall()
        assert len(read) == 2


def test_line_items_from_a_frame_answer_the_same_sql() -> None:
    frame = pd.DataFrame(
        {"SubAccountId": ["a", "b", "a"], "BilledCost": [1.0, 2.0, 4.5], "x_Operation": ["x", "y", "z"]}
    )
    with focus.LineItems.from_frame(frame) as items:
        assert len(items) == 3
        assert items.columns == ["SubAccountId", "BilledCost", "x_Operation"]
        by_account = items.aggregate(
            "SELECT SubAccountId, SUM(BilledCost) AS billed FROM line_items GROUP BY 1 ORDER BY 1"
        )
        assert by_account.values.tolist() == [["a", 5.5], ["b", 2.0]]
        expensive = items.select("SELECT * FROM line_items WHERE BilledCost > 1.5")
        assert len(expensive) == 2
        assert expensive.aggregate("SELECT SUM(BilledCost) AS billed FROM line_items")["billed"][0] == 6.5


def test_only_the_billing_periods_of_the_read_are_listed(s3: Any) -> None:
    put_export(s3, {**ROWS, "2025-06": ROWS["2026-01"]})
    assert focus.billing_periods(START, END) == ["2026-01", "2026-02"]
    assert focus.billing_periods(date(2025, 12, 31), date(2026, 1, 1)) == ["2025-12"]
    spend = focus.read_focus_spend(URI, START, END)
    assert spend.frame["ChargePeriodStart"].min() == datetime(2026, 1, 30, tzinfo=UTC)


def test_a_missing_partition_is_a_named_missing_part(s3: Any) -> None:
    put_export(s3, {"2026-02": ROWS["2026-02"]})
    spend = focus.read_focus_spend(URI, START, END)
    assert [part.part for part in spend.missing] == ["FOCUS export 2026-01"]
    assert "BILLING_PERIOD=2026-01/" in spend.missing[0].reason
    # February is still read: the views are those of the periods present.
    analysis = analyze_spend(spend, Period(START, END))
    assert analysis.total_usd == pytest.approx(4.25)


def test_an_unreadable_object_is_a_named_missing_part(s3: Any) -> None:
    put_export(s3, ROWS)
    s3.put_object(
        Bucket=BUCKET, Key="exports/focus-test/data/BILLING_PERIOD=2026-02/broken.parquet", Body=b"nope"
    )
    spend = focus.read_focus_spend(URI, START, END)
    assert [part.part for part in spend.missing] == ["FOCUS export 2026-02"]
    assert "could not be read" in spend.missing[0].reason
    assert (
        spend.frame.loc[spend.frame["x_CostView"] == costs.SERVICE_REGION_VIEW, "BilledCost"].sum() == 17.25
    )


def test_no_period_at_all_leaves_every_view_missing(s3: Any) -> None:
    put_export(s3, {"2025-06": ROWS["2026-01"]})
    spend = focus.read_focus_spend(URI, START, END)
    assert spend.complete_views == set()
    assert {part.part for part in spend.missing} >= {
        "FOCUS export 2026-01",
        "spend by service",
        "untagged spend",
    }


@pytest.mark.parametrize(
    "uri",
    ["billing/exports", "s3://", "s3://bucket", "s3://bucket/", "https://bucket/exports", "s3://b/p?x=1"],
)
def test_a_uri_that_is_not_an_export_folder_is_a_user_error(uri: str) -> None:
    with pytest.raises(UserError, match=r"--focus-uri .*s3://bucket/prefix/export-name"):
        focus.parse_focus_uri(uri)


def test_a_uri_pointing_at_nothing_is_a_user_error(s3: Any) -> None:
    put_export(s3, ROWS)
    with pytest.raises(UserError, match="no FOCUS export there"):
        focus.read_focus_spend(f"s3://{BUCKET}/exports/elsewhere", START, END)
    with pytest.raises(UserError, match="cannot list the export"):
        focus.read_focus_spend("s3://no-such-bucket/exports/focus", START, END)


def run_mlp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code or 0), capsys.readouterr().err


def test_mlp_report_with_a_bad_focus_uri_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    code, stderr = run_mlp(capsys, "report", "--out", str(tmp_path), "--focus-uri", "https://bucket/exports")
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(
        "mlp: error: --focus-uri 'https://bucket/exports': use the FOCUS export's folder"
    )


def test_mlp_report_with_an_empty_export_exits_2_with_one_line(
    s3: Any, capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv(focus.FOCUS_URI_ENV, URI)  # the source is focus because the variable is set
    code, stderr = run_mlp(capsys, "report", "--out", str(tmp_path / "out"), "--no-cache")
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith(f"mlp: error: --focus-uri {URI}: no FOCUS export there")


def test_the_source_follows_the_flags() -> None:
    assert focus.choose_focus_source(None, None) is None
    assert focus.choose_focus_source("cost-explorer", URI) is None
    assert focus.choose_focus_source(None, URI) == focus.FocusSource(uri=URI)
    athena = focus.choose_focus_source("focus", URI, engine="athena", athena_database="billing")
    assert athena is not None and athena.athena == focus.AthenaSettings("primary", "billing", "focus_test")
    for flags, problem in (
        (("focus", None), "needs --focus-uri"),
        (("focus", URI, "spark"), "--engine 'spark'"),
        (("focus", URI, "athena"), "needs --athena-database"),
        (("billing", URI), "--cost-source 'billing'"),
    ):
        with pytest.raises(UserError, match=problem):
            focus.choose_focus_source(flags[0], flags[1], engine=flags[2] if len(flags) > 2 else None)


# --- Athena ---------------------------------------------------------------------------------------


def athena_texts() -> list[str]:
    return [
        focus.athena_sql(
            focus.view_sql(view, ["2026-01", "2026-02"], START, END), database="billing", table="focus_test"
        )
        for view in costs.plan_views(DEFAULT_MANDATORY_TAGS)
    ]


def test_every_athena_text_parses_as_trino_and_prunes_on_the_partition() -> None:
    texts = athena_texts()
    assert len(texts) == len(costs.plan_views(DEFAULT_MANDATORY_TAGS))
    for text in texts:
        tree = sqlglot.parse_one(text, read="trino")
        read = [table.sql("trino") for table in tree.find_all(sqlglot.exp.Table)]
        assert [table for table in read if table != focus.DAILY_SPEND_RELATION] == ['"billing"."focus_test"']
        assert "billing_period IN ('2026-01', '2026-02')" in text
        # Trino fails on a missing map key where DuckDB answers NULL.
        assert "Tags[" not in text
    assert "ELEMENT_AT(Tags, 'user:team')" in texts[0]


def test_each_athena_query_reads_only_the_columns_of_its_view() -> None:
    def columns(text: str) -> set[str]:
        tree = sqlglot.parse_one(text, read="trino")
        inner = next(tree.find_all(sqlglot.exp.CTE)).this
        return {column.name for column in inner.find_all(sqlglot.exp.Column)}

    by_view = dict(zip((view.name for view in costs.plan_views()), athena_texts(), strict=True))
    period = {"billing_period", "ChargePeriodStart", "BillingCurrency", "BilledCost", "EffectiveCost"}
    assert columns(by_view[costs.SERVICE_REGION_VIEW]) == period | {"ServiceName", "RegionId"}
    assert columns(by_view["tags:team+environment"]) == period | {"Tags"}
    assert columns(by_view[costs.PURCHASE_VIEW]) == period | {
        "PricingCategory",
        "CommitmentDiscountType",
        "SkuMeter",
        "ConsumedQuantity",
    }


def test_duckdb_and_athena_texts_agree_on_every_view(spend: costs.Spend) -> None:
    """The per-view text Athena runs answers on DuckDB what the shared daily spend answered."""
    engine = focus.DuckDBEngine()
    export = focus.parse_focus_uri(URI)
    with tempfile.TemporaryDirectory() as scratch:
        partitions = focus.find_partitions(focus.object_store(export), export, ["2026-01", "2026-02"])
        files = focus.stage_partitions(focus.object_store(export), export, partitions, Path(scratch))
        engine.load(files, Path(scratch))
        for view in costs.plan_views():
            alone = engine.query(focus.view_sql(view, ["2026-01", "2026-02"], START, END))
            shared = spend.frame[spend.frame["x_CostView"] == view.name]
            assert alone["BilledCost"].sum() == pytest.approx(shared["BilledCost"].sum()), view.name
            assert len(alone) == len(shared), view.name
        engine.connection.close()


def athena_column(name: str, kind: str) -> dict[str, Any]:
    return {"Name": name, "Label": name, "Type": kind}


def service_view() -> costs.CostView:
    return next(v for v in costs.plan_views() if v.name == costs.SERVICE_REGION_VIEW)


SERVICE_COLUMNS = [
    athena_column("ChargeDay", "date"),
    athena_column("group_0", "varchar"),
    athena_column("group_1", "varchar"),
    athena_column("BillingCurrency", "varchar"),
    athena_column("BilledCost", "double"),
    athena_column("EffectiveCost", "double"),
]


def athena_rows(*values: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"Data": [{"VarCharValue": value} for value in row]} for row in values]


HEADER = ("ChargeDay", "group_0", "group_1", "BillingCurrency", "BilledCost", "EffectiveCost")


@pytest.fixture
def athena() -> Any:
    with mock_aws():
        # Two polls in QUEUED, then RUNNING, then SUCCEEDED: the engine must keep polling.
        state_manager.set_transition(
            model_name="athena::execution", transition={"progression": "manual", "times": 2}
        )
        try:
            yield athena_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        finally:
            state_manager.unset_transition("athena::execution")


def test_an_athena_query_is_started_polled_and_read(athena: Any) -> None:
    athena.query_results_queue.append(
        QueryResults(
            rows=athena_rows(HEADER, ("2026-01-30", EC2, "us-east-1", "USD", "12.5", "12.5")),
            column_info=SERVICE_COLUMNS,
        )
    )
    waits: list[float] = []
    settings = focus.AthenaSettings(workgroup="primary", database="billing", table="focus_test")
    engine = focus.AthenaEngine(settings, sleep=waits.append, poll_seconds=0.5)
    answer = engine.query(focus.view_sql(service_view(), ["2026-01"], START, END))
    assert waits and set(waits) == {0.5}
    assert answer.values.tolist() == [[datetime(2026, 1, 30), EC2, "us-east-1", "USD", 12.5, 12.5]]
    (query_id,) = engine.query_ids
    sent = athena.executions[query_id]
    assert sent.query.startswith("WITH focus_daily_spend AS (SELECT CAST(ChargePeriodStart AS DATE)")
    assert '"billing"."focus_test"' in sent.query and "billing_period IN ('2026-01')" in sent.query
    assert sent.context == {"Database": "billing"}


def test_a_failed_athena_query_is_a_named_missing_part(athena: Any, s3: Any) -> None:
    put_export(s3, ROWS)

    def fail_running_queries(seconds: float) -> None:
        for execution in athena.executions.values():
            execution.status = "FAILED"

    settings = focus.AthenaSettings(workgroup="primary", database="billing", table="focus_test")
    engine = focus.AthenaEngine(settings, sleep=fail_running_queries)
    spend = focus.read_focus_spend(focus.FocusSource(URI, "athena", settings), START, END, engine=engine)
    assert spend.complete_views == set()
    assert spend.line_items is None
    by_part = {part.part: part.reason for part in spend.missing}
    assert set(by_part) == {part for view in costs.plan_views() for part in view.parts}
    assert all(reason.startswith("Athena query ") and " FAILED: " in reason for reason in by_part.values())


def test_athena_results_are_read_page_by_page() -> None:
    client = boto3.client("athena", region_name="us-east-1")
    settings = focus.AthenaSettings(workgroup="primary", database="billing", table="focus_test")
    with Stubber(client) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}})
        metadata = {"ColumnInfo": SERVICE_COLUMNS}
        stub.add_response(
            "get_query_results",
            {
                "ResultSet": {
                    "Rows": athena_rows(HEADER, ("2026-01-30", EC2, "us-east-1", "USD", "10", "9")),
                    "ResultSetMetadata": metadata,
                },
                "NextToken": "page-2",
            },
            {"QueryExecutionId": "q-1"},
        )
        stub.add_response(
            "get_query_results",
            {
                "ResultSet": {
                    "Rows": athena_rows(("2026-01-31", EC2, "us-west-2", "USD", "4", "4")),
                    "ResultSetMetadata": metadata,
                }
            },
            {"QueryExecutionId": "q-1", "NextToken": "page-2"},
        )
        engine = focus.AthenaEngine(settings, client=client, sleep=lambda seconds: None)
        answer = engine.query(focus.view_sql(service_view(), ["2026-01"], START, END))
        stub.assert_no_pending_responses()
    assert answer[2].tolist() == ["us-east-1", "us-west-2"]
    assert answer[4].sum() == 14.0
