"""The jobs' heartbeat: `JobSucceeded=1` with its `Job` dimension, published only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from typer.testing import CliRunner

from finops import heartbeat
from mlp.cli import app, main
from mlp.errors import UserError

runner = CliRunner()


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def published(cloudwatch: Any) -> dict[str, float]:
    """The heartbeats in CloudWatch: the sum of JobSucceeded by Job."""
    sums = {}
    for metric in cloudwatch.list_metrics(Namespace=heartbeat.NAMESPACE)["Metrics"]:
        assert metric["MetricName"] == heartbeat.METRIC_NAME
        [dimension] = metric["Dimensions"]
        assert dimension["Name"] == heartbeat.JOB_DIMENSION
        now = datetime.now(UTC)
        answer = cloudwatch.get_metric_statistics(
            Namespace=metric["Namespace"],
            MetricName=metric["MetricName"],
            Dimensions=metric["Dimensions"],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(hours=1),
            Period=7200,
            Statistics=["Sum"],
        )
        sums[dimension["Value"]] = sum(point["Sum"] for point in answer["Datapoints"])
    return sums


def test_publish_success_puts_one_datapoint_with_the_job_dimension(cloudwatch: Any) -> None:
    heartbeat.publish_success("report")
    assert published(cloudwatch) == {"report": 1.0}


def test_an_unknown_job_is_refused() -> None:
    with pytest.raises(ValueError, match="report, reap"):
        heartbeat.publish_success("nightly")


def test_a_refused_heartbeat_is_one_line_naming_the_metric() -> None:
    client = boto3.client("cloudwatch", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("put_metric_data", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(UserError, match=r"ml-platform/finops JobSucceeded.*access denied"):
            heartbeat.publish_success("reap", client=client)


def test_a_complete_report_publishes_only_with_the_flag(cloudwatch: Any, tmp_path: Path) -> None:
    base = ["report", "--days", "3", "--regions", "us-east-1", "--no-cache"]
    without = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")])
    assert without.exit_code == 0, without.output
    assert published(cloudwatch) == {}

    flagged = runner.invoke(
        app, [*base, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "c"), "--heartbeat"]
    )
    assert flagged.exit_code == 0, flagged.output
    assert published(cloudwatch) == {"report": 1.0}


def test_an_applied_reap_publishes_only_with_the_flag(cloudwatch: Any, tmp_path: Path) -> None:
    base = ["reap", "--apply", "--regions", "us-east-1", "--backend", f"file://{tmp_path / 'state'}"]
    without = runner.invoke(app, base)
    assert without.exit_code == 0, without.output
    assert published(cloudwatch) == {}

    flagged = runner.invoke(app, [*base, "--heartbeat"])
    assert flagged.exit_code == 0, flagged.output
    assert published(cloudwatch) == {"reap": 1.0}


def test_a_dry_run_reap_refuses_the_heartbeat(
    cloudwatch: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reap", "--heartbeat", "--regions", "us-east-1", "--backend", f"file://{tmp_path}"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--heartbeat" in line and "--apply" in line
    assert published(cloudwatch) == {}
