"""Reading a DIY Pulumi backend from its files, as Pulumi writes them: file:// and s3://, no CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finops.sandbox import Sandbox
from infra.training import state
from infra.training.automation import backend_url, local_path
from infra.training.state import SECRET_PLACEHOLDER, DiyStateBackend
from mlp.errors import UserError
from tests.conftest import REPO_ROOT
from tests.sandbox_fixtures import process_env

VENV_BIN = REPO_ROOT / ".venv" / "bin"
MLP = str(VENV_BIN / "mlp")
PROJECT = "ml-platform"
UPDATED = "2026-11-23T10:00:00.123456789Z"
EXPIRES_AT = "2099-01-01T00:00:00Z"
SECRET = {
    "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
    "ciphertext": "v1:Yp0b3lZ4:m1C8Zfq4r1bG5b8nCQ==",
}

Put = Callable[[str, bytes], None]


def run_tags(run_id: str, **extra: str) -> dict[str, str]:
    return {
        "run-id": run_id,
        "ephemeral": "true",
        "environment": "dev",
        "expires-at": EXPIRES_AT,
        **extra,
    }


def compact(document: Any) -> bytes:
    # Pulumi writes DIY state files minified (pkg/backend/diy/state.go, compactJSONMarshaler).
    return json.dumps(document, separators=(",", ":")).encode()


def checkpoint(stack: str, outputs: dict[str, Any], *, legacy: bool, children: int = 2) -> dict[str, Any]:
    """A `pulumi up`'s checkpoint: root stack (with the outputs), default provider, child resources."""
    root = f"urn:pulumi:{stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{stack}"
    provider = f"urn:pulumi:{stack}::{PROJECT}::pulumi:providers:aws::default_7_12_0"
    resources: list[dict[str, Any]] = [
        {
            "urn": root,
            "custom": False,
            "type": "pulumi:pulumi:Stack",
            "outputs": outputs,
            "created": "2026-11-23T09:58:00Z",
            "modified": "2026-11-23T09:58:00Z",
        },
        {
            "urn": provider,
            "custom": True,
            "id": "5f0b6c2e-8f4a-4c43-9a57-0c7c3f7a1d21",
            "type": "pulumi:providers:aws",
            "inputs": {"__internal": {}, "region": "us-east-1", "version": "7.12.0"},
            "outputs": {"region": "us-east-1", "version": "7.12.0"},
        },
    ]
    resources += [
        {
            "urn": f"urn:pulumi:{stack}::{PROJECT}::aws:sqs/queue:Queue::queue-{index}",
            "custom": True,
            "id": f"https://sqs.us-east-1.amazonaws.com/123456789012/queue-{index}",
            "type": "aws:sqs/queue:Queue",
            "inputs": {"tags": {"Name": f"queue-{index}"}},
            "outputs": {"tags": {"Name": f"queue-{index}"}},
            "parent": root,
            "provider": f"{provider}::5f0b6c2e-8f4a-4c43-9a57-0c7c3f7a1d21",
        }
        for index in range(children)
    ]
    return {
        "version": 3,
        "checkpoint": {
            "stack": stack if legacy else f"organization/{PROJECT}/{stack}",
            "latest": {
                "manifest": {"time": UPDATED, "magic": "0d6b3a1e", "version": "v3.211.0"},
                "secrets_providers": {
                    "type": "passphrase",
                    "state": {"salt": "v1:Qk9PVHNhbHQ=:v1:wnNq5lJmRrQ7Hn1N:8xZQ=="},
                },
                "resources": resources,
                "metadata": {},
            },
        },
    }


