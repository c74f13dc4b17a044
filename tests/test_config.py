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


def _run_mlp(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path
) -> tuple[int, str, str]:
    """`mlp ARGS` in-process through the console script's entry point: (exit code, stdout, stderr)."""
    from mlp.cli import main

    monkeypatch.setattr(sys, "argv", ["mlp", *args])
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def _dev_text(mutate) -> str:
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    mutate(document["config"])
    return yaml.safe_dump(document)


def _alias_bomb() -> str:
    # Nine levels of nine aliases: 387 million strings if a loader expanded them.
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    lines += ["config:", "  aws:region: us-east-1", "  ml-platform:tags: *a8"]
    return "\n".join(lines) + "\n"


def _set(section: str, *path: str, value) -> callable:
    def mutate(config: dict) -> None:
        target = config[section]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


# (what the tester wrote into Pulumi.dev.yaml, the start of the one line after "mlp: error: ")
STACK_FILE_CASES = [
    pytest.param("- a\n- b\n", "Pulumi.dev.yaml: the file must be a map", id="root-list"),
    pytest.param("just a string\n", "Pulumi.dev.yaml: the file must be a map", id="root-string"),
    pytest.param(
        "config:\n  aws:region: us-east-1\n  1: 2\n",
        "Pulumi.dev.yaml: line 3, column 3: the key '1' is not a string",
        id="integer-key",
    ),
    pytest.param("config: [1, 2]\n", "Pulumi.dev.yaml: `config:` must be a map", id="config-list"),
    pytest.param(b"config:\n  aws:region: \xff\xfe\n", "Pulumi.dev.yaml: not UTF-8 (byte 23", id="non-utf8"),
    pytest.param(
        "config:\n  x: " + "[" * 3000 + "]" * 3000 + "\n",
        "Pulumi.dev.yaml: line 2, column 54: nested more than 50 levels deep",
        id="deep-nesting",
    ),
    pytest.param(
        "config:\n  x:" + "".join(f"\n{'  ' * (depth + 2)}k{depth}:" for depth in range(200)) + " 1\n",
        "Pulumi.dev.yaml: line 51, column 101: nested more than 50 levels deep",
        id="deep-block-nesting",
    ),
    pytest.param(_alias_bomb(), "Pulumi.dev.yaml: line 1, column 5: anchors and aliases", id="alias-bomb"),
    pytest.param(
        "config:\n  aws:region: us-east-1\n  aws:region: us-west-2\n",
        "Pulumi.dev.yaml: line 3, column 3: the key 'aws:region' appears twice",
        id="duplicate-key",
    ),
    pytest.param(
        "config:\n  aws:region: !!python/object/apply:os.system [true]\n",
        "Pulumi.dev.yaml: line 2, column 15: the tag python/object/apply:os.system is not allowed",
        id="python-tag",
    ),
    pytest.param(
        "config:\n  aws:region: " + "9" * 5000 + "\n",
        "Pulumi.dev.yaml: line 2, column 15: cannot read the value '999",
        id="huge-integer",
    ),
    pytest.param(
        "%YAML 1." + "9" * 5000 + "\n---\nconfig: {}\n",
        "Pulumi.dev.yaml: not valid YAML: a number too long to read",
        id="huge-directive",
    ),
    pytest.param("config: {a: [1\n", "Pulumi.dev.yaml: not valid YAML: line 2, column 1:", id="syntax"),
    pytest.param("config:\n  a: \x07\n", "Pulumi.dev.yaml: not valid YAML: a control character", id="bell"),
    pytest.param("# " + "x" * (1 << 20) + "\n", "Pulumi.dev.yaml: larger than 1 MiB", id="oversize"),
    pytest.param(
        _dev_text(_set("ml-platform:network", "vpcCidr", value="fd00:40::/48")),
        "ml-platform:network.vpcCidr: 'fd00:40::/48' is not an IPv4 CIDR block like 10.40.0.0/16 "
        "(AWS takes IPv4 here)",
        id="ipv6-vpc",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:network", "vpcCidr", value="10.40.0.1/16")),
        "ml-platform:network.vpcCidr: '10.40.0.1/16' has host bits set; use 10.40.0.0/16",
        id="host-bits",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:budgets", "environmentMonthlyUsd", value=float("inf"))),
        "ml-platform:budgets.environmentMonthlyUsd: must be a finite number, got inf",
        id="infinite-budget",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:training", "perRunBudgetUsd", value=float("nan"))),
        "ml-platform:training.perRunBudgetUsd: must be a finite number",
        id="nan-budget",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:budgets", "teamMonthlyUsd", "recsys", value=-5)),
        "ml-platform:budgets.teamMonthlyUsd.recsys: Input should be greater than 0",
        id="negative-team-budget",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:budgets", "anomalyThresholdUsd", value=-1)),
        "ml-platform:budgets.anomalyThresholdUsd: Input should be greater than 0",
        id="negative-anomaly-threshold",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "publicAccessCidrs", value=["203.0.113.0/24", "junk"])),
        "ml-platform:serving.publicAccessCidrs: 'junk' is not an IPv4 CIDR block",
        id="junk-public-cidr",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:network", "interfaceEndpoints", value=["sts", "nosuchsvc"])),
        "ml-platform:network.interfaceEndpoints: 'nosuchsvc' is not an interface endpoint service the "
        "platform uses; allowed: autoscaling, ec2, ec2messages, ecr.api, ecr.dkr,",
        id="unknown-endpoint",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:network", "interfaceEndpoints", value=["sts", "sts"])),
        "ml-platform:network.interfaceEndpoints: 'sts' listed more than once",
        id="duplicate-endpoint",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "modelServer", "cpu", value="lots")),
        "ml-platform:serving.modelServer.cpu: 'lots' is not a Kubernetes quantity; write it like 500m or 2",
        id="cpu-words",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "modelServer", "cpu", value="-1")),
        "ml-platform:serving.modelServer.cpu: '-1' is not a Kubernetes quantity",
        id="cpu-negative",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "modelServer", "cpu", value="100u")),
        "ml-platform:serving.modelServer.cpu: '100u' must be a positive whole number of millicores",
        id="cpu-too-fine",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "modelServer", "memory", value="1GB")),
        "ml-platform:serving.modelServer.memory: '1GB' is not a Kubernetes quantity; write it like 512Mi",
        id="memory-unit",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "modelServer", "memory", value="400m")),
        "ml-platform:serving.modelServer.memory: '400m' must be a whole number of bytes, at least 1Mi",
        id="memory-millibytes",
    ),
    pytest.param(
        _dev_text(lambda config: config.update({"aws:region": "mars-1"})),
        "aws:region: 'mars-1' is not an AWS region like us-east-1",
        id="bad-region",
    ),
    pytest.param(
        _dev_text(lambda config: config.update({"aws:region": "us-east-1\n"})),
        "aws:region: 'us-east-1\\n' is not an AWS region",
        id="region-newline",
    ),
    pytest.param(
        _dev_text(lambda config: config.update({"aws:region": ["us-east-1"]})),
        "aws:region: must be a string, got a list",
        id="region-list",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:tags", "owner", value="me@example.com\n")),
        "ml-platform:tags: tag 'owner' value 'me@example.com\\n' must be at most 256 characters",
        id="tag-value-newline",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:tags", "team", value="ML Platform")),
        "ml-platform:tags: tag 'team' value 'ML Platform' must be 1-63 letters, digits, '-', '_' and '.'",
        id="team-not-a-label",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:tags", "AWS:team", value="x")),
        "ml-platform:tags: tag key 'AWS:team' must be 1-128 characters",
        id="reserved-tag-prefix",
    ),
    pytest.param(
        _dev_text(lambda config: None)
        .replace('kubernetesVersion: "1.31"', "kubernetesVersion: 1.31")
        .replace("kubernetesVersion: '1.31'", "kubernetesVersion: 1.31"),
        'ml-platform:serving.kubernetesVersion: must be a string, got a number; quote it ("1.31"): '
        "YAML reads an unquoted 1.31 as a number",
        id="unquoted-version",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:budgets", "alertEmails", value=["finops at example.com"])),
        "ml-platform:budgets.alertEmails: 'finops at example.com' is not an e-mail address: write one "
        "like finops@example.com (a name, one @, a domain with a dot, no spaces)",
        id="bad-email",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:network", "vpcCdr", value="10.40.0.0/16")),
        "ml-platform:network.vpcCdr: unknown key; did you mean vpcCidr? valid keys here: "
        "availabilityZones, existingPrivateSubnetIds, existingVpcId, flowLogRetentionDays, interfaceEndpoints, natGateways, vpcCidr",
        id="unknown-key",
    ),
    pytest.param(
        _dev_text(lambda config: config.update({"ml-platform:servng": {}})),
        "ml-platform:servng: unknown key; did you mean serving? valid keys ml-platform:<key>: budgets,",
        id="unknown-top-key",
    ),
    pytest.param(
        _dev_text(lambda config: config.update({"ml-platform:region": "us-west-2"})),
        "ml-platform:region: unknown key; region comes from aws:region",
        id="region-in-namespace",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:featureStore", "numNodes", value=True)),
        "ml-platform:featureStore.numNodes: must be a whole number, got a boolean",
        id="bool-as-int",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:training", "maxRunHours", value="24")),
        "ml-platform:training.maxRunHours: must be a number, got the string '24'; write it without quotes",
        id="quoted-number",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "gpuNodeGroup", "enabled", value="yes")),
        "ml-platform:serving.gpuNodeGroup.enabled: must be true or false, got a string 'yes'",
        id="string-as-bool",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:network", "vpcCidr", value=None)),
        "ml-platform:network.vpcCidr: a new VPC needs a CIDR block like 10.40.0.0/16",
        id="no-cidr",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:budgets", "alertThresholdsPct", value=[80, 80])),
        "ml-platform:budgets.alertThresholdsPct: 80 listed more than once",
        id="duplicate-threshold",
    ),
    pytest.param(
        _dev_text(_set("ml-platform:serving", "cpuNodeGroup", value=[1, 2])),
        "ml-platform:serving.cpuNodeGroup: must be a map of keys to values, got a list",
        id="list-for-map",
    ),
]


