"""The human view of a plan: resource counts by type and mandatory-tag coverage."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from infra.tagging import is_taggable, untagged_in_plan


@dataclass(frozen=True)
class PlanSummary:
    counts_by_type: list[tuple[str, int]]
    taggable: int
    fully_tagged: int
    gaps: list[dict[str, Any]]
    estimated_monthly_cost_usd: float

    @property
    def coverage_pct(self) -> float:
        return 100.0 if not self.taggable else round(100.0 * self.fully_tagged / self.taggable, 1)


def summarize(plan: dict[str, Any], required_tags: tuple[str, ...] | list[str]) -> PlanSummary:
    resources = plan["resources"]
    counts = Counter(item["type"] for item in resources)
    taggable = [item for item in resources if item.get("custom") and is_taggable(item["type"])]
    gaps = untagged_in_plan(resources, required_tags)
    gap_urns = {gap["urn"] for gap in gaps}
    return PlanSummary(
        counts_by_type=sorted(counts.items()),
        taggable=len(taggable),
        fully_tagged=sum(1 for item in taggable if item["urn"] not in gap_urns),
        gaps=gaps,
        estimated_monthly_cost_usd=plan["estimated_monthly_cost_usd"],
    )
