"""Both cost sources on the seeded sandbox: its FOCUS export and its Cost Explorer hold the same line
items, so the report's figures agree to the cent, whichever source `mlp report` reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finops import costs, focus
from finops.analysis import SpendAnalysis, analyze_spend, report_period
from finops.costs import UNTAGGED_LABEL
from finops.demo import sandbox_environment
from finops.sandbox import Sandbox, SeedManifest, focus_export
from tests.sandbox_fixtures import process_env, sandbox_fixture, seeded_fixture  # noqa: F401

pytestmark = pytest.mark.e2e

MLP = str(Path(sys.executable).parent / "mlp")
DAYS = 30
FIGURES = ("by_team", "by_environment", "by_service", "by_region", "untagged_by_tag")


def cents(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in values.items()}


def account_figures(by_account: list[Any]) -> list[tuple[str, float, float | None]]:
    """Id, dollars and share: the sandbox's Cost Explorer gives no account names, the export does."""
    return [(row["account_id"], row["usd"], row["share"]) for row in by_account]


@pytest.fixture(scope="module")
def both_sources(sandbox: Sandbox, seeded: SeedManifest) -> tuple[SpendAnalysis, SpendAnalysis]:
    period = report_period(DAYS, seeded.now.date())
    with sandbox_environment(sandbox):
        from_focus = focus.read_focus_spend(focus_export.EXPORT_URI, period.fetch_start, period.end)
        from_ce = costs.fetch_spend(period.fetch_start, period.end, use_cache=False, today=seeded.now.date())
    assert from_focus.missing == [] and from_ce.missing == []
    assert from_focus.complete_views == from_ce.complete_views
    return analyze_spend(from_focus, period), analyze_spend(from_ce, period)


def test_both_sources_agree_to_the_cent(
    both_sources: tuple[SpendAnalysis, SpendAnalysis],
) -> None:
    from_focus, from_ce = both_sources
    for total in ("total_usd", "total_effective_usd", "untagged_usd", "spot_usd", "spot_savings_usd"):
        assert round(getattr(from_focus, total), 2) == round(getattr(from_ce, total), 2), total
    for figure in FIGURES:
        assert cents(getattr(from_focus, figure)) == cents(getattr(from_ce, figure)), figure
    assert account_figures(from_focus.by_account) == account_figures(from_ce.by_account)
    assert from_focus.daily_total.round(2).tolist() == from_ce.daily_total.round(2).tolist()


def test_the_focus_figures_are_the_seeded_line_items(
    both_sources: tuple[SpendAnalysis, SpendAnalysis], seeded: SeedManifest
) -> None:
    from_focus, _ = both_sources
    today = seeded.now.date()
    items = [item for item in seeded.line_items if today - timedelta(days=DAYS) <= item.day < today]
    by_team: dict[str, float] = defaultdict(float)
    by_service: dict[str, float] = defaultdict(float)
    by_region: dict[str, float] = defaultdict(float)
    by_account: dict[str, float] = defaultdict(float)
    for item in items:
        by_team[item.tags.get("team") or UNTAGGED_LABEL] += item.unblended_cost
        by_service[item.service] += item.unblended_cost
        by_region[item.region] += item.unblended_cost
        by_account[item.linked_account] += item.unblended_cost
    assert round(from_focus.total_usd, 2) == round(sum(item.unblended_cost for item in items), 2)
    assert cents(from_focus.by_team) == cents(by_team)
    assert cents(from_focus.by_service) == cents(by_service)
    assert cents(from_focus.by_region) == cents(by_region)
    assert {row["account_id"]: row["usd"] for row in from_focus.by_account} == cents(by_account)


def test_the_export_is_laid_out_as_aws_delivers_it(sandbox: Sandbox, seeded: SeedManifest) -> None:
    s3 = sandbox.client("s3")
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=focus_export.EXPORT_BUCKET)
        for item in page.get("Contents", [])
    ]
    periods = sorted({f"{item.day:%Y-%m}" for item in seeded.line_items})
    root = f"{focus_export.EXPORT_PREFIX}/{focus_export.EXPORT_NAME}"
    name = focus_export.EXPORT_NAME
    assert sorted(keys) == sorted(
        [f"{root}/data/BILLING_PERIOD={p}/{name}-00001.snappy.parquet" for p in periods]
        + [f"{root}/metadata/BILLING_PERIOD={p}/{name}-Manifest.json" for p in periods]
    )
    manifest = json.loads(
        s3.get_object(
            Bucket=focus_export.EXPORT_BUCKET,
            Key=f"{root}/metadata/BILLING_PERIOD={periods[0]}/{name}-Manifest.json",
        )["Body"].read()
    )
    data_key = f"{root}/data/BILLING_PERIOD={periods[0]}/{name}-00001.snappy.parquet"
    assert manifest["dataFiles"] == [f"s3://{focus_export.EXPORT_BUCKET}/{data_key}"]
    body = s3.get_object(Bucket=focus_export.EXPORT_BUCKET, Key=data_key)["Body"]
    table = pq.read_table(pa.BufferReader(body.read()))
    assert table.schema.equals(focus_export.SCHEMA)
    assert (
        manifest["numberOfRecords"]
        == table.num_rows
        == sum(f"{i.day:%Y-%m}" == periods[0] for i in seeded.line_items)
    )


def run_report(running: Sandbox, manifest: SeedManifest, out: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [MLP, "report", "--days", str(DAYS), "--out", str(out), "--format", "json", "--no-cache",
         "--regions", ",".join(manifest.regions), *extra],
        capture_output=True, text=True, env=process_env(running), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mlp_report_says_which_source_it_read_and_the_figures_agree(
    sandbox: Sandbox, seeded: SeedManifest, tmp_path: Path
) -> None:
    from_focus = run_report(sandbox, seeded, tmp_path / "focus", "--focus-uri", focus_export.EXPORT_URI)
    from_ce = run_report(sandbox, seeded, tmp_path / "ce", "--cost-source", "cost-explorer")
    assert (from_focus["cost_source"], from_ce["cost_source"]) == ("focus", "cost-explorer")
    assert from_focus["cost_explorer_requests"] == 0 < from_ce["cost_explorer_requests"]
    for key in ("total_usd", "total_effective_usd", "untagged_usd", "spot_usd", *FIGURES):
        assert from_focus["spend"][key] == from_ce["spend"][key], key
    assert account_figures(from_focus["spend"]["by_account"]) == account_figures(
        from_ce["spend"]["by_account"]
    )
    assert "Cost source: focus." in (tmp_path / "focus" / "report.md").read_text()
