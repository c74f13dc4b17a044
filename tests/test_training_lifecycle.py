"""The launch → wait → destroy state machine, with the Pulumi boundary faked and S3 from moto."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finops.teardown import Receipt
from infra.config import load_stack_config
from infra.training.automation import StackExists, StackSummary
from infra.training.checkpoints import completion_key, read_completion
from infra.training.lifecycle import RunEnd, destroy_run, launch
from infra.training.request import build_request
from mlp.errors import UserError
from tests.conftest import REPO_ROOT

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BUCKET = "mlp-dev-checkpoints-test"


class FakeBackend:
    """The Automation API boundary, recording calls; everything around it is the real code."""

    def __init__(self, *, fail_deploy: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.stacks: dict[str, StackSummary] = {}
        self.fail_deploy = fail_deploy

    def deploy(
        self, stack: str, program: Callable[[], None], *, config: dict, tags: dict, on_output
    ) -> dict[str, Any]:
        self.calls.append(("deploy", stack))
        self.stacks[stack] = StackSummary(stack, dict(tags), resource_count=14)
        if self.fail_deploy:
            raise RuntimeError("spot capacity not available")
        return {"checkpointBucket": BUCKET, "asgName": f"mlp-{stack}"}

    def destroy(self, stack: str, program: Callable[[], None], *, on_output) -> None:
        self.calls.append(("destroy", stack))

    def remove(self, stack: str) -> None:
        self.calls.append(("remove", stack))
        self.stacks.pop(stack, None)

    def list_stacks(self) -> list[StackSummary]:
        return list(self.stacks.values())

    def outputs(self, stack: str) -> dict[str, Any]:
        return {"checkpointBucket": BUCKET}


class FakeTime:
    """A clock that advances only when the code under test sleeps; hooks run at given times."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept: list[float] = []
        self.hooks: list[tuple[datetime, Callable[[], None]]] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        for moment, hook in list(self.hooks):
            if self.now >= moment:
                hook()
                self.hooks.remove((moment, hook))


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="module")
def request_():
    return build_request(
        load_stack_config("dev", REPO_ROOT),
        run_id="r1",
        instance_types=["g5.xlarge", "g6.xlarge", "g4dn.xlarge"],
        count=1,
        max_hours=2.0,
        created_at=NOW,
    )


def _complete(s3, run_id: str, *, corrupt: bool = False) -> None:
    body = b"weights" * 1000
    key = f"runs/{run_id}/checkpoints/step-000900.pt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    digest = hashlib.sha256(body + (b"x" if corrupt else b"")).hexdigest()
    marker = {
        "run_id": run_id,
        "final_checkpoint_key": key,
        "sha256": digest,
        "instance_id": "i-1",
        "completed_at": "2026-11-23T13:00:00Z",
    }
    s3.put_object(Bucket=BUCKET, Key=completion_key(run_id), Body=json.dumps(marker).encode())


def _run(request_, backend, s3, time: FakeTime, *, wait: bool = True):
    logs: list[str] = []
    result = launch(
        request_,
        lambda: None,
        backend,
        s3=s3,
        wait=wait,
        clock=time.clock,
        sleep=time.sleep,
        log=logs.append,
        poll_seconds=60,
        teardown=lambda: _teardown(backend, request_.stack),
    )
    return result, logs


def _teardown(backend: FakeBackend, stack: str) -> Receipt:
    """What `finops.teardown` does around the boundary: inventory, destroy, remove, receipt."""
    backend.calls.append(("inventory", stack))
    backend.destroy(stack, lambda: None, on_output=print)
    backend.remove(stack)
    return Receipt(stack.removeprefix("train-"), removed=[], leaks=[], run_cost_usd=None)


def test_completed_run_is_destroyed_and_checkpoints_stay(request_, s3) -> None:
    backend, time = FakeBackend(), FakeTime(NOW)
    time.hooks.append((NOW + timedelta(minutes=45), lambda: _complete(s3, "r1")))
    result, _ = _run(request_, backend, s3, time)
    assert result.end is RunEnd.completed and result.destroyed
    assert backend.calls == [
        ("deploy", "train-r1"),
        ("inventory", "train-r1"),
        ("destroy", "train-r1"),
        ("remove", "train-r1"),
    ]
    assert time.now == NOW + timedelta(minutes=45)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {"runs/r1/_COMPLETE", "runs/r1/checkpoints/step-000900.pt"}


