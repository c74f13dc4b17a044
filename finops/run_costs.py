"""What every training run cost, and what its spot interruptions cost it, from AWS alone.

Runs are found in each target of a scan scope: Auto Scaling groups, instances and interruption queues
tagged as a run's (through the inventory), and the `runs/<run-id>/` prefixes of the environments'
checkpoint buckets. For each run:

- instance-hours by instance type and purchase option: each instance's launch and end, from EC2's
  own description (launch time, `InstanceLifecycle`, the stop or termination time in its state transition,
  while EC2 still shows it) and from the group's scaling activities (kept six weeks, for deleted
  groups too), clipped to the period;
- billed cost from Cost Explorer: one daily GetCostAndUsage grouped by the `run-id` tag and
  filtered to the runs found, within a request budget; the hours after the last day Cost Explorer
  has billed for a run (it lags up to a day) are priced from `mlp.pricing` and marked estimated;
- the same instance-hours at on-demand list prices, and the saving;
- interruptions: instances terminated for a spot interruption or a rebalance (the activity's cause,
  EC2's state reason, the run's interruption queue read without consuming it), the work each lost
  (its end less the last checkpoint uploaded before it) and the restart overhead of its replacement
  (the replacement's launch to the first checkpoint after it; the boot script writes no resume marker);
- the age of a running run's newest checkpoint, and whether the run is over its environment's
  `perRunBudgetUsd`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

import mlp.aws
from finops import inventory
from finops.analysis import (
    LINE_ITEMS_RELATION,
    LineItems,
    matched_target,
    of_resources_sql,
    resource_key_sql,
    resource_targets,
    sql_text,
)
from finops.costs import CostExplorerReader, CostView, FetchFailed, spent
from finops.inventory import Scope
from finops.inventory.core import pages
from finops.inventory.ec2 import instances_by_id
from finops.run_resources import TERMINATING_STATES, proven_run_id, run_tag_filter
from finops.scope import DEFAULT_CONCURRENCY, Account, ScanScope, run_targets
from infra.components.checkpoint_bucket import CHECKPOINT_BUCKET_NAME
from infra.components.training_fleet import INTERRUPTION_EVENTS, asg_name
from infra.config import load_stack_config
from infra.training.checkpoints import (
    CHECKPOINTS_DIR,
    COMPLETE_MARKER,
    RUNS_PREFIX,
    read_completion,
)
from mlp import pricing
from mlp.errors import ConfigError, UserError
from mlp.tags import ENVIRONMENT, EXPIRES_AT, RUN_ID, TEAM, parse_expires_at

DEFAULT_DAYS = 30
MAX_DAYS = 366
# Cost Explorer's price per request adds up: one query (and its pages) covers every run.
DEFAULT_MAX_CE_REQUESTS = 5
# Without a known checkpoint interval: an hour without a new checkpoint is more than trainers that
# checkpoint every few minutes (the boot script uploads every five) ever leave.
DEFAULT_STALE_AFTER = timedelta(minutes=60)
SPOT, ON_DEMAND = "spot", "on-demand"
INTERRUPTION, REBALANCE = "interruption", "rebalance"
# The environment's CheckpointBucket names its bucket with this prefix (infra/components/checkpoint_bucket.py).

LAUNCH_ACTIVITY = re.compile(r"Launching a new EC2 instance: (i-[0-9a-f]+)")
TERMINATE_ACTIVITY = re.compile(r"Terminating EC2 instance: (i-[0-9a-f]+)")
# "User initiated (2026-11-23 10:00:00 GMT)": the only place EC2 states when an instance ended.
TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")
SPOT_TERMINATION_REASON = "Server.SpotInstanceTermination"
# Receives that look at the queue with a zero visibility timeout may answer the same messages again;
# a run's queue holds a handful of notices, so a few rounds without anything new end the look.
MAX_QUEUE_PEEKS = 20
RUN_KINDS = ("autoscaling:autoScalingGroup", "ec2:instance", "sqs:queue")
EVENT_KINDS = {detail_type: kind for kind, detail_type in INTERRUPTION_EVENTS.items()}
# An instance's hours end when it stops as when it terminates: EC2 bills a stopped one its volumes only.
BILLING_STOPPED_STATES = TERMINATING_STATES | {"stopping", "stopped"}


@dataclass(frozen=True)
class Period:
    """[start, end): the window costs and hours are counted in; `end` is "now" for running runs."""

    start: datetime
    end: datetime

    @classmethod
    def last_days(cls, days: int, now: datetime | None = None) -> Period:
        if not 1 <= days <= MAX_DAYS:
            raise UserError(f"--days {days}: use a number of days between 1 and {MAX_DAYS}")
        end = now or datetime.now(UTC)
        return cls(end - timedelta(days=days), end)

    def hours(self, start: datetime, end: datetime) -> float:
        clipped = min(end, self.end) - max(start, self.start)
        return max(clipped.total_seconds(), 0.0) / 3600

    def to_json(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}


@dataclass
class Instance:
    """One instance of a run as EC2 and the scaling activities tell it."""

    instance_id: str
    region: str
    instance_type: str | None = None
    purchase_option: str | None = None
    launched: datetime | None = None
    ended: datetime | None = None
    # Why it ended, when it was reclaimed: INTERRUPTION or REBALANCE; and who said so.
    reclaimed: str | None = None
    evidence: set[str] = field(default_factory=set)
    noticed: datetime | None = None

    def reclaim(self, kind: str, source: str, at: datetime | None = None) -> None:
        # An interruption notice outranks a rebalance recommendation: it is what ended the instance.
        if self.reclaimed != INTERRUPTION:
            self.reclaimed = kind
        self.evidence.add(source)
        if at is not None and (self.noticed is None or at < self.noticed):
            self.noticed = at

    @property
    def hourly_usd(self) -> float | None:
        if self.instance_type not in pricing.EC2:
            return None
        if self.purchase_option == SPOT:
            return pricing.spot_hourly(self.instance_type)  # type: ignore[arg-type]
        return pricing.on_demand_hourly(self.instance_type)  # type: ignore[arg-type]

    @property
    def on_demand_hourly_usd(self) -> float | None:
        return pricing.on_demand_hourly(self.instance_type) if self.instance_type in pricing.EC2 else None  # type: ignore[arg-type]


@dataclass(frozen=True)
class StoredObject:
    key: str
    last_modified: datetime


@dataclass
class RunEvidence:
    """Everything found about one run in one account, merged over the account's targets."""

    run_id: str
    account_id: str
    region: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    live_group: bool = False
    instances: dict[str, Instance] = field(default_factory=dict)
    bucket: str | None = None
    bucket_region: str | None = None
    objects: list[StoredObject] = field(default_factory=list)
    completed: bool = False

    def instance(self, instance_id: str, region: str) -> Instance:
        return self.instances.setdefault(instance_id, Instance(instance_id, region))

    @property
    def checkpoints(self) -> list[datetime]:
        marker = f"{RUNS_PREFIX}{self.run_id}/{CHECKPOINTS_DIR}"
        return sorted(item.last_modified for item in self.objects if item.key.startswith(marker))

    def merge(self, other: RunEvidence) -> None:
        self.region = self.region or other.region
        self.tags = {**other.tags, **self.tags}
        self.live_group = self.live_group or other.live_group
        for instance_id, found in other.instances.items():
            mine = self.instances.setdefault(instance_id, found)
            if mine is not found:
                _merge_instance(mine, found)
        self.bucket = self.bucket or other.bucket
        self.bucket_region = self.bucket_region or other.bucket_region
        self.objects += other.objects
        self.completed = self.completed or other.completed


