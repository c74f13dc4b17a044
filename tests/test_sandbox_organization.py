"""The sandbox as an AWS Organization: the scope of `--org-role` covers the payer and both members,
each target acts in its own account, and the scans find exactly what was seeded where."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finops import idle, inventory
from finops.sandbox import OrganizationManifest, Sandbox, SeedManifest, organization, seed_account
from finops.scope import ScanScope, organization_accounts, resolve_scope, run_targets
from mlp import aws
from tests.sandbox_fixtures import process_env, sandbox_fixture  # noqa: F401

MLP = str(Path(sys.executable).parent / "mlp")
ORG_REGIONS = ",".join(organization.REGIONS)


@pytest.fixture(scope="module")
def manifest(sandbox: Sandbox) -> SeedManifest:
    return seed_account(sandbox, now=datetime.now(UTC), member_spend=True)


@pytest.fixture(autouse=True)
def sandbox_aws(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's AWS environment pointed at the sandbox (conftest points it nowhere per test)."""
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def org(manifest: SeedManifest) -> OrganizationManifest:
    return manifest.organization


@pytest.fixture
def org_scope(org: OrganizationManifest) -> ScanScope:
    """What `--org-role FinOpsReadOnly` resolves to: every account x every region enabled for it."""
    return resolve_scope(organization_accounts(org.scan_role_name, org.payer_account_id), None)


def seeded_arns(manifest: SeedManifest) -> dict[tuple[str, str], set[str]]:
    """(account, region) -> the ARNs seeded there, in the payer and in each member."""
    expected: dict[tuple[str, str], set[str]] = defaultdict(set)
    for resource in manifest.resources:
        expected[(manifest.account_id, resource.region)].add(resource.arn)
    for member in manifest.organization.members:
        for resource in member.resources:
            expected[(member.account_id, resource.region)].add(resource.arn)
    return expected


def test_organization_scope_is_three_accounts_by_their_enabled_regions(
    sandbox: Sandbox, org: OrganizationManifest, org_scope: ScanScope
) -> None:
    described = sandbox.client("ec2").describe_regions(AllRegions=True)["Regions"]
    # The sandbox lists China and GovCloud regions as enabled too; a scan stays in its own partition.
    enabled = sorted(
        r["RegionName"]
        for r in described
        if r["OptInStatus"] != "not-opted-in" and not r["RegionName"].startswith(("cn-", "us-gov-"))
    )

    assert org_scope.gaps == []
    assert org_scope.accounts[0].account_id == org.payer_account_id
    assert sorted(account.account_id for account in org_scope.accounts) == sorted(org.account_ids)
    assert len(set(org.account_ids)) == 3
    for account in org_scope.accounts:
        assert org_scope.regions_of(account.account_id) == enabled
    assert set(organization.REGIONS) <= set(enabled)
    members = {account.account_id: account for account in org_scope.accounts[1:]}
    assert {member_id: members[member_id].name for member_id in members} == {
        member.account_id: member.name for member in org.members
    }
    assert {member_id: members[member_id].role_arn for member_id in members} == {
        member.account_id: member.role_arn for member in org.members
    }
    assert org_scope.accounts[0].role_arn is None


def test_each_target_acts_in_its_own_account(org: OrganizationManifest, org_scope: ScanScope) -> None:
    identities = run_targets(
        org_scope,
        lambda target: aws.client("sts", target.region, session=target.session).get_caller_identity(),
    )

    assert identities.gaps == []
    assert len(identities.results) == len(org_scope.targets)
    for target, identity in identities.results:
        assert identity["Account"] == target.account_id
        # moto enables its aws-cn regions too, where STS does not know the role's session: the
        # account is right there, the ARN is moto's placeholder user.
        if target.account_id != org.payer_account_id and target.region in organization.REGIONS:
            assert f":assumed-role/{org.scan_role_name}/" in identity["Arn"]