def test_run_without_completion_expires_then_is_destroyed(request_, s3) -> None:
    backend, time = FakeBackend(), FakeTime(NOW)
    result, _ = _run(request_, backend, s3, time)
    assert result.end is RunEnd.expired
    assert time.now == request_.expires_at
    assert [call[0] for call in backend.calls] == ["deploy", "inventory", "destroy", "remove"]


def test_a_marker_with_a_wrong_checksum_is_not_trusted(request_, s3) -> None:
    backend, time = FakeBackend(), FakeTime(NOW)
    time.hooks.append((NOW + timedelta(minutes=5), lambda: _complete(s3, "r1", corrupt=True)))
    result, logs = _run(request_, backend, s3, time)
    assert result.end is RunEnd.expired
    assert sum("not trusted yet" in line for line in logs) == 1


def test_without_wait_the_stack_stays(request_, s3) -> None:
    backend, time = FakeBackend(), FakeTime(NOW)
    result, _ = _run(request_, backend, s3, time, wait=False)
    assert result.end is None and not result.destroyed
    assert backend.calls == [("deploy", "train-r1")] and time.slept == []


def test_a_failed_up_is_torn_down(request_, s3) -> None:
    backend, time = FakeBackend(fail_deploy=True), FakeTime(NOW)
    with pytest.raises(
        UserError, match=r"deploying train-r1 failed \(RuntimeError\); nothing was left running"
    ):
        _run(request_, backend, s3, time)
    assert backend.calls == [("deploy", "train-r1"), ("destroy", "train-r1"), ("remove", "train-r1")]


def test_an_existing_stack_is_never_reused_nor_destroyed(request_, s3) -> None:
    class Taken(FakeBackend):
        def deploy(self, stack: str, program, *, config: dict, tags: dict, on_output) -> dict[str, Any]:
            self.calls.append(("deploy", stack))
            raise StackExists(stack)

    backend, time = Taken(), FakeTime(NOW)
    with pytest.raises(StackExists, match=r"train-r1 already exists.*`mlp train status r1`"):
        _run(request_, backend, s3, time)
    assert backend.calls == [("deploy", "train-r1")]


def test_completion_is_verified_against_the_checkpoint(s3) -> None:
    assert read_completion(s3, BUCKET, "r2") is None
    _complete(s3, "r2")
    assert read_completion(s3, BUCKET, "r2").verified
    s3.delete_object(Bucket=BUCKET, Key="runs/r2/checkpoints/step-000900.pt")
    missing = read_completion(s3, BUCKET, "r2")
    assert not missing.verified and "does not exist" in missing.why


def test_destroy_is_dry_run_by_default_and_refuses_non_ephemeral(request_) -> None:
    backend = FakeBackend()
    backend.stacks["train-r1"] = StackSummary("train-r1", dict(request_.tags), resource_count=14)

    def teardown(stack: str) -> Receipt:
        return _teardown(backend, stack)

    message, receipt = destroy_run(backend, "r1", apply=False, teardown=teardown)
    assert message.startswith("would destroy and remove train-r1 (environment dev, 14 resources)")
    assert backend.calls == [] and receipt is None
    message, receipt = destroy_run(backend, "r1", apply=True, teardown=teardown)
    assert message.startswith("destroyed and removed train-r1") and receipt.run_id == "r1"
    assert backend.calls == [("inventory", "train-r1"), ("destroy", "train-r1"), ("remove", "train-r1")]
    backend.stacks["train-r3"] = StackSummary("train-r3", {"run-id": "r3", "ephemeral": "false"})
    with pytest.raises(UserError, match="train-r3 is not tagged ephemeral=true with run-id=r3"):
        destroy_run(backend, "r3", apply=True, teardown=teardown)
    with pytest.raises(UserError, match="no stack train-r9"):
        destroy_run(backend, "r9", apply=True, teardown=teardown)