def _merge_instance(mine: Instance, other: Instance) -> None:
    mine.instance_type = mine.instance_type or other.instance_type
    mine.purchase_option = mine.purchase_option or other.purchase_option
    mine.launched = mine.launched or other.launched
    mine.ended = mine.ended or other.ended
    if other.reclaimed:
        for source in other.evidence:
            mine.reclaim(other.reclaimed, source, other.noticed)


# -- reading AWS -----------------------------------------------------------------------------------


def _gather_target(target: Scope, run_id: str | None, period: Period) -> list[RunEvidence]:
    """What one account-region says about its runs (or `run_id` alone)."""
    runs: dict[str, RunEvidence] = {}

    def run(owner: str) -> RunEvidence:
        return runs.setdefault(owner, RunEvidence(owner, target.account_id, target.region))

    queues: dict[str, str] = {}
    for resource in inventory.scan_scope(RUN_KINDS, target, run_tag_filter(run_id), with_global=False):
        owner = proven_run_id(resource.tags)
        if owner is None or (run_id is not None and owner != run_id):
            continue
        evidence = run(owner)
        evidence.tags = {**resource.tags, **evidence.tags}
        if resource.kind == "autoscaling:autoScalingGroup":
            evidence.live_group = evidence.live_group or resource.attributes.get("DesiredCapacity", 0) > 0
            for member in resource.attributes.get("Instances", []):
                evidence.instance(member["InstanceId"], target.region)
        elif resource.kind == "ec2:instance":
            evidence.instance(resource.resource_id, target.region)
        else:
            queues[owner] = resource.attributes["QueueUrl"]
    _read_buckets(target, run_id, period, run)
    for evidence in runs.values():
        _read_activities(target, evidence)
    _describe_instances(target, runs.values())
    for owner, queue_url in queues.items():
        _read_queue(target, queue_url, runs[owner])
    return list(runs.values())