def write_stack(
    put: Put,
    stack: str,
    *,
    outputs: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    legacy: bool = False,
    gzipped: bool = False,
    children: int = 2,
) -> None:
    """What `pulumi stack init` + `stack tag set` + `up` leave in a DIY backend for one stack."""
    base = f".pulumi/stacks/{stack}" if legacy else f".pulumi/stacks/{PROJECT}/{stack}"
    body = compact(checkpoint(stack, outputs or {}, legacy=legacy, children=children))
    put(f"{base}.json.gz" if gzipped else f"{base}.json", gzip.compress(body) if gzipped else body)
    # The previous checkpoint, kept beside it on every save, and a PULUMI_RETAIN_CHECKPOINTS copy:
    # never stacks of their own.
    put(f"{base}.json.bak", body)
    put(f"{base}.json.1795428000000000000", body)
    if tags:
        put(f"{base}.pulumi-tags", compact({"version": 1, "tags": tags}))
    history = f".pulumi/history/{PROJECT}/{stack}" if not legacy else f".pulumi/history/{stack}"
    put(f"{history}/{stack}-1795428000000000000.history.json", b"{}")
    put(f"{history}/{stack}-1795428000000000000.checkpoint.json", body)


def write_project_backend(put: Put) -> None:
    """A project-scoped (meta.yaml version 1) backend with every kind of file a reader meets."""
    put(".pulumi/meta.yaml", b"version: 1\n")
    write_stack(
        put,
        "train-r1",
        outputs={
            "region": "us-east-1",
            "checkpointBucket": "mlp-dev-checkpoints-x",
            "asgName": "mlp-train-r1",
            "interruptionQueueUrl": SECRET,
            "nested": {"token": SECRET, "list": [SECRET, 1]},
        },
        tags=run_tags("r1"),
        children=12,
    )
    write_stack(put, "train-gz", outputs={"region": "us-west-2"}, tags=run_tags("gz"), gzipped=True)
    # `pulumi stack init` before the first `up`: an empty, unversioned deployment.
    put(
        f".pulumi/stacks/{PROJECT}/train-new.json",
        compact({"version": 0, "checkpoint": {"stack": f"organization/{PROJECT}/train-new"}}),
    )
    put(f".pulumi/stacks/{PROJECT}/train-new.pulumi-tags", compact({"version": 1, "tags": run_tags("new")}))
    put(f".pulumi/stacks/{PROJECT}/train-bad.json", b'{"version":3,"checkpoint":{"latest":')
    put(f".pulumi/stacks/{PROJECT}/train-zst.json.zst", b"\x28\xb5\x2f\xfd\x00\x00")
    # `pulumi stack rm` keeps only the backup: the stack is gone.
    put(f".pulumi/stacks/{PROJECT}/train-gone.json.bak", compact(checkpoint("train-gone", {}, legacy=False)))
    write_stack(put, "dev", outputs={"vpcId": "vpc-1"}, tags={"environment": "dev"})
    write_stack(put, "train-other", tags=run_tags("other"))  # placed in another project below
    put(".pulumi/locks/organization/ml-platform/train-r1/3b8f.json", b"{}")
    put(".pulumi/backups/ml-platform/train-r1/train-r1.1795428000000000000.json", b"{}")


def file_put(root: Path) -> Put:
    def put(key: str, body: bytes) -> None:
        key = key.replace(f"stacks/{PROJECT}/train-other", "stacks/other-project/train-other")
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    return put


def expected_project_stacks() -> dict[str, tuple[dict[str, str], int | None, datetime | None]]:
    updated = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
    return {
        "dev": ({"environment": "dev"}, 4, updated),
        "train-gz": (run_tags("gz"), 4, updated),
        "train-new": (run_tags("new"), None, None),
        "train-r1": (run_tags("r1"), 14, updated),
    }


