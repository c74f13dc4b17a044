"""The training instance boot script: rendering, shell checks, and its behaviour run for real.

Behaviour tests run the rendered script with bash against a fake IMDSv2 (tests/user_data_fake_imds.py),
a moto server holding the run's bucket and Auto Scaling group, the AWS CLI from the venv, and a
stand-in trainer (tests/user_data_trainer.py). Waits poll for files and S3 objects with deadlines.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

from infra.training.user_data import (
    MAX_USER_DATA_BYTES,
    FeatureStoreAccess,
    UserDataValues,
    launch_template_user_data,
    render_user_data,
)
from mlp.errors import UserError
from tests.user_data_fake_imds import FakeImds

REGION = "us-east-1"
MOTO_ACCOUNT = "123456789012"
TRAINER = Path(__file__).with_name("user_data_trainer.py")
VENV_BIN = Path(sys.executable).parent
# Generous bounds for a shared 2-core machine; every wait returns as soon as its condition holds.
RUN_TIMEOUT_SECONDS = 50
CHECKPOINT_GRACE_SECONDS = 20
RETRY_ATTEMPTS = 3
T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def sample_values(**overrides: Any) -> UserDataValues:
    fields: dict[str, Any] = {
        "run_id": "llama-ft-7",
        "bucket": "ml-platform-dev-checkpoints",
        "region": REGION,
        "asg_name": "train-llama-ft-7-fleet",
        "command": "python train.py --epochs 3",
        "max_hours": 12.0,
    }
    return UserDataValues(**(fields | overrides))


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", [None, "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1.4"])
def test_rendered_script_is_valid_bash(tmp_path: Path, image: str | None) -> None:
    script = tmp_path / "user_data.sh"
    script.write_text(render_user_data(sample_values(image=image)))
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize(
    ("image", "feature_store"),
    [
        (None, None),
        ("trainer:1.4", None),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/trainer:1.4",
            FeatureStoreAccess(
                "master.fs.example", 6379, "arn:aws:secretsmanager:us-east-1:123456789012:secret:fs-AbCdEf"
            ),
        ),
    ],
)
def test_rendered_script_passes_shellcheck(
    tmp_path: Path, image: str | None, feature_store: FeatureStoreAccess | None
) -> None:
    script = tmp_path / "user_data.sh"
    script.write_text(render_user_data(sample_values(image=image, feature_store=feature_store)))
    checked = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def values_as_bash_sees_them(script: str, tmp_path: Path) -> dict[str, str]:
    """Run only the values block of a rendered script and read back what bash assigned."""
    block = script.split("# --- values of this run", 1)[1].split("\n", 1)[1].split("\n# ---", 1)[0]
    names = ["RUN_ID", "BUCKET", "REGION", "ASG_NAME", "TRAIN_COMMAND", "TRAIN_IMAGE", "CHECKPOINT_DIR"]
    printer = "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    result = subprocess.run(
        ["bash", "-c", block + "\n" + printer], cwd=tmp_path, capture_output=True, check=True
    )
    return dict(zip(names, result.stdout.decode().split("\0")[:-1], strict=True))


def test_values_with_quotes_and_substitutions_stay_literal(tmp_path: Path) -> None:
    hostile = (
        """echo "it's $(touch pwned-command)" '$HOME' `touch pwned-backtick` ${PATH}; touch pwned-tail"""
    )
    values = sample_values(
        bucket="bucket'; touch pwned-bucket; '",
        asg_name='fleet" && touch pwned-asg && "',
        command=hostile,
        image="img:$(touch pwned-image)",
        checkpoint_dir="/opt/ml/check points/$USER",
    )
    seen = values_as_bash_sees_them(render_user_data(values), tmp_path)
    assert seen == {
        "RUN_ID": values.run_id,
        "BUCKET": values.bucket,
        "REGION": values.region,
        "ASG_NAME": values.asg_name,
        "TRAIN_COMMAND": hostile,
        "TRAIN_IMAGE": values.image,
        "CHECKPOINT_DIR": values.checkpoint_dir,
    }
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("image", "registry", "region"),
    [
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:1.4",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "eu-west-1",
        ),
        ("public.ecr.aws/docker/library/python:3.12-slim", "''", "''"),
        (None, "''", "''"),
    ],
)
def test_the_ecr_registry_and_its_region_come_from_the_image_host(
    image: str | None, registry: str, region: str
) -> None:
    script = render_user_data(sample_values(image=image))
    assert f"\nreadonly ECR_REGISTRY={registry}\n" in script
    assert f"\nreadonly ECR_REGION={region}\n" in script


@pytest.mark.parametrize(
    ("access", "named"),
    [
        (
            ("master.fs\nINJECTED=1", 6379, "arn:aws:secretsmanager:us-east-1:123456789012:secret:fs-1"),
            "host",
        ),
        (("master.fs", 0, "arn:aws:secretsmanager:us-east-1:123456789012:secret:fs-1"), "port"),
        (("master.fs", 6379.5, "arn:aws:secretsmanager:us-east-1:123456789012:secret:fs-1"), "port"),
        (("master.fs", 6379, "[secret]"), "featureStoreAuthSecretArn"),
    ],
)
def test_bad_feature_store_values_are_refused(access: tuple[Any, ...], named: str) -> None:
    with pytest.raises(UserError, match=named):
        FeatureStoreAccess(*access)


def test_no_image_renders_an_empty_image_and_max_hours_become_whole_seconds(tmp_path: Path) -> None:
    script = render_user_data(sample_values(max_hours=1.5, image=None))
    assert values_as_bash_sees_them(script, tmp_path)["TRAIN_IMAGE"] == ""
    assert f"MAX_RUN_SECONDS={int(1.5 * 3600)}\n" in script


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"run_id": "r-$(touch pwned)"}, "run-id"),
        ({"command": "  "}, "command"),
        ({"max_hours": 0}, "max_hours"),
        ({"sync_interval_seconds": 0}, "sync_interval_seconds"),
        ({"checkpoint_dir": "checkpoints"}, "checkpoint_dir"),
        ({"checkpoint_dir": "/"}, "checkpoint_dir"),
    ],
)
def test_bad_values_are_refused_naming_the_field(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(UserError, match=named):
        sample_values(**overrides)


def test_user_data_is_gzipped_for_the_launch_template_and_bounded() -> None:
    script = render_user_data(sample_values(command="x" * MAX_USER_DATA_BYTES))
    assert gzip.decompress(base64.b64decode(launch_template_user_data(script))).decode() == script
    incompressible = secrets.token_urlsafe(MAX_USER_DATA_BYTES * 2)
    with pytest.raises(UserError, match="compressed, above EC2's limit of 16384; shorten the command"):
        launch_template_user_data(render_user_data(sample_values(command=incompressible)))


# --- behaviour: a moto run fleet, a fake IMDS, the real script -----------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def imds() -> Iterator[FakeImds]:
    with FakeImds() as server:
        yield server


@pytest.fixture(autouse=True)
def quiet_imds(imds: FakeImds) -> None:
    """Each test starts with no notices and no instance tags."""
    imds.instance_action = None
    imds.rebalance = None
    imds.instance_tags = {}


@dataclass
class Fleet:
    """One run's checkpoint bucket and Auto Scaling group in moto."""

    endpoint: str
    run_id: str
    bucket: str
    asg_name: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @property
    def complete_key(self) -> str:
        return f"runs/{self.run_id}/_COMPLETE"

    def checkpoint_key(self, local_path: Path, checkpoint_dir: Path) -> str:
        return f"runs/{self.run_id}/checkpoints/{local_path.relative_to(checkpoint_dir)}"

    def object_keys(self) -> set[str]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def read(self, key: str) -> bytes:
        return self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def desired_capacity(self) -> int:
        groups = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.asg_name]
        )
        return groups["AutoScalingGroups"][0]["DesiredCapacity"]


