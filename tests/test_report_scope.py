"""The nightly report over several accounts, against moto in-process: what it scanned, and what it did not.

The accounts are moto's (a payer and two members reached through their role, as in
`tests.test_scan_scope`); spend comes from the Cost Explorer emulator over line items made here, so
every dollar expected is computed by hand from them.
"""

# The `organization` fixture is tests.test_scan_scope's, imported: each test's parameter names it.
# ruff: noqa: F401, F811
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from moto.ec2.exceptions import EC2ClientError

from finops import costs, report
from finops.costs import CostView, Spend
from finops.findings import Report
from finops.sandbox.cost_explorer import CostExplorerEmulator, LineItem
from finops.scope import ScanScope, load_accounts_file, resolve_scope
from tests.test_costs import EmulatedCostExplorer, SleepRecorder, full_tags
from tests.test_scan_scope import Organization, organization, refuse_describe_instances, run_mlp

DAYS = 2
SCANNED = "us-east-1"
NOT_SCANNED = "us-west-2"
# Per day of the period: the scanned region, the one left out, and spend of no region at all.
DAILY_USD = {SCANNED: 100.25, NOT_SCANNED: 130.06, "global": 4.5}


def line_items(today: date) -> list[LineItem]:
    return [
        LineItem(
            day=today - timedelta(days=offset),
            service="Amazon Elastic Compute Cloud - Compute" if region != "global" else "AWS Support",
            region=region,
            purchase_type="On Demand Instances",
            instance_type="g5.xlarge" if region != "global" else None,
            linked_account="123456789012",
            tags=full_tags("vision", "dev"),
            unblended_cost=usd,
            amortized_cost=usd,
            usage_quantity=24.0,
        )
        for offset in range(1, 2 * DAYS + 1)
        for region, usd in DAILY_USD.items()
    ]


@dataclass(frozen=True)
class EmulatedSource:
    """A `CostSource` answering from the Cost Explorer emulator over `line_items(today)`."""

    now: datetime
    name: str = "Cost Explorer"

    def read(
        self,
        start: date,
        end: date,
        *,
        mandatory_tags: Sequence[str],
        on_view: Callable[[CostView], None],
    ) -> Spend:
        emulator = CostExplorerEmulator()
        emulator.load(line_items(self.now.date()), self.now)
        reader = costs.CostExplorerReader(EmulatedCostExplorer(emulator), sleep=SleepRecorder())
        return costs.read_spend(reader, start, end, mandatory_tags=mandatory_tags)

    def forecast(self, start: date, end: date, spend: Spend) -> None:
        """No forecast: the report states its run rate (the forecast has tests of its own)."""
        return None


def two_member_scope(organization: Organization, tmp_path: Path) -> ScanScope:
    accounts = load_accounts_file(organization.accounts_file(tmp_path / "accounts.yaml"))
    return resolve_scope(accounts, [SCANNED])


def nightly(scope: ScanScope, out: Path) -> Report:
    now = datetime.now(UTC)
    return report.run_nightly(DAYS, out, scope=scope, source=EmulatedSource(now), now=now, concurrency=4)


def test_each_accounts_findings_carry_their_account_and_the_scope(
    organization: Organization, tmp_path: Path
) -> None:
    dev_idle = organization.dev.idle_gpus(SCANNED)
    prod_idle = organization.prod.idle_gpus(SCANNED)
    volume = organization.prod.untagged_volume(SCANNED)
    elsewhere = organization.dev.idle_gpus(NOT_SCANNED)

    built = nightly(two_member_scope(organization, tmp_path), tmp_path / "out")

    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert "missing" not in findings
    assert {(item["account_id"], item["account_name"], item["resource_id"]) for item in findings["idle"]} == {
        *((organization.dev.account_id, "dev", instance_id) for instance_id in dev_idle),
        *((organization.prod.account_id, "prod", instance_id) for instance_id in prod_idle),
    }
    assert not set(elsewhere) & {item["resource_id"] for item in findings["idle"]}
    [untagged] = [item for item in findings["untagged"] if item["arn"].endswith(volume)]
    assert (untagged["account_id"], untagged["account_name"]) == (organization.prod.account_id, "prod")
    assert findings["scope"] == {
        "accounts": [
            {"account_id": member.account_id, "name": member.name, "regions": [SCANNED]}
            for member in organization.members
        ],
        "regions": [SCANNED],
        "gaps": [],
        "skipped": [],
    }
    assert findings == json.loads(json.dumps(built.findings, default=str))

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"Scanned 3 accounts x 1 region ({SCANNED})." in markdown
    [row] = [line for line in markdown.splitlines() if line.startswith(f"| {prod_idle[0]} ")]
    assert row.startswith(f"| {prod_idle[0]} | prod | {SCANNED} |")
    html = (tmp_path / "out" / "index.html").read_text()
    assert f"Scanned 3 accounts x 1 region ({SCANNED})" in html
    assert f'<td class="id"><code>{dev_idle[0]}</code></td><td>dev</td>' in html


