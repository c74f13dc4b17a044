"""`mlp report` as a subprocess against the seeded sandbox over HTTP: totals equal the manifest's sums.

Also delivery end to end: the report uploaded into a sandbox bucket and posted to a local webhook.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from finops import costs, report
from finops.costs import UNTAGGED_LABEL
from finops.sandbox import Sandbox, SeedManifest
from mlp import pricing
from mlp.tags import DEFAULT_MANDATORY_TAGS
from tests.sandbox_fixtures import process_env, sandbox_fixture, seeded_fixture  # noqa: F401
from tests.test_report import SlackStub

pytestmark = pytest.mark.e2e

MLP = str(Path(sys.executable).parent / "mlp")
DAYS = 30


def run_report(
    running: Sandbox, manifest: SeedManifest, out: Path, cache: Path, *extra: str, regions: str = ""
) -> dict[str, Any]:
    env = {**process_env(running), "MLP_COST_CACHE_DIR": str(cache)}
    result = subprocess.run(
        [MLP, "report", "--days", str(DAYS), "--out", str(out), "--format", "json",
         "--regions", regions or ",".join(manifest.regions), *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ce-cache")


@pytest.fixture(scope="module")
def first_run(
    sandbox: Sandbox,
    seeded: SeedManifest,
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("report")
    return run_report(sandbox, seeded, out, cache_dir), out


def period_items(manifest: SeedManifest):
    today = manifest.now.date()
    start = today - timedelta(days=DAYS)
    return [item for item in manifest.line_items if start <= item.day < today]


def sums(items, label) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for item in items:
        totals[label(item)] += item.unblended_cost
    return {key: round(value, 2) for key, value in totals.items()}


def test_totals_equal_the_manifest_line_items(first_run, seeded: SeedManifest) -> None:
    findings, _ = first_run
    items = period_items(seeded)
    spend = findings["spend"]
    untagged = UNTAGGED_LABEL

    assert "missing" not in findings
    assert findings["period"]["end"] == seeded.now.date().isoformat()
    assert spend["total_usd"] == pytest.approx(sum(item.unblended_cost for item in items), abs=0.01)
    assert spend["by_team"] == pytest.approx(
        sums(items, lambda item: item.tags.get("team") or untagged), abs=0.01
    )
    assert spend["by_environment"] == pytest.approx(
        sums(items, lambda item: item.tags.get("environment") or untagged), abs=0.01
    )
    assert spend["by_service"] == pytest.approx(sums(items, lambda item: item.service), abs=0.01)
    missing_any = [item for item in items if any(not item.tags.get(key) for key in DEFAULT_MANDATORY_TAGS)]
    assert spend["untagged_usd"] == pytest.approx(sum(item.unblended_cost for item in missing_any), abs=0.01)
    assert spend["untagged_usd"] > 0
    spot = [item for item in items if item.purchase_type == "Spot Instances"]
    savings = sum(
        item.usage_quantity * pricing.on_demand_hourly(item.instance_type) - item.unblended_cost
        for item in spot
    )
    assert spend["spot_savings_usd"] == pytest.approx(savings, abs=0.01)
    assert spend["spot_savings_usd"] > 0


def test_scans_are_in_the_report(first_run, seeded: SeedManifest) -> None:
    findings, _ = first_run
    assert {finding["resource_id"] for finding in findings["idle"]} == set(seeded.idle_instance_ids)
    assert {finding["arn"] for finding in findings["untagged"]} == {
        resource.arn for resource in seeded.untagged
    }
    [leftover] = findings["reap"]
    assert (leftover["run_id"], leftover["reason"], leftover["action"]) == (
        seeded.finished_run_id,
        "expired",
        "destroy",
    )
    assert leftover["stack"] == f"train-{seeded.finished_run_id}"
    assert {item["arn"] for item in leftover["resources"]} == {
        volume.arn for volume in seeded.leftover_volumes
    }
    joined = findings["spend"]["untagged_by_service"]
    assert sum(row["resources"] for row in joined) == len(seeded.untagged)


def test_the_report_says_what_it_scanned(first_run, seeded: SeedManifest) -> None:
    findings, out = first_run
    regions = sorted(seeded.regions)
    assert findings["scope"] == {
        "accounts": [{"account_id": seeded.account_id, "name": "", "regions": list(seeded.regions)}],
        "regions": regions,
        "gaps": [],
        "skipped": [],
    }
    assert findings["unscanned_spend"] == []
    assert {finding["account_id"] for finding in [*findings["idle"], *findings["untagged"]]} == {
        seeded.account_id
    }
    line = f"Scanned 1 account x {len(regions)} regions ({', '.join(regions)})."
    assert line in (out / "report.md").read_text()
    assert "## Spend by account\n\n| Account | Name | Spend | Share |" in (out / "report.md").read_text()


def test_spend_of_a_region_left_out_is_called_out(
    seeded: SeedManifest, sandbox: Sandbox, tmp_path: Path
) -> None:
    scanned, *left_out = seeded.regions
    findings = run_report(sandbox, seeded, tmp_path / "out", tmp_path / "cache", regions=scanned)

    by_region = sums(period_items(seeded), lambda item: item.region)
    assert findings["scope"]["regions"] == [scanned]
    called_out = {row["region"]: row["usd"] for row in findings["unscanned_spend"]}
    assert called_out == pytest.approx({region: by_region[region] for region in left_out}, abs=0.01)
    assert all(usd > 0 for usd in called_out.values())
    assert all(finding["region"] == scanned for finding in findings["idle"])


def test_the_report_files_are_written(first_run) -> None:
    findings, out = first_run
    assert sorted(path.name for path in out.iterdir()) == sorted(report.REPORT_FILES)
    assert json.loads((out / "findings.json").read_text()) == findings
    assert "Nightly cost report" in (out / "report.md").read_text()


def test_a_second_night_asks_cost_explorer_only_for_unsettled_days(
    first_run,
    sandbox: Sandbox,
    seeded: SeedManifest,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    first, _ = first_run
    second = run_report(sandbox, seeded, tmp_path / "again", cache_dir)
    start, end = (date.fromisoformat(first["period"][key]) for key in ("start", "end"))
    # The report reads the previous period too; only days before the previous month are final.
    some_day_final = start - (end - start) < costs.first_unsettled_day(seeded.now.date())
    if some_day_final:
        assert 0 < second["cost_explorer_requests"] < first["cost_explorer_requests"]
    else:
        assert second["cost_explorer_requests"] == first["cost_explorer_requests"]
    assert second["spend"]["total_usd"] == first["spend"]["total_usd"]
    assert second["spend"]["by_team"] == first["spend"]["by_team"]


def test_delivery_to_s3_and_slack(sandbox: Sandbox, seeded: SeedManifest, tmp_path: Path) -> None:
    sandbox.client("s3").create_bucket(Bucket="finance-nightly")
    out = tmp_path / "delivered"
    with SlackStub() as slack:
        run_report(
            sandbox, seeded, out, tmp_path / "cache",
            "--s3-uri", "s3://finance-nightly/ml-platform/", "--slack-webhook", slack.url,
        )  # fmt: skip
    listed = sandbox.client("s3").list_objects_v2(Bucket="finance-nightly", Prefix="ml-platform/")["Contents"]
    night = json.loads((out / "findings.json").read_text())["period"]["end"]
    assert sorted(item["Key"] for item in listed) == sorted(
        [
            *(f"ml-platform/{night}/{name}" for name in report.REPORT_FILES),
            *(f"ml-platform/latest/{name}" for name in report.REPORT_FILES),
            "ml-platform/history.jsonl",
        ]
    )
    assert len(slack.posts) == 1
    assert slack.posts[0]["json"]["text"].startswith("*Nightly cost report")
