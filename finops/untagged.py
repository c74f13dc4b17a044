"""Resources missing mandatory cost tags, including resources that were never tagged.

The kinds checked are the inventory registry's `untagged_scan` declarations. The registry lists every
kind with its own service's describe/list call: the Resource Groups Tagging API never returns
never-tagged resources, so it cannot be what decides which resources exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from finops import inventory
from mlp import aws
from mlp.tags import DEFAULT_MANDATORY_TAGS, missing_tags


@dataclass(frozen=True)
class UntaggedFinding:
    arn: str
    resource_type: str  # the registry's kind, e.g. "ec2:instance"
    region: str
    missing_tags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "resource_type": self.resource_type,
            "region": self.region,
            "missing_tags": list(self.missing_tags),
        }


@dataclass
class UntaggedScan:
    required_tags: list[str]
    findings: list[UntaggedFinding] = field(default_factory=list)
    resources_scanned: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "required_tags": list(self.required_tags),
            "findings": [finding.to_json() for finding in self.findings],
        }


def scan_untagged(
    regions: Sequence[str], required_tags: Iterable[str] = DEFAULT_MANDATORY_TAGS
) -> UntaggedScan:
    """Every resource of the registry's untagged-scan kinds in `regions` that lacks one of `required_tags`."""
    required = list(required_tags)
    scan = UntaggedScan(required_tags=required)
    kinds = [resource_type.kind for resource_type in inventory.untagged_scan_types()]
    with aws.aws_errors("scanning for untagged resources"):
        account_id = aws.client("sts", regions[0]).get_caller_identity()["Account"]
        resources = inventory.scan(kinds, regions, account_id)
    scan.resources_scanned = len(resources)
    for resource in resources:
        missing = missing_tags(resource.tags, required)
        if missing:
            scan.findings.append(
                UntaggedFinding(resource.arn, resource.kind, resource.region, tuple(missing))
            )
    scan.findings.sort(key=lambda finding: (finding.region, finding.resource_type, finding.arn))
    return scan
