"""`mlp plan` as users run it: JSON on stdout (and --out), the table with tag coverage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _mlp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlp", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )


def test_plan_json_goes_to_stdout_and_to_the_out_file(tmp_path: Path) -> None:
    out = tmp_path / "plans" / "dev.json"
    result = _mlp("plan", "--stack", "dev", "--format", "json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["stack"] == "dev"
    assert {"pulumi:providers:aws", "pulumi:providers:kubernetes"} <= {
        item["type"] for item in printed["resources"]
    }


def test_plan_table_shows_full_tag_coverage_for_prod() -> None:
    result = _mlp("plan", "--stack", "prod", "--format", "table")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "(100.0%)" in text and "missing" not in text
    assert "aws:eks/cluster:Cluster" in text and "estimated monthly cost: $" in text