@pytest.fixture
def fleet(moto_endpoint: str) -> Fleet:
    return make_fleet(moto_endpoint)


def make_fleet(endpoint: str) -> Fleet:
    suffix = uuid.uuid4().hex[:10]
    fleet = Fleet(endpoint, f"run-{suffix}", f"checkpoints-{suffix}", f"train-{suffix}-fleet")
    fleet.client("s3").create_bucket(Bucket=fleet.bucket)
    autoscaling = fleet.client("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName=fleet.asg_name, ImageId="ami-12c6146b", InstanceType="g5.xlarge"
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=fleet.asg_name,
        LaunchConfigurationName=fleet.asg_name,
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    return fleet


@dataclass
class Instance:
    """One boot of a training instance: the rendered script, its environment and what it leaves."""

    fleet: Fleet
    workdir: Path
    script: Path
    env: dict[str, str]

    @property
    def checkpoint_dir(self) -> Path:
        return self.workdir / "checkpoints"

    @property
    def events_file(self) -> Path:
        return self.workdir / "trainer-events.jsonl"

    @property
    def shutdown_record(self) -> Path:
        return self.workdir / "shutdown-called"

    @property
    def agent_config(self) -> Path:
        return self.workdir / "cloudwatch-agent.json"

    @property
    def release_file(self) -> Path:
        return self.workdir / "release-trainer"

    @property
    def log(self) -> str:
        return Path(self.env["MLP_LOG_FILE"]).read_text()

    def trainer_events(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        events = [json.loads(line) for line in self.events_file.read_text().splitlines()]
        return [item for item in events if event is None or item["event"] == event]

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(self.script)],
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.script)],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
        )