def _read_buckets(
    target: Scope, run_id: str | None, period: Period, run: Callable[[str], RunEvidence]
) -> None:
    """The runs with objects under `runs/` of the target's checkpoint buckets, active in the period."""
    s3 = target.client("s3")
    for bucket in inventory.scan_scope(["s3:bucket"], target, None, with_global=False):
        match = CHECKPOINT_BUCKET_NAME.fullmatch(bucket.resource_id)
        if match is None:
            continue
        prefix = f"{RUNS_PREFIX}{run_id}/" if run_id else RUNS_PREFIX
        by_run: dict[str, list[StoredObject]] = {}
        for page in pages(s3, "list_objects_v2", Bucket=bucket.resource_id, Prefix=prefix):
            for item in page.get("Contents", []):
                owner = item["Key"][len(RUNS_PREFIX) :].split("/", 1)[0]
                by_run.setdefault(owner, []).append(StoredObject(item["Key"], item["LastModified"]))
        for owner, objects in by_run.items():
            if max(item.last_modified for item in objects) < period.start:
                continue
            evidence = run(owner)
            evidence.bucket, evidence.bucket_region = bucket.resource_id, target.region
            evidence.objects += objects
            evidence.tags.setdefault(ENVIRONMENT, match.group("environment"))
            if any(item.key.endswith(f"/{COMPLETE_MARKER}") for item in objects):
                completion = read_completion(s3, bucket.resource_id, owner)
                evidence.completed = completion is not None and completion.verified


def _read_activities(target: Scope, evidence: RunEvidence) -> None:
    """Launches, terminations and their causes from the run's group, deleted or not."""
    autoscaling = target.client("autoscaling")
    listing = pages(
        autoscaling,
        "describe_scaling_activities",
        AutoScalingGroupName=asg_name(evidence.run_id),
        IncludeDeletedGroups=True,
    )
    for page in listing:
        for activity in page.get("Activities", []):
            description = activity.get("Description", "")
            started = activity.get("StartTime")
            if launch := LAUNCH_ACTIVITY.search(description):
                instance = evidence.instance(launch.group(1), target.region)
                instance.launched = instance.launched or started
            elif terminate := TERMINATE_ACTIVITY.search(description):
                instance = evidence.instance(terminate.group(1), target.region)
                instance.ended = instance.ended or activity.get("EndTime") or started
                kind = _reclaim_kind(f"{activity.get('Cause', '')} {description}")
                if kind is not None:
                    instance.reclaim(kind, "scaling-activity", started)


def _reclaim_kind(text: str) -> str | None:
    lowered = text.lower()
    if "interruption" in lowered:
        return INTERRUPTION
    if "rebalance" in lowered:
        return REBALANCE
    return None


def _describe_instances(target: Scope, runs: Iterable[RunEvidence]) -> None:
    """Type, purchase option, launch and end of every instance EC2 still shows, terminated ones too."""
    wanted = {
        instance_id: instance
        for evidence in runs
        for instance_id, instance in evidence.instances.items()
        if instance.region == target.region
    }
    for instance_id, described in instances_by_id(target, list(wanted)).items():
        instance = wanted[instance_id]
        instance.instance_type = described.get("InstanceType")
        instance.purchase_option = SPOT if described.get("InstanceLifecycle") == "spot" else ON_DEMAND
        # EC2's launch time is when billing starts; the activity's is when the group asked for it.
        instance.launched = described.get("LaunchTime") or instance.launched
        if described["State"]["Name"] in BILLING_STOPPED_STATES:
            transition = TRANSITION_TIME.search(described.get("StateTransitionReason", ""))
            if transition and instance.ended is None:
                instance.ended = datetime.strptime(transition.group(1), "%Y-%m-%d %H:%M:%S").replace(
                    tzinfo=UTC
                )
        if described.get("StateReason", {}).get("Code") == SPOT_TERMINATION_REASON:
            instance.reclaim(INTERRUPTION, "ec2-state-reason")


