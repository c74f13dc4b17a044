"""`infra/__main__.py`, the program the Pulumi CLI runs: good config deploys, bad config is one line."""

from __future__ import annotations

import runpy

import pulumi
import pytest

from infra.config import read_stack_file, runtime_config_values
from infra.plan import run_offline
from tests.conftest import REPO_ROOT


def _run_entrypoint(raw: dict) -> list[dict]:
    return run_offline(
        lambda: runpy.run_module("infra.__main__", run_name="__main__"),
        stack="dev",
        region="us-east-1",
        config_values=runtime_config_values(raw),
    ).resources


def test_the_entrypoint_builds_the_environment_from_runtime_config() -> None:
    resources = _run_entrypoint(read_stack_file("dev", REPO_ROOT))
    assert {
        "aws:eks/cluster:Cluster",
        "aws:s3/bucket:Bucket",
        "aws:elasticache/replicationGroup:ReplicationGroup",
    } <= {item["type"] for item in resources}


def test_bad_config_stops_the_program_with_a_run_error_naming_the_key() -> None:
    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:featureStore"]["nodeType"] = "cache.huge"
    with pytest.raises(
        pulumi.RunError, match=r"^ml-platform:featureStore\.nodeType: 'cache\.huge' is not allowed"
    ):
        _run_entrypoint(raw)
