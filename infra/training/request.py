"""A training run request: validated against its environment's limits before anything is deployed.

Every refusal is a `UserError` (one line, exit 2) naming the limit and how to get under it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from infra.config import TRAINING_STACK_PREFIX as STACK_PREFIX
from infra.config import StackConfig
from mlp import pricing
from mlp.errors import UserError
from mlp.tags import training_tags

RUN_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
MIN_INSTANCE_TYPES = 3
IMAGE = re.compile(r"[^\s\x00-\x1f\x7f]{1,4096}")
# A private ECR registry's image: ACCOUNT.dkr.ecr[-fips].REGION.amazonaws.com/REPOSITORY[:TAG][@DIGEST].
ECR_IMAGE = re.compile(
    r"(?P<registry>(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com)"
    r"/(?P<repository>[^:@]+)(?::[^@]*)?(?:@.*)?"
)
IMAGE_REPOSITORIES_KEY = "ml-platform:training.imageRepositories"


def stack_name(run_id: str) -> str:
    return f"{STACK_PREFIX}{run_id}"


def validate_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise UserError(
            f"--run-id {run_id!r}: use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    return run_id


@dataclass(frozen=True)
class EcrImage:
    """Where a private ECR image lives: the registry to log in to and the repository to pull from."""

    registry: str
    account: str
    region: str
    repository: str

    @property
    def repository_arn(self) -> str:
        return repository_arn(self.repository, self.region, self.account)


def ecr_image(image: str | None) -> EcrImage | None:
    """The ECR coordinates of a private ECR image; None for any other image (public ECR, Docker Hub)."""
    match = ECR_IMAGE.fullmatch(image or "")
    if match is None:
        return None
    return EcrImage(match["registry"], match["account"], match["region"], match["repository"])


def repository_arn(repository: str, region: str, account_id: str) -> str:
    """An `imageRepositories` entry as an ARN: an ARN stays, a name is one in `region` of `account_id`."""
    if repository.startswith("arn:"):
        return repository
    return f"arn:aws:ecr:{region}:{account_id}:repository/{repository}"


def _covers(entry: str, image: EcrImage, stack_region: str) -> bool:
    # A name means a repository of the stack's own account, which is only known once deployed.
    if entry.startswith("arn:"):
        return entry == image.repository_arn
    return entry == image.repository and image.region == stack_region


def check_image_repository(environment: StackConfig, image: str | None) -> None:
    """Refuse a private ECR image the run's role could not pull: its repository is not configured."""
    located = ecr_image(image)
    if located is None:
        return
    repositories = environment.training.image_repositories
    if any(_covers(entry, located, environment.region) for entry in repositories):
        return
    entry = located.repository if located.region == environment.region else located.repository_arn
    raise UserError(
        f"--image {image}: ECR repository {located.repository_arn} is not in "
        f"{environment.environment}'s {IMAGE_REPOSITORIES_KEY}; add {entry!r} there or use a public image"
    )


@dataclass(frozen=True)
class RunCost:
    """What one run may cost: its fleet's price per hour, and the worst case, every hour of `max_hours`.

    The hourly figures are the whole fleet's (`instances`, the on-demand base at on-demand prices),
    priced as `priced_as`, the dearest allowed type, since the fleet may land on it.
    """

    spot_hourly_usd: float
    on_demand_hourly_usd: float
    max_hours: float
    spot_source: str
    instances: int
    priced_as: str
    budget_usd: float

    @property
    def spot_worst_case_usd(self) -> float:
        return round(self.spot_hourly_usd * self.max_hours, 2)

    @property
    def on_demand_worst_case_usd(self) -> float:
        return round(self.on_demand_hourly_usd * self.max_hours, 2)

    @property
    def within_budget(self) -> bool:
        return self.spot_worst_case_usd <= self.budget_usd

    def summary(self) -> str:
        """The run's cost in one line: per hour, at most, and against the budget."""
        return (
            f"${self.spot_hourly_usd:,.2f}/hour, at most ${self.spot_worst_case_usd:,.2f} for its "
            f"{self.max_hours:g} hours, budget ${self.budget_usd:,.2f}"
        )

    def to_json(self) -> dict[str, Any]:
        """The `cost` block of `mlp train plan --format json` (docs/cli.md)."""
        return {
            "instances": self.instances,
            "max_hours": self.max_hours,
            "priced_as": self.priced_as,
            "hourly_usd": round(self.spot_hourly_usd, 4),
            "worst_case_usd": self.spot_worst_case_usd,
            "budget_usd": self.budget_usd,
            "within_budget": self.within_budget,
            "on_demand_hourly_usd": round(self.on_demand_hourly_usd, 4),
            "on_demand_worst_case_usd": self.on_demand_worst_case_usd,
            "price_source": pricing.PRICE_SOURCE,
            "spot_price_source": self.spot_source,
        }


