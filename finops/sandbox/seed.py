"""A realistic, deterministic ML account seeded into the sandbox over HTTP, and its manifest.

Two environments (dev, prod), three teams, two regions: busy and idle GPU training instances with the
CloudWatch agent's GPU metric, one GPU instance with CPU telemetry only, one too young to judge,
never-tagged and partly-tagged resources of every kind the untagged scan checks, the leftover volumes
of a finished run, two training runs with the evidence run costs read (`seed_training_runs`), and
60 days of daily spend line items consistent with those tags.

Everything is laid out relative to `now`, from fixed seeds: the seed's own random and moto's, which
the sandbox reseeds on every reset, so the same `now` lays out the same ids and the same dollars.

Idle instances are seeded so the expected idle hours do not depend on when the scan runs: each one
either idles since before the scan's lookback, or turned idle exactly a whole number of hours before
`now` (its last busy sample a minute earlier). Expectations hold for a scan within ~50 minutes of
seeding.

The account is the payer of an AWS Organization (`organization.py`): its members' resources live in
their own accounts, so a scan of the payer alone sees exactly the seed above.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from finops import idle, inventory
from finops.inventory.ec2 import ec2_arn
from finops.sandbox import focus_export, organization
from finops.sandbox.budgets import seed_budgets
from finops.sandbox.cost_explorer import ON_DEMAND, SAVINGS_PLANS, SPOT, LineItem
from finops.sandbox.server import Sandbox
from infra.components.training_fleet import INTERRUPTION_EVENTS, asg_name
from mlp import pricing, tags

SEED = 20261123
REGIONS: tuple[str, ...] = ("us-east-1", "us-west-2")
ENVIRONMENTS: tuple[str, ...] = ("dev", "prod")
SPEND_DAYS = 60
METRIC_INTERVAL = timedelta(minutes=5)
# Samples reach back past the lookback of a default idle scan.
METRIC_HISTORY = timedelta(hours=idle.LOOKBACK_HOURS + 6)

EC2_COMPUTE = "Amazon Elastic Compute Cloud - Compute"
EC2_OTHER = "EC2 - Other"
EKS_SERVICE = "Amazon Elastic Container Service for Kubernetes"
ELASTICACHE_SERVICE = "Amazon ElastiCache"
S3_SERVICE = "Amazon Simple Storage Service"
# Effective rate of the compute savings plan that covers prod serving nodes.
SAVINGS_PLAN_RATE = 0.72
# The environments' checkpoint buckets, named as their CheckpointBucket component names them.
CHECKPOINT_BUCKETS = {"dev": "mlp-dev-checkpoints-4c1f", "prod": "mlp-prod-checkpoints-9b2e"}
RUN_INSTANCE_TYPE = "g5.12xlarge"
CHECKPOINT_EVERY = timedelta(minutes=30)
# EC2's warning before it reclaims a spot instance.
SPOT_NOTICE = timedelta(minutes=2)


@dataclass(frozen=True)
class Team:
    name: str
    project: str
    cost_center: str
    owner: str


TEAMS: tuple[Team, ...] = (
    Team("vision", "image-classifier", "cc-1001", "alice@example.com"),
    Team("nlp", "llm-finetune", "cc-1002", "bob@example.com"),
    Team("recsys", "ranking", "cc-1003", "carol@example.com"),
)
TEAM = {team.name: team for team in TEAMS}


def mandatory_tags(team: str, environment: str) -> dict[str, str]:
    profile = TEAM[team]
    return {
        tags.TEAM: profile.name,
        tags.PROJECT: profile.project,
        tags.ENVIRONMENT: environment,
        tags.COST_CENTER: profile.cost_center,
        tags.OWNER: profile.owner,
        tags.MANAGED_BY: tags.MANAGED_BY_VALUE,
    }


@dataclass(frozen=True)
class SeededInstance:
    """An EC2 instance as seeded. `idle_since` is None for an instance that is busy up to `now`."""

    instance_id: str
    name: str  # the seed's label for it, e.g. "idle-a10g"
    region: str
    instance_type: str
    spot: bool
    state: str
    launched_at: datetime
    tags: Mapping[str, str]
    telemetry: str | None  # "gpu", "cpu" (no GPU metric) or None (no metrics at all)
    idle_since: datetime | None
    util_max_recent: float | None  # highest sample of its telemetry in the default 6 h window
    # When it stopped running (stopped, or terminated: a training run's gone instance), and whether a
    # spot interruption ended it.
    ended_at: datetime | None = None
    spot_interrupted: bool = False

    @property
    def is_gpu(self) -> bool:
        return pricing.is_gpu_instance_type(self.instance_type)

    @property
    def hourly_cost_usd(self) -> float:
        """The list price, spot at the documented discount: what the scans must report for it."""
        assert self.instance_type in pricing.EC2, (
            f"the seed only launches priced types, not {self.instance_type}"
        )
        if self.spot:
            return pricing.spot_hourly(self.instance_type)
        return pricing.on_demand_hourly(self.instance_type)


@dataclass(frozen=True)
class SeededRun:
    """A training run as its stack and its trainer leave it, for the run-cost figures.

    Its stack's group, launch template and interruption queue exist; `instances` are all it ever had
    (the gone ones only in EC2's terminated list and the group's activity history), `checkpoints`
    the LastModified of every object under `runs/<run-id>/checkpoints/` of `bucket`.
    """

    run_id: str
    status: str  # "completed" (a verified _COMPLETE) or "running"
    region: str
    tags: Mapping[str, str]
    bucket: str
    group: str
    queue_url: str
    instances: tuple[SeededInstance, ...]
    checkpoints: tuple[datetime, ...]
    completed_at: datetime | None = None


@dataclass(frozen=True)
class SeededResource:
    arn: str
    resource_type: str
    region: str
    tags: Mapping[str, str]
    missing_tags: tuple[str, ...]


@dataclass
class MemberManifest:
    """What was seeded in one member account of the organization."""

    account_id: str
    name: str
    role_arn: str  # the scan role, `organization.SCAN_ROLE_NAME` in this account
    regions: tuple[str, ...]
    instances: list[SeededInstance]
    resources: list[SeededResource]
    idle_instance_ids: list[str]
    busy_instance_ids: list[str]
    # The members' compute spend, linked to the member; in the Cost Explorer only with `member_spend`.
    line_items: list[LineItem]

    @property
    def untagged(self) -> list[SeededResource]:
        return [resource for resource in self.resources if resource.missing_tags]


@dataclass
class OrganizationManifest:
    """The organization the payer (the sandbox's own account) heads; member ids are moto's random ones."""

    payer_account_id: str
    scan_role_name: str
    regions: tuple[str, ...]
    members: list[MemberManifest]

    @property
    def account_ids(self) -> list[str]:
        return [self.payer_account_id, *(member.account_id for member in self.members)]

    def member(self, name: str) -> MemberManifest:
        return next(member for member in self.members if member.name == name)

    @property
    def line_items(self) -> list[LineItem]:
        return [item for member in self.members for item in member.line_items]


@dataclass
class SeedManifest:
    """What was seeded, so tests compute expectations instead of hard-coding them.

    Everything but `organization` is the payer account's, except that `line_items` (what the Cost
    Explorer and the FOCUS export hold) carries the members' too when seeded with `member_spend`.
    """

    now: datetime
    account_id: str
    regions: tuple[str, ...]
    line_items: list[LineItem]
    instances: list[SeededInstance]
    resources: list[SeededResource]
    idle_instance_ids: list[str]
    busy_instance_ids: list[str]
    cpu_only_instance_ids: list[str]
    too_young_instance_ids: list[str]
    leftover_volumes: list[SeededResource]
    finished_run_id: str
    organization: OrganizationManifest
    # Runs with the AWS evidence run costs read: a completed one interrupted once, one over its budget.
    runs: list[SeededRun]
    teams: tuple[str, ...] = field(default=tuple(team.name for team in TEAMS))
    environments: tuple[str, ...] = ENVIRONMENTS

    @property
    def untagged(self) -> list[SeededResource]:
        """Resources missing any of the default mandatory tags."""
        return [resource for resource in self.resources if resource.missing_tags]

    def instance(self, instance_id: str) -> SeededInstance:
        return next(instance for instance in self.instances if instance.instance_id == instance_id)

    @property
    def spend_days(self) -> tuple[date, date]:
        """First and last day (inclusive) that carry line items."""
        days = [item.day for item in self.line_items]
        return min(days), max(days)


@dataclass(frozen=True)
class _Spend:
    """A constant-rate cost stream between two moments, turned into daily line items."""

    service: str
    region: str
    purchase_type: str
    instance_type: str | None
    tags: Mapping[str, str]
    hourly_unblended: float
    start: datetime
    end: datetime
    hourly_amortized: float | None = None
    usage_per_hour: float = 1.0
    jitter: float = 0.0


@dataclass
class _InstancePlan:
    name: str
    region: str
    instance_type: str
    spot: bool
    age: timedelta
    tags: dict[str, str]
    telemetry: str | None
    # None: busy throughout; timedelta: idle for this long before now (launch-bounded).
    idle_for: timedelta | None
    busy_spike_ago: timedelta | None = None
    peak_idle_util: float | None = None
    state: str = "running"
    # Stopped or terminated this long before now (a stopped one without it: at its launch), and
    # whether a spot interruption took it.
    ended_ago: timedelta | None = None
    spot_interrupted: bool = False


@dataclass(frozen=True)
class _RunInstance:
    name: str
    spot: bool
    launched: datetime
    ended: datetime | None = None
    spot_interrupted: bool = False


class _Seeder:
    """Seeds one account: the payer's by default, a member's with `credentials` of a role in it."""

    def __init__(
        self,
        sandbox: Sandbox,
        now: datetime,
        *,
        account_id: str | None = None,
        credentials: Mapping[str, Any] | None = None,
        seed: int = SEED,
    ) -> None:
        self.sandbox = sandbox
        self.now = now.astimezone(UTC).replace(microsecond=0)
        self.random = random.Random(seed)
        self.account_id = account_id or sandbox.account_id
        self.credentials = credentials
        self.resources: list[SeededResource] = []
        self.instances: list[SeededInstance] = []
        self.spend: list[_Spend] = []
        self.leftover_volumes: list[SeededResource] = []
        self._clients: dict[tuple[str, str], Any] = {}
        self._subnets: dict[str, list[str]] = {}
        self._images: dict[str, str] = {}

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.sandbox.client(service, region, credentials=self.credentials)
        return self._clients[key]

    def record(
        self, arn: str, resource_type: str, region: str, resource_tags: Mapping[str, str]
    ) -> SeededResource:
        resource = SeededResource(
            arn=arn,
            # A kind the registry does not declare fails here, not as a silent gap in the scans.
            resource_type=inventory.resource_type(resource_type).kind,
            region=region,
            tags=dict(resource_tags),
            missing_tags=tuple(tags.missing_tags(resource_tags, tags.DEFAULT_MANDATORY_TAGS)),
        )
        self.resources.append(resource)
        return resource

    def subnets(self, region: str) -> list[str]:
        if region not in self._subnets:
            subnets = self.client("ec2", region).describe_subnets(
                Filters=[{"Name": "default-for-az", "Values": ["true"]}]
            )["Subnets"]
            self._subnets[region] = sorted(subnet["SubnetId"] for subnet in subnets)[:2]
        return self._subnets[region]

    def image(self, region: str) -> str:
        if region not in self._images:
            images = self.client("ec2", region).describe_images(Owners=["amazon"])["Images"]
            self._images[region] = sorted(image["ImageId"] for image in images)[0]
        return self._images[region]

    # --- EC2 instances and their metrics -------------------------------------------------------

    def launch(self, plan: _InstancePlan) -> SeededInstance:
        ec2 = self.client("ec2", plan.region)
        request: dict[str, Any] = {
            "ImageId": self.image(plan.region),
            "InstanceType": plan.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
        }
        if plan.tags:
            tag_list = [{"Key": key, "Value": value} for key, value in plan.tags.items()]
            request["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ]
        if plan.spot:
            request["InstanceMarketOptions"] = {"MarketType": "spot"}
        described = ec2.run_instances(**request)["Instances"][0]
        instance_id = described["InstanceId"]
        launched_at = self.now - plan.age
        ended_at = None if plan.ended_ago is None else self.now - plan.ended_ago
        self.sandbox.backdate_launch(plan.region, instance_id, launched_at, self.account_id)
        terminated = ended_at is not None and plan.state != "stopped"
        if plan.state == "stopped":
            ec2.stop_instances(InstanceIds=[instance_id])
        elif terminated:
            # Gone with its root volume: only EC2's terminated list still shows it, and no scan.
            ec2.terminate_instances(InstanceIds=[instance_id])
        if plan.state == "stopped" or terminated:
            self.sandbox.backdate_state_change(
                plan.region,
                instance_id,
                ended_at or launched_at,
                self.account_id,
                spot_interruption=plan.spot_interrupted,
            )
        if not terminated:
            self.record(
                ec2_arn(plan.region, self.account_id, "instance", instance_id),
                "ec2:instance",
                plan.region,
                plan.tags,
            )
            for mapping in described.get("BlockDeviceMappings", []):
                volume_id = mapping["Ebs"]["VolumeId"]
                self.record(
                    ec2_arn(plan.region, self.account_id, "volume", volume_id),
                    "ec2:volume",
                    plan.region,
                    plan.tags,
                )

        idle_since = None
        if plan.idle_for is not None:
            idle_since = max(launched_at, self.now - plan.idle_for)
        recent_max = self.put_utilization(instance_id, plan, launched_at, idle_since)
        instance = SeededInstance(
            instance_id=instance_id,
            name=plan.name,
            region=plan.region,
            instance_type=plan.instance_type,
            spot=plan.spot,
            state="terminated" if terminated else plan.state,
            launched_at=launched_at,
            tags=dict(plan.tags),
            telemetry=plan.telemetry,
            idle_since=idle_since,
            util_max_recent=recent_max,
            ended_at=ended_at,
            spot_interrupted=plan.spot_interrupted,
        )
        if not terminated:
            self.instances.append(instance)
        if ended_at is not None or plan.state == "running":
            self.spend.append(
                _Spend(
                    service=EC2_COMPUTE,
                    region=plan.region,
                    purchase_type=SPOT if plan.spot else ON_DEMAND,
                    instance_type=plan.instance_type,
                    tags=plan.tags,
                    hourly_unblended=instance.hourly_cost_usd,
                    start=launched_at,
                    end=ended_at or self.now,
                )
            )
        return instance

    def put_utilization(
        self, instance_id: str, plan: _InstancePlan, launched_at: datetime, idle_since: datetime | None
    ) -> float | None:
        """Seed GPU (and CPU) samples; returns the highest sample of the primary metric in the last 6 h."""
        if plan.telemetry is None:
            return None
        first = max(launched_at, self.now - METRIC_HISTORY)
        samples: list[tuple[datetime, float]] = []
        moment = first + METRIC_INTERVAL
        while moment < self.now:
            if idle_since is not None and moment >= idle_since:
                value = round(self.random.uniform(0.0, 3.0), 2)
            else:
                value = round(self.random.uniform(55.0, 97.0), 2)
            samples.append((moment, value))
            moment += METRIC_INTERVAL
        if idle_since is not None and idle_since > first:
            # The last busy sample, a minute before the instance turned idle.
            samples.append((idle_since - timedelta(minutes=1), round(self.random.uniform(55.0, 97.0), 2)))
        if plan.peak_idle_util is not None and samples:
            samples[-1] = (samples[-1][0], plan.peak_idle_util)
        if plan.busy_spike_ago is not None:
            samples.append((self.now - plan.busy_spike_ago, 40.0))
        primary = idle.GPU_METRIC if plan.telemetry == "gpu" else idle.CPU_METRIC
        self.put_metric(plan.region, primary, instance_id, samples)
        if plan.telemetry == "gpu":
            # EC2 publishes CPU for every instance; a GPU idle while its CPUs are busy is still idle.
            cpu = [(moment, round(self.random.uniform(20.0, 60.0), 2)) for moment, _ in samples]
            self.put_metric(plan.region, idle.CPU_METRIC, instance_id, cpu)
        window_start = self.now - timedelta(hours=idle.DEFAULT_WINDOW_HOURS)
        recent = [value for moment, value in samples if moment >= window_start]
        return max(recent) if recent else None

    def put_metric(
        self, region: str, metric: tuple[str, str], instance_id: str, samples: list[tuple[datetime, float]]
    ) -> None:
        namespace, name = metric
        cloudwatch = self.client("cloudwatch", region)
        data = [
            {
                "MetricName": name,
                "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                "Timestamp": moment,
                "Value": value,
                "Unit": "Percent",
            }
            for moment, value in samples
        ]
        for start in range(0, len(data), 1000):
            # Real CloudWatch refuses writes to AWS/ namespaces; here they stand in for EC2's own metrics.
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 1000])

    def seed_instances(self) -> None:
        def training(team: str, environment: str, run: str) -> dict[str, str]:
            run_id = f"{team}-{run}"
            return tags.training_tags(
                mandatory_tags(team, environment), run_id, self.now + timedelta(days=1), f"train-{run_id}"
            )

        plans = [
            _InstancePlan(
                "busy-a10g",
                "us-east-1",
                "g5.2xlarge",
                True,
                hours(30),
                training("vision", "dev", "r101"),
                "gpu",
                None,
            ),
            _InstancePlan(
                "busy-a100",
                "us-west-2",
                "p4d.24xlarge",
                False,
                hours(50),
                training("nlp", "prod", "r207"),
                "gpu",
                None,
            ),
            # Mostly idle with one spike inside the window: not idle.
            _InstancePlan(
                "spiky-l4",
                "us-east-1",
                "g6.xlarge",
                True,
                hours(28),
                training("recsys", "prod", "r303"),
                "gpu",
                hours(30),
                busy_spike_ago=hours(3),
            ),
            _InstancePlan(
                "idle-a10g",
                "us-east-1",
                "g5.xlarge",
                True,
                hours(30),
                training("vision", "dev", "r102"),
                "gpu",
                hours(30),
            ),
            _InstancePlan(
                "idle-l4x4",
                "us-west-2",
                "g6.12xlarge",
                False,
                hours(40),
                training("nlp", "dev", "r208"),
                "gpu",
                hours(9),
            ),
            # Idle just under the 5 % threshold.
            _InstancePlan(
                "idle-v100",
                "us-west-2",
                "p3.2xlarge",
                False,
                hours(26),
                training("recsys", "prod", "r304"),
                "gpu",
                hours(26),
                peak_idle_util=4.9,
            ),
            _InstancePlan(
                "cpu-only-idle",
                "us-east-1",
                "g5.xlarge",
                False,
                hours(30),
                mandatory_tags("vision", "prod"),
                "cpu",
                hours(30),
            ),
            _InstancePlan(
                "cpu-only-busy",
                "us-east-1",
                "g4dn.xlarge",
                False,
                hours(30),
                mandatory_tags("nlp", "dev"),
                "cpu",
                None,
            ),
            _InstancePlan(
                "too-young",
                "us-east-1",
                "g5.xlarge",
                True,
                hours(1),
                training("recsys", "dev", "r305"),
                "gpu",
                hours(1),
            ),
            _InstancePlan(
                "never-tagged-gpu", "us-west-2", "g4dn.xlarge", False, hours(48), {}, "gpu", hours(48)
            ),
            _InstancePlan(
                "stopped-gpu",
                "us-west-2",
                "g5.xlarge",
                False,
                hours(72),
                training("vision", "dev", "r099"),
                "gpu",
                hours(72),
                state="stopped",
                ended_ago=hours(70),
            ),
            _InstancePlan(
                "serving-cpu",
                "us-east-1",
                "m6i.large",
                False,
                hours(400),
                mandatory_tags("recsys", "prod"),
                "cpu",
                hours(400),
            ),
            _InstancePlan(
                "never-tagged-notebook", "us-east-1", "t3.large", False, hours(200), {}, None, None
            ),
            _InstancePlan(
                "partly-tagged",
                "us-west-2",
                "m6i.xlarge",
                False,
                hours(100),
                {tags.TEAM: "nlp", tags.PROJECT: "llm-finetune"},
                None,
                None,
            ),
        ]
        for plan in plans:
            self.launch(plan)

    # --- Storage, serving and shared resources ---------------------------------------------------

    def create_volume(self, region: str, size: int, resource_tags: Mapping[str, str]) -> SeededResource:
        request: dict[str, Any] = {"AvailabilityZone": f"{region}a", "Size": size, "VolumeType": "gp3"}
        if resource_tags:
            request["TagSpecifications"] = [
                {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in resource_tags.items()]}
            ]
        volume_id = self.client("ec2", region).create_volume(**request)["VolumeId"]
        return self.record(
            ec2_arn(region, self.account_id, "volume", volume_id), "ec2:volume", region, resource_tags
        )

    def create_snapshot(self, region: str, volume_arn: str, resource_tags: Mapping[str, str]) -> None:
        request: dict[str, Any] = {"VolumeId": volume_arn.rsplit("/", 1)[1]}
        if resource_tags:
            request["TagSpecifications"] = [
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": k, "Value": v} for k, v in resource_tags.items()],
                }
            ]
        snapshot_id = self.client("ec2", region).create_snapshot(**request)["SnapshotId"]
        self.record(
            ec2_arn(region, self.account_id, "snapshot", snapshot_id), "ec2:snapshot", region, resource_tags
        )

    def create_bucket(self, name: str, region: str, resource_tags: Mapping[str, str]) -> SeededResource:
        s3 = self.client("s3", "us-east-1")
        request: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**request)
        if resource_tags:
            s3.put_bucket_tagging(
                Bucket=name,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in resource_tags.items()]},
            )
        return self.record(f"arn:aws:s3:::{name}", "s3:bucket", region, resource_tags)

    def seed_finished_runs(self) -> str:
        """Past training runs (spend only), the last one leaving its checkpoint volumes behind."""
        first_day = self.now - timedelta(days=SPEND_DAYS)
        candidates = ["g5.2xlarge", "g5.12xlarge", "g6.12xlarge", "p4d.24xlarge"]
        last_run_id = ""
        for number in range(12):
            team = TEAMS[number % len(TEAMS)].name
            environment = ENVIRONMENTS[number % 2]
            start = first_day + timedelta(hours=self.random.randrange(0, (SPEND_DAYS - 8) * 24))
            if number == 11:
                start = self.now - timedelta(days=6)
            duration = timedelta(hours=self.random.randrange(6, 72))
            run_id = f"{team}-{start:%Y%m%d}-{number:02d}"
            run_tags = tags.training_tags(
                mandatory_tags(team, environment), run_id, start + duration, f"train-{run_id}"
            )
            instance_type = self.random.choice(candidates)
            count = self.random.randint(1, 4)
            spot = number % 4 != 3
            hourly = pricing.spot_hourly(instance_type) if spot else pricing.on_demand_hourly(instance_type)
            self.spend.append(
                _Spend(
                    EC2_COMPUTE,
                    REGIONS[number % 2],
                    SPOT if spot else ON_DEMAND,
                    instance_type,
                    run_tags,
                    hourly * count,
                    start,
                    start + duration,
                    usage_per_hour=count,
                )
            )
            last_run_id = run_id
            last_tags, last_end = run_tags, start + duration
        for size in (500, 500, 200):
            volume = self.create_volume("us-east-1", size, last_tags)
            self.leftover_volumes.append(volume)
            self.spend.append(
                _Spend(
                    EC2_OTHER,
                    "us-east-1",
                    ON_DEMAND,
                    None,
                    last_tags,
                    size * pricing.GP3_GB_MONTHLY / 730,
                    last_end,
                    self.now,
                    usage_per_hour=size / 730,
                )
            )
        return last_run_id

    def seed_training_runs(self) -> list[SeededRun]:
        """Two dev runs in us-east-1 with what run costs read: instances, activities, checkpoints, notices.

        nlp-r231 completed after a spot interruption: A (spot) and B (on demand) from 20 h ago,
        checkpointing every 30 min; A reclaimed 14 h ago (notice two minutes earlier), 30 min after
        the last checkpoint; C (spot) launched 5 min later, its first checkpoint 35 min after launch;
        the final checkpoint and _COMPLETE 3 h 05 min ago, B and C ended 3 h ago. Its stack is not yet
        reaped. vision-r240 runs two on-demand instances for 26 h: past the dev budget ($250) for
        about four hours.
        """
        start = self.now - hours(20)
        interrupted, replaced = self.now - hours(14), self.now - hours(13) - timedelta(minutes=55)
        completed = self.now - hours(3) - timedelta(minutes=5)
        checkpoints = [
            *_every(start + CHECKPOINT_EVERY, interrupted - timedelta(minutes=30)),
            *_every(replaced + timedelta(minutes=35), completed - timedelta(minutes=1)),
            completed,
        ]
        first = self.seed_run(
            "nlp",
            "r231",
            start,
            [
                _RunInstance("a", spot=True, launched=start, ended=interrupted, spot_interrupted=True),
                _RunInstance("b", spot=False, launched=start, ended=self.now - hours(3)),
                _RunInstance("c", spot=True, launched=replaced, ended=self.now - hours(3)),
            ],
            checkpoints,
            completed_at=completed,
        )
        start = self.now - hours(26)
        second = self.seed_run(
            "vision",
            "r240",
            start,
            [_RunInstance(name, spot=False, launched=start) for name in ("a", "b")],
            list(_every(start + CHECKPOINT_EVERY, self.now - timedelta(minutes=10))),
            max_hours=48,
        )
        return [first, second]

    def seed_run(
        self,
        team: str,
        run: str,
        start: datetime,
        planned: list[_RunInstance],
        checkpoints: list[datetime],
        *,
        max_hours: int = 24,
        completed_at: datetime | None = None,
    ) -> SeededRun:
        """One dev run in us-east-1: its stack's group, template and queue, its instances, activities,
        checkpoints (and _COMPLETE), and its interruption notices."""
        region, environment = "us-east-1", "dev"
        run_id = f"{team}-{run}"
        run_tags = tags.training_tags(
            mandatory_tags(team, environment), run_id, start + hours(max_hours), f"train-{run_id}"
        )
        tag_list = [{"Key": key, "Value": value} for key, value in run_tags.items()]
        ec2, autoscaling = self.client("ec2", region), self.client("autoscaling", region)
        template = ec2.create_launch_template(
            LaunchTemplateName=f"fleet-{run_id}",
            LaunchTemplateData={"ImageId": self.image(region), "InstanceType": RUN_INSTANCE_TYPE},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list}],
        )["LaunchTemplate"]["LaunchTemplateId"]
        group = asg_name(run_id)
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=len(planned),
            DesiredCapacity=0,
            VPCZoneIdentifier=self.subnets(region)[0],
            Tags=[
                {
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": True,
                    "ResourceId": group,
                    "ResourceType": "auto-scaling-group",
                }
                for key, value in run_tags.items()
            ],
        )
        arn = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0][
            "AutoScalingGroupARN"
        ]
        self.record(arn, "autoscaling:autoScalingGroup", region, run_tags)
        sqs = self.client("sqs", region)
        queue_url = sqs.create_queue(QueueName=f"{group}-interruptions", tags=run_tags)["QueueUrl"]

        instances = []
        for item in planned:
            instance = self.launch(
                _InstancePlan(
                    f"{run_id}-{item.name}",
                    region,
                    RUN_INSTANCE_TYPE,
                    item.spot,
                    self.now - item.launched,
                    run_tags,
                    # A training instance's GPUs are busy while it lives.
                    "gpu" if item.ended is None else None,
                    None,
                    ended_ago=None if item.ended is None else self.now - item.ended,
                    spot_interrupted=item.spot_interrupted,
                )
            )
            instances.append(instance)
            self.record_activities(region, group, instance)
            if instance.spot_interrupted:
                self.send_interruption_notice(sqs, queue_url, region, instance)
        live = [instance.instance_id for instance in instances if instance.ended_at is None]
        if live:
            autoscaling.attach_instances(AutoScalingGroupName=group, InstanceIds=live)

        s3 = self.client("s3", region)
        keys = [
            f"runs/{run_id}/checkpoints/step-{index * 500:06d}.pt" for index in range(1, len(checkpoints) + 1)
        ]
        for key, moment in zip(keys, checkpoints, strict=True):
            self.put_object(s3, CHECKPOINT_BUCKETS[environment], key, f"{run_id} {key}".encode(), moment)
        if completed_at is not None:
            # What the trainer writes last: the marker naming its final checkpoint and that one's digest.
            marker = {
                "run_id": run_id,
                "final_checkpoint_key": keys[-1],
                "sha256": hashlib.sha256(f"{run_id} {keys[-1]}".encode()).hexdigest(),
                "completed_at": tags.format_expires_at(completed_at),
            }
            self.put_object(
                s3,
                CHECKPOINT_BUCKETS[environment],
                f"runs/{run_id}/_COMPLETE",
                json.dumps(marker).encode(),
                completed_at,
            )
        return SeededRun(
            run_id=run_id,
            status="completed" if completed_at else "running",
            region=region,
            tags=run_tags,
            bucket=CHECKPOINT_BUCKETS[environment],
            group=group,
            queue_url=queue_url,
            instances=tuple(instances),
            checkpoints=tuple(checkpoints),
            completed_at=completed_at,
        )

    def put_object(self, s3: Any, bucket: str, key: str, body: bytes, modified_at: datetime) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        self.sandbox.backdate_object(bucket, key, modified_at, self.account_id)

    def record_activities(self, region: str, group: str, instance: SeededInstance) -> None:
        """The group's launch of the instance and, for a gone one, its termination, as AWS words them."""
        self.record_activity(
            region,
            group,
            f"Launching a new EC2 instance: {instance.instance_id}",
            f"At {_activity_time(instance.launched_at - timedelta(minutes=1))} an instance was started in "
            "response to a difference between desired and actual capacity, increasing the capacity.",
            instance.launched_at - timedelta(minutes=1),
            instance.launched_at,
        )
        if instance.ended_at is None:
            return
        if instance.spot_interrupted:
            started = instance.ended_at - SPOT_NOTICE
            cause = (
                f"At {_activity_time(started)} an instance was taken out of service in response to an "
                "EC2 Spot Instance interruption notice."
            )
        else:
            started = instance.ended_at - timedelta(minutes=1)
            cause = (
                f"At {_activity_time(started)} a user request update of AutoScalingGroup constraints "
                "changed the desired capacity to 0; an instance was selected for termination."
            )
        self.record_activity(
            region,
            group,
            f"Terminating EC2 instance: {instance.instance_id}",
            cause,
            started,
            instance.ended_at,
        )

    def record_activity(
        self, region: str, group: str, description: str, cause: str, start: datetime, end: datetime
    ) -> None:
        self.sandbox.record_scaling_activity(
            region,
            {
                "ActivityId": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
                "AutoScalingGroupName": group,
                "Description": description,
                "Cause": cause,
                "StartTime": start,
                "EndTime": end,
                "StatusCode": "Successful",
                "Progress": 100,
            },
            self.account_id,
        )

    def send_interruption_notice(
        self, sqs: Any, queue_url: str, region: str, instance: SeededInstance
    ) -> None:
        """The two-minute warning EventBridge put in the run's queue, as its rule delivers it."""
        assert instance.ended_at is not None
        noticed = instance.ended_at - SPOT_NOTICE
        event = {
            "version": "0",
            "id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            "detail-type": INTERRUPTION_EVENTS["interruption"],
            "source": "aws.ec2",
            "account": self.account_id,
            "time": _activity_time(noticed),
            "region": region,
            "resources": [ec2_arn(region, self.account_id, "instance", instance.instance_id)],
            "detail": {"instance-id": instance.instance_id, "instance-action": "terminate"},
        }
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))

    def seed_storage(self) -> None:
        since = self.now - timedelta(days=SPEND_DAYS + 5)
        for region, resource_tags, size in (
            ("us-east-1", {}, 100),
            ("us-west-2", {k: v for k, v in mandatory_tags("recsys", "dev").items() if k != tags.OWNER}, 50),
        ):
            self.create_volume(region, size, resource_tags)
            self.spend.append(
                _Spend(
                    EC2_OTHER,
                    region,
                    ON_DEMAND,
                    None,
                    resource_tags,
                    size * pricing.GP3_GB_MONTHLY / 730,
                    since,
                    self.now,
                    usage_per_hour=size / 730,
                )
            )
        dataset = self.create_volume("us-east-1", 300, mandatory_tags("vision", "prod"))
        self.create_snapshot("us-east-1", dataset.arn, mandatory_tags("vision", "prod"))
        self.create_snapshot("us-east-1", dataset.arn, {})
        self.create_snapshot("us-west-2", self.create_volume("us-west-2", 20, {}).arn, {tags.TEAM: "recsys"})

        buckets = [
            (CHECKPOINT_BUCKETS["dev"], "us-east-1", mandatory_tags("vision", "dev"), 4.0),
            (CHECKPOINT_BUCKETS["prod"], "us-west-2", mandatory_tags("nlp", "prod"), 12.0),
            ("scratch-datasets-7f3a", "us-west-2", {}, 2.5),
            (
                "ml-platform-logs",
                "us-east-1",
                {tags.TEAM: "recsys", tags.PROJECT: "ranking", tags.ENVIRONMENT: "prod"},
                0.8,
            ),
        ]
        for name, region, resource_tags, daily in buckets:
            self.create_bucket(name, region, resource_tags)
            self.spend.append(
                _Spend(
                    S3_SERVICE,
                    region,
                    ON_DEMAND,
                    None,
                    resource_tags,
                    daily / 24,
                    since,
                    self.now,
                    usage_per_hour=daily / 24 / 0.023,
                    jitter=0.15,
                )
            )

    def seed_feature_stores(self) -> None:
        since = self.now - timedelta(days=SPEND_DAYS + 5)
        stores = [
            ("feature-store-prod", "us-east-1", "cache.r7g.large", mandatory_tags("recsys", "prod")),
            (
                "feature-store-dev",
                "us-west-2",
                "cache.t4g.medium",
                {k: v for k, v in mandatory_tags("recsys", "dev").items() if k != tags.MANAGED_BY},
            ),
        ]
        for group_id, region, node_type, resource_tags in stores:
            request: dict[str, Any] = {
                "ReplicationGroupId": group_id,
                "ReplicationGroupDescription": f"online feature store ({group_id})",
                "Engine": "redis",
                "CacheNodeType": node_type,
                "NumCacheClusters": 2,
            }
            if resource_tags:
                request["Tags"] = [{"Key": k, "Value": v} for k, v in resource_tags.items()]
            group = self.client("elasticache", region).create_replication_group(**request)["ReplicationGroup"]
            self.record(group["ARN"], "elasticache:replicationgroup", region, resource_tags)
            self.spend.append(
                _Spend(
                    ELASTICACHE_SERVICE,
                    region,
                    ON_DEMAND,
                    node_type,
                    resource_tags,
                    pricing.elasticache_hourly(node_type) * 2,
                    since,
                    self.now,
                    usage_per_hour=2,
                )
            )
        cluster = self.client("elasticache", "us-west-2").create_cache_cluster(
            CacheClusterId="adhoc-cache", Engine="memcached", CacheNodeType="cache.t4g.small", NumCacheNodes=1
        )["CacheCluster"]
        self.record(cluster["ARN"], "elasticache:cluster", "us-west-2", {})
        self.spend.append(
            _Spend(
                ELASTICACHE_SERVICE,
                "us-west-2",
                ON_DEMAND,
                "cache.t4g.small",
                {},
                pricing.elasticache_hourly("cache.t4g.small"),
                self.now - timedelta(days=20),
                self.now,
            )
        )

    def seed_serving(self) -> None:
        since = self.now - timedelta(days=SPEND_DAYS + 5)
        role = f"arn:aws:iam::{self.account_id}:role/eks-service"
        clusters = [
            (
                "serving-prod",
                "us-east-1",
                mandatory_tags("recsys", "prod"),
                mandatory_tags("recsys", "prod"),
                since,
            ),
            (
                "scratch-eks",
                "us-west-2",
                {},
                {tags.TEAM: "nlp", tags.ENVIRONMENT: "dev"},
                self.now - timedelta(days=20),
            ),
        ]
        for name, region, cluster_tags, nodegroup_tags, created in clusters:
            eks = self.client("eks", region)
            subnets = self.subnets(region)
            cluster = eks.create_cluster(
                name=name, roleArn=role, resourcesVpcConfig={"subnetIds": subnets}, tags=cluster_tags
            )["cluster"]
            self.record(cluster["arn"], "eks:cluster", region, cluster_tags)
            nodegroup = eks.create_nodegroup(
                clusterName=name,
                nodegroupName=f"{name}-nodes",
                subnets=subnets,
                nodeRole=role,
                tags=nodegroup_tags,
            )["nodegroup"]
            self.record(nodegroup["nodegroupArn"], "eks:nodegroup", region, nodegroup_tags)
            self.spend.append(
                _Spend(
                    EKS_SERVICE,
                    region,
                    ON_DEMAND,
                    None,
                    cluster_tags,
                    pricing.EKS_CONTROL_PLANE_HOURLY,
                    created,
                    self.now,
                )
            )
        node_hourly = pricing.on_demand_hourly("m6i.xlarge") * 3
        self.spend.append(
            _Spend(
                EC2_COMPUTE,
                "us-east-1",
                SAVINGS_PLANS,
                "m6i.xlarge",
                mandatory_tags("recsys", "prod"),
                node_hourly,
                since,
                self.now,
                hourly_amortized=node_hourly * SAVINGS_PLAN_RATE,
                usage_per_hour=3,
            )
        )
        self.spend.append(
            _Spend(
                EC2_COMPUTE,
                "us-east-1",
                ON_DEMAND,
                "m6i.large",
                mandatory_tags("nlp", "dev"),
                pricing.on_demand_hourly("m6i.large") * 2,
                since,
                self.now,
                usage_per_hour=2,
            )
        )

        autoscaling = self.client("autoscaling", "us-east-1")
        ec2 = self.client("ec2", "us-east-1")
        ec2.create_launch_template(
            LaunchTemplateName="batch-workers",
            LaunchTemplateData={"ImageId": self.image("us-east-1"), "InstanceType": "m6i.large"},
        )
        for group_name, group_tags in (
            ("batch-workers-dev", {}),
            (
                "batch-workers-prod",
                {tags.TEAM: "vision", tags.ENVIRONMENT: "prod", tags.MANAGED_BY: "pulumi"},
            ),
            ("serving-prod-workers", mandatory_tags("recsys", "prod")),
        ):
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=group_name,
                LaunchTemplate={"LaunchTemplateName": "batch-workers", "Version": "$Latest"},
                MinSize=0,
                MaxSize=4,
                DesiredCapacity=0,
                AvailabilityZones=["us-east-1a"],
                Tags=[
                    {
                        "Key": k,
                        "Value": v,
                        "PropagateAtLaunch": True,
                        "ResourceId": group_name,
                        "ResourceType": "auto-scaling-group",
                    }
                    for k, v in group_tags.items()
                ],
            )
            arn = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])[
                "AutoScalingGroups"
            ][0]["AutoScalingGroupARN"]
            self.record(arn, "autoscaling:autoScalingGroup", "us-east-1", group_tags)

        for name, region, balancer_tags in (
            ("serving-prod-alb", "us-east-1", mandatory_tags("recsys", "prod")),
            ("dev-debug-nlb", "us-west-2", {}),
        ):
            request: dict[str, Any] = {"Name": name, "Subnets": self.subnets(region), "Type": "application"}
            if balancer_tags:
                request["Tags"] = [{"Key": k, "Value": v} for k, v in balancer_tags.items()]
            balancer = self.client("elbv2", region).create_load_balancer(**request)["LoadBalancers"][0]
            self.record(
                balancer["LoadBalancerArn"], "elasticloadbalancing:loadbalancer", region, balancer_tags
            )

    # --- Spend -----------------------------------------------------------------------------------

    def line_items(self) -> list[LineItem]:
        last_day = self.now.date() - timedelta(days=1)
        first_day = last_day - timedelta(days=SPEND_DAYS - 1)
        items: list[LineItem] = []
        for spend in self.spend:
            for day, hours in _hours_per_day(spend.start, spend.end, first_day, last_day):
                factor = 1.0 + self.random.uniform(-spend.jitter, spend.jitter) if spend.jitter else 1.0
                amortized = (
                    spend.hourly_unblended if spend.hourly_amortized is None else spend.hourly_amortized
                )
                items.append(
                    LineItem(
                        day=day,
                        service=spend.service,
                        region=spend.region,
                        purchase_type=spend.purchase_type,
                        instance_type=spend.instance_type,
                        linked_account=self.account_id,
                        tags=dict(spend.tags),
                        unblended_cost=round(spend.hourly_unblended * hours * factor, 6),
                        amortized_cost=round(amortized * hours * factor, 6),
                        usage_quantity=round(spend.usage_per_hour * hours * factor, 6),
                    )
                )
        return items