def test_a_failed_account_region_is_a_missing_part_naming_it_and_the_rest_is_reported(
    organization: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization.dev.idle_gpus(SCANNED)
    kept = organization.prod.idle_gpus(SCANNED)
    refuse_describe_instances(
        monkeypatch,
        organization.dev.account_id,
        SCANNED,
        EC2ClientError("UnauthorizedOperation", "refused in this test"),
    )

    built = nightly(two_member_scope(organization, tmp_path), tmp_path / "out")

    findings = built.findings
    where = f"account {organization.dev.account_id} (dev) {SCANNED}"
    missing = {part["part"]: part for part in findings["missing"]}
    assert set(missing) == {
        f"idle GPUs in {where}",
        f"untagged resources in {where}",
        f"expired training-run leftovers in {where}",
        f"training runs in {where}",
    }
    idle_part = missing[f"idle GPUs in {where}"]
    assert (idle_part["scan"], idle_part["account_id"], idle_part["account_name"], idle_part["region"]) == (
        "idle",
        organization.dev.account_id,
        "dev",
        SCANNED,
    )
    assert idle_part["reason"] == "UnauthorizedOperation: refused in this test"
    assert {item["resource_id"] for item in findings["idle"]} == set(kept)
    assert {item["account_id"] for item in findings["untagged"]} <= {
        organization.payer.account_id,
        organization.prod.account_id,
    }
    [gap] = findings["scope"]["gaps"]
    assert (gap["account_id"], gap["region"]) == (organization.dev.account_id, SCANNED)
    assert findings["spend"]["total_usd"] is not None
    assert built.scan_note("idle") == f"n/a: dev {SCANNED} access denied"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"Scanned 3 accounts x 1 region ({SCANNED}); not scanned: {where}: " in markdown


def test_spend_in_a_region_not_scanned_is_called_out_with_its_dollars(
    organization: Organization, tmp_path: Path
) -> None:
    built = nightly(two_member_scope(organization, tmp_path), tmp_path / "out")

    # Two days of the period at $130.06 a day in us-west-2; the global $4.50 a day is no region.
    assert built.findings["unscanned_spend"] == [{"region": NOT_SCANNED, "usd": 260.12}]
    assert built.findings["spend"]["by_region"] == {SCANNED: 200.5, NOT_SCANNED: 260.12, "global": 9.0}
    assert "**$260.12 in us-west-2, not scanned.**" in (tmp_path / "out" / "report.md").read_text()
    assert (
        '<p class="gap">$260.12 in us-west-2, not scanned</p>'
        in (tmp_path / "out" / "index.html").read_text()
    )


def test_no_spend_outside_the_scope_calls_nothing_out(organization: Organization, tmp_path: Path) -> None:
    accounts = load_accounts_file(organization.accounts_file(tmp_path / "accounts.yaml"))
    scope = resolve_scope(accounts, [SCANNED, NOT_SCANNED])

    built = nightly(scope, tmp_path / "out")

    assert built.findings["unscanned_spend"] == []
    assert "not scanned" not in (tmp_path / "out" / "report.md").read_text()


def test_mlp_report_takes_the_scope_options_and_exits_1_on_a_gap(
    organization: Organization,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        "finops.cost_source.choose_cost_source", lambda *args, **kwargs: EmulatedSource(datetime.now(UTC))
    )
    refuse_describe_instances(
        monkeypatch,
        organization.prod.account_id,
        SCANNED,
        EC2ClientError("Throttling", "refused in this test"),
    )
    accounts = str(organization.accounts_file(tmp_path / "accounts.yaml"))

    code, stdout, stderr = run_mlp(
        capsys, "report", "--days", str(DAYS), "--out", str(tmp_path / "out"), "--no-cache",
        "--accounts", accounts, "--regions", SCANNED, "--concurrency", "2",
    )  # fmt: skip

    assert code == 1, stderr
    where = f"account {organization.prod.account_id} (prod) {SCANNED}"
    assert f"  Scanned 3 accounts x 1 region ({SCANNED}); not scanned: {where}: Throttling" in stdout
    assert f"  $260.12 in {NOT_SCANNED}, not scanned" in stdout
    assert f"mlp: warning: idle GPUs in {where} is missing from the report" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency 0"),
        (["--regions", "mars"], "--regions"),
        (["--accounts", "accounts.yaml", "--org-role", "FinOpsReadOnly"], "pass one of them"),
    ],
)
def test_bad_scope_options_are_one_line_exit_2(
    organization: Organization,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    organization.accounts_file(tmp_path / "accounts.yaml")

    code, stdout, stderr = run_mlp(capsys, "report", "--out", str(tmp_path / "out"), "--no-cache", *args)

    assert code == 2
    assert stdout == ""
    assert stderr.startswith("mlp: error: ") and message in stderr and stderr.count("\n") == 1
