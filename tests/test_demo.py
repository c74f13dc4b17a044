"""`mlp demo`: the whole nightly job on the embedded sandbox, and `--keep-running`."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from finops import report
from finops.demo import demo_now, run_demo, sandbox_environment

pytestmark = pytest.mark.e2e

MLP = str(Path(sys.executable).parent / "mlp")


# The keys of findings.json whose values are moments (ISO 8601): the runs' and their interruptions'.
# The demo lays its data out around one moment (the start of today, UTC), so even they agree on a day.
TIMESTAMP_KEYS = frozenset(
    {
        "start",
        "end",
        "expires_at",
        "noticed_at",
        "ended_at",
        "last_checkpoint_at",
        "first_checkpoint_after_restart_at",
        "newest_at",
        "budget_crossed_at",
    }
)


@dataclass
class Demo:
    out: Path
    result: subprocess.CompletedProcess[str]
    # The UTC day the demo ran on: it is laid out around the start of it.
    day: date


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`mlp demo` once for the module, in a process of its own with a hash seed of its own."""
    out = tmp_path_factory.mktemp("mlp-demo") / "demo"
    day = datetime.now(UTC).date()
    result = subprocess.run(
        [MLP, "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONHASHSEED": "1123"},
    )
    if datetime.now(UTC).date() != day:
        pytest.skip("the demo ran across midnight UTC: its moment is no longer today's")
    return Demo(out, result, day)


def without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timestamps(item) for key, item in value.items() if key not in TIMESTAMP_KEYS}
    if isinstance(value, list):
        return [without_timestamps(item) for item in value]
    return value


def test_two_demos_of_a_day_write_the_same_findings(demo: Demo, tmp_path: Path) -> None:
    assert demo.result.returncode == 0, demo.result.stderr

    again = run_demo(tmp_path / "again", now=demo_now(demo.day))

    first = json.loads((demo.out / "findings.json").read_text())
    second = json.loads((again.out_dir / "findings.json").read_text())
    # Ids (moto's, reseeded on every reset), dollars, hours and counts: every figure.
    assert without_timestamps(second) == without_timestamps(first)
    # And the moments too, laid out around the same moment.
    assert second == first
    runs = {run["run_id"]: run for run in first["runs"]}
    assert runs["vision-r240"]["over_budget"] is True and len(runs["nlp-r231"]["interruptions"]) == 1


def test_demo_writes_the_report_and_prints_the_dashboard(demo: Demo) -> None:
    out, result = demo.out, demo.result

    assert result.returncode == 0, result.stderr
    dashboard = (out / "index.html").resolve()
    assert result.stdout.strip().splitlines()[-1] == f"Dashboard: {dashboard}"
    assert sorted(path.name for path in out.iterdir()) == sorted(report.REPORT_FILES)
    findings = json.loads((out / "findings.json").read_text())
    assert "missing" not in findings
    assert findings["spend"]["total_usd"] > 0
    assert findings["spend"]["untagged_usd"] > 0
    assert {finding["telemetry"] for finding in findings["idle"]} == {"gpu", "cpu"}
    assert len({finding["resource_type"] for finding in findings["untagged"]}) >= 8
    # The demo reads the sandbox's FOCUS export: not one Cost Explorer request is paid for.
    assert (findings["cost_source"], findings["cost_explorer_requests"]) == ("focus", 0)
    assert round(findings["line_items"]["total"]["billed_usd"], 2) == round(findings["spend"]["total_usd"], 2)
    assert "warning" not in result.stderr
    # The sandbox heads an organization: the demo scans all of it, and says so.
    assert "--org-role FinOpsReadOnly: 3 accounts" in result.stderr
    accounts = findings["scope"]["accounts"]
    assert len(accounts) == 3 and {"ml-team-a", "ml-team-b"} <= {account["name"] for account in accounts}
    assert findings["scope"]["gaps"] == [] and findings["unscanned_spend"] == []
    assert {finding["account_name"] for finding in findings["idle"]} >= {"ml-team-a", "ml-team-b"}
    assert len(findings["line_items"]["by_account"]) == 3
    assert "Scanned 3 accounts x 3 regions" in (out / "report.md").read_text()
    # The text summary: the month so far against the budget, and the runs with the one over budget.
    forecast, totals = findings["spend"]["forecast"], findings["runs_totals"]
    assert (
        f"  {forecast['month_label']:<18} ${forecast['month_to_date_usd']:,.2f} so far, forecast "
        f"${forecast['forecast_usd']:,.2f} against a budget of ${forecast['budget_usd']:,.2f}"
    ) in result.stdout.splitlines()
    assert totals["over_budget"] == ["vision-r240"]
    assert (
        f"  training runs      {totals['runs']} costing ${totals['cost_usd']:,.2f}, interruptions lost "
        f"${totals['lost_work_usd']:,.2f}, over budget: vision-r240"
    ) in result.stdout.splitlines()


def test_keep_running_serves_the_sandbox_until_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [MLP, "demo", "--out", str(tmp_path / "demo"), "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()
    try:
        endpoint = None
        while endpoint is None:
            line = lines.get(timeout=240)
            if line.startswith("Sandbox endpoint: "):
                endpoint = line.split()[2]
        ec2 = boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        reservations = ec2.describe_instances()["Reservations"]
        assert reservations, "the seeded instances should be served while the demo keeps running"

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            ec2.describe_instances()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


class FakeSandbox:
    endpoint = "http://127.0.0.1:1"

    def environ(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": "sandbox",
        }


def test_sandbox_environment_hides_the_users_aws_setup_and_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.com")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "users-key")
    before = dict(os.environ)

    with sandbox_environment(FakeSandbox()):  # type: ignore[arg-type]
        assert "AWS_PROFILE" not in os.environ
        assert "AWS_ENDPOINT_URL_S3" not in os.environ
        assert os.environ["AWS_ENDPOINT_URL"] == FakeSandbox.endpoint
        assert os.environ["AWS_ACCESS_KEY_ID"] == "sandbox"
        assert os.environ["AWS_CONFIG_FILE"] == os.devnull

    assert dict(os.environ) == before