def _read_queue(target: Scope, queue_url: str, evidence: RunEvidence) -> None:
    """The interruption and rebalance notices for the run's instances, left in the queue for others."""
    sqs = target.client("sqs")
    seen: set[str] = set()
    for _ in range(MAX_QUEUE_PEEKS):
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        ).get("Messages", [])
        fresh = [message for message in batch if message["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            try:
                event = json.loads(message["Body"])
                kind = EVENT_KINDS.get(event.get("detail-type", ""))
                instance_id = event.get("detail", {}).get("instance-id")
                at = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not an EventBridge notice: nothing this queue's rules sent
            # The rules take every notice of the region: only the run's own instances count.
            if kind is not None and instance_id in evidence.instances:
                evidence.instances[instance_id].reclaim(kind, "interruption-queue", at)


# -- billed cost: Cost Explorer or the FOCUS export -----------------------------------------------

COST_EXPLORER_SOURCE, FOCUS_SOURCE = "cost-explorer", "focus"
RUN_TAG_PATH = f'$."{RUN_ID}"'


@dataclass
class Billing:
    """The cost source's answer for the runs: per run, the billed cost of each day it billed."""

    source: str = COST_EXPLORER_SOURCE
    daily: dict[str, dict[date, float]] = field(default_factory=dict)
    requests: int = 0
    unavailable: str | None = None

    def add(self, run_id: str, day: date, amount: float) -> None:
        days = self.daily.setdefault(run_id, {})
        days[day] = days.get(day, 0.0) + amount

    def billed(self, run_id: str) -> float | None:
        days = self.daily.get(run_id)
        return sum(days.values()) if days else None

    def billed_through(self, run_id: str) -> date | None:
        days = self.daily.get(run_id)
        return max(days) if days else None


def read_billing(client: Any, run_ids: Sequence[str], period: Period, max_requests: int) -> Billing:
    """One daily query grouped by run-id over the runs found; an unavailable Cost Explorer is said, not raised."""
    if not run_ids:
        return Billing()
    view = CostView(
        name="run-costs:run-id",
        group_by=(("TAG", RUN_ID),),
        parts=("billed cost per run",),
        metrics=("UnblendedCost",),
        filter={"Tags": {"Key": RUN_ID, "Values": sorted(run_ids), "MatchOptions": ["EQUALS"]}},
    )
    reader = CostExplorerReader(client, max_requests=max_requests, today=period.end.date())
    billing = Billing()
    try:
        days = reader.read_view(view, period.start.date(), period.end.date() + timedelta(days=1))
    except (FetchFailed, UserError) as error:
        billing.requests = reader.requests
        billing.unavailable = f"{error} after {spent(reader.requests)}"
        return billing
    billing.requests = reader.requests
    for day, result in days.items():
        for group in result.groups:
            run_id = group["Keys"][0].split("$", 1)[-1]
            amount = float(group["Metrics"]["UnblendedCost"]["Amount"])
            if run_id and amount > 0:
                billing.add(run_id, day, amount)
    return billing


def read_line_item_billing(
    line_items: LineItems, resources: Mapping[str, Sequence[str]], period: Period
) -> Billing:
    """BilledCost per run and day from the FOCUS export: the line items tagged with a run's `run-id`,
    and those of its resources (`resources`: run id -> resource ids) whatever their tags say.

    A line item counts once, for the run its tag names, else for the run whose resource it is; a
    resource id two runs claim counts for neither.
    """
    billing = Billing(source=FOCUS_SOURCE)
    if not resources:
        return billing
    run_ids = sorted(resources)
    owners = resource_targets({index: list(resources[run_id]) for index, run_id in enumerate(run_ids)})
    # The line items' Tags are a JSON object without the export's `user:` prefix (finops.focus).
    run_tag = f"json_extract_string(Tags, {sql_text(RUN_TAG_PATH)})"
    tagged = f"{run_tag} IN ({', '.join(sql_text(run_id) for run_id in run_ids)})"
    matches = f"({tagged} OR {of_resources_sql(list(owners))})" if owners else tagged
    first, last = period.start.date(), period.end.date() + timedelta(days=1)
    answer = line_items.aggregate(
        f"SELECT {run_tag} AS run_tag, ResourceId AS resource_id, {resource_key_sql()} AS resource_key, "
        "CAST(ChargePeriodStart AS DATE) AS day, SUM(BilledCost) AS billed_usd "
        f"FROM {LINE_ITEMS_RELATION} "
        f"WHERE ChargePeriodStart >= TIMESTAMPTZ '{first.isoformat()} 00:00:00+00' "
        f"AND ChargePeriodStart < TIMESTAMPTZ '{last.isoformat()} 00:00:00+00' AND {matches} "
        "GROUP BY 1, 2, 3, 4"
    )
    amounts: dict[tuple[str, date], float] = {}
    for row in answer.itertuples(index=False):
        if row.run_tag in resources:
            owner = row.run_tag
        else:
            index = matched_target(row, owners)
            if index is None:
                continue
            owner = run_ids[index]
        key = (owner, pd.Timestamp(row.day).date())
        amounts[key] = amounts.get(key, 0.0) + float(row.billed_usd)
    for (run_id, day), amount in sorted(amounts.items()):
        if amount > 0:
            billing.add(run_id, day, amount)
    return billing


def cost_explorer_client() -> Any:
    # Retries are the reader's (counted against the budget), so botocore must not retry behind it.
    return mlp.aws.client("ce", mlp.aws.COST_EXPLORER_REGION, max_attempts=1)


# -- the figures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interruption:
    instance_id: str
    kind: str
    evidence: tuple[str, ...]
    instance_type: str | None
    purchase_option: str | None
    noticed_at: datetime | None
    ended_at: datetime | None
    last_checkpoint_at: datetime | None
    lost_hours: float | None
    lost_usd: float | None
    replacement_instance_id: str | None
    first_checkpoint_after_restart_at: datetime | None
    restart_overhead_hours: float | None
    restart_overhead_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "kind": self.kind,
            "evidence": list(self.evidence),
            "instance_type": self.instance_type,
            "purchase_option": self.purchase_option,
            "noticed_at": _iso(self.noticed_at),
            "ended_at": _iso(self.ended_at),
            "last_checkpoint_at": _iso(self.last_checkpoint_at),
            "lost_hours": _round(self.lost_hours, 4),
            "lost_usd": _round(self.lost_usd, 2),
            "replacement_instance_id": self.replacement_instance_id,
            "first_checkpoint_after_restart_at": _iso(self.first_checkpoint_after_restart_at),
            "restart_overhead_hours": _round(self.restart_overhead_hours, 4),
            "restart_overhead_usd": _round(self.restart_overhead_usd, 2),
        }


@dataclass(frozen=True)
class UsageLine:
    instance_type: str | None
    purchase_option: str | None
    hours: float
    hourly_usd: float | None

    @property
    def cost_usd(self) -> float | None:
        return None if self.hourly_usd is None else self.hours * self.hourly_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "purchase_option": self.purchase_option,
            "hours": round(self.hours, 4),
            "hourly_usd": _round(self.hourly_usd, 4),
            "cost_usd": _round(self.cost_usd, 2),
        }


