"""`mlp train` as users run it: refusals and the missing-CLI message are one line with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

RUN = [
    "--env",
    "dev",
    "--run-id",
    "r1",
    "--instance-types",
    "g5.xlarge,g6.xlarge,g4dn.xlarge",
    "--count",
    "1",
    "--max-hours",
    "4",
]


def _mlp(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "mlp", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_train_plan_prints_the_plan_json() -> None:
    result = _mlp("train", "plan", *RUN, "--format", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["stack"] == "train-r1"
    assert any(item["type"] == "aws:autoscaling/group:Group" for item in plan["resources"])


def test_train_plan_with_the_feature_store_grants_its_secret_only() -> None:
    def policy(*flags: str) -> str:
        result = _mlp("train", "plan", *RUN, *flags, "--format", "json")
        assert result.returncode == 0, result.stderr
        [role_policy] = [
            item
            for item in json.loads(result.stdout)["resources"]
            if item["type"] == "aws:iam/rolePolicy:RolePolicy"
        ]
        return role_policy["inputs"]["policy"]

    assert "secretsmanager:GetSecretValue" in policy("--feature-store")
    assert "secretsmanager" not in policy()


def test_train_plan_refuses_a_private_ecr_image_not_configured() -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/trainer:1.4"
    result = _mlp("train", "plan", *RUN, "--image", image)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mlp: error: --image {image}: ECR repository arn:aws:ecr:us-east-1:123456789012:repository/team/trainer "
        "is not in dev's ml-platform:training.imageRepositories; add 'team/trainer' there or use a public image"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--run-id", "R_1"), "mlp: error: --run-id 'R_1': use 1-40 lowercase letters"),
        (("--max-hours", "100"), "mlp: error: --max-hours 100: dev allows runs of at most 24 hours"),
        (
            ("--instance-types", "g5.xlarge,g6.xlarge,p5.48xlarge"),
            "mlp: error: --instance-types: p5.48xlarge not allowed in dev",
        ),
    ],
)
def test_train_plan_refusals(change: tuple[str, str], message: str) -> None:
    args = list(RUN)
    args[args.index(change[0]) + 1] = change[1]
    result = _mlp("train", "plan", *args)
    assert result.returncode == 2
    assert result.stdout == "" and result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)


def test_launch_without_the_pulumi_cli_says_so_in_one_line() -> None:
    bin_dir = os.path.dirname(sys.executable)
    result = _mlp("train", "launch", *RUN, "--command", "python train.py", path=bin_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "the Pulumi CLI is not installed" in lines[0] and "mlp train plan" in lines[0]