def test_inventory_of_each_target_is_exactly_its_accounts_seed(manifest: SeedManifest) -> None:
    org = manifest.organization
    scope = resolve_scope(organization_accounts(org.scan_role_name, org.payer_account_id), org.regions)
    kinds = [resource_type.kind for resource_type in inventory.untagged_scan_types()]

    found = run_targets(scope, lambda target: inventory.scan_scope(kinds, target, with_global=False))

    assert found.gaps == []
    assert len(found.results) == 3 * len(org.regions)
    expected = seeded_arns(manifest)
    for target, resources in found.results:
        where = (target.account_id, target.region)
        assert {resource.arn for resource in resources} == expected.get(where, set()), where
        assert {resource.account_id for resource in resources} <= {target.account_id}
    members_by_region = {(m.account_id, region) for m in org.members for region in m.regions}
    assert all(expected[where] for where in members_by_region)


def test_idle_scan_of_the_organization_finds_each_accounts_idle_gpus(manifest: SeedManifest) -> None:
    org = manifest.organization
    scope = resolve_scope(organization_accounts(org.scan_role_name, org.payer_account_id), org.regions)

    scan = idle.scan_idle(scope, concurrency=4)

    assert scan.scope.gaps == []
    wanted = {(manifest.account_id, instance_id) for instance_id in manifest.idle_instance_ids} | {
        (member.account_id, instance_id) for member in org.members for instance_id in member.idle_instance_ids
    }
    assert {(finding.account_id, finding.resource_id) for finding in scan.findings} == wanted
    assert {finding.account_id for finding in scan.findings} == set(org.account_ids)


def test_cost_explorer_by_linked_account_holds_each_members_spend(
    sandbox: Sandbox, manifest: SeedManifest
) -> None:
    first, last = manifest.spend_days
    end = last + timedelta(days=1)
    ce = sandbox.client("ce")
    totals: dict[str, float] = defaultdict(float)
    token: dict[str, str] = {}
    while True:
        page = ce.get_cost_and_usage(
            TimePeriod={"Start": first.isoformat(), "End": end.isoformat()},
            Granularity="MONTHLY",
            Metrics=["UnblendedCost"],
            GroupBy=[{"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}],
            **token,
        )
        for result in page["ResultsByTime"]:
            for group in result["Groups"]:
                totals[group["Keys"][0]] += float(group["Metrics"]["UnblendedCost"]["Amount"])
        if not page.get("NextPageToken"):
            break
        token = {"NextPageToken": page["NextPageToken"]}

    wanted: dict[str, float] = defaultdict(float)
    for item in manifest.line_items:
        wanted[item.linked_account] += item.unblended_cost
    assert set(totals) == set(manifest.organization.account_ids)
    for account_id, amount in wanted.items():
        assert totals[account_id] == pytest.approx(amount, rel=1e-6), account_id
    for member in manifest.organization.members:
        assert wanted[member.account_id] == pytest.approx(sum(i.unblended_cost for i in member.line_items))
        assert wanted[member.account_id] > 0


@pytest.mark.e2e
def test_mlp_untagged_with_org_role_reports_every_accounts_untagged(
    sandbox: Sandbox, manifest: SeedManifest
) -> None:
    org = manifest.organization
    result = subprocess.run(
        [MLP, "untagged", "--org-role", org.scan_role_name, "--regions", ORG_REGIONS, "--format", "json"],
        capture_output=True,
        text=True,
        env=process_env(sandbox),
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    reported = {(finding["account_id"], finding["arn"]) for finding in payload["findings"]}
    wanted = {(manifest.account_id, resource.arn) for resource in manifest.untagged} | {
        (member.account_id, resource.arn) for member in org.members for resource in member.untagged
    }
    assert reported == wanted
    assert sorted(account["account_id"] for account in payload["scope"]["accounts"]) == sorted(
        org.account_ids
    )
    assert payload["scope"]["gaps"] == []


@pytest.mark.e2e
def test_mlp_idle_with_org_role_reports_every_accounts_idle_gpus(
    sandbox: Sandbox, manifest: SeedManifest
) -> None:
    org = manifest.organization
    result = subprocess.run(
        [MLP, "idle", "--org-role", org.scan_role_name, "--regions", ORG_REGIONS, "--format", "json"],
        capture_output=True,
        text=True,
        env=process_env(sandbox),
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)["findings"]
    by_account: dict[str, set[str]] = defaultdict(set)
    for finding in findings:
        by_account[finding["account_id"]].add(finding["resource_id"])
    assert by_account == {
        manifest.account_id: set(manifest.idle_instance_ids),
        **{member.account_id: set(member.idle_instance_ids) for member in org.members},
    }