@dataclass(frozen=True)
class RunCost:
    run_id: str
    account_id: str
    region: str
    team: str | None
    environment: str | None
    status: str  # running | completed | expired | failed
    start: datetime | None
    end: datetime | None
    wall_hours: float
    expires_at: str | None
    bucket: str | None
    usage: tuple[UsageLine, ...]
    instance_cost_usd: float
    on_demand_equivalent_usd: float
    billed_usd: float | None
    billed_through: date | None
    estimated_usd: float
    estimated: bool
    interruptions: tuple[Interruption, ...]
    newest_checkpoint_at: datetime | None
    checkpoint_age_minutes: float | None
    checkpoint_stale: bool
    budget_usd: float | None
    # When the cost accrued (billed days, then list-price hours) first exceeded the budget.
    budget_crossed_at: datetime | None = None
    unpriced_instances: tuple[str, ...] = ()

    @property
    def cost_usd(self) -> float:
        return (self.billed_usd or 0.0) + self.estimated_usd

    @property
    def instance_hours(self) -> float:
        return sum(line.hours for line in self.usage)

    @property
    def saving_usd(self) -> float:
        return self.on_demand_equivalent_usd - self.instance_cost_usd

    @property
    def lost_work_usd(self) -> float:
        return sum(item.lost_usd or 0.0 for item in self.interruptions)

    @property
    def restart_overhead_usd(self) -> float:
        return sum(item.restart_overhead_usd or 0.0 for item in self.interruptions)

    @property
    def over_budget(self) -> bool:
        """Only a running run is flagged: it is the one still adding to its cost."""
        return self.status == "running" and self.budget_usd is not None and self.cost_usd > self.budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "account_id": self.account_id,
            "region": self.region,
            "team": self.team,
            "environment": self.environment,
            "status": self.status,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "wall_hours": round(self.wall_hours, 4),
            "expires_at": self.expires_at,
            "bucket": self.bucket,
            "instance_hours": [line.to_json() for line in self.usage],
            "instance_hours_total": round(self.instance_hours, 4),
            "instance_cost_usd": round(self.instance_cost_usd, 2),
            "on_demand_equivalent_usd": round(self.on_demand_equivalent_usd, 2),
            "saving_usd": round(self.saving_usd, 2),
            "billed_usd": _round(self.billed_usd, 2),
            "billed_through": self.billed_through.isoformat() if self.billed_through else None,
            "estimated_usd": round(self.estimated_usd, 2),
            "estimated": self.estimated,
            "cost_usd": round(self.cost_usd, 2),
            "interruptions": [item.to_json() for item in self.interruptions],
            "lost_work_usd": round(self.lost_work_usd, 2),
            "restart_overhead_usd": round(self.restart_overhead_usd, 2),
            "checkpoint": {
                "newest_at": _iso(self.newest_checkpoint_at),
                "age_minutes": _round(self.checkpoint_age_minutes, 1),
                "stale": self.checkpoint_stale,
            },
            "budget_usd": self.budget_usd,
            "budget_crossed_at": _iso(self.budget_crossed_at),
            "over_budget": self.over_budget,
            "unpriced_instances": list(self.unpriced_instances),
        }

    def line(self) -> str:
        cost = f"${self.cost_usd:,.2f}" + (" (estimated in part)" if self.estimated else "")
        over = f"OVER BUDGET ${self.budget_usd:,.2f} since {_iso(self.budget_crossed_at)}"
        flags = [flag for flag, on in ((over, self.over_budget), ("STALE", self.checkpoint_stale)) if on]
        return (
            f"{self.run_id} [{self.status}] {self.team or '-'}/{self.environment or '-'} "
            f"{self.instance_hours:.2f} instance-h, {cost}, saved ${self.saving_usd:,.2f} vs on demand, "
            f"{len(self.interruptions)} interruption(s) losing ${self.lost_work_usd:,.2f}"
            + (f" {' '.join(flags)}" if flags else "")
        )


