"""Resources missing mandatory cost tags, including resources that were never tagged.

The kinds checked are the inventory registry's `untagged_scan` declarations. The registry lists every
kind with its own service's describe/list call: the Resource Groups Tagging API never returns
never-tagged resources, so it cannot be what decides which resources exist. Every account and region
of a scope is one target (`finops.scope`); global kinds are listed once per account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from finops import inventory
from finops.scope import DEFAULT_CONCURRENCY, Gap, ScanScope, run_targets, single_account_scope
from mlp import aws
from mlp.tags import DEFAULT_MANDATORY_TAGS, missing_tags


@dataclass(frozen=True)
class UntaggedFinding:
    arn: str
    resource_type: str  # the registry's kind, e.g. "ec2:instance"
    region: str
    missing_tags: tuple[str, ...]
    account_id: str = ""
    account_name: str = ""
    # The tags it does carry: an `owner` or `team` among them says whom to ask.
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "resource_type": self.resource_type,
            "account_id": self.account_id,
            "account_name": self.account_name,
            "region": self.region,
            "missing_tags": list(self.missing_tags),
            "tags": dict(self.tags),
        }


@dataclass
class UntaggedScan:
    """The untagged scan of a scope; `scope.gaps` names the accounts and account-regions not scanned."""

    required_tags: list[str]
    findings: list[UntaggedFinding] = field(default_factory=list)
    resources_scanned: int = 0
    scope: ScanScope = field(default_factory=lambda: ScanScope(targets=[], accounts=[]))

    @property
    def gaps(self) -> list[Gap]:
        return self.scope.gaps

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.to_json(),
            "required_tags": list(self.required_tags),
            "findings": [finding.to_json() for finding in self.findings],
        }


def scan_untagged(
    scope: ScanScope | Sequence[str],
    required_tags: Iterable[str] = DEFAULT_MANDATORY_TAGS,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[inventory.Scope, bool], None] | None = None,
    on_listed: Callable[[int], None] | None = None,
) -> UntaggedScan:
    """Every resource of the registry's untagged-scan kinds in `scope` that lacks one of `required_tags`.

    Targets run `concurrency` at a time; one that fails is a gap of the result's scope, the others'
    findings stay. `on_done(target, succeeded)` follows the targets, `on_listed(n)` the resources each
    target listed. A list of regions instead of a scope scans those regions of the caller's account
    one by one, and a failure raises, as the callers that still pass regions expect.
    """
    required = list(required_tags)
    kinds = [resource_type.kind for resource_type in inventory.untagged_scan_types()]
    chosen = scope if isinstance(scope, ScanScope) else single_account_scope(scope)

    def scan_target(target: inventory.Scope) -> list[inventory.Resource]:
        resources = inventory.scan_scope(kinds, target, with_global=chosen.first_region_of(target))
        if on_listed is not None:
            on_listed(len(resources))
        return resources

    if isinstance(scope, ScanScope):
        gathered = run_targets(chosen, scan_target, concurrency=concurrency, on_done=on_done)
        listed = gathered.results
        covered = replace(chosen, gaps=[*chosen.gaps, *gathered.gaps])
    else:
        listed = []
        for target in chosen.targets:
            with aws.aws_errors("scanning for untagged resources"):
                listed.append((target, scan_target(target)))
        covered = chosen
    scan = UntaggedScan(required_tags=required, scope=covered)
    for target, resources in listed:
        scan.resources_scanned += len(resources)
        for resource in resources:
            missing = missing_tags(resource.tags, required)
            if missing:
                scan.findings.append(
                    UntaggedFinding(
                        resource.arn,
                        resource.kind,
                        resource.region,
                        tuple(missing),
                        account_id=target.account_id,
                        account_name=target.account_name,
                        tags=dict(resource.tags),
                    )
                )
    scan.findings.sort(
        key=lambda finding: (finding.account_id, finding.region, finding.resource_type, finding.arn)
    )
    return scan
