"""The habits every `mlp` command shares (docs/cli.md): help, version, option names, AWS profile and
region, the state backend's order, --debug, the progress display, and train plan's cost block.

The AWS ones run against the embedded sandbox (moto on 127.0.0.1), in process through `main` or as
`mlp` subprocesses with stderr on a pseudo-terminal.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from finops.sandbox import Sandbox
from infra.config import load_stack_config
from mlp import aws
from mlp.cli import app, main
from mlp.pricing import PRICE_SOURCE
from tests.conftest import REPO_ROOT
from tests.sandbox_fixtures import process_env, sandbox_fixture  # noqa: F401
from tests.test_diy_state import file_put, run_tags, write_stack

MLP = str(Path(sys.executable).parent / "mlp")
TYPES = "g5.xlarge,g6.xlarge,g4dn.xlarge"
RUN = ["--run-id", "r1", "--instance-types", TYPES, "--count", "2", "--max-hours", "8"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_mlp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and group of `mlp`, with the words that name it."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = [path for path, _ in commands()]


# -- help, version, usage lines -----------------------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(["mlp", *path]))
def test_every_command_and_group_takes_h(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, short, _ = run_mlp(capsys, *path, "-h")
    assert code == 0
    usage = next(line.strip() for line in short.splitlines() if "Usage:" in line)
    assert usage.startswith(" ".join(["Usage: mlp", *path]))
    # No typer noise in the usage line: arguments as RUN_ID, not {run_id}.
    assert "{" not in usage and "<" not in usage
    assert "<bool>" not in short
    assert run_mlp(capsys, *path, "--help")[:2] == (0, short)


def test_arguments_read_as_unix_usage_lines(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "destroy"):
        _, out, _ = run_mlp(capsys, "train", command, "-h")
        assert f"Usage: mlp train {command} [OPTIONS] RUN_ID" in out


def test_every_option_and_argument_says_what_it_is_for() -> None:
    for path, command in commands():
        assert (command.help or "").strip(), f"mlp {' '.join(path)} has no help"
        for param in command.params:
            assert (param.help or "").strip(), f"mlp {' '.join(path)}: {param.opts or param.name} has no help"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_mlp(capsys, "--version")
    assert (code, out, err) == (0, f"mlp {importlib.metadata.version('ml-platform')}\n", "")
    assert out == "mlp 0.1.0\n"


def test_a_usage_error_is_one_line_naming_the_flag_and_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_mlp(capsys, "plan", "--stack", "dev", "--format", "yaml")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "mlp: error: Invalid value for '--format': 'yaml': use text (the table) or json; see `mlp plan -h`"
    ]


# -- -s/--stack, one --format vocabulary ----------------------------------------------------------


@pytest.mark.parametrize("flag", ["-s", "--stack", "--env"])
def test_train_plan_names_its_environment_with_s_or_the_old_env(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_mlp(capsys, "train", "plan", flag, "dev", *RUN, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["stack"] == "train-r1"


def test_train_refuses_both_names_of_its_stack(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_mlp(capsys, "train", "plan", "-s", "dev", "--env", "prod", *RUN)
    assert code == 2
    assert err.splitlines() == [
        "mlp: error: --stack and --env both name the environment stack (--env is its old name); pass one"
    ]


@pytest.mark.parametrize("fmt", ["text", "table"])
def test_plan_takes_s_and_text_or_its_old_name_table(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_mlp(capsys, "plan", "-s", "dev", "--format", fmt)
    assert code == 0, err
    assert "tag coverage:" in out and "estimated monthly cost: $" in out


def test_check_takes_s(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_mlp(capsys, "check", "-s", "dev", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["violations"] == []


# -- train plan's cost ----------------------------------------------------------------------------


def test_train_plan_json_carries_the_run_s_cost_block(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_mlp(capsys, "train", "plan", "-s", "dev", *RUN, "--format", "json")
    assert code == 0, err
    cost = json.loads(out)["cost"]
    assert cost["instances"] == 2 and cost["max_hours"] == 8
    assert cost["hourly_usd"] > 0
    assert cost["worst_case_usd"] == pytest.approx(round(cost["hourly_usd"] * 8, 2), abs=0.01)
    assert cost["budget_usd"] == load_stack_config("dev", REPO_ROOT).training.per_run_budget_usd
    assert cost["within_budget"] is True
    assert cost["price_source"] == PRICE_SOURCE and cost["spot_price_source"]
    assert cost["on_demand_worst_case_usd"] > cost["worst_case_usd"]


def test_train_plan_text_prints_the_run_s_cost_not_a_month_s(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_mlp(capsys, "train", "plan", "-s", "dev", *RUN, "--format", "json")
    cost = json.loads(out)["cost"]
    code, text, err = run_mlp(capsys, "train", "plan", "-s", "dev", *RUN)
    assert code == 0, err
    assert (
        f"run cost: ${cost['hourly_usd']:,.2f}/hour, at most ${cost['worst_case_usd']:,.2f} for its 8 hours, "
        f"budget ${cost['budget_usd']:,.2f}"
    ) in text
    assert "monthly" not in text


# -- the state backend: --backend, $MLP_BACKEND_URL, $PULUMI_BACKEND_URL, ~/.ml-platform/state -------


def test_the_backend_comes_from_the_flag_then_each_variable_then_the_home_default(
    tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = {
        "default": fake_home / ".ml-platform" / "state",
        "pulumi": tmp_path / "pulumi",
        "mlp": tmp_path / "mlp",
        "flag": tmp_path / "flag",
    }
    for name, directory in sources.items():
        write_stack(file_put(directory), f"train-{name}", tags=run_tags(name))

    def listed(*args: str) -> list[str]:
        code, out, err = run_mlp(capsys, "train", "list", "--format", "json", *args)
        assert code == 0, err
        return [run["stack"] for run in json.loads(out)["runs"]]

    assert listed() == ["train-default"]
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{sources['pulumi']}")
    assert listed() == ["train-pulumi"]
    monkeypatch.setenv("MLP_BACKEND_URL", f"file://{sources['mlp']}")
    assert listed() == ["train-mlp"]
    assert listed("--backend", f"file://{sources['flag']}") == ["train-flag"]


# -- --profile and --region, against the sandbox --------------------------------------------------


@pytest.fixture
def profile(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A profile in AWS_CONFIG_FILE that alone says where the sandbox is, in which region, as whom."""
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile sandbox]\n"
        "region = eu-west-1\n"
        f"endpoint_url = {sandbox.endpoint}\n"
        "aws_access_key_id = sandbox\n"
        "aws_secret_access_key = sandbox\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    # Sessions are kept per profile name for the process: this profile's file is this test's.
    aws._session.cache_clear()
    yield "sandbox"
    aws._session.cache_clear()


