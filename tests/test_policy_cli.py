"""`mlp check` end to end: exit codes, JSON and text output, bad input, and the real dev/prod plans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import load_stack_config
from mlp.cli import main
from policy.pack import pack_config_for_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
PLANS = Path(__file__).resolve().parent / "fixtures" / "plans"
MLP = Path(sys.executable).parent / "mlp"


def run_mlp(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`mlp ARGS` in-process through the console script's entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mlp", *args])
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_bad_plan_fails_with_json_violations_from_the_real_console_script() -> None:
    completed = subprocess.run(
        [str(MLP), "check", "--plan", str(PLANS / "bad.json"), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    report = json.loads(completed.stdout)
    assert set(report) == {"violations", "checked_resources"}
    assert report["checked_resources"] == len(json.loads((PLANS / "bad.json").read_text())["resources"])
    assert len(report["violations"]) == 7
    for violation in report["violations"]:
        assert set(violation) == {"policy", "resource", "type", "level", "message"}
        assert violation["level"] == "mandatory"
        assert violation["resource"].startswith("urn:pulumi:dev::ml-platform::")
        assert violation["resource"].endswith("::" + violation["message"].split("'")[1])


def test_text_output_groups_violations_by_resource(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_mlp(
        ["check", "--plan", str(PLANS / "imdsv2-encrypted-ebs" / "violating.json")], monkeypatch, capsys
    )
    assert code == 1
    lines = out.splitlines()
    headers = [line for line in lines if not line.startswith("  ")][:-1]
    assert headers == [
        "urn:pulumi:dev::ml-platform::aws:ec2/launchTemplate:LaunchTemplate::workers (aws:ec2/launchTemplate:LaunchTemplate)",
        "urn:pulumi:dev::ml-platform::aws:ec2/instance:Instance::bastion (aws:ec2/instance:Instance)",
        "urn:pulumi:dev::ml-platform::aws:ebs/volume:Volume::datasets (aws:ebs/volume:Volume)",
    ]
    # Each header is followed by that resource's violations only.
    workers = lines[lines.index(headers[0]) + 1 : lines.index(headers[1])]
    assert len(workers) == 2 and all(
        line.startswith("  [mandatory] imdsv2-encrypted-ebs: LaunchTemplate 'workers'") for line in workers
    )
    assert lines[-1] == "4 resources checked: 5 mandatory and 0 advisory violation(s) in 3 resource(s)"


def test_compliant_plan_passes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_mlp(
        ["check", "--plan", str(PLANS / "no-public-ingress" / "compliant.json")], monkeypatch, capsys
    )
    assert (code, out) == (0, "6 resources checked: no violations\n")


def test_advisory_violations_alone_exit_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "pack.json"
    config.write_text(json.dumps({"stack-monthly-budget": {"monthlyBudgetUsd": 100}}))
    plan = PLANS / "stack-monthly-budget" / "violating.json"
    code, out, _ = run_mlp(
        ["check", "--plan", str(plan), "--pack-config", str(config), "--format", "json"], monkeypatch, capsys
    )
    assert code == 0
    assert [v["level"] for v in json.loads(out)["violations"]] == ["advisory"]
    config.write_text(
        json.dumps({"stack-monthly-budget": {"monthlyBudgetUsd": 100, "enforcementLevel": "mandatory"}})
    )
    code, _, _ = run_mlp(["check", "--plan", str(plan), "--pack-config", str(config)], monkeypatch, capsys)
    assert code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check"],
            "mlp: error: mlp check needs --stack STACK (plan it offline) or --plan FILE (a plan JSON)",
        ),
        (
            ["check", "--plan", "missing.json"],
            "mlp: error: --plan missing.json: cannot read it (No such file or directory)",
        ),
        (
            ["check", "--plan", "pyproject.toml"],
            "mlp: error: --plan pyproject.toml: not JSON (line 1: Expecting value)",
        ),
        (["check", "--plan", "Pulumi.dev.yaml"], "mlp: error: --plan Pulumi.dev.yaml: not JSON"),
        (["check", "--stack", "staging"], "mlp: error: --stack 'staging': no Pulumi.staging.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_mlp(args, monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_bad_pack_config_file_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "pack.json"
    config.write_text(json.dumps({"training-fleet-guardrails": {"maxGpusPerRun": "lots"}}))
    code, _, err = run_mlp(
        ["check", "--plan", str(PLANS / "bad.json"), "--pack-config", str(config)], monkeypatch, capsys
    )
    assert code == 2
    assert err.startswith(
        "mlp: error: pack config: training-fleet-guardrails.maxGpusPerRun: Input should be a valid integer"
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_environment_stacks_pass_with_zero_mandatory_violations(
    stack: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pack_config = tmp_path / "pack-config.json"
    code, out, err = run_mlp(
        ["check", "--stack", stack, "--format", "json", "--pack-config-out", str(pack_config)],
        monkeypatch,
        capsys,
    )
    report = json.loads(out)
    assert [v for v in report["violations"] if v["level"] == "mandatory"] == [], err
    assert code == 0
    assert report["checked_resources"] > 50
    # The written file is what `pulumi preview --policy-pack policy --policy-pack-config` gets for this stack.
    assert json.loads(pack_config.read_text()) == pack_config_for_stack(load_stack_config(stack))


def test_a_plan_file_checked_against_a_stacks_limits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = str(PLANS / "training-fleet-guardrails" / "violating.json")
    _, default_out, _ = run_mlp(["check", "--plan", plan, "--format", "json"], monkeypatch, capsys)
    _, prod_out, _ = run_mlp(
        ["check", "--plan", plan, "--stack", "prod", "--format", "json"], monkeypatch, capsys
    )
    default_messages = [v["message"] for v in json.loads(default_out)["violations"]]
    prod_messages = [v["message"] for v in json.loads(prod_out)["violations"]]
    # prod allows 32 GPUs per run and 72 h runs, so only the GPU-cap finding goes away (p5 is not allowlisted).
    assert any("stay within 8 GPUs per run" in m for m in default_messages)
    assert not any("GPUs per run" in m for m in prod_messages)
    assert any("(72 h from now)" in m for m in prod_messages)


def test_a_training_run_plan_passes_against_its_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_args = "--env dev --run-id bert-ft-01 --instance-types g5.xlarge,g6.xlarge,g4dn.xlarge --count 2 --max-hours 12"
    code, plan_json, err = run_mlp(
        ["train", "plan", *run_args.split(), "--format", "json"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    plan = tmp_path / "run.json"
    plan.write_text(plan_json)
    code, out, err = run_mlp(
        ["check", "--plan", str(plan), "--stack", "dev", "--format", "json"], monkeypatch, capsys
    )
    report = json.loads(out)
    assert report["violations"] == [], err
    assert code == 0
    assert any(r["type"] == "aws:autoscaling/group:Group" for r in json.loads(plan_json)["resources"])


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe{}", "not UTF-8 (byte 0)"), (b"[" * 5000 + b"]" * 5000, "nested too deeply")],
)
@pytest.mark.parametrize("flag", ["--plan", "--pack-config"])
def test_undecodable_or_deep_json_files_are_one_line(
    flag: str,
    content: bytes,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path = tmp_path / "file.json"
    path.write_bytes(content)
    args = (
        ["check", "--plan", str(path)] if flag == "--plan" else ["check", "--plan", str(PLANS / "bad.json")]
    )
    if flag == "--pack-config":
        args += ["--pack-config", str(path)]
    code, out, err = run_mlp(args, monkeypatch, capsys)
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.startswith(f"mlp: error: {flag} {path}: {message}")