@dataclass
class RunCosts:
    period: Period
    scope: ScanScope
    runs: list[RunCost]
    stale_after: timedelta
    ce_requests: int = 0
    ce_max_requests: int = DEFAULT_MAX_CE_REQUESTS
    ce_unavailable: str | None = None
    notes: list[str] = field(default_factory=list)
    # Where billed dollars came from: COST_EXPLORER_SOURCE or FOCUS_SOURCE (the export's line items).
    cost_source: str = COST_EXPLORER_SOURCE

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period.to_json(),
            "scope": self.scope.to_json(),
            "cost_source": self.cost_source,
            "cost_explorer": {
                "available": self.ce_unavailable is None,
                "reason": self.ce_unavailable,
                "requests": self.ce_requests,
                "max_requests": self.ce_max_requests,
            },
            "stale_after_minutes": self.stale_after.total_seconds() / 60,
            "notes": self.notes,
            "totals": {
                "runs": len(self.runs),
                "cost_usd": round(sum(run.cost_usd for run in self.runs), 2),
                "estimated_usd": round(sum(run.estimated_usd for run in self.runs), 2),
                "saving_usd": round(sum(run.saving_usd for run in self.runs), 2),
                "lost_work_usd": round(sum(run.lost_work_usd for run in self.runs), 2),
                "restart_overhead_usd": round(sum(run.restart_overhead_usd for run in self.runs), 2),
                "over_budget": sorted(run.run_id for run in self.runs if run.over_budget),
            },
            "runs": [run.to_json() for run in self.runs],
        }

    def lines(self) -> list[str]:
        lines = [
            self.scope.describe(),
            f"{len(self.runs)} run(s) from {_iso(self.period.start)} to {_iso(self.period.end)}",
        ]
        lines += [run.line() for run in self.runs]
        lines += [f"note: {note}" for note in self.notes]
        return lines


def _status(evidence: RunEvidence, now: datetime) -> str:
    if evidence.completed:
        return "completed"
    expires_at = _expires_at(evidence.tags)
    if expires_at is not None and now >= expires_at:
        return "expired"
    if evidence.live_group or any(instance.ended is None for instance in evidence.instances.values()):
        return "running"
    return "failed"


def _expires_at(tags: Mapping[str, str]) -> datetime | None:
    try:
        return parse_expires_at(tags[EXPIRES_AT]) if tags.get(EXPIRES_AT) else None
    except ValueError:
        return None


def _usage(instances: Iterable[Instance], period: Period, since: datetime | None = None) -> list[UsageLine]:
    """Hours per (type, purchase option) in the period, or only from `since` on."""
    hours: dict[tuple[str | None, str | None], float] = {}
    prices: dict[tuple[str | None, str | None], float | None] = {}
    for instance in instances:
        if instance.launched is None:
            continue
        start = max(instance.launched, since) if since else instance.launched
        key = (instance.instance_type, instance.purchase_option)
        hours[key] = hours.get(key, 0.0) + period.hours(start, instance.ended or period.end)
        prices[key] = instance.hourly_usd
    return [
        UsageLine(instance_type, option, hours[(instance_type, option)], prices[(instance_type, option)])
        for instance_type, option in sorted(hours, key=lambda key: (key[0] or "", key[1] or ""))
    ]


def _interruptions(evidence: RunEvidence, now: datetime) -> list[Interruption]:
    checkpoints = evidence.checkpoints
    reclaimed = sorted(
        (item for item in evidence.instances.values() if item.reclaimed and item.launched),
        key=lambda item: item.ended or now,
    )
    replaced: set[str] = set()
    found = []
    for instance in reclaimed:
        assert instance.launched is not None and instance.reclaimed is not None
        lost_hours = lost_usd = None
        before = None
        if instance.ended is not None:
            before = max((moment for moment in checkpoints if moment <= instance.ended), default=None)
            lost_from = max(before, instance.launched) if before else instance.launched
            lost_hours = (instance.ended - lost_from).total_seconds() / 3600
            lost_usd = _times(lost_hours, instance.hourly_usd)
        replacement = _replacement(instance, evidence.instances.values(), replaced)
        resumed_at = overhead_hours = overhead_usd = None
        if replacement is not None and replacement.launched is not None:
            replaced.add(replacement.instance_id)
            resumed_at = next((moment for moment in checkpoints if moment > replacement.launched), None)
            if resumed_at is not None:
                overhead_hours = (resumed_at - replacement.launched).total_seconds() / 3600
                overhead_usd = _times(overhead_hours, replacement.hourly_usd)
        found.append(
            Interruption(
                instance_id=instance.instance_id,
                kind=instance.reclaimed,
                evidence=tuple(sorted(instance.evidence)),
                instance_type=instance.instance_type,
                purchase_option=instance.purchase_option,
                noticed_at=instance.noticed,
                ended_at=instance.ended,
                last_checkpoint_at=before,
                lost_hours=lost_hours,
                lost_usd=lost_usd,
                replacement_instance_id=replacement.instance_id if replacement else None,
                first_checkpoint_after_restart_at=resumed_at,
                restart_overhead_hours=overhead_hours,
                restart_overhead_usd=overhead_usd,
            )
        )
    return found


def _replacement(reclaimed: Instance, instances: Iterable[Instance], taken: set[str]) -> Instance | None:
    """The instance launched after the reclaimed one whose launch is nearest its end (a rebalance
    launches the replacement before the old instance goes, an interruption after)."""
    assert reclaimed.launched is not None
    ended = reclaimed.ended or reclaimed.noticed or reclaimed.launched
    later = [
        item
        for item in instances
        if item.launched is not None
        and item.launched > reclaimed.launched
        and item.instance_id not in taken
        and item is not reclaimed
    ]
    return min(later, key=lambda item: abs((item.launched - ended).total_seconds()), default=None)  # type: ignore[operator]


