"""`mlp`'s exit codes: 0 ok, 1 a finding, 2 the user's to fix, 3 a bug (traceback in a log file).

Each command's delegate is replaced by one that raises, so these run without AWS.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import botocore.exceptions
import pytest

from finops.idle import IdleScan
from finops.scope import ScanScope
from mlp.cli import main
from mlp.errors import UserError

MLP = str(Path(sys.executable).parent / "mlp")


@pytest.fixture(autouse=True)
def cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MLP_DEBUG", raising=False)
    return tmp_path / "xdg"


def run_mlp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture(autouse=True)
def no_scope_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlp idle` resolves its scope (STS, DescribeRegions) first: an empty one keeps these tests off AWS."""
    monkeypatch.setattr(
        "mlp.cli.scan_cmds.scope_from_options", lambda *a, **k: ScanScope(targets=[], accounts=[])
    )


def idle_raises(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def scan(*args: object, **kwargs: object) -> IdleScan:
        raise error

    monkeypatch.setattr("mlp.cli.scan_cmds.scan_idle", scan)


def log_path(stderr: str) -> Path:
    return Path(stderr.strip().rsplit("traceback in ", 1)[1])


def test_ok_is_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(
        "mlp.cli.scan_cmds.scan_idle", lambda *a, **k: IdleScan(window_hours=6, threshold_pct=5)
    )
    code, stdout, _ = run_mlp(capsys, "idle")
    assert code == 0 and "No idle GPU instances" in stdout


def test_a_bug_is_3_with_one_line_and_the_traceback_in_a_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cache_home: Path
) -> None:
    idle_raises(monkeypatch, RuntimeError("boom\nsecond line"))

    code, stdout, stderr = run_mlp(capsys, "idle", "--regions", "us-east-1")

    assert code == 3
    assert stdout == ""
    progress, line = stderr.splitlines()  # the scan's progress line, then the error
    assert progress.startswith("scanning GPU instances")
    assert line.startswith("mlp: internal error (a bug): RuntimeError: boom second line; traceback in ")
    assert "Traceback" not in stderr
    log = log_path(stderr)
    assert log.parent == cache_home / "ml-platform" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert "in scan" in text  # the frame that raised
    assert text.startswith("mlp idle --regions us-east-1\n")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback_instead(
    how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cache_home: Path
) -> None:
    idle_raises(monkeypatch, RuntimeError("boom"))
    if how == "env":
        monkeypatch.setenv("MLP_DEBUG", "1")
    args = ["--debug", "idle"] if how == "flag" else ["idle"]

    code, _, stderr = run_mlp(capsys, *args)

    assert code == 3
    assert "Traceback (most recent call last)" in stderr and "RuntimeError: boom" in stderr
    assert stderr.splitlines()[-1] == "mlp: internal error (a bug): RuntimeError: boom"
    assert not (cache_home / "ml-platform" / "logs").exists()


def test_the_log_falls_back_to_a_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    idle_raises(monkeypatch, KeyError("instance"))

    code, _, stderr = run_mlp(capsys, "idle")

    assert code == 3
    log = log_path(stderr)
    assert log.parent == tmp_path / "tmp" / "ml-platform-logs"
    assert "KeyError: 'instance'" in log.read_text()


def test_secrets_stay_out_of_the_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def preflight(**kwargs: object) -> None:
        raise RuntimeError("preflight bug")

    monkeypatch.setattr("mlp.preflight.check_report", preflight)

    code, _, stderr = run_mlp(
        capsys,
        "report",
        "--out",
        str(tmp_path / "out"),
        "--slack-webhook",
        "https://hooks.slack.com/services/T0/B0/SECRET",
        "--s3-uri=s3://bucket/prefix",
    )

    assert code == 3
    text = log_path(stderr).read_text()
    assert "SECRET" not in text and "--slack-webhook <redacted>" in text


def test_a_user_error_is_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    idle_raises(monkeypatch, UserError("--thing: wrong; use another"))

    code, _, stderr = run_mlp(capsys, "idle")

    assert code == 2
    assert stderr.splitlines()[-1] == "mlp: error: --thing: wrong; use another"


def test_a_user_error_carrying_its_own_code_keeps_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Finding(UserError):
        exit_code = 1

    idle_raises(monkeypatch, Finding("refusing: not provably ours"))

    code, _, stderr = run_mlp(capsys, "idle")

    assert code == 1
    assert stderr.splitlines()[-1] == "mlp: error: refusing: not provably ours"


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
        botocore.exceptions.NoRegionError(),
    ],
)
def test_an_aws_error_no_command_wrapped_is_still_one_line(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    idle_raises(monkeypatch, error)

    code, _, stderr = run_mlp(capsys, "idle")

    assert code == 2
    assert stderr.count("\n") == 2  # the scan's progress line, then the error
    line = stderr.splitlines()[-1]
    assert line.startswith("mlp: error: ") and "Traceback" not in stderr
    assert "AWS_ENDPOINT_URL" in line or "AWS_REGION" in line


def test_usage_errors_are_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run_mlp(capsys, "idle", "--no-such-flag")
    assert code == 2
    assert stderr.splitlines() == ["mlp: error: No such option: --no-such-flag; see `mlp idle -h`"]


@pytest.mark.parametrize("args", [["--debug", "idle"], ["idle", "--debug"]], ids=["before", "after"])
def test_debug_is_taken_before_or_after_the_command(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    idle_raises(monkeypatch, RuntimeError("boom"))
    code, _, stderr = run_mlp(capsys, *args)
    assert code == 3 and "Traceback (most recent call last)" in stderr


def test_the_console_script_follows_the_contract(tmp_path: Path) -> None:
    # A bug injected through the real entry point: `python -c` with the same main().
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = (
        "import sys, mlp.cli.scan_cmds as s\n"
        "from finops.scope import ScanScope\n"
        "def boom(*a, **k): raise ZeroDivisionError('divided')\n"
        "s.scan_idle = boom\n"
        "s.scope_from_options = lambda *a, **k: ScanScope(targets=[], accounts=[])\n"
        "sys.argv = ['mlp', 'idle']\n"
        "from mlp.cli import main; main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1].startswith(
        "mlp: internal error (a bug): ZeroDivisionError: divided"
    )
    assert log_path(result.stderr).is_file()
    assert subprocess.run([MLP, "--help"], capture_output=True, text=True, timeout=60).returncode == 0