def assert_project_backend(reader: DiyStateBackend, url: str) -> None:
    listed = {s.name: (s.tags, s.resource_count, s.last_update) for s in reader.list_stacks()}
    assert listed == expected_project_stacks()
    assert reader.outputs("train-r1") == {
        "region": "us-east-1",
        "checkpointBucket": "mlp-dev-checkpoints-x",
        "asgName": "mlp-train-r1",
        "interruptionQueueUrl": SECRET_PLACEHOLDER,
        "nested": {"token": SECRET_PLACEHOLDER, "list": [SECRET_PLACEHOLDER, 1]},
    }
    assert reader.outputs("train-gz") == {"region": "us-west-2"}
    assert reader.outputs("train-new") == {}
    assert [reader.has_stack(name) for name in ("train-r1", "train-gz", "train-bad", "train-zst")] == [
        True
    ] * 4
    assert [reader.has_stack(name) for name in ("train-gone", "train-other", "nope", "../dev")] == [False] * 4
    with pytest.raises(UserError, match=r"^no stack train-gone on "):
        reader.outputs("train-gone")
    with pytest.raises(
        UserError, match=r"^stack train-bad cannot be read: .*train-bad\.json is not valid JSON"
    ):
        reader.outputs("train-bad")
    assert reader.warnings == [
        f"skipped {url}/.pulumi/stacks/{PROJECT}/train-bad.json: is not valid JSON "
        "(Expecting value: line 1 column 37 (char 36))",
        f"skipped {url}/.pulumi/stacks/{PROJECT}/train-zst.json.zst: is zstd-compressed, "
        "which this reader cannot decompress",
    ]


def test_file_backend_in_the_project_layout(tmp_path: Path) -> None:
    write_project_backend(file_put(tmp_path))
    url = f"file://{tmp_path}"
    assert_project_backend(DiyStateBackend(url), url)


def test_the_newer_of_a_plain_and_a_gzipped_checkpoint_wins(tmp_path: Path) -> None:
    put = file_put(tmp_path)
    put(".pulumi/meta.yaml", b"version: 1\n")
    write_stack(put, "train-r2", outputs={"step": "old"})
    write_stack(put, "train-r2", outputs={"step": "new"}, gzipped=True)
    stacks = tmp_path / ".pulumi" / "stacks" / PROJECT
    os.utime(stacks / "train-r2.json", (1_700_000_000, 1_700_000_000))
    assert DiyStateBackend(f"file://{tmp_path}").outputs("train-r2") == {"step": "new"}
    os.utime(stacks / "train-r2.json", (4_000_000_000, 4_000_000_000))
    assert DiyStateBackend(f"file://{tmp_path}").outputs("train-r2") == {"step": "old"}


def test_legacy_layout_without_meta_yaml(tmp_path: Path) -> None:
    put = file_put(tmp_path)
    write_stack(put, "train-old", outputs={"region": "eu-west-1"}, tags=run_tags("old"), legacy=True)
    reader = DiyStateBackend(f"file://{tmp_path}")
    [summary] = reader.list_stacks()
    assert (summary.name, summary.tags, summary.resource_count) == ("train-old", run_tags("old"), 4)
    assert reader.outputs("train-old") == {"region": "eu-west-1"}
    assert reader.has_stack("train-old") and reader.warnings == []


def test_a_new_backend_without_meta_yaml_is_project_scoped(tmp_path: Path) -> None:
    write_stack(file_put(tmp_path), "train-r3", tags=run_tags("r3"))
    assert [s.name for s in DiyStateBackend(f"file://{tmp_path}").list_stacks()] == ["train-r3"]


@pytest.mark.parametrize(
    ("meta", "warning"),
    [
        (b"version: 2\n", ".pulumi/meta.yaml has version 2; this reader knows 0 and 1"),
        (b"version: [1\n", ".pulumi/meta.yaml is corrupt; not reading its stacks"),
        (b"", ".pulumi/meta.yaml is corrupt; not reading its stacks"),
    ],
)
def test_an_unknown_or_corrupt_meta_yaml_reads_no_stacks(tmp_path: Path, meta: bytes, warning: str) -> None:
    put = file_put(tmp_path)
    write_stack(put, "train-r1", tags=run_tags("r1"))
    put(".pulumi/meta.yaml", meta)
    reader = DiyStateBackend(f"file://{tmp_path}")
    assert reader.list_stacks() == [] and not reader.has_stack("train-r1")
    assert reader.warnings == [f"file://{tmp_path}: {warning}"]