@dataclass(frozen=True)
class RunRequest:
    environment: StackConfig
    run_id: str
    instance_types: tuple[str, ...]
    count: int
    max_hours: float
    created_at: datetime
    command: str = "python train.py"
    image: str | None = None
    on_demand_base: int = 0
    # The run's instances read the feature store's endpoint and AUTH token and hand them to the trainer.
    feature_store: bool = False
    tags: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "tags",
            training_tags(self.environment.resource_tags, self.run_id, self.expires_at, self.stack),
        )

    @property
    def stack(self) -> str:
        return stack_name(self.run_id)

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(hours=self.max_hours)

    @property
    def max_gpus(self) -> int:
        """GPUs the fleet may hold at once: every instance as the largest allowed type."""
        return self.count * max(pricing.gpus_per_instance(t) for t in self.instance_types)


def build_request(
    environment: StackConfig,
    *,
    run_id: str,
    instance_types: list[str],
    count: int,
    max_hours: float,
    created_at: datetime,
    command: str = "python train.py",
    image: str | None = None,
    on_demand_base: int = 0,
    feature_store: bool = False,
) -> RunRequest:
    """A request checked against the environment: ids, allowlist, GPU cap, hour limit, image source."""
    validate_run_id(run_id)
    limits = environment.training
    types = tuple(dict.fromkeys(t.strip() for t in instance_types if t.strip()))
    if len(types) < MIN_INSTANCE_TYPES:
        raise UserError(
            f"--instance-types: give at least {MIN_INSTANCE_TYPES} types so spot can find capacity; "
            f"allowed in {environment.environment}: {', '.join(limits.allowed_instance_types)}"
        )
    refused = [t for t in types if t not in limits.allowed_instance_types]
    if refused:
        raise UserError(
            f"--instance-types: {', '.join(refused)} not allowed in {environment.environment}; "
            f"allowed: {', '.join(limits.allowed_instance_types)}"
        )
    if count < 1:
        raise UserError("--count: must be at least 1 instance")
    if not 0 <= on_demand_base <= count:
        raise UserError(f"--on-demand-base: must be between 0 and --count ({count})")
    if on_demand_base and not environment.is_prod:
        raise UserError(
            f"--on-demand-base: training in {environment.environment} is spot-only (policy training-fleet-guardrails); "
            "drop the flag or run in prod"
        )
    if not 0 < max_hours <= limits.max_run_hours:
        raise UserError(
            f"--max-hours {max_hours:g}: {environment.environment} allows runs of at most {limits.max_run_hours:g} hours "
            "(ml-platform:training.maxRunHours)"
        )
    if not command.strip():
        raise UserError("--command: give the training command to run")
    if "\x00" in command:
        # User data is a shell script: a NUL byte would cut the command short.
        raise UserError("--command: must not contain a NUL character")
    if image is not None and not IMAGE.fullmatch(image):
        raise UserError(
            f"--image {image[:60]!r}: give a container image reference like "
            "public.ecr.aws/docker/library/python:3.12-slim (no spaces or control characters)"
        )
    check_image_repository(environment, image)
    request = RunRequest(
        environment=environment,
        run_id=run_id,
        instance_types=types,
        count=count,
        max_hours=max_hours,
        created_at=created_at,
        command=command,
        image=image,
        on_demand_base=on_demand_base,
        feature_store=feature_store,
    )
    if request.max_gpus > limits.max_gpus_per_run:
        raise UserError(
            f"--count {count}: up to {request.max_gpus} GPUs exceeds {environment.environment}'s cap of "
            f"{limits.max_gpus_per_run} per run (ml-platform:training.maxGpusPerRun); lower --count or use smaller types"
        )
    return request


def estimate_cost(request: RunRequest, ec2_client: Any | None = None) -> RunCost:
    """Hourly and worst-case cost, priced at the dearest allowed type (the fleet may land on it)."""
    dearest = max(request.instance_types, key=pricing.on_demand_hourly)
    on_demand = pricing.on_demand_hourly(dearest)
    spot, source = max(pricing.spot_quote(t, ec2_client) for t in request.instance_types)
    spot_count = request.count - request.on_demand_base
    return RunCost(
        spot_hourly_usd=request.on_demand_base * on_demand + spot_count * spot,
        on_demand_hourly_usd=request.count * on_demand,
        max_hours=request.max_hours,
        spot_source=source,
        instances=request.count,
        priced_as=dearest,
        budget_usd=float(request.environment.training.per_run_budget_usd),
    )


def check_budget(request: RunRequest, cost: RunCost) -> None:
    budget = cost.budget_usd
    if not cost.within_budget:
        raise UserError(
            f"worst-case cost ${cost.spot_worst_case_usd:,.2f} ({request.count} x ${cost.spot_hourly_usd / request.count:,.2f}/h x "
            f"{request.max_hours:g} h) exceeds {request.environment.environment}'s per-run budget ${budget:,.2f} "
            "(ml-platform:training.perRunBudgetUsd); lower --count or --max-hours"
        )
