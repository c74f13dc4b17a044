"""What finance acts on: showback by cost-center and team, idle waste per month, whom to ask about each item.

Showback rows put each cost-center's (and team's) month to date and month-end forecast beside the
report period and its change against the previous one; `Showback.csv` is the file finance downloads.
Every idle GPU, untagged resource and expired run's leftover becomes an `ActionItem`: its owner (the
`owner` tag, else the owner of its team) and one plain sentence saying whom to ask to do what, and
what it costs per month; the engineer's command is beside it.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from finops.analysis import (
    Period,
    ResourceSpend,
    daily_spend,
    month_spend,
    period_spend,
    tag_view_rows,
)
from finops.costs import UNTAGGED_LABEL, Spend, tag_column
from finops.idle import IdleFinding
from finops.untagged import UntaggedFinding
from infra.config import environment_stacks, load_stack_config
from mlp.errors import ConfigError
from mlp.pricing import HOURS_PER_MONTH
from mlp.tags import COST_CENTER, OWNER, TEAM

OWNER_TAG = "owner tag"
TEAM_OWNER = "team owner"
SHOWBACK_COLUMNS = (
    "dimension",
    "name",
    "month_to_date_usd",
    "forecast_usd",
    "period_usd",
    "previous_usd",
    "change_usd",
    "change_pct",
)


class ShowbackRow(TypedDict):
    name: str
    month_to_date_usd: float
    forecast_usd: float
    period_usd: float
    previous_usd: float
    change_usd: float
    change_pct: float | None


@dataclass(frozen=True)
class Showback:
    """Rows per cost-center and per team; None where the spend by that tag could not be read."""

    by_cost_center: list[ShowbackRow] | None
    by_team: list[ShowbackRow] | None

    def to_json(self) -> dict[str, list[ShowbackRow] | None]:
        return {"by_cost_center": self.by_cost_center, "by_team": self.by_team}

    def csv(self) -> str:
        """Both tables as one CSV, a `dimension` column telling them apart (change_pct in percent)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SHOWBACK_COLUMNS)
        for dimension, rows in ((COST_CENTER, self.by_cost_center), (TEAM, self.by_team)):
            for row in rows or []:
                writer.writerow(
                    [
                        dimension,
                        *("" if row[column] is None else row[column] for column in SHOWBACK_COLUMNS[1:]),
                    ]  # type: ignore[literal-required]
                )
        return buffer.getvalue()


def _rows(spend: Spend, period: Period, key: str) -> list[ShowbackRow] | None:
    rows = tag_view_rows(spend, [key])
    if rows is None:
        return None
    labels = rows[tag_column(key)].fillna("").replace("", UNTAGGED_LABEL)
    result = []
    for name, group in rows.groupby(labels, sort=False):
        daily = daily_spend(group)
        month_to_date, forecast = month_spend(daily, period)
        current, previous = period_spend(daily, period), period_spend(daily, period.previous)
        result.append(
            ShowbackRow(
                name=str(name),
                month_to_date_usd=round(month_to_date, 2),
                forecast_usd=round(forecast, 2),
                period_usd=round(current, 2),
                previous_usd=round(previous, 2),
                change_usd=round(current - previous, 2),
                change_pct=round((current - previous) / previous * 100, 1) if previous else None,
            )
        )
    return sorted(result, key=lambda row: (row["name"] == UNTAGGED_LABEL, -row["period_usd"], row["name"]))


def showback(spend: Spend, period: Period) -> Showback:
    return Showback(by_cost_center=_rows(spend, period, COST_CENTER), by_team=_rows(spend, period, TEAM))


class IdleRate(TypedDict):
    """The idle GPUs' cost per month if left running, and the rule that judged them idle."""

    window_hours: float
    threshold_pct: float
    instances: int
    hourly_usd: float
    monthly_usd: float


def idle_rate(idle: Sequence[IdleFinding], window_hours: float, threshold_pct: float) -> IdleRate:
    hourly = sum(finding.hourly_cost_usd or 0.0 for finding in idle)
    return IdleRate(
        window_hours=window_hours,
        threshold_pct=threshold_pct,
        instances=len(idle),
        hourly_usd=round(hourly, 4),
        monthly_usd=round(hourly * HOURS_PER_MONTH, 2),
    )


def stack_team_owners(project_dir: Path | None = None) -> dict[str, str]:
    """Each team's owner as the environment stacks tag it (`ml-platform:tags` team and owner)."""
    owners: dict[str, str] = {}
    for stack in sorted(environment_stacks(project_dir)):
        try:
            tags = load_stack_config(stack, project_dir).tags
        except ConfigError:
            continue
        if tags.get(TEAM) and tags.get(OWNER):
            owners.setdefault(tags[TEAM], tags[OWNER])
    return owners