def hours(value: float) -> timedelta:
    return timedelta(hours=value)


def _every(first: datetime, until: datetime) -> Iterator[datetime]:
    """A checkpoint each CHECKPOINT_EVERY from `first` to `until` (inclusive)."""
    moment = first
    while moment <= until:
        yield moment
        moment += CHECKPOINT_EVERY


def _activity_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours_per_day(
    start: datetime, end: datetime, first_day: date, last_day: date
) -> Iterator[tuple[date, float]]:
    day = max(start.date(), first_day)
    while day <= min(end.date(), last_day):
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        overlap = min(end, day_start + timedelta(days=1)) - max(start, day_start)
        if overlap > timedelta(0):
            yield day, overlap.total_seconds() / 3600
        day += timedelta(days=1)


def _judged(instances: list[SeededInstance], now: datetime) -> tuple[list[str], list[str], list[str]]:
    """(idle, busy, too young) ids of the running GPU instances, as a default idle scan judges them."""
    window_start = now - timedelta(hours=idle.DEFAULT_WINDOW_HOURS)
    running = [i for i in instances if i.is_gpu and i.state == "running"]
    judged = [i for i in running if i.launched_at <= window_start]
    idle_ids = [
        i.instance_id
        for i in judged
        if i.idle_since is not None
        and i.idle_since <= window_start
        and i.util_max_recent is not None
        and i.util_max_recent < idle.DEFAULT_THRESHOLD_PCT
    ]
    busy_ids = [i.instance_id for i in judged if i.instance_id not in idle_ids]
    too_young_ids = [i.instance_id for i in running if i.launched_at > window_start]
    return idle_ids, busy_ids, too_young_ids