@pytest.mark.parametrize(("content", "message"), STACK_FILE_CASES)
def test_a_bad_stack_file_is_one_line_naming_the_key_and_exit_2(
    content: str | bytes,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    stack_file = tmp_path / "Pulumi.dev.yaml"
    if isinstance(content, bytes):
        stack_file.write_bytes(content)
    else:
        stack_file.write_text(content)
    code, out, err = _run_mlp(["plan", "--stack", "dev"], monkeypatch, capsys, tmp_path)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"mlp: error: {message}"), line
    assert "Pulumi.dev.yaml" not in line.removeprefix("mlp: error: Pulumi.dev.yaml")
    assert "should match pattern" not in line and "^" not in line


RUN = ["--instance-types", "g5.xlarge,g6.xlarge,g4dn.xlarge", "--count", "1", "--max-hours", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["train", "plan", "--env", "nosuch", "--run-id", "a", *RUN],
            "--env 'nosuch': no Pulumi.nosuch.yaml in",
            id="env-missing",
        ),
        pytest.param(
            ["train", "plan", "--env", "dev\n", "--run-id", "a", *RUN],
            "--env 'dev\\n': stack names are 1-100 letters",
            id="env-newline",
        ),
        pytest.param(
            ["train", "plan", "--env", "train-x", "--run-id", "a", *RUN],
            "--env 'train-x': names starting with 'train-' are reserved",
            id="env-training-prefix",
        ),
        pytest.param(
            ["train", "plan", "--env", "dev", "--run-id", "abc\n", *RUN],
            "--run-id 'abc\\n': use 1-40 lowercase letters",
            id="run-id-newline",
        ),
        pytest.param(
            ["train", "plan", "--env", "dev", "--run-id", "abc", "--image", "evil image", *RUN],
            "--image 'evil image': give a container image reference",
            id="image-space",
        ),
        pytest.param(
            ["check", "--stack", "train-abc\n"], "--stack 'train-abc\\n': stack names are", id="check-newline"
        ),
        pytest.param(["plan", "--stack", "x" * 101], "--stack 'xxx", id="stack-too-long"),
        pytest.param(
            ["plan", "--stack", "staging"], "--stack 'staging': no Pulumi.staging.yaml", id="no-file"
        ),
    ],
)
def test_flags_are_named_as_the_user_typed_them(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run_mlp(args, monkeypatch, capsys, REPO_ROOT)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"mlp: error: {message}"), line


