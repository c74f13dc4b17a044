"""Stack config errors: one line naming the full key and what is allowed, exit 2, no traceback."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.config import load_stack_config, parse_stack_config, read_stack_file
from mlp.errors import ConfigError
from tests.conftest import REPO_ROOT


def _mutated(stack: str, mutate) -> dict:
    raw = copy.deepcopy(read_stack_file(stack, REPO_ROOT))
    mutate(raw)
    return raw


CASES = [
    (
        "dev",
        lambda raw: raw["ml-platform:featureStore"].update(nodeType="cache.huge"),
        "ml-platform:featureStore.nodeType: 'cache.huge' is not allowed; use one of:",
    ),
    ("dev", lambda raw: raw.pop("aws:region"), "aws:region: missing;"),
    (
        "dev",
        lambda raw: raw.update({"aws:region": "mars-1"}),
        "aws:region: 'mars-1' is not an AWS region like us-east-1",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:tags"].pop("cost-center"),
        "ml-platform:tags: missing value for mandatory tag(s) cost-center",
    ),
    ("dev", lambda raw: raw.pop("ml-platform:budgets"), "ml-platform:budgets: missing;"),
    (
        "dev",
        lambda raw: raw["ml-platform:network"].update(vpcCidr="10.0.0.0/8"),
        "ml-platform:network.vpcCidr: '10.0.0.0/8' must be a /16 to /20",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:network"].update(availabilityZones=1),
        "ml-platform:network.availabilityZones: Input should be greater than or equal to 2",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:serving"]["cpuNodeGroup"].update(minSize=9),
        "ml-platform:serving.cpuNodeGroup: sizes must satisfy minSize <= desiredSize <= maxSize",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:training"].update(
            allowedInstanceTypes=["g5.xlarge", "g6.xlarge", "m6i.large"]
        ),
        "ml-platform:training.allowedInstanceTypes: 'm6i.large' is not a priced GPU instance type",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:featureStore"].update(nodeTyp="cache.t4g.small"),
        "ml-platform:featureStore.nodeTyp: unknown key",
    ),
    ("dev", lambda raw: raw.update({"mlplatform:tags": {}}), "mlplatform:tags: unknown namespace"),
    (
        "prod",
        lambda raw: raw["ml-platform:featureStore"].update(numNodes=1),
        "ml-platform:featureStore.numNodes: prod needs at least 2 nodes",
    ),
    (
        "prod",
        lambda raw: raw["ml-platform:serving"].update(endpointPublicAccess=True),
        "ml-platform:serving.endpointPublicAccess: the prod API endpoint must be private",
    ),
    (
        "prod",
        lambda raw: raw["ml-platform:serving"]["gpuNodeGroup"].update(capacityType="SPOT"),
        "ml-platform:serving.gpuNodeGroup.capacityType: prod serving nodes must be ON_DEMAND",
    ),
    (
        "dev",
        lambda raw: raw["ml-platform:budgets"].update(alertEmails=["not-an-email"]),
        "ml-platform:budgets.alertEmails: 'not-an-email' is not an e-mail address: write one like "
        "finops@example.com",
    ),
]


@pytest.mark.parametrize(("stack", "mutate", "message"), CASES)
def test_each_bad_value_names_its_key(stack: str, mutate, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(stack, _mutated(stack, mutate))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_the_shipped_stacks_are_valid() -> None:
    dev, prod = load_stack_config("dev", REPO_ROOT), load_stack_config("prod", REPO_ROOT)
    assert (dev.is_prod, prod.is_prod) == (False, True)
    assert dev.resource_tags["environment"] == "dev" and prod.resource_tags["managed-by"] == "pulumi"


def _project_copy(tmp_path: Path, stack: str, mutate) -> Path:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    mutate(document["config"])
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def _mlp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlp", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_mlp_plan_with_bad_config_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    project = _project_copy(
        tmp_path, "dev", lambda raw: raw["ml-platform:featureStore"].update(nodeType="cache.huge")
    )
    result = _mlp("plan", "--stack", "dev", cwd=project)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlp: error: ml-platform:featureStore.nodeType:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "--stack", "staging"), "--stack 'staging': no Pulumi.staging.yaml"),
        (("plan", "--stack", "dev", "--project-dir", "/nonexistent"), "no Pulumi.yaml in /nonexistent"),
    ],
)
def test_mlp_plan_bad_flags_exit_2(args: tuple[str, ...], message: str) -> None:
    result = _mlp(*args, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mlp: error: {result.stderr.strip().removeprefix('mlp: error: ')}"
    ]
    assert message in result.stderr


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: [unclosed\n")
    result = _mlp("plan", "--stack", "dev", cwd=tmp_path)
    assert result.returncode == 2 and "Pulumi.dev.yaml: not valid YAML" in result.stderr


def test_the_pulumi_runtime_path_validates_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import pulumi

    from infra.config import load_runtime_config, runtime_config_values

    raw = _mutated("dev", lambda raw: raw["ml-platform:featureStore"].update(nodeType="cache.huge"))
    monkeypatch.setattr(pulumi, "get_stack", lambda: "dev")
    pulumi.runtime.set_all_config(runtime_config_values(raw))
    try:
        with pytest.raises(
            ConfigError, match=r"^ml-platform:featureStore\.nodeType: 'cache\.huge' is not allowed"
        ):
            load_runtime_config()
        pulumi.runtime.set_all_config(runtime_config_values(read_stack_file("dev", REPO_ROOT)))
        assert load_runtime_config().feature_store.node_type == "cache.t4g.small"
    finally:
        pulumi.runtime.set_all_config({})