def _trust_payer(payer_account_id: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{payer_account_id}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def _seed_member(sandbox: Sandbox, now: datetime, member: organization.Member, number: int) -> MemberManifest:
    account_id = sandbox.client("organizations").create_account(AccountName=member.name, Email=member.email)[
        "CreateAccountStatus"
    ]["AccountId"]
    # moto creates the member's own resources only for calls signed with credentials of a role in it.
    credentials = sandbox.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{organization.ACCESS_ROLE_NAME}",
        RoleSessionName="mlp-sandbox-seed",
    )["Credentials"]
    seeder = _Seeder(sandbox, now, account_id=account_id, credentials=credentials, seed=SEED + number)
    role = seeder.client("iam", "us-east-1").create_role(
        RoleName=organization.SCAN_ROLE_NAME,
        AssumeRolePolicyDocument=_trust_payer(sandbox.account_id),
        Description="Read-only FinOps scans from the payer account",
    )["Role"]
    for planned in member.instances:
        seeder.launch(
            _InstancePlan(
                name=planned.name,
                region=planned.region,
                instance_type=planned.instance_type,
                spot=False,
                age=hours(planned.age_hours),
                tags=mandatory_tags(planned.team, member.environment) if planned.team else {},
                telemetry="gpu",
                idle_for=None if planned.idle_hours is None else hours(planned.idle_hours),
            )
        )
    for volume in member.volumes:
        seeder.create_volume(
            volume.region,
            volume.size_gb,
            mandatory_tags(volume.team, member.environment) if volume.team else {},
        )
    for bucket in member.buckets:
        seeder.create_bucket(
            f"{bucket.name}-{account_id}",
            bucket.region,
            mandatory_tags(bucket.team, member.environment) if bucket.team else {},
        )
    idle_ids, busy_ids, _ = _judged(seeder.instances, seeder.now)
    return MemberManifest(
        account_id=account_id,
        name=member.name,
        role_arn=role["Arn"],
        regions=member.regions,
        instances=seeder.instances,
        resources=seeder.resources,
        idle_instance_ids=idle_ids,
        busy_instance_ids=busy_ids,
        line_items=seeder.line_items(),
    )