def test_profile_reaches_boto3(profile: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    account = sandbox.client("sts").get_caller_identity()["Account"]
    monkeypatch.setenv("AWS_PROFILE", "")  # restored after the test, whatever use_profile sets
    aws.use_profile(profile)
    assert os.environ["AWS_PROFILE"] == profile
    assert aws.default_region() == "eu-west-1"
    sts = aws.client("sts")
    assert sts.meta.endpoint_url == sandbox.endpoint and sts.meta.region_name == "eu-west-1"
    assert aws.caller_account_id() == account


def test_profile_on_a_command_is_the_only_way_it_finds_the_sandbox(
    profile: str, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_mlp(
        capsys, "untagged", "--profile", profile, "--region", "us-east-1", "--format", "json"
    )
    assert code == 0, err
    scope = json.loads(out)["scope"]
    account = sandbox.client("sts").get_caller_identity()["Account"]
    assert scope["regions"] == ["us-east-1"] and [a["account_id"] for a in scope["accounts"]] == [account]
    # For this command only: the next one in this process acts as the environment says.
    assert "AWS_PROFILE" not in os.environ


def test_an_unknown_profile_is_one_line_naming_it_and_how_to_list_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_mlp(capsys, "idle", "--profile", "nosuch", "--region", "us-east-1")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "mlp: error: --profile nosuch: no such AWS profile in /dev/null or /dev/null; "
        "`aws configure list-profiles` lists them"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--region", "us-east-1", "--regions", "eu-west-1"],
            "--region us-east-1 and --regions eu-west-1 both choose the regions; pass one of them",
        ),
        (
            ["--region", "us-east-1,eu-west-1"],
            "--region us-east-1,eu-west-1: takes one region; use --regions us-east-1,eu-west-1 for several",
        ),
        (["--region", "us-east-7"], "--region: unknown region 'us-east-7'"),
    ],
)
@pytest.mark.parametrize("command", [["idle"], ["untagged"], ["report"], ["reap"], ["runs", "cost"]])
def test_region_is_one_region_and_never_with_regions(
    command: list[str], args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_mlp(capsys, *command, *args)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"mlp: error: {message}")


