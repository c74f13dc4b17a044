"""Run requests are refused before anything deploys: ids, allowlist, GPU cap, hours, budget, images."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.config import load_stack_config, parse_stack_config, read_stack_file
from infra.training.request import build_request, check_budget, ecr_image, estimate_cost
from mlp import pricing
from mlp.errors import UserError
from tests.conftest import REPO_ROOT

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TYPES = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
ACCOUNT = "123456789012"
TRAINER_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/team/trainer:1.4"


@pytest.fixture(scope="module")
def dev():
    return load_stack_config("dev", REPO_ROOT)


def _build(dev, **overrides):
    values = {
        "run_id": "bert-ft-01",
        "instance_types": TYPES,
        "count": 2,
        "max_hours": 8.0,
        "created_at": NOW,
    }
    values.update(overrides)
    return build_request(dev, **values)


def test_a_valid_request_carries_the_training_tags(dev) -> None:
    request = _build(dev)
    assert request.stack == "train-bert-ft-01"
    assert request.expires_at == NOW + timedelta(hours=8)
    assert request.tags["run-id"] == "bert-ft-01"
    assert request.tags["expires-at"] == "2026-11-23T20:00:00Z"
    assert request.tags["ephemeral"] == "true" and request.tags["pulumi-stack"] == "train-bert-ft-01"
    assert {key: request.tags[key] for key in dev.mandatory_tags} == {
        key: dev.resource_tags[key] for key in dev.mandatory_tags
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"run_id": "Bert_FT"}, "--run-id 'Bert_FT': use 1-40 lowercase letters"),
        ({"run_id": "a" * 41}, "--run-id"),
        ({"run_id": "-lead"}, "--run-id '-lead'"),
        # `$` in a pattern matches before a trailing newline; the id must match in full.
        ({"run_id": "abc\n"}, "--run-id 'abc\\n': use 1-40 lowercase letters"),
        ({"run_id": "abc\ndef"}, "--run-id 'abc\\ndef'"),
        ({"image": "python:3.12 slim"}, "--image 'python:3.12 slim': give a container image reference"),
        ({"image": ""}, "--image '': give a container image reference"),
        ({"command": "python\x00 train.py"}, "--command: must not contain a NUL character"),
        ({"instance_types": ["g5.xlarge", "g6.xlarge"]}, "--instance-types: give at least 3 types"),
        (
            {"instance_types": ["g5.xlarge", "g6.xlarge", "p5.48xlarge"]},
            "--instance-types: p5.48xlarge not allowed in dev",
        ),
        ({"count": 0}, "--count: must be at least 1"),
        (
            {"count": 3, "instance_types": ["g5.xlarge", "g6.xlarge", "g5.12xlarge"]},
            "--count 3: up to 12 GPUs exceeds dev's cap of 8",
        ),
        ({"max_hours": 30.0}, "--max-hours 30: dev allows runs of at most 24 hours"),
        ({"on_demand_base": 3}, "--on-demand-base: must be between 0 and --count (2)"),
        ({"on_demand_base": 1}, "--on-demand-base: training in dev is spot-only"),
    ],
)
def test_refusals_name_the_flag_and_the_limit(dev, overrides: dict, message: str) -> None:
    with pytest.raises(UserError) as error:
        _build(dev, **overrides)
    assert str(error.value).startswith(message)


def test_cost_is_priced_at_the_dearest_type_and_spot_is_cheaper(dev) -> None:
    request = _build(dev, count=2, max_hours=10.0)
    cost = estimate_cost(request)
    dearest = max(pricing.on_demand_hourly(t) for t in TYPES)
    assert cost.on_demand_hourly_usd == pytest.approx(2 * dearest)
    assert cost.spot_hourly_usd == pytest.approx(2 * dearest * (1 - pricing.DEFAULT_SPOT_DISCOUNT))
    assert cost.spot_worst_case_usd == pytest.approx(round(cost.spot_hourly_usd * 10, 2))
    assert cost.on_demand_worst_case_usd > cost.spot_worst_case_usd


def test_on_demand_base_is_priced_on_demand() -> None:
    prod_types = ["g5.xlarge", "g6.xlarge", "g5.2xlarge"]
    prod = load_stack_config("prod", REPO_ROOT)
    cost = estimate_cost(_build(prod, count=2, on_demand_base=1, instance_types=prod_types))
    dearest = max(pricing.on_demand_hourly(t) for t in prod_types)
    assert cost.spot_hourly_usd == pytest.approx(dearest + dearest * (1 - pricing.DEFAULT_SPOT_DISCOUNT))


def test_spot_history_is_used_when_reachable(dev) -> None:
    from moto import mock_aws

    from mlp.aws import client

    with mock_aws():
        cost = estimate_cost(_build(dev), client("ec2", "us-east-1"))
    assert cost.spot_source == "describe_spot_price_history"
    assert cost.spot_hourly_usd > 0


def test_a_run_over_budget_is_refused() -> None:
    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:training"]["perRunBudgetUsd"] = 50
    tight = parse_stack_config("dev", raw)
    request = _build(
        tight, count=2, max_hours=24.0, instance_types=["g5.2xlarge", "g6.2xlarge", "g5.12xlarge"]
    )
    cost = estimate_cost(request)
    assert cost.spot_worst_case_usd > 50
    with pytest.raises(UserError) as error:
        check_budget(request, cost)
    assert str(error.value).startswith(f"worst-case cost ${cost.spot_worst_case_usd:,.2f} (2 x $")
    assert "exceeds dev's per-run budget $50.00 (ml-platform:training.perRunBudgetUsd)" in str(error.value)


def test_a_run_within_budget_passes(dev) -> None:
    request = _build(dev)
    check_budget(request, estimate_cost(request))


def _with_repositories(*repositories: str):
    raw = read_stack_file("dev", REPO_ROOT)
    raw["ml-platform:training"]["imageRepositories"] = list(repositories)
    return parse_stack_config("dev", raw)


@pytest.mark.parametrize(
    ("image", "region", "repository"),
    [
        (TRAINER_IMAGE, "us-east-1", "team/trainer"),
        (f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/trainer@sha256:{'a' * 64}", "eu-west-1", "trainer"),
        (f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com/t/x:2@sha256:ab", "us-gov-west-1", "t/x"),
    ],
)
def test_private_ecr_images_name_their_registry_region_and_repository(
    image: str, region: str, repository: str
) -> None:
    located = ecr_image(image)
    assert located is not None
    assert located.region == region and located.repository == repository and located.account == ACCOUNT
    assert located.registry == image.split("/", 1)[0]
    assert located.repository_arn == f"arn:aws:ecr:{region}:{ACCOUNT}:repository/{repository}"


@pytest.mark.parametrize(
    "image",
    [None, "public.ecr.aws/docker/library/python:3.12-slim", "python:3.12", "ghcr.io/org/trainer:1"],
)
def test_other_images_are_not_private_ecr(image: str | None) -> None:
    assert ecr_image(image) is None


def test_a_private_ecr_image_outside_image_repositories_is_refused(dev) -> None:
    with pytest.raises(UserError) as error:
        _build(dev, image=TRAINER_IMAGE)
    assert str(error.value) == (
        f"--image {TRAINER_IMAGE}: ECR repository arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/trainer "
        "is not in dev's ml-platform:training.imageRepositories; add 'team/trainer' there or use a public image"
    )


def test_an_image_of_another_region_needs_its_arn() -> None:
    image = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:1.4"
    arn = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/team/trainer"
    with pytest.raises(UserError, match=f"add '{arn}' there"):
        _build(_with_repositories("team/trainer"), image=image)
    assert _build(_with_repositories(arn), image=image).image == image


@pytest.mark.parametrize(
    "repositories", [("team/trainer",), (f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/trainer",)]
)
def test_a_configured_repository_admits_its_images(repositories: tuple[str, ...]) -> None:
    assert _build(_with_repositories(*repositories), image=TRAINER_IMAGE).image == TRAINER_IMAGE


def test_a_public_image_needs_no_repository(dev) -> None:
    image = "public.ecr.aws/docker/library/python:3.12-slim"
    assert _build(dev, image=image).image == image


def test_the_feature_store_is_opt_in(dev) -> None:
    assert _build(dev).feature_store is False
    assert _build(dev, feature_store=True).feature_store is True