def _cost(
    evidence: RunEvidence,
    period: Period,
    billing: Billing,
    stale_after: timedelta,
    budget_usd: Callable[[str], float | None],
) -> RunCost:
    now = period.end
    instances = list(evidence.instances.values())
    status = _status(evidence, now)
    launches = [item.launched for item in instances if item.launched]
    moments = launches + [item.last_modified for item in evidence.objects]
    start = min(launches or moments, default=None)
    ends = [item.ended for item in instances if item.ended] + [
        item.last_modified for item in evidence.objects
    ]
    end = None if status == "running" else max(ends, default=None)
    usage = _usage(instances, period)
    billed = None if billing.unavailable else billing.billed(evidence.run_id)
    through = None if billed is None else billing.billed_through(evidence.run_id)
    # Hours after the last billed day are not in the cost source yet: priced from the list.
    unbilled_from = _day_start(through + timedelta(days=1)) if through else None
    unbilled = _usage(instances, period, since=unbilled_from)
    estimated_usd = sum(line.cost_usd or 0.0 for line in unbilled)
    checkpoints = evidence.checkpoints
    newest = checkpoints[-1] if checkpoints else None
    age = None
    if status == "running":
        since = newest or start
        age = (now - since).total_seconds() / 60 if since else None
    environment = evidence.tags.get(ENVIRONMENT)
    budget = budget_usd(environment) if environment else None
    crossed = None
    if budget is not None and (billed or 0.0) + estimated_usd > budget:
        daily = {} if billed is None else billing.daily[evidence.run_id]
        crossed = _budget_crossed_at(_cost_timeline(instances, daily, unbilled_from, period), budget)
    return RunCost(
        run_id=evidence.run_id,
        account_id=evidence.account_id,
        region=evidence.region,
        team=evidence.tags.get(TEAM),
        environment=environment,
        status=status,
        start=start,
        end=end,
        wall_hours=((end or now) - start).total_seconds() / 3600 if start else 0.0,
        expires_at=evidence.tags.get(EXPIRES_AT),
        bucket=evidence.bucket,
        usage=tuple(usage),
        instance_cost_usd=sum(line.cost_usd or 0.0 for line in usage),
        on_demand_equivalent_usd=sum(
            period.hours(item.launched, item.ended or now) * (item.on_demand_hourly_usd or 0.0)
            for item in instances
            if item.launched
        ),
        billed_usd=billed,
        billed_through=through,
        estimated_usd=estimated_usd,
        estimated=billed is None or estimated_usd > 0,
        interruptions=tuple(_interruptions(evidence, now)),
        newest_checkpoint_at=newest,
        checkpoint_age_minutes=age,
        checkpoint_stale=age is not None and age > stale_after.total_seconds() / 60,
        budget_usd=budget,
        budget_crossed_at=crossed,
        unpriced_instances=tuple(sorted(item.instance_id for item in instances if item.hourly_usd is None)),
    )


# A stretch of a run's cost: `usd` spent evenly from `start` to `end`.
CostPiece = tuple[datetime, datetime, float]


def _cost_timeline(
    instances: Sequence[Instance], daily: Mapping[date, float], unbilled_from: datetime | None, period: Period
) -> list[CostPiece]:
    """The run's cost as it accrued: each billed day's dollars spread over the part of that day the
    run ran (the whole day when no instance ran in it: storage, say), then each instance's unbilled
    hours at its list price. Its sum is the run's cost_usd."""
    runs = [
        (max(item.launched, period.start), min(item.ended or period.end, period.end))
        for item in instances
        if item.launched is not None
    ]
    pieces: list[CostPiece] = []
    for day, usd in sorted(daily.items()):
        day_start = max(_day_start(day), period.start)
        day_end = min(_day_start(day + timedelta(days=1)), period.end)
        overlaps = [(max(start, day_start), min(end, day_end)) for start, end in runs]
        overlaps = [(start, end) for start, end in overlaps if end > start]
        if overlaps:
            day_start, day_end = min(start for start, _ in overlaps), max(end for _, end in overlaps)
        if day_end <= day_start:
            day_start, day_end = _day_start(day), _day_start(day + timedelta(days=1))
        pieces.append((day_start, day_end, usd))
    for item in instances:
        if item.launched is None or item.hourly_usd is None:
            continue
        start = max(item.launched, unbilled_from) if unbilled_from else item.launched
        start, end = max(start, period.start), min(item.ended or period.end, period.end)
        if end > start:
            pieces.append((start, end, period.hours(start, end) * item.hourly_usd))
    return pieces


def _budget_crossed_at(pieces: Sequence[CostPiece], budget: float) -> datetime | None:
    """The first moment the accrued cost exceeds `budget`; None when it never does."""

    def accrued(moment: datetime) -> float:
        return sum(usd * min(max((moment - start) / (end - start), 0.0), 1.0) for start, end, usd in pieces)

    moments = sorted({moment for start, end, _ in pieces for moment in (start, end)})
    before = 0.0
    for earlier, later in itertools.pairwise(moments):
        after = accrued(later)
        if after > budget:
            # Between two consecutive starts or ends every piece accrues linearly.
            share = (budget - before) / (after - before)
            return _to_the_second(earlier + (later - earlier) * share)
        before = after
    return None