def seed_organization(sandbox: Sandbox, now: datetime) -> OrganizationManifest:
    """The payer heads an organization of `organization.MEMBERS`, each seeded in its own account."""
    sandbox.client("organizations").create_organization(FeatureSet="ALL")
    return OrganizationManifest(
        payer_account_id=sandbox.account_id,
        scan_role_name=organization.SCAN_ROLE_NAME,
        regions=organization.REGIONS,
        members=[
            _seed_member(sandbox, now, member, number)
            for number, member in enumerate(organization.MEMBERS, start=1)
        ],
    )


def seed_account(
    sandbox: Sandbox, now: datetime | None = None, *, member_spend: bool = False
) -> SeedManifest:
    """Empty the sandbox, seed the payer account and its organization over HTTP, load the spend.

    The payer's Cost Explorer and FOCUS export hold the payer's own line items; with `member_spend`
    they also hold the members' (linked to each member), as a payer's consolidated bill does.
    """
    sandbox.reset()
    seeder = _Seeder(sandbox, now or datetime.now(UTC))
    seeder.seed_instances()
    finished_run_id = seeder.seed_finished_runs()
    seeder.seed_storage()
    runs = seeder.seed_training_runs()
    seeder.seed_feature_stores()
    seeder.seed_serving()
    seeded_organization = seed_organization(sandbox, seeder.now)
    line_items = seeder.line_items()
    billed = line_items + seeded_organization.line_items if member_spend else line_items
    sandbox.cost_explorer.load(billed, seeder.now)
    seed_budgets(seeder.client("budgets", "us-east-1"))
    export_tags = mandatory_tags("recsys", "prod")
    export_bucket = focus_export.seed_focus_export(
        seeder.client("s3", focus_export.EXPORT_REGION),
        billed,
        now=seeder.now,
        account_id=seeder.account_id,
        bucket_tags=export_tags,
        sub_account_names={member.account_id: member.name for member in seeded_organization.members},
    )
    seeder.record(export_bucket, "s3:bucket", focus_export.EXPORT_REGION, export_tags)

    idle_ids, busy_ids, too_young_ids = _judged(seeder.instances, seeder.now)
    return SeedManifest(
        now=seeder.now,
        account_id=seeder.account_id,
        regions=REGIONS,
        line_items=billed,
        instances=seeder.instances,
        resources=seeder.resources,
        idle_instance_ids=idle_ids,
        busy_instance_ids=busy_ids,
        cpu_only_instance_ids=[i.instance_id for i in seeder.instances if i.is_gpu and i.telemetry == "cpu"],
        too_young_instance_ids=too_young_ids,
        leftover_volumes=seeder.leftover_volumes,
        finished_run_id=finished_run_id,
        organization=seeded_organization,
        runs=runs,
    )