def test_a_plan_that_is_not_one_points_to_the_plan_json_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"stack": "dev"}')
    code, _, err = _run_mlp(["check", "--plan", str(plan)], monkeypatch, capsys, REPO_ROOT)
    assert code == 2
    [line] = err.splitlines()
    assert line.endswith('expected an object with a "resources" list (see docs/plan-json.md)')
    assert (REPO_ROOT / "docs" / "plan-json.md").is_file()


def test_plain_values_yaml_would_type_stay_what_pulumi_reads(tmp_path: Path) -> None:
    """An unquoted date is a string for Pulumi; it must not become a datetime the engine cannot encode."""
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    text = (REPO_ROOT / "Pulumi.dev.yaml").read_text() + "  aws:skipMetadataApiCheck: 2024-01-01\n"
    (tmp_path / "Pulumi.dev.yaml").write_text(text)
    raw = read_stack_file("dev", tmp_path)
    assert raw["aws:skipMetadataApiCheck"] == "2024-01-01"
    assert parse_stack_config("dev", raw).region == "us-east-1"


def test_an_empty_stack_file_reads_as_no_config(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "Pulumi.dev.yaml").write_text("# nothing yet\n")
    assert read_stack_file("dev", tmp_path) == {}
    with pytest.raises(ConfigError, match=r"^aws:region: missing"):
        load_stack_config("dev", tmp_path)


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("500m", "1Gi"), ("2", "512Mi"), ("1.5", "1e9"), ("+250m", "64M"), ("0.1", "4Gi")],
)
def test_kubernetes_quantities_kubernetes_accepts(cpu: str, memory: str) -> None:
    raw = _mutated(
        "dev", lambda raw: raw["ml-platform:serving"]["modelServer"].update(cpu=cpu, memory=memory)
    )
    server = parse_stack_config("dev", raw).serving.model_server
    assert (server.cpu, server.memory) == (cpu, memory)
