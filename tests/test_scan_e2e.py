"""`mlp idle` and `mlp untagged` as subprocesses against the seeded sandbox, over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from finops.idle import LOOKBACK_HOURS
from finops.sandbox import Sandbox, SeedManifest
from mlp.tags import DEFAULT_MANDATORY_TAGS, PULUMI_STACK, RUN_ID
from tests.sandbox_fixtures import (  # noqa: F401
    process_env,
    sandbox_env_fixture,
    sandbox_fixture,
    seeded_fixture,
)

pytestmark = pytest.mark.e2e

MLP = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "mlp")
REGIONS = "us-east-1,us-west-2"


def mlp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLP, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def mlp_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """The JSON of a complete scan (exit 0)."""
    result = mlp(env, *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def idle_report(seeded: SeedManifest, sandbox: Sandbox) -> dict[str, Any]:
    return mlp_json(process_env(sandbox), "idle", "--regions", REGIONS)


def expected_idle_hours(seeded: SeedManifest, instance_id: str) -> float:
    instance = seeded.instance(instance_id)
    assert instance.idle_since is not None
    return min(LOOKBACK_HOURS, (seeded.now - instance.idle_since).total_seconds() / 3600)


def test_idle_finds_exactly_the_idle_instances(idle_report: dict[str, Any], seeded: SeedManifest) -> None:
    found = {finding["resource_id"] for finding in idle_report["findings"]}

    assert found == set(seeded.idle_instance_ids)
    assert not found & set(seeded.busy_instance_ids)
    assert not found & set(seeded.too_young_instance_ids)
    assert (idle_report["window_hours"], idle_report["threshold_pct"]) == (6, 5)


def test_idle_json_carries_the_scope_and_the_account(idle_report: dict[str, Any], sandbox: Sandbox) -> None:
    assert idle_report["scope"] == {
        "accounts": [{"account_id": sandbox.account_id, "name": "", "regions": REGIONS.split(",")}],
        "regions": sorted(REGIONS.split(",")),
        "gaps": [],
        "skipped": [],
    }
    assert {(f["account_id"], f["account_name"]) for f in idle_report["findings"]} == {
        (sandbox.account_id, "")
    }


def test_idle_findings_carry_telemetry_hours_and_dollars(
    idle_report: dict[str, Any], seeded: SeedManifest
) -> None:
    for finding in idle_report["findings"]:
        instance = seeded.instance(finding["resource_id"])
        assert finding["region"] == instance.region
        assert finding["instance_type"] == instance.instance_type
        assert finding["telemetry"] == instance.telemetry
        util = finding["gpu_util_max"] if instance.telemetry == "gpu" else finding["cpu_util_max"]
        other = finding["cpu_util_max"] if instance.telemetry == "gpu" else finding["gpu_util_max"]
        assert other is None
        assert util < 5
        assert finding["idle_hours"] == pytest.approx(
            expected_idle_hours(seeded, instance.instance_id), abs=0.005
        )
        assert finding["hourly_cost_usd"] == pytest.approx(instance.hourly_cost_usd)
        assert finding["wasted_usd"] == pytest.approx(
            finding["idle_hours"] * instance.hourly_cost_usd, abs=0.005
        )
        assert finding["tags"] == instance.tags
        assert finding.get("run_id") == instance.tags.get(RUN_ID)
        assert finding.get("pulumi_stack") == instance.tags.get(PULUMI_STACK)

    cpu_only = {f["resource_id"] for f in idle_report["findings"] if f["telemetry"] == "cpu"}
    assert cpu_only == set(seeded.cpu_only_instance_ids) & set(seeded.idle_instance_ids)
    assert cpu_only


def test_idle_total_waste(idle_report: dict[str, Any], seeded: SeedManifest) -> None:
    expected = sum(
        expected_idle_hours(seeded, instance_id) * seeded.instance(instance_id).hourly_cost_usd
        for instance_id in seeded.idle_instance_ids
    )

    assert sum(f["wasted_usd"] for f in idle_report["findings"]) == pytest.approx(
        expected, abs=0.01 * len(seeded.idle_instance_ids)
    )


def test_idle_text_table_has_a_total(sandbox_env: dict[str, str], seeded: SeedManifest) -> None:
    result = mlp(sandbox_env, "idle", "--regions", REGIONS)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "scanned 1 account x 2 regions (us-east-1, us-west-2)"
    assert "total" in result.stdout
    for instance_id in seeded.idle_instance_ids:
        assert instance_id in result.stdout
    for instance_id in seeded.too_young_instance_ids:
        assert f"not judged: {instance_id}" in result.stdout


def test_untagged_finds_exactly_the_seeded_gaps(sandbox_env: dict[str, str], seeded: SeedManifest) -> None:
    report = mlp_json(sandbox_env, "untagged", "--regions", REGIONS)

    found = {
        (f["arn"], f["resource_type"], f["region"], tuple(f["missing_tags"])) for f in report["findings"]
    }
    assert found == {(r.arn, r.resource_type, r.region, r.missing_tags) for r in seeded.untagged}
    assert report["required_tags"] == list(DEFAULT_MANDATORY_TAGS)
    assert report["scope"]["regions"] == sorted(REGIONS.split(",")) and report["scope"]["gaps"] == []
    leftover = {volume.arn for volume in seeded.leftover_volumes}
    assert leftover and not leftover & {f["arn"] for f in report["findings"]}


def test_untagged_with_required_run_id(sandbox_env: dict[str, str], seeded: SeedManifest) -> None:
    report = mlp_json(sandbox_env, "untagged", "--regions", REGIONS, "--required-tags", f"team,{RUN_ID}")

    found = {f["arn"]: f["missing_tags"] for f in report["findings"]}
    expected = {
        r.arn: [key for key in ("team", RUN_ID) if not r.tags.get(key)]
        for r in seeded.resources
        if not (r.tags.get("team") and r.tags.get(RUN_ID))
    }
    assert found == expected


def test_one_region_only(sandbox_env: dict[str, str], seeded: SeedManifest) -> None:
    report = mlp_json(sandbox_env, "untagged", "--regions", "us-west-2")

    assert {f["arn"] for f in report["findings"]} == {
        r.arn for r in seeded.untagged if r.region == "us-west-2"
    }


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["idle", "--threshold-pct", "150"], "--threshold-pct"),
        (["idle", "--window-hours", "-1"], "--window-hours"),
        (["idle", "--regions", "mars"], "--regions"),
        (["untagged", "--required-tags", ","], "--required-tags"),
    ],
)
def test_bad_flags_exit_2_with_one_line(sandbox_env: dict[str, str], args: list[str], named: str) -> None:
    result = mlp(sandbox_env, *args)

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("mlp: error: ") and named in result.stderr


def test_unreachable_endpoint_is_a_user_error(sandbox_env: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {**sandbox_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}"}

    for command in ("idle", "untagged"):
        result = mlp(env, command, "--format", "json")
        assert result.returncode == 2, result.stderr
        assert "AWS_ENDPOINT_URL" in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""


def test_thresholds_change_the_verdict(sandbox_env: dict[str, str], seeded: SeedManifest) -> None:
    # Every judged instance runs under 100 %: all of them count as idle at that threshold.
    report = mlp_json(sandbox_env, "idle", "--regions", REGIONS, "--threshold-pct", "100")

    found = {finding["resource_id"] for finding in report["findings"]}
    assert found == set(seeded.idle_instance_ids) | set(seeded.busy_instance_ids)
    assert report["threshold_pct"] == 100