def _to_the_second(moment: datetime) -> datetime:
    # Rounded, not truncated: AWS's times are milliseconds, and a crossing one tick early is a second early.
    return (moment + timedelta(milliseconds=500)).replace(microsecond=0)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def environment_budget_usd(project_dir: Path | None = None) -> Callable[[str], float | None]:
    """`training.perRunBudgetUsd` of each environment's Pulumi.<env>.yaml; None where there is none."""
    budgets: dict[str, float | None] = {}

    def budget(environment: str) -> float | None:
        if environment not in budgets:
            try:
                budgets[environment] = float(
                    load_stack_config(environment, project_dir).training.per_run_budget_usd
                )
            except ConfigError:
                budgets[environment] = None
        return budgets[environment]

    return budget


def run_costs(
    scope: ScanScope,
    period: Period,
    *,
    run_id: str | None = None,
    cost_explorer: Any | None = None,
    line_items: LineItems | None = None,
    max_ce_requests: int = DEFAULT_MAX_CE_REQUESTS,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    budget_usd: Callable[[str], float | None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> RunCosts:
    """Every run (or `run_id`) active in `period` over the targets of `scope`, with its costs.

    Billed dollars come from `line_items` (the FOCUS export's, `finops.analysis.LineItems`) when
    given, by the runs' `run-id` tag and their instances' resource ids, with no Cost Explorer
    request; else from `cost_explorer`, a boto3 Cost Explorer client (default: the caller's).
    `budget_usd` maps an environment to its per-run budget (default: the project's stack files). A
    target that cannot be read is a gap of the returned scope; Cost Explorer failing leaves every
    cost estimated, with a note.
    """
    gathered = run_targets(
        scope, lambda target: _gather_target(target, run_id, period), concurrency=concurrency
    )
    merged: dict[tuple[str, str], RunEvidence] = {}
    for _, found in gathered.results:
        for evidence in found:
            key = (evidence.account_id, evidence.run_id)
            if key in merged:
                merged[key].merge(evidence)
            else:
                merged[key] = evidence
    active = [evidence for evidence in merged.values() if _active_in(evidence, period)]
    if line_items is not None:
        resources: dict[str, list[str]] = {}
        for evidence in active:
            resources.setdefault(evidence.run_id, []).extend(sorted(evidence.instances))
        billing = read_line_item_billing(line_items, resources, period)
    else:
        billing = read_billing(
            cost_explorer or cost_explorer_client(),
            sorted({evidence.run_id for evidence in active}),
            period,
            max_ce_requests,
        )
    budgets = budget_usd or environment_budget_usd()
    runs = sorted(
        (_cost(evidence, period, billing, stale_after, budgets) for evidence in active),
        key=lambda run: (run.start or period.end, run.run_id),
    )
    covered = ScanScope(
        targets=scope.targets,
        accounts=scope.accounts,
        gaps=[*scope.gaps, *gathered.gaps],
        skipped=scope.skipped,
    )
    result = RunCosts(
        period,
        covered,
        runs,
        stale_after,
        ce_requests=billing.requests,
        ce_max_requests=max_ce_requests,
        ce_unavailable=billing.unavailable,
        cost_source=billing.source,
    )
    if billing.unavailable:
        result.notes.append(f"Cost Explorer unavailable ({billing.unavailable}): every cost is estimated")
    unpriced = sorted({item for run in runs for item in run.unpriced_instances})
    if unpriced:
        result.notes.append(
            f"{len(unpriced)} instance(s) with no known type or list price are counted in hours, not dollars: "
            + ", ".join(unpriced)
        )
    return result


def _active_in(evidence: RunEvidence, period: Period) -> bool:
    """Whether the run ran, or wrote to its prefix, within the period."""
    if evidence.live_group or any(
        item.launched and period.hours(item.launched, item.ended or period.end) > 0
        for item in evidence.instances.values()
    ):
        return True
    return any(item.last_modified >= period.start for item in evidence.objects)


def _times(hours: float, hourly: float | None) -> float | None:
    return None if hourly is None else hours * hourly


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def receipt_cost_line(targets: Sequence[Scope], run_id: str, period: Period) -> dict[str, Any] | None:
    """A destroy receipt's cost line for one run in one account: billed, estimated and instance-hours.

    Read right after the destroy, while EC2 still shows the terminated instances; None when AWS shows
    nothing of the run in the period.
    """
    [account_id] = {target.account_id for target in targets}
    found = run_costs(
        ScanScope(targets=list(targets), accounts=[Account(account_id)]),
        period,
        run_id=run_id,
        budget_usd=lambda environment: None,
    )
    run = next((item for item in found.runs if item.run_id == run_id), None)
    if run is None:
        return None
    line = run.to_json()
    return {
        key: line[key]
        for key in (
            "billed_usd",
            "billed_through",
            "estimated_usd",
            "estimated",
            "cost_usd",
            "instance_hours",
            "instance_hours_total",
        )
    }