def boot(
    workdir: Path,
    fleet: Fleet,
    imds: FakeImds,
    trainer_args: str,
    *,
    image: str | None = None,
    max_hours: float = 1.0,
    sync_interval_seconds: int = 3600,
    extra_path: Path | None = None,
    feature_store: FeatureStoreAccess | None = None,
) -> Instance:
    instance = Instance(fleet, workdir, workdir / "user_data.sh", {})
    command = shlex.join(
        [sys.executable, str(TRAINER), "--events", str(instance.events_file), *shlex.split(trainer_args)]
    )
    values = UserDataValues(
        run_id=fleet.run_id,
        bucket=fleet.bucket,
        region=REGION,
        asg_name=fleet.asg_name,
        command=command,
        image=image,
        checkpoint_dir=str(instance.checkpoint_dir),
        max_hours=max_hours,
        sync_interval_seconds=sync_interval_seconds,
        feature_store=feature_store,
    )
    instance.script.write_text(render_user_data(values))
    path = [str(extra_path)] if extra_path else []
    instance.env.update(
        PATH=os.pathsep.join([*path, str(VENV_BIN), os.environ["PATH"]]),
        HOME=str(workdir),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_ENDPOINT_URL=fleet.endpoint,
        MLP_IMDS_ENDPOINT=imds.url,
        MLP_LOG_FILE=str(workdir / "mlp-training.log"),
        MLP_CW_AGENT_CONFIG=str(instance.agent_config),
        MLP_SKIP_AGENT_INSTALL="1",
        MLP_POLL_SECONDS="0.1",
        MLP_CHECKPOINT_GRACE_SECONDS=str(CHECKPOINT_GRACE_SECONDS),
        MLP_STOP_GRACE_SECONDS="5",
        MLP_SHUTDOWN_COMMAND=f"echo called >> {shlex.quote(str(instance.shutdown_record))}",
        MLP_RETRY_ATTEMPTS=str(RETRY_ATTEMPTS),
        MLP_RETRY_FIRST_DELAY_SECONDS="0",
    )
    return instance


def backdate(fleet: Fleet, key: str, age: timedelta) -> None:
    """S3 LastModified has one-second resolution; backdate instead of waiting for the clock."""
    stored = s3_backends[MOTO_ACCOUNT]["aws"].buckets[fleet.bucket].keys[key]
    stored.last_modified -= age


# --- a run that resumes and completes: one boot, several properties -----------------------------


@dataclass
class CompletedRun:
    instance: Instance
    result: subprocess.CompletedProcess[str]
    newest_seed: Path
    imds_tokenless_reads: int


@pytest.fixture(scope="module")
def completed_run(
    moto_endpoint: str, imds: FakeImds, tmp_path_factory: pytest.TempPathFactory
) -> CompletedRun:
    fleet = make_fleet(moto_endpoint)
    instance = boot(tmp_path_factory.mktemp("completed"), fleet, imds, "--steps 4 --checkpoint-every 1")
    s3 = fleet.client("s3")
    # The older checkpoint has the later name, so only LastModified picks the right one.
    older, newest = Path("ckpt-000009-old.json"), Path("ckpt-000001-new.json")
    for name, step in ((older, 9), (newest, 1)):
        s3.put_object(
            Bucket=fleet.bucket,
            Key=f"runs/{fleet.run_id}/checkpoints/{name}",
            Body=json.dumps({"step": step}).encode(),
        )
    backdate(fleet, f"runs/{fleet.run_id}/checkpoints/{older}", timedelta(hours=1))
    reads_before = imds.tokenless_reads
    result = instance.run()
    return CompletedRun(instance, result, newest, imds.tokenless_reads - reads_before)