def team_owners(tag_sets: Iterable[Mapping[str, str]], fallback: Mapping[str, str]) -> dict[str, str]:
    """Each team's most frequent `owner` among the tags seen, else the stacks' owner of the team."""
    seen: dict[str, Counter[str]] = {}
    for tags in tag_sets:
        if tags.get(TEAM) and tags.get(OWNER):
            seen.setdefault(tags[TEAM], Counter())[tags[OWNER]] += 1
    owners = dict(fallback)
    owners.update({team: counts.most_common(1)[0][0] for team, counts in seen.items()})
    return owners


@dataclass(frozen=True)
class ActionItem:
    kind: str  # "idle" | "untagged" | "leftover"
    resource_id: str
    account_id: str
    region: str
    owner: str | None
    owner_source: str | None
    monthly_usd: float | None
    text: str
    command: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource_id": self.resource_id,
            "account_id": self.account_id,
            "region": self.region,
            "owner": self.owner,
            "owner_source": self.owner_source,
            "monthly_usd": self.monthly_usd,
            "text": self.text,
            "command": self.command,
        }


def _owner(tags: Mapping[str, str], owners: Mapping[str, str]) -> tuple[str | None, str | None]:
    if tags.get(OWNER):
        return tags[OWNER], OWNER_TAG
    team = tags.get(TEAM)
    if team and team in owners:
        return owners[team], TEAM_OWNER
    return None, None


def _ask(owner: str | None, team: str | None) -> str:
    if owner:
        return f"Ask {owner} to"
    return f"Find the owner of team {team} to" if team else "Find who owns it and ask them to"


def _short_id(arn: str) -> str:
    """The resource's own name or id: what follows the ARN's last '/' or ':'."""
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _per_month(monthly: float | None) -> str:
    return f"${monthly:,.2f}/month" if monthly is not None else "cost unknown (no list price)"


def actions(
    idle: Sequence[IdleFinding],
    untagged: Sequence[UntaggedFinding],
    leftovers: Sequence[Mapping[str, Any]],
    *,
    owners: Mapping[str, str],
    untagged_spend: Sequence[ResourceSpend] = (),
    period_days: int = 30,
) -> list[ActionItem]:
    """One item per idle GPU, untagged resource and expired run's leftovers, costliest first."""
    items = []
    for finding in idle:
        owner, source = _owner(finding.tags, owners)
        monthly = (
            None if finding.hourly_cost_usd is None else round(finding.hourly_cost_usd * HOURS_PER_MONTH, 2)
        )
        hours = f"{finding.idle_hours:g} h"
        if finding.run_id:
            what, command = (
                f"end training run {finding.run_id} on {finding.resource_id}",
                f"mlp train destroy {finding.run_id} --apply",
            )
        else:
            what, command = f"stop {finding.resource_id}", None
        items.append(
            ActionItem(
                "idle",
                finding.resource_id,
                finding.account_id,
                finding.region,
                owner,
                source,
                monthly,
                f"{_ask(owner, finding.tags.get(TEAM))} {what} ({finding.instance_type}, its GPU idle for "
                f"{hours}): {_per_month(monthly)}",
                command,
            )
        )
    billed = {row["arn"]: row for row in untagged_spend}
    for finding in untagged:
        owner, source = _owner(finding.tags, owners)
        row = billed.get(finding.arn)
        daily = row["billed_usd"] / period_days if row and period_days else None
        monthly = None if daily is None else round(daily * HOURS_PER_MONTH / 24, 2)
        missing = ", ".join(finding.missing_tags)
        items.append(
            ActionItem(
                "untagged",
                finding.arn,
                finding.account_id,
                finding.region,
                owner,
                source,
                monthly,
                f"{_ask(owner, finding.tags.get(TEAM))} tag {finding.resource_type} {_short_id(finding.arn)} "
                f"with {missing}" + (f": {_per_month(monthly)} nobody is charged for" if monthly else ""),
                # Only billed dollars are worth a clause: "$0.00/month nobody is charged for" says nothing.
                None,
            )
        )
    for leftover in leftovers:
        tags = leftover.get("tags") or {}
        owner, source = _owner(tags, owners)
        monthly = round(float(leftover.get("hourly_cost_usd") or 0.0) * HOURS_PER_MONTH, 2)
        items.append(
            ActionItem(
                "leftover",
                str(leftover["run_id"]),
                str(leftover.get("account_id", "")),
                "",
                owner,
                source,
                monthly,
                f"{_ask(owner, tags.get(TEAM))} confirm training run {leftover['run_id']} is over; the reaper "
                f"destroys what it still owns: {_per_month(monthly)}",
                "mlp reap --apply",
            )
        )
    return sorted(items, key=lambda item: -(item.monthly_usd or 0.0))
