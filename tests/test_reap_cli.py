"""`mlp reap` and `mlp train` wired end to end against moto: the JSON they print and what AWS holds after.

`mlp reap` reads the DIY state files (no Pulumi CLI) and destroys through the Automation API, which
is faked at `finops.reaper.PulumiAutomationBackend`; everything between is the real code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import finops.reaper
from finops.idle import IdleFinding, IdleScan
from finops.sandbox import Sandbox
from infra.config import load_stack_config
from infra.training import automation
from infra.training.automation import StackExists
from infra.training.lifecycle import launch
from infra.training.request import build_request
from mlp.cli import app
from mlp.errors import UserError
from mlp.tags import format_expires_at
from tests.conftest import REPO_ROOT
from tests.reaper_world import (
    ACCOUNT_ID,
    LIVE,
    PROD_TAGS,
    REGION,
    FakePulumi,
    World,
    add_stack,
    diy_backend,
    diy_state,
    instance_state,
    mocked_world,
    run_tags,
    snapshot,
)
from tests.sandbox_fixtures import process_env
from tests.test_diy_state import cli_env, mlp

runner = CliRunner()
# The CLI reads the wall clock: "expired" has to be relative to it, well past the 60 min grace.
EXPIRED = format_expires_at(datetime.now(UTC) - timedelta(hours=3))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    with mocked_world(monkeypatch, tmp_path) as planted:
        yield planted


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return diy_state(tmp_path)


@pytest.fixture
def pulumi(world: World, state: Path, monkeypatch: pytest.MonkeyPatch) -> FakePulumi:
    fake = FakePulumi(world, state)
    monkeypatch.setattr(finops.reaper, "PulumiAutomationBackend", lambda url: fake)
    return fake


def reap(state: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(
        app, ["reap", "--format", "json", "--regions", REGION, "--backend", f"file://{state}", *extra]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout), result.stderr


def candidates(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {candidate["stack"]: candidate for candidate in payload["candidates"]}


def expired_orphan(world: World, run_id: str = "orph") -> Any:
    return world.plant_run(run_id, expires_at=EXPIRED)


# -- what must never be touched --------------------------------------------------------------


def test_a_live_run_with_no_stack_on_the_backend_is_never_swept(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = world.plant_run("live", expires_at=LIVE, instances=2)
    before = snapshot()

    code, dry, _ = reap(state)
    assert code == 0
    assert "holds no training stack" in dry["warnings"][0] and "1 run(s)" in dry["warnings"][0]
    [candidate] = dry["candidates"]
    assert (candidate["stack"], candidate["reason"], candidate["action"]) == (
        "train-live",
        "orphaned",
        "skip",
    )
    assert "never swept" in candidate["why"]

    code, applied, _ = reap(state, "--apply")
    assert code == 0 and applied["receipts"] == [] and applied["errors"] == []
    assert [c["action"] for c in applied["candidates"]] == ["skip"]
    assert snapshot() == before and pulumi.calls == []
    assert all(instance_state(i) == "running" for i in run.instances)


def test_a_foreign_instance_in_the_group_refuses_the_whole_run(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = expired_orphan(world)
    stranger = world.foreign_instance()
    world.attach_to_group(run.asg, stranger)
    before = snapshot()

    code, payload, _ = reap(state, "--apply")
    assert code == 1  # a refused run keeps billing until a person looks
    candidate = candidates(payload)["train-orph"]
    assert candidate["action"] == "refuse" and stranger in candidate["why"]
    assert payload["receipts"] == []
    assert snapshot() == before
    assert instance_state(stranger) == "running"


def test_a_role_shared_with_other_profiles_refuses_the_run(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = expired_orphan(world)
    live = world.plant_run("busy", expires_at=LIVE)
    prod_profile = world.foreign_profile(run.role, PROD_TAGS, name="serving-prod")
    live_profile = world.foreign_profile(run.role, live.tags, name="busy-extra")
    before = snapshot()

    code, payload, _ = reap(state, "--apply")
    assert code == 1  # a refused run keeps billing until a person looks
    candidate = candidates(payload)["train-orph"]
    assert candidate["action"] == "refuse"
    assert prod_profile in candidate["why"] and live_profile in candidate["why"]
    assert snapshot() == before
    for profile in (prod_profile, live_profile):
        assert ("profile-role", f"{profile}/{run.role}") in before


def test_a_launch_template_used_by_another_group_refuses_the_run(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = expired_orphan(world)
    serving = world.foreign_group(run.launch_template, {**PROD_TAGS, "ephemeral": "false"})
    before = snapshot()

    code, payload, _ = reap(state, "--apply")
    assert code == 1  # a refused run keeps billing until a person looks
    candidate = candidates(payload)["train-orph"]
    assert candidate["action"] == "refuse" and serving in candidate["why"]
    assert snapshot() == before
    assert ("launch-template", run.launch_template) in before


def test_a_prod_volume_deleted_on_termination_refuses_the_run(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = expired_orphan(world)
    data = world.foreign_volume(run.instances[0], PROD_TAGS, delete_on_termination=True)
    before = snapshot()

    code, payload, _ = reap(state, "--apply")
    assert code == 1  # a refused run keeps billing until a person looks
    candidate = candidates(payload)["train-orph"]
    assert candidate["action"] == "refuse" and data in candidate["why"]
    assert snapshot() == before
    assert ("attachment", f"{run.instances[0]}/{data}") in before


def test_environment_stacks_are_never_candidates(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pulumi: FakePulumi
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    # An environment named before `train-` was reserved for runs: its Pulumi.<name>.yaml makes it one.
    shutil.copy(REPO_ROOT / "Pulumi.dev.yaml", project / "Pulumi.train-legacy.yaml")
    monkeypatch.chdir(project)
    state = tmp_path / "state"
    diy_backend(state)
    for stack, run_id in (("dev", "dev"), ("train-legacy", "legacy")):
        add_stack(state, stack, run_tags(run_id, EXPIRED, **{"pulumi-stack": stack}))

    code, payload, _ = reap(state, "--apply")
    assert code == 0 and payload["candidates"] == [] and pulumi.calls == []


def test_the_resources_of_an_environment_stack_tagged_like_a_run_are_not_orphans(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pulumi: FakePulumi
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    shutil.copy(REPO_ROOT / "Pulumi.dev.yaml", project / "Pulumi.train-legacy.yaml")
    monkeypatch.chdir(project)
    state = tmp_path / "state"
    diy_backend(state)
    # The stack exists on the backend: its resources have an owner, so they are no orphan.
    add_stack(state, "train-legacy", run_tags("legacy", EXPIRED))
    world.plant_run("legacy", expires_at=EXPIRED)
    before = snapshot()

    _, payload, _ = reap(state, "--apply")
    assert [c for c in payload["candidates"] if c["action"] == "destroy"] == []
    assert payload["receipts"] == [] and pulumi.calls == []
    assert snapshot() == before


# -- what is taken down, and how it reports --------------------------------------------------


def test_a_clean_expired_orphan_is_swept_with_a_receipt_and_checkpoints_stay(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    run = expired_orphan(world)
    key = world.checkpoints("mlp-dev-checkpoints-x", "orph", tags=run.tags)

    code, dry, _ = reap(state)
    assert code == 0 and candidates(dry)["train-orph"]["action"] == "destroy"
    assert run.ids() <= set(snapshot())

    code, applied, _ = reap(state, "--apply")
    assert code == 0, applied
    [receipt] = applied["receipts"]
    assert receipt["run_id"] == "orph" and receipt["leaks"] == [] and receipt["errors"] == []
    removed = " ".join(receipt["removed"])
    for identifier in [*run.instances, *run.volumes, run.launch_template, run.asg, f"role/{run.role}"]:
        assert identifier in removed
    after = snapshot()
    assert not run.ids() & set(after)
    assert ("object", f"mlp-dev-checkpoints-x/{key}") in after and (
        "bucket",
        "mlp-dev-checkpoints-x",
    ) in after
    assert pulumi.calls == []

    code, again, _ = reap(state, "--apply")
    assert code == 0 and again["candidates"] == [] and again["receipts"] == [] and again["errors"] == []


def test_a_locked_stack_fails_alone_and_the_next_is_still_destroyed(
    world: World, state: Path, pulumi: FakePulumi
) -> None:
    first, second = world.plant_run("a", expires_at=EXPIRED), world.plant_run("b", expires_at=EXPIRED)
    for run in (first, second):
        add_stack(state, f"train-{run.run_id}", run.tags)
    pulumi.fail["train-a"] = (
        "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
        "or delete the lock file with `pulumi cancel`."
    )

    code, payload, _ = reap(state, "--apply")
    assert code == 1
    assert [(c["stack"], c["reason"], c["action"]) for c in payload["candidates"]] == [
        ("train-a", "expired", "destroy"),
        ("train-b", "expired", "destroy"),
    ]
    [error] = payload["errors"]
    assert error["stack"] == "train-a" and "stack is currently locked" in error["error"]
    assert [(r["run_id"], r["leaks"]) for r in payload["receipts"]] == [("b", [])]
    assert pulumi.calls == [("destroy", "train-a"), ("destroy", "train-b"), ("remove", "train-b")]
    after = set(snapshot())
    assert first.ids() <= after and not second.ids() & after


class SlackDown(BaseHTTPRequestHandler):
    posts: list[bytes] = []

    def do_POST(self) -> None:
        SlackDown.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"internal_error")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slack_down() -> Iterator[str]:
    SlackDown.posts = []
    server = HTTPServer(("127.0.0.1", 0), SlackDown)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/services/T0/B0/x"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_slack_outage_is_an_error_and_the_reaping_goes_on(
    world: World, state: Path, pulumi: FakePulumi, slack_down: str
) -> None:
    world.plant_run("live", expires_at=LIVE)  # notified: an unexpired orphan
    run = expired_orphan(world)
    stranger = world.foreign_instance()
    refused = world.plant_run("shared", expires_at=EXPIRED)
    world.attach_to_group(refused.asg, stranger)  # notified: a refusal

    code, payload, _ = reap(state, "--apply", "--slack-webhook", slack_down)
    assert code == 1
    assert len(SlackDown.posts) == 2
    notifying = [e for e in payload["errors"] if e["error"].startswith("notifying:")]
    assert {e["stack"] for e in notifying} == {"train-live", "train-shared"}
    assert all("500" in e["error"] for e in notifying)
    assert [r["run_id"] for r in payload["receipts"]] == ["orph"]
    assert not run.ids() & set(snapshot())


def idle_scan(run: Any, telemetry: str) -> Any:
    """What the idle-GPU scan would find: the run's instances idle for 5 h, judged on `telemetry`."""
    findings = [
        IdleFinding(
            resource_id=instance,
            region=REGION,
            instance_type="g5.xlarge",
            telemetry=telemetry,
            gpu_util_max=1.0 if telemetry == "gpu" else None,
            cpu_util_max=1.0 if telemetry == "cpu" else None,
            idle_hours=5.0,
            hourly_cost_usd=1.006,
            wasted_usd=5.03,
            tags=run.tags,
            account_id=ACCOUNT_ID,
        )
        for instance in run.instances
    ]
    return lambda scope, **_: IdleScan(window_hours=6, threshold_pct=5, scope=scope, findings=findings)


