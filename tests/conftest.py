"""Shared test set-up: never real AWS, and never the real home directory, whatever the machine holds."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of the test's own: `~/.ml-platform/state` and `/locks`, `~/.cache` (logs, the Cost
    Explorer cache) all land in it, and subprocesses inherit it."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    # finops.costs resolves its default cache directory at import, from the home of that moment.
    monkeypatch.setenv("MLP_COST_CACHE_DIR", str(home / ".cache" / "ml-platform" / "cost-explorer"))
    # A backend of the machine's environment would be written to by the reaper and launch tests.
    for name in ("MLP_BACKEND_URL", "PULUMI_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    return home