def test_a_corrupt_tags_file_leaves_the_stack_listed_without_tags(tmp_path: Path) -> None:
    put = file_put(tmp_path)
    write_stack(put, "train-r4")
    put(f".pulumi/stacks/{PROJECT}/train-r4.pulumi-tags", compact({"version": 7, "tags": {"a": "b"}}))
    reader = DiyStateBackend(f"file://{tmp_path}")
    [summary] = reader.list_stacks()
    assert summary.tags == {}
    assert reader.warnings == [
        f"file://{tmp_path}/.pulumi/stacks/{PROJECT}/train-r4.pulumi-tags is not a version-1 tags file; "
        "its stack shows no tags"
    ]


def test_a_missing_backend_is_empty_said_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "state"
    reader = DiyStateBackend(f"file://{missing}")
    assert reader.list_stacks() == [] and not reader.has_stack("train-r1")
    assert reader.warnings == [f"backend file://{missing} does not exist, so it has no stacks"]
    assert not (tmp_path / "no").exists()


def test_file_urls_resolve_as_the_pulumi_cli_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert local_path("file://~") == tmp_path / "home"
    assert local_path("file://~/.ml-platform/state") == tmp_path / "home" / ".ml-platform" / "state"
    assert local_path("file://relative/state") == tmp_path / "relative" / "state"
    assert local_path("file:///srv/pulumi%20state?no_tmp_dir=true") == Path("/srv/pulumi state")
    write_stack(file_put(tmp_path / "home" / "state"), "train-r5", tags=run_tags("r5"))
    assert [s.name for s in DiyStateBackend("file://~/state").list_stacks()] == ["train-r5"]


def test_backend_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLP_BACKEND_URL", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    assert backend_url(None) == f"file://{tmp_path}/.ml-platform/state"
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://pulumi-env/state")
    assert backend_url(None) == "s3://pulumi-env/state"
    monkeypatch.setenv("MLP_BACKEND_URL", "file://~/mlp-env?no_tmp_dir=false")
    assert backend_url(None) == f"file://{tmp_path}/mlp-env?no_tmp_dir=false"
    assert backend_url("s3://explicit/prefix?region=eu-west-1") == "s3://explicit/prefix?region=eu-west-1"
    assert backend_url("") == f"file://{tmp_path}/mlp-env?no_tmp_dir=false"


@pytest.mark.parametrize(
    ("url", "env", "source"),
    [
        ("azblob://container", None, "--backend"),
        ("gs://bucket/state", "MLP_BACKEND_URL", "MLP_BACKEND_URL"),
        ("https://api.pulumi.com", "PULUMI_BACKEND_URL", "PULUMI_BACKEND_URL"),
        ("s3://", None, "--backend"),
    ],
)
def test_backend_url_refuses_other_backends_in_one_line(
    url: str, env: str | None, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLP_BACKEND_URL", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    if env:
        monkeypatch.setenv(env, url)
    with pytest.raises(UserError) as refused:
        backend_url(None if env else url)
    message = str(refused.value)
    assert message.startswith(f"backend {url!r}: use a file:// or s3:// URL")
    assert "azblob://, gs:// and the Pulumi Cloud are not supported" in message
    assert message.endswith(f"it came from {source}") and "\n" not in message


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="state-bucket")
        yield client


def s3_put(client: Any, prefix: str) -> Put:
    def put(key: str, body: bytes) -> None:
        key = key.replace(f"stacks/{PROJECT}/train-other", "stacks/other-project/train-other")
        client.put_object(Bucket="state-bucket", Key=f"{prefix}{key}", Body=body)

    return put


def test_s3_backend_under_a_prefix(s3: Any) -> None:
    write_project_backend(s3_put(s3, "teams/ml/"))
    url = "s3://state-bucket/teams/ml"
    assert_project_backend(DiyStateBackend(url), url)
    assert DiyStateBackend("s3://state-bucket").list_stacks() == []  # nothing at the bucket's root