def test_region_scans_that_region(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in sandbox.environ().items():
            patch.setenv(name, value)
        code, out, err = run_mlp(capsys, "idle", "--region", "eu-west-1", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["scope"]["regions"] == ["eu-west-1"]


def test_runs_cost_takes_the_scan_scope_options(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in sandbox.environ().items():
            patch.setenv(name, value)
        code, out, err = run_mlp(
            capsys, "runs", "cost", "--region", "us-east-1", "--concurrency", "2", "--format", "json"
        )
    assert code == 0, err
    assert json.loads(out)["scope"]["regions"] == ["us-east-1"]
    assert run_mlp(capsys, "runs", "cost", "--accounts", "a.yaml", "--org-role", "R")[0] == 2


# -- --debug --------------------------------------------------------------------------------------


def test_debug_after_the_command_logs_botocore_s_requests(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in sandbox.environ().items():
            patch.setenv(name, value)
        patch.delenv("MLP_DEBUG", raising=False)
        code, quiet, quiet_err = run_mlp(capsys, "idle", "--region", "us-east-1", "--format", "json")
        assert code == 0 and "botocore" not in quiet_err
        code, out, err = run_mlp(capsys, "idle", "--region", "us-east-1", "--format", "json", "--debug")
    assert code == 0
    assert json.loads(out)["scope"] == json.loads(quiet)["scope"]
    assert "botocore" in err and "[DEBUG]" in err and "DescribeInstances" in err


# -- the progress display -------------------------------------------------------------------------


def run_with_stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`mlp ARGS` with stdout piped and stderr on a pseudo-terminal, as a person at a shell runs `mlp > file`."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [MLP, *args], stdout=subprocess.PIPE, stderr=follower, env=env, cwd=REPO_ROOT
    ) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the process has exited
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.stdout is not None
        out = process.stdout.read().decode()
    os.close(leader)
    return process.returncode, out, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.fixture
def terminal_env(sandbox: Sandbox) -> dict[str, str]:
    return {**process_env(sandbox), "TERM": "xterm-256color", "COLUMNS": "120"}


def test_progress_shows_on_a_terminal(terminal_env: dict[str, str]) -> None:
    code, out, err = run_with_stderr_on_a_terminal(["idle", "--regions", "us-east-1,eu-west-1"], terminal_env)
    assert code == 0, err
    assert "Idle GPUs" in err and "GetMetricData calls" in err
    assert re.search(r"account-regions .*[0-2]/2", err), err
    # The display is for the person watching: stdout holds the result only.
    assert "account-regions" not in out and out.startswith("scanned 1 account x 2 regions")


def test_progress_is_silent_when_stderr_is_not_a_terminal(terminal_env: dict[str, str]) -> None:
    result = subprocess.run(
        [MLP, "idle", "--regions", "us-east-1,eu-west-1"],
        env=terminal_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Idle GPUs" not in result.stderr and "\x1b[" not in result.stderr


def test_progress_is_silent_when_json_is_piped(terminal_env: dict[str, str]) -> None:
    code, out, err = run_with_stderr_on_a_terminal(
        ["idle", "--regions", "us-east-1,eu-west-1", "--format", "json"], terminal_env
    )
    assert code == 0, err
    assert json.loads(out)["scope"]["regions"] == ["eu-west-1", "us-east-1"]
    assert "Idle GPUs" not in err and "GetMetricData calls" in err  # the log line, not the display