def test_completed_run_exits_zero_reading_metadata_only_with_a_token(completed_run: CompletedRun) -> None:
    assert completed_run.result.returncode == 0, completed_run.result.stdout + completed_run.result.stderr
    assert completed_run.imds_tokenless_reads == 0


def test_resume_downloads_the_newest_checkpoint_for_the_trainer(completed_run: CompletedRun) -> None:
    instance = completed_run.instance
    [start] = instance.trainer_events("start")
    assert start["resume_from"] == str(instance.checkpoint_dir / completed_run.newest_seed)
    assert start["first_step"] == 2
    assert start["run_id"] == instance.fleet.run_id


def test_completion_marker_names_the_final_checkpoint_and_its_checksum(
    completed_run: CompletedRun, imds: FakeImds
) -> None:
    instance, fleet = completed_run.instance, completed_run.instance.fleet
    final_written = Path(instance.trainer_events("checkpoint")[-1]["path"])
    marker = json.loads(fleet.read(fleet.complete_key))
    assert marker["run_id"] == fleet.run_id
    assert marker["final_checkpoint_key"] == fleet.checkpoint_key(final_written, instance.checkpoint_dir)
    assert marker["sha256"] == hashlib.sha256(fleet.read(marker["final_checkpoint_key"])).hexdigest()
    assert marker["instance_id"] == imds.instance_id
    completed_at = datetime.fromisoformat(marker["completed_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - completed_at) < timedelta(minutes=5)


def test_completion_uploads_every_checkpoint_scales_to_zero_and_shuts_down(
    completed_run: CompletedRun,
) -> None:
    instance, fleet = completed_run.instance, completed_run.instance.fleet
    written = {Path(item["path"]) for item in instance.trainer_events("checkpoint")}
    assert len(written) == 2  # steps 2 and 3 after resuming at step 2
    assert {fleet.checkpoint_key(path, instance.checkpoint_dir) for path in written} <= fleet.object_keys()
    assert not any(key.endswith(".tmp") for key in fleet.object_keys())
    assert fleet.desired_capacity() == 0
    assert instance.shutdown_record.read_text() == "called\n"


def test_cloudwatch_agent_config_publishes_gpu_metrics_by_instance_id(completed_run: CompletedRun) -> None:
    config = json.loads(completed_run.instance.agent_config.read_text())
    metrics = config["metrics"]
    assert metrics["namespace"] == "CWAgent"
    assert metrics["append_dimensions"] == {"InstanceId": "${aws:InstanceId}"}
    assert metrics["aggregation_dimensions"] == [["InstanceId"]]
    gpu = metrics["metrics_collected"]["nvidia_gpu"]
    assert set(gpu["measurement"]) == {"utilization_gpu", "utilization_memory", "memory_used", "memory_total"}
    assert gpu["metrics_collection_interval"] == 60


# --- interruptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notice", "body"),
    [
        ("instance_action", '{"action": "terminate", "time": "2026-11-23T16:00:00Z"}'),
        ("rebalance", '{"noticeTime": "2026-11-23T15:58:00Z"}'),
    ],
)
def test_a_notice_gets_one_checkpoint_into_s3_within_the_grace_period(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, notice: str, body: str
) -> None:
    instance = boot(
        tmp_path,
        fleet,
        imds,
        f"--steps 1 --checkpoint-every 1000 --hold-until {tmp_path / 'release-trainer'}",
    )
    process = instance.start()
    try:
        wait_until(lambda: instance.trainer_events("start"), RUN_TIMEOUT_SECONDS, "trainer start")
        assert not instance.trainer_events("checkpoint")
        setattr(imds, notice, body)
        grace_ends = time.monotonic() + CHECKPOINT_GRACE_SECONDS
        signalled = wait_until(
            lambda: instance.trainer_events("checkpoint"), CHECKPOINT_GRACE_SECONDS, "checkpoint on SIGUSR1"
        )
        expected_key = fleet.checkpoint_key(Path(signalled[0]["path"]), instance.checkpoint_dir)
        wait_until(
            lambda: expected_key in fleet.object_keys(),
            grace_ends - time.monotonic(),
            f"s3 object {expected_key} within the grace period",
        )
        # The notice stays up: the watcher keeps reading it but must not ask again.
        reads = imds.notice_reads
        wait_until(lambda: imds.notice_reads >= reads + 10, RUN_TIMEOUT_SECONDS, "further notice polls")
        assert len(instance.trainer_events("sigusr1")) == 1
        instance.release_file.touch()
        process.wait(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 0, process.stdout.read() if process.stdout else ""
    assert len(instance.trainer_events("sigusr1")) == 1
    assert fleet.complete_key in fleet.object_keys()


def test_an_expired_metadata_token_is_renewed(tmp_path: Path, fleet: Fleet, imds: FakeImds) -> None:
    instance = boot(tmp_path, fleet, imds, f"--steps 1 --hold-until {tmp_path / 'release-trainer'}")
    process = instance.start()
    try:
        wait_until(lambda: instance.trainer_events("start"), RUN_TIMEOUT_SECONDS, "trainer start")
        imds.expire_tokens()
        imds.instance_action = '{"action": "stop", "time": "2026-11-23T16:00:00Z"}'
        wait_until(
            lambda: instance.trainer_events("sigusr1"), CHECKPOINT_GRACE_SECONDS, "SIGUSR1 to the trainer"
        )
        instance.release_file.touch()
        process.wait(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 0


def test_checkpoints_are_synced_every_interval_without_a_notice(
    tmp_path: Path, fleet: Fleet, imds: FakeImds
) -> None:
    instance = boot(
        tmp_path,
        fleet,
        imds,
        f"--steps 2 --checkpoint-every 1 --hold-until {tmp_path / 'release-trainer'}",
        sync_interval_seconds=1,
    )
    process = instance.start()
    try:
        written = wait_until(
            lambda: len(instance.trainer_events("checkpoint")) == 2 and instance.trainer_events("checkpoint"),
            RUN_TIMEOUT_SECONDS,
            "two checkpoints",
        )
        keys = {fleet.checkpoint_key(Path(item["path"]), instance.checkpoint_dir) for item in written}
        wait_until(lambda: keys <= fleet.object_keys(), RUN_TIMEOUT_SECONDS, "periodic upload")
        assert process.poll() is None, "the trainer is still holding: the upload was a periodic sync"
        instance.release_file.touch()
        process.wait(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        process.kill()
    assert not instance.trainer_events("sigusr1")


# --- runs that must not train, or not to the end ------------------------------------------------------


def test_a_replacement_after_complete_does_not_train(tmp_path: Path, fleet: Fleet, imds: FakeImds) -> None:
    marker = json.dumps({"run_id": fleet.run_id, "final_checkpoint_key": "k", "sha256": "0" * 64}).encode()
    fleet.client("s3").put_object(Bucket=fleet.bucket, Key=fleet.complete_key, Body=marker)
    instance = boot(tmp_path, fleet, imds, "--steps 1")
    result = instance.run()
    assert result.returncode == 0, result.stderr
    assert not instance.events_file.exists()
    assert fleet.read(fleet.complete_key) == marker
    assert fleet.desired_capacity() == 0
    assert instance.shutdown_record.exists()


@pytest.mark.parametrize("failure", ["missing bucket", "refused connection"])
def test_when_s3_cannot_say_whether_the_run_is_complete_nothing_trains(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, failure: str
) -> None:
    instance = boot(tmp_path, fleet, imds, "--steps 1")
    if failure == "missing bucket":
        fleet.client("s3").delete_bucket(Bucket=fleet.bucket)
    else:
        # Nothing listens on port 9 (discard); one try per CLI call keeps the test short.
        instance.env.update(AWS_ENDPOINT_URL_S3="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    result = instance.run()
    assert result.returncode != 0
    assert not instance.events_file.exists()
    assert fleet.desired_capacity() == 1
    assert f"failed (try {RETRY_ATTEMPTS - 1} of {RETRY_ATTEMPTS})" in instance.log
    assert f"failed {RETRY_ATTEMPTS} times: giving up" in instance.log
    assert "cannot tell whether the run is complete: not training" in instance.log


def test_an_expired_run_does_not_train(tmp_path: Path, fleet: Fleet, imds: FakeImds) -> None:
    imds.instance_tags = {
        "expires-at": (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    }
    instance = boot(tmp_path, fleet, imds, "--steps 1")
    result = instance.run()
    assert result.returncode == 0, result.stderr
    assert not instance.events_file.exists()
    assert fleet.desired_capacity() == 0
    assert instance.shutdown_record.exists()


def test_max_hours_stop_a_trainer_after_uploading_its_checkpoint(
    tmp_path: Path, fleet: Fleet, imds: FakeImds
) -> None:
    never = tmp_path / "never-released"
    instance = boot(
        # 5.4 s: room for the stand-in trainer to install its SIGUSR1 handler on a busy machine.
        tmp_path,
        fleet,
        imds,
        f"--steps 1 --checkpoint-every 1000 --hold-until {never}",
        max_hours=0.0015,
    )
    result = instance.run()
    assert result.returncode == 0, result.stderr
    [signalled] = instance.trainer_events("checkpoint")
    assert instance.trainer_events("sigusr1")
    assert not instance.trainer_events("exit")
    assert fleet.checkpoint_key(Path(signalled["path"]), instance.checkpoint_dir) in fleet.object_keys()
    assert fleet.complete_key not in fleet.object_keys()
    assert fleet.desired_capacity() == 0
    assert instance.shutdown_record.exists()


def test_a_failed_trainer_saves_checkpoints_and_leaves_the_fleet_to_replace_it(
    tmp_path: Path, fleet: Fleet, imds: FakeImds
) -> None:
    instance = boot(tmp_path, fleet, imds, "--steps 2 --checkpoint-every 1 --exit-code 3")
    result = instance.run()
    assert result.returncode == 0, result.stderr
    written = {Path(item["path"]) for item in instance.trainer_events("checkpoint")}
    assert written
    assert {fleet.checkpoint_key(path, instance.checkpoint_dir) for path in written} <= fleet.object_keys()
    assert fleet.complete_key not in fleet.object_keys()
    assert fleet.desired_capacity() == 1
    assert instance.shutdown_record.exists()


# --- the container path ---------------------------------------------------------------------------------

FAKE_DOCKER = """#!/bin/bash
# A docker CLI on the host: records each call in its directory; `start` runs the container's
# `sh -c COMMAND` with the variables of the env file `create` was given.
dir=$(dirname "$0")
printf '%s\\n' "$@" > "$dir/docker-$1-args"
case $1 in
  login) cat > "$dir/docker-login-password" ;;
  create)
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [[ ${args[i]} == --env-file ]]; then
        env_file=${args[i + 1]}
        stat -c %a "$env_file" > "$dir/env-file-mode"
        cp "$env_file" "$dir/env-file-content"
        printf '%s' "$env_file" > "$dir/env-file-path"
      fi
    done
    printf '%s\\0' "${@: -3}" > "$dir/container-command"
    echo 0123456789ab ;;
  start)
    [[ -f $dir/env-file-content ]] && while IFS='=' read -r name value; do export "$name=$value"; done < "$dir/env-file-content"
    mapfile -d '' -t command < "$dir/container-command"
    exec "${command[@]}" ;;
esac
"""


@dataclass
class FakeDocker:
    bin_dir: Path

    def args(self, command: str) -> list[str] | None:
        recorded = self.bin_dir / f"docker-{command}-args"
        return recorded.read_text().splitlines() if recorded.exists() else None

    def recorded(self, name: str) -> str:
        return (self.bin_dir / name).read_text()


@pytest.fixture
def docker(tmp_path: Path) -> FakeDocker:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return FakeDocker(bin_dir)


def test_an_image_runs_the_command_with_gpus_and_the_checkpoint_dir_mounted(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, docker: FakeDocker
) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1.4"
    instance = boot(tmp_path, fleet, imds, "--steps 1", image=image, extra_path=docker.bin_dir)
    result = instance.run()
    assert result.returncode == 0, result.stderr
    args = docker.args("create")
    assert args is not None
    mount = f"{instance.checkpoint_dir}:{instance.checkpoint_dir}"
    assert args[args.index("--gpus") + 1] == "all"
    assert args[args.index("-v") + 1] == mount
    # Bridge networking: with the metadata hop limit at 1 the container cannot reach it.
    assert args[args.index("--network") + 1] == "bridge"
    assert {args[i + 1] for i, arg in enumerate(args) if arg == "-e"} == {
        "MLP_RESUME_FROM",
        "CHECKPOINT_DIR",
        "RUN_ID",
    }
    assert "--env-file" not in args
    assert args[-4:-1] == [image, "sh", "-c"]
    assert docker.args("start") == ["start", "--attach", args[args.index("--name") + 1]]
    assert instance.trainer_events("start")[0]["feature_store"] == {}
    assert instance.trainer_events("exit")
    assert fleet.complete_key in fleet.object_keys()


def test_an_ecr_image_is_pulled_after_logging_in_to_its_registry(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, docker: FakeDocker
) -> None:
    # Another region than the run's: the login's region is the registry's.
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    image = f"{registry}/team/trainer:1.4"
    instance = boot(tmp_path, fleet, imds, "--steps 1", image=image, extra_path=docker.bin_dir)
    result = instance.run()
    assert result.returncode == 0, result.stderr
    assert docker.args("login") == ["login", "--username", "AWS", "--password-stdin", registry]
    assert docker.recorded("docker-login-password").strip()
    assert docker.args("pull") == ["pull", "--quiet", image]
    assert instance.trainer_events("exit")


def test_a_public_image_is_pulled_without_a_login(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, docker: FakeDocker
) -> None:
    image = "public.ecr.aws/docker/library/python:3.12-slim"
    instance = boot(tmp_path, fleet, imds, "--steps 1", image=image, extra_path=docker.bin_dir)
    result = instance.run()
    assert result.returncode == 0, result.stderr
    assert docker.args("login") is None
    assert docker.args("pull") == ["pull", "--quiet", image]
    assert instance.trainer_events("exit")


def feature_store_secret(fleet: Fleet, token: str) -> FeatureStoreAccess:
    arn = fleet.client("secretsmanager").create_secret(Name=f"{fleet.run_id}/auth-token", SecretString=token)
    return FeatureStoreAccess("master.fs.example", 6379, arn["ARN"])


def test_the_container_gets_the_feature_store_through_a_root_only_env_file(
    tmp_path: Path, fleet: Fleet, imds: FakeImds, docker: FakeDocker
) -> None:
    token = secrets.token_hex(24)
    access = feature_store_secret(fleet, token)
    instance = boot(
        tmp_path,
        fleet,
        imds,
        "--steps 1",
        image="public.ecr.aws/docker/library/python:3.12-slim",
        extra_path=docker.bin_dir,
        feature_store=access,
    )
    result = instance.run()
    assert result.returncode == 0, result.stderr
    assert docker.recorded("env-file-mode").strip() == "600"
    assert docker.recorded("env-file-content").splitlines() == [
        "FEATURE_STORE_HOST=master.fs.example",
        "FEATURE_STORE_PORT=6379",
        f"FEATURE_STORE_AUTH_TOKEN={token}",
    ]
    assert not Path(docker.recorded("env-file-path")).exists()
    assert token not in "".join(
        docker.recorded(f"docker-{step}-args") for step in ("create", "start", "pull")
    )
    [start] = instance.trainer_events("start")
    assert start["feature_store"] == {
        "FEATURE_STORE_HOST": "master.fs.example",
        "FEATURE_STORE_PORT": "6379",
        "FEATURE_STORE_AUTH_TOKEN": token,
    }
    assert token not in instance.log + result.stdout + result.stderr


def test_a_host_trainer_gets_the_feature_store_in_its_environment(
    tmp_path: Path, fleet: Fleet, imds: FakeImds
) -> None:
    token = secrets.token_hex(24)
    instance = boot(tmp_path, fleet, imds, "--steps 1", feature_store=feature_store_secret(fleet, token))
    result = instance.run()
    assert result.returncode == 0, result.stderr
    [start] = instance.trainer_events("start")
    assert start["feature_store"]["FEATURE_STORE_AUTH_TOKEN"] == token
    assert token not in instance.log + result.stdout + result.stderr


def test_an_unreadable_feature_store_secret_starts_no_trainer(
    tmp_path: Path, fleet: Fleet, imds: FakeImds
) -> None:
    missing = FeatureStoreAccess(
        "master.fs.example", 6379, f"arn:aws:secretsmanager:{REGION}:{MOTO_ACCOUNT}:secret:absent-AbCdEf"
    )
    instance = boot(tmp_path, fleet, imds, "--steps 1", feature_store=missing)
    result = instance.run()
    assert result.returncode != 0
    assert not instance.events_file.exists()
    assert f"failed {RETRY_ATTEMPTS} times: giving up" in instance.log