@pytest.mark.parametrize(("telemetry", "action"), [("cpu", "skip"), ("gpu", "destroy")])
def test_idle_is_destroyed_only_on_gpu_telemetry(
    world: World,
    state: Path,
    pulumi: FakePulumi,
    monkeypatch: pytest.MonkeyPatch,
    telemetry: str,
    action: str,
) -> None:
    run = world.plant_run("idle", expires_at=LIVE, instances=2)
    add_stack(state, "train-idle", run.tags)
    monkeypatch.setattr(finops.reaper, "scan_idle", idle_scan(run, telemetry))

    code, payload, _ = reap(state, "--apply")
    assert code == 0, payload
    candidate = candidates(payload)["train-idle"]
    assert (candidate["reason"], candidate["action"]) == ("idle", action)
    after = set(snapshot())
    if telemetry == "cpu":
        assert "CPU only" in candidate["why"] and pulumi.calls == [] and run.ids() <= after
    else:
        assert pulumi.calls == [("destroy", "train-idle"), ("remove", "train-idle")]
        assert not run.ids() & after


# -- mlp train ----------------------------------------------------------------------------------


def test_train_list_status_and_destroy_read_the_state_files(
    world: World, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = world.plant_run("r1", expires_at=LIVE)
    add_stack(state, "train-r1", run.tags, outputs={"region": REGION, "asgName": run.asg})
    add_stack(state, "dev", {"environment": "dev"})
    url = f"file://{state}"

    listed = runner.invoke(app, ["train", "list", "--format", "json", "--backend", url])
    assert listed.exit_code == 0, listed.output
    assert [r["stack"] for r in json.loads(listed.stdout)["runs"]] == ["train-r1"]

    status = runner.invoke(app, ["train", "status", "r1", "--format", "json", "--backend", url])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["stack"] == "train-r1" and sorted(i["instance_id"] for i in report["instances"]) == sorted(
        run.instances
    )

    fake = FakePulumi(world, state)
    monkeypatch.setattr(automation, "PulumiAutomationBackend", lambda url: fake)
    dry = runner.invoke(app, ["train", "destroy", "r1", "--backend", url])
    assert dry.exit_code == 0 and "would destroy and remove train-r1" in dry.stderr and fake.calls == []

    applied = runner.invoke(app, ["train", "destroy", "r1", "--apply", "--format", "json", "--backend", url])
    assert applied.exit_code == 0, applied.output
    receipt = json.loads(applied.stdout)
    assert receipt["leaks"] == [] and len(receipt["removed"]) == len(run.ids())
    assert fake.calls == [("destroy", "train-r1"), ("remove", "train-r1")]
    assert not run.ids() & set(snapshot())


def test_train_destroy_refuses_a_run_with_a_foreign_dependent(
    world: World, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = world.plant_run("r2", expires_at=LIVE)
    data = world.foreign_volume(run.instances[1], PROD_TAGS)
    add_stack(state, "train-r2", run.tags, outputs={"region": REGION})
    fake = FakePulumi(world, state)
    monkeypatch.setattr(automation, "PulumiAutomationBackend", lambda url: fake)
    before = snapshot()

    result = runner.invoke(app, ["train", "destroy", "r2", "--apply", "--backend", f"file://{state}"])
    assert result.exit_code != 0 and data in str(result.exception)
    assert fake.calls == [] and snapshot() == before


def test_plan_refuses_a_stack_named_like_a_training_run(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    shutil.copy(REPO_ROOT / "Pulumi.dev.yaml", tmp_path / "Pulumi.train-ops.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "mlp", "plan", "--stack", "train-ops", "--project-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("mlp: error: --stack 'train-ops'") and "reserved for training runs" in line


class ExistingStack:
    """The Automation API boundary when the run's stack is already on the backend."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def deploy(self, stack: str, program: Any, **_: Any) -> dict[str, Any]:
        self.calls.append(("deploy", stack))
        raise StackExists(stack)

    def destroy(self, stack: str, program: Any, *, on_output: Any) -> None:
        self.calls.append(("destroy", stack))

    def remove(self, stack: str) -> None:
        self.calls.append(("remove", stack))


def test_launching_onto_an_existing_stack_touches_nothing() -> None:
    request = build_request(
        load_stack_config("dev", REPO_ROOT),
        run_id="r1",
        instance_types=["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        count=1,
        max_hours=2.0,
        created_at=datetime(2026, 11, 23, 12, tzinfo=UTC),
    )
    backend = ExistingStack()
    torn_down: list[str] = []
    with pytest.raises(UserError, match="already exists") as raised:
        launch(
            request,
            lambda: None,
            backend,
            s3=None,
            wait=True,
            clock=lambda: datetime(2026, 11, 23, 12, tzinfo=UTC),
            sleep=lambda seconds: None,
            log=lambda line: None,
            teardown=lambda: torn_down.append("teardown"),  # type: ignore[arg-type,return-value]
        )
    assert isinstance(raised.value, StackExists)
    assert backend.calls == [("deploy", "train-r1")] and torn_down == []


# -- without the Pulumi CLI, as a user's shell runs it ------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Function-scoped: moto's backends are process-wide, and this module's mock_aws tests reset them.
    with Sandbox() as running:
        yield running


@pytest.mark.e2e
def test_without_the_pulumi_cli_list_and_reap_work_and_a_stack_says_what_it_needs(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    world = World(clients=lambda service, region: sandbox.client(service, region))
    orphan = world.plant_run("orph", expires_at=EXPIRED)
    stacked = world.plant_run("stacked", expires_at=EXPIRED)
    state = tmp_path / "state"
    url = diy_backend(state)
    add_stack(state, "train-stacked", stacked.tags, outputs={"region": REGION})
    env = cli_env(tmp_path, process_env(sandbox))  # PATH without pulumi, asserted there

    listed = mlp(env, "train", "list", "--format", "json", "--backend", url)
    assert listed.returncode == 0, listed.stderr
    assert [r["stack"] for r in json.loads(listed.stdout)["runs"]] == ["train-stacked"]

    dry = mlp(env, "reap", "--format", "json", "--regions", REGION, "--backend", url)
    assert dry.returncode == 0, dry.stderr
    assert {(c["stack"], c["action"]) for c in json.loads(dry.stdout)["candidates"]} == {
        ("train-orph", "destroy"),
        ("train-stacked", "destroy"),
    }

    applied = mlp(env, "reap", "--apply", "--format", "json", "--regions", REGION, "--backend", url)
    assert applied.returncode == 1, applied.stderr
    payload = json.loads(applied.stdout)
    [error] = payload["errors"]
    assert error["stack"] == "train-stacked" and "needs the Pulumi CLI to destroy" in error["error"]
    assert [(r["run_id"], r["leaks"]) for r in payload["receipts"]] == [("orph", [])]
    after = set(snapshot(world.clients))
    assert not orphan.ids() & after and stacked.ids() <= after
