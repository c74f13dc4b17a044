"""The Automation API adapter translates each call into the right `pulumi.automation` calls.

The Pulumi CLI is not installed here, so `pulumi.automation`'s stack and workspace objects (which
shell out to it) are replaced by recording fakes; its option classes are the real ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi import automation as auto

from infra.training import automation
from infra.training.automation import PulumiAutomationBackend, StackExists, StackSummary, backend_url
from mlp.errors import UserError


class FakeWorkspace:
    def __init__(self, calls: list, **options: Any) -> None:
        self.calls = calls
        self.options = options

    def install_plugin(self, name: str, version: str) -> None:
        self.calls.append(("install_plugin", name, version))

    def remove_stack(self, stack: str) -> None:
        self.calls.append(("remove_stack", stack))

    def list_stacks(self) -> list[auto.StackSummary]:
        return [
            auto.StackSummary(
                "train-r1", current=False, last_update=datetime(2026, 11, 23, tzinfo=UTC), resource_count=14
            )
        ]

    def list_tags(self, stack: str) -> dict[str, str]:
        return {"run-id": "r1", "ephemeral": "true"}


class FakeStack:
    def __init__(self, calls: list, name: str) -> None:
        self.calls = calls
        self.name = name
        self.workspace = FakeWorkspace(calls)

    def set_all_config(self, config: dict[str, auto.ConfigValue]) -> None:
        self.calls.append(("set_all_config", {key: value.value for key, value in config.items()}))

    def set_tag(self, key: str, value: str) -> None:
        self.calls.append(("set_tag", key, value))

    def up(self, on_output) -> SimpleNamespace:
        self.calls.append(("up", self.name))
        return SimpleNamespace(outputs={"asgName": auto.OutputValue("mlp-train-r1", False)})

    def destroy(self, on_output) -> None:
        self.calls.append(("destroy", self.name))

    def outputs(self) -> dict[str, auto.OutputValue]:
        return {"checkpointBucket": auto.OutputValue("mlp-dev-checkpoints-x", False)}


EXISTING = "train-taken"


def _refuse_existing(stack: str) -> None:
    if stack == EXISTING:
        raise auto.StackAlreadyExistsError(auto.CommandResult("", f"stack '{stack}' already exists", 255))


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    calls: list = []
    monkeypatch.setattr(automation.shutil, "which", lambda name: f"/usr/local/bin/{name}")
    state = tmp_path / "state"
    created = PulumiAutomationBackend(f"file://{state}")
    created._auto = SimpleNamespace(
        ConfigValue=auto.ConfigValue,
        create_stack=lambda **kwargs: (
            calls.append(("create", kwargs["stack_name"], kwargs["opts"]))
            or _refuse_existing(kwargs["stack_name"])
            or FakeStack(calls, kwargs["stack_name"])
        ),
        StackAlreadyExistsError=auto.StackAlreadyExistsError,
        select_stack=lambda **kwargs: (
            calls.append(("select", kwargs["stack_name"])) or FakeStack(calls, kwargs["stack_name"])
        ),
        LocalWorkspace=lambda **options: FakeWorkspace(calls, **options),
    )
    return created, calls, state


def test_deploy_creates_configures_tags_and_runs_up(backend) -> None:
    created, calls, state = backend
    assert state.is_dir()  # a file:// backend directory is created on first use
    outputs = created.deploy(
        "train-r1",
        lambda: None,
        config={"aws:region": "us-east-1"},
        tags={"run-id": "r1", "ephemeral": "true"},
        on_output=print,
    )
    assert outputs == {"asgName": "mlp-train-r1"}
    create = calls[0]
    assert create[:2] == ("create", "train-r1")
    assert create[2].project_settings.backend.url == f"file://{state}"
    assert create[2].project_settings.name == "ml-platform"
    assert calls[1][:2] == ("install_plugin", "aws") and calls[1][2].startswith("v7.")
    assert calls[2:] == [
        ("set_all_config", {"aws:region": "us-east-1"}),
        ("set_tag", "run-id", "r1"),
        ("set_tag", "ephemeral", "true"),
        ("up", "train-r1"),
    ]


def test_deploy_never_reuses_an_existing_stack(backend) -> None:
    created, calls, _ = backend
    with pytest.raises(StackExists, match=r"stack train-taken already exists.*`mlp train status taken`"):
        created.deploy(EXISTING, lambda: None, config={}, tags={}, on_output=print)
    assert [call[0] for call in calls] == ["create"]  # nothing configured, nothing updated


def test_destroy_selects_never_creates(backend) -> None:
    created, calls, _ = backend
    created.destroy("train-r1", lambda: None, on_output=print)
    assert calls == [("select", "train-r1"), ("destroy", "train-r1")]


def test_destroy_remove_list_and_outputs(backend) -> None:
    created, calls, _ = backend
    created.destroy("train-r1", lambda: None, on_output=print)
    created.remove("train-r1")
    assert [call for call in calls if call[0] != "select"] == [
        ("destroy", "train-r1"),
        ("remove_stack", "train-r1"),
    ]
    assert created.list_stacks() == [
        StackSummary(
            "train-r1", {"run-id": "r1", "ephemeral": "true"}, datetime(2026, 11, 23, tzinfo=UTC), 14
        )
    ]
    assert created.outputs("train-r1") == {"checkpointBucket": "mlp-dev-checkpoints-x"}


def test_backend_url_accepts_file_and_s3_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLP_BACKEND_URL", raising=False)
    assert backend_url("s3://state-bucket/ml-platform") == "s3://state-bucket/ml-platform"
    assert backend_url(None).startswith("file://")
    monkeypatch.setenv("MLP_BACKEND_URL", "s3://from-env")
    assert backend_url(None) == "s3://from-env"
    with pytest.raises(UserError, match=r"^backend 'https://app\.pulumi\.com': use a file:// or s3:// URL"):
        backend_url("https://app.pulumi.com")
