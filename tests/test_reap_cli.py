"""`mlp reap` and `mlp train status|list|destroy` wired end to end, the Pulumi boundary faked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from infra.training import automation
from infra.training.automation import StackSummary
from infra.training.checkpoints import completion_key
from infra.training.status import run_status
from mlp.cli import app
from tests.conftest import REPO_ROOT
from tests.test_reaper_sweep import REGION, Backend, plant_run, run_tags

runner = CliRunner()


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with mock_aws():
        yield


def _use_backend(monkeypatch: pytest.MonkeyPatch, backend: Backend) -> None:
    monkeypatch.setattr(automation, "PulumiAutomationBackend", lambda url: backend)


def test_reap_dry_run_then_apply_with_a_leak_exits_1(account, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = plant_run("r7", run_tags("r7"))
    orphan = plant_run("orph2", run_tags("orph2"), with_asg=False)
    backend = Backend([StackSummary("train-r7", run_tags("r7"))], owned={"train-r7": ids}, leave={"volume"})
    _use_backend(monkeypatch, backend)

    dry = runner.invoke(app, ["reap", "--format", "json", "--regions", REGION])
    assert dry.exit_code == 0, dry.output
    payload = json.loads(dry.stdout)
    assert payload["applied"] is False and backend.calls == []
    assert {(c["stack"], c["reason"], c["action"]) for c in payload["candidates"]} == {
        ("train-r7", "expired", "destroy"),
        ("train-orph2", "orphaned", "destroy"),
    }

    applied = runner.invoke(app, ["reap", "--apply", "--format", "json", "--regions", REGION])
    assert applied.exit_code == 1  # the destroy left a volume behind
    receipts = {receipt["run_id"]: receipt for receipt in json.loads(applied.stdout)["receipts"]}
    assert [leak["id"] for leak in receipts["r7"]["leaks"]] == [ids["volume"]]
    assert receipts["orph2"]["leaks"] == [] and orphan["volume"] in " ".join(receipts["orph2"]["removed"])
    assert backend.calls == [("destroy", "train-r7"), ("remove", "train-r7")]


def test_train_status_reads_outputs_then_aws(account) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mlp-dev-checkpoints-x")
    s3.put_object(Bucket="mlp-dev-checkpoints-x", Key="runs/r5/checkpoints/step-1.pt", Body=b"w")
    ids = plant_run("r5", run_tags("r5", **{"expires-at": "2026-11-23T20:00:00Z"}))
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(
        AutoScalingGroupName=ids["asg"], DesiredCapacity=1
    )

    class WithOutputs(Backend):
        def outputs(self, stack: str) -> dict:
            return {"checkpointBucket": "mlp-dev-checkpoints-x", "asgName": ids["asg"], "region": REGION}

    backend = WithOutputs(
        [StackSummary("train-r5", run_tags("r5", **{"expires-at": "2026-11-23T20:00:00Z"}))]
    )

    built: list[tuple[str, str | None]] = []

    def client(service: str, region: str | None):
        built.append((service, region))
        return boto3.client(service, region_name=region)

    report = run_status(
        backend,
        "r5",
        client=client,
        now=datetime(2026, 11, 23, 12, tzinfo=UTC),
    )
    assert report["state"] == "running" and report["desired_capacity"] == 1
    assert report["latest_checkpoint"]["key"] == "runs/r5/checkpoints/step-1.pt"
    assert report["completion"] is None
    s3.put_object(Bucket="mlp-dev-checkpoints-x", Key=completion_key("r5"), Body=b"{}")
    later = run_status(
        backend,
        "r5",
        client=client,
        now=datetime(2026, 11, 23, 21, tzinfo=UTC),
    )
    assert later["state"] == "expired" and later["completion"]["verified"] is False
    assert set(built) == {("s3", REGION), ("autoscaling", REGION)}


def test_train_list_and_destroy_dry_run(account, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Backend(
        [
            StackSummary("train-r1", run_tags("r1"), resource_count=14),
            StackSummary("dev", {"environment": "dev"}),
        ]
    )
    _use_backend(monkeypatch, backend)
    listed = runner.invoke(app, ["train", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [run["stack"] for run in json.loads(listed.stdout)["runs"]] == ["train-r1"]
    dry = runner.invoke(app, ["train", "destroy", "r1"])
    assert dry.exit_code == 0 and "would destroy and remove train-r1" in dry.output and backend.calls == []


def test_reap_without_the_pulumi_cli_is_one_line() -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    result = subprocess.run(
        [sys.executable, "-m", "mlp", "reap"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "the Pulumi CLI is not installed" in result.stderr