def test_s3_listing_follows_pages(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "S3_PAGE_SIZE", 2)
    put = s3_put(s3, "")
    put(".pulumi/meta.yaml", b"version: 1\n")
    for index in range(5):
        put(f".pulumi/stacks/{PROJECT}/a-{index}.json.bak", b"{}")
    write_stack(put, "train-late", tags=run_tags("late"))
    reader = DiyStateBackend("s3://state-bucket")
    assert [s.name for s in reader.list_stacks()] == ["train-late"]
    assert reader.has_stack("train-late")


def test_s3_missing_bucket_is_empty_and_said(s3: Any) -> None:
    reader = DiyStateBackend("s3://no-such-bucket/state")
    assert reader.list_stacks() == []
    assert reader.warnings == ["backend s3://no-such-bucket/state does not exist, so it has no stacks"]


def cli_path() -> str:
    path = os.pathsep.join([str(VENV_BIN), "/usr/bin", "/bin"])
    assert shutil.which("pulumi", path=path) is None
    return path


def mlp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLP, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False
    )


def cli_env(tmp_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in (base or os.environ).items() if k not in {"MLP_BACKEND_URL", "PULUMI_BACKEND_URL"}
    }
    return {**env, "PATH": cli_path(), "HOME": str(tmp_path / "home")}


def test_train_list_reads_the_files_without_the_pulumi_cli(tmp_path: Path) -> None:
    write_project_backend(file_put(tmp_path / "state"))
    env = {**cli_env(tmp_path), "PULUMI_BACKEND_URL": f"file://{tmp_path}/state"}
    result = mlp(env, "train", "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "runs": [
            {"stack": name, "tags": tags, "resource_count": count}
            for name, (tags, count, _) in expected_project_stacks().items()
            if name.startswith("train-")
        ]
    }
    assert "train-bad.json: is not valid JSON" in result.stderr
    assert "train-zst.json.zst: is zstd-compressed" in result.stderr
    assert not (tmp_path / "home" / ".ml-platform").exists()


def test_train_status_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    write_stack(file_put(tmp_path / "state"), "train-r1", tags=run_tags("r1"))
    result = mlp(cli_env(tmp_path), "train", "status", "r9", "--backend", f"file://{tmp_path}/state")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "mlp: error: no stack train-r9 on this backend; `mlp train list` shows the runs"
    ]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Function-scoped: moto's backends are process-wide, and this module's mock_aws tests reset them.
    with Sandbox() as running:
        yield running


@pytest.mark.e2e
def test_train_status_reads_outputs_from_the_files_then_aws(tmp_path: Path, sandbox: Sandbox) -> None:
    s3, ec2 = sandbox.client("s3"), sandbox.client("ec2")
    s3.create_bucket(Bucket="mlp-dev-checkpoints-x")
    s3.put_object(Bucket="mlp-dev-checkpoints-x", Key="runs/r1/checkpoints/step-7.pt", Body=b"weights")
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    template = ec2.create_launch_template(
        LaunchTemplateName="mlp-train-r1",
        LaunchTemplateData={"ImageId": image, "InstanceType": "g5.xlarge"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    sandbox.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="mlp-train-r1",
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    write_project_backend(file_put(tmp_path / "state"))
    env = cli_env(tmp_path, process_env(sandbox))
    result = mlp(env, "train", "status", "r1", "--format", "json", "--backend", f"file://{tmp_path}/state")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["run_id"], report["stack"], report["desired_capacity"]) == ("r1", "train-r1", 1)
    assert report["expires_at"] == EXPIRES_AT and report["tags"] == run_tags("r1")
    assert [i["instance_type"] for i in report["instances"]] == ["g5.xlarge"]
    assert report["state"] == "running"
    assert report["latest_checkpoint"]["key"] == "runs/r1/checkpoints/step-7.pt"
    assert report["completion"] is None
