"""The report's FOCUS 1.2 file: one non-overlapping grain, every mandatory column, the validator's verdict.

Unit tests build a small Spend by hand (overlapping views, a global service, tax, two billing months)
and a small FOCUS-export line-items frame; the FinOps Foundation's `focus-validator` (installed by
`make scanners`) runs once per written file; the end-to-end tests write real reports of the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from finops import costs, focus, focus_file, report
from finops.analysis import Period, analyze_spend, report_period
from finops.cost_source import FocusExportSource
from finops.demo import sandbox_environment
from finops.sandbox import Sandbox, SeedManifest, focus_export
from finops.scope import single_account_scope
from mlp.tags import ENVIRONMENT, TEAM
from tests.sandbox_fixtures import sandbox_fixture, seeded_fixture  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
VALIDATOR_ENV = "MLP_FOCUS_VALIDATOR"
DEFAULT_VALIDATOR = REPO_ROOT / ".venv" / "scanners" / "focus" / "bin" / "focus-validator"
ACCOUNT = "123456789012"
PERIOD = Period(date(2026, 10, 29), date(2026, 11, 3))
EC2 = "Amazon Elastic Compute Cloud - Compute"
TAG_VIEW = f"tags:{TEAM}+{ENVIRONMENT}"

# FOCUS 1.2 columns the spec makes mandatory for every dataset, and those of them never null.
MANDATORY_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
)
NULLABLE_MANDATORY = {"ChargeClass", "PricingQuantity", "PricingUnit"}

# (day, view, service, region, billed, amortized): the views overlap, as Cost Explorer's do.
CHARGES = [
    (date(2026, 10, 28), costs.SERVICE_REGION_VIEW, EC2, "us-east-1", 100.0, 90.0),  # before the period
    (date(2026, 10, 30), costs.SERVICE_REGION_VIEW, EC2, "us-east-1", 10.25, 9.0),
    (date(2026, 10, 31), costs.SERVICE_REGION_VIEW, "Amazon Route 53", "global", 1.5, 1.5),
    (date(2026, 10, 31), costs.SERVICE_REGION_VIEW, focus_file.TAX_SERVICE, "NoRegion", 2.1, 2.1),
    (date(2026, 11, 1), costs.SERVICE_REGION_VIEW, "EC2 - Other", "us-west-2", 3.333, 3.333),
    (date(2026, 11, 2), costs.SERVICE_REGION_VIEW, "Amazon ElastiCache", "us-east-1", 0.1, 0.1),
    (date(2026, 11, 2), costs.SERVICE_REGION_VIEW, "Brand New Service", "us-east-1", 0.2, 0.2),
    (date(2026, 11, 3), costs.SERVICE_REGION_VIEW, EC2, "us-east-1", 50.0, 45.0),  # the end is exclusive
    (date(2026, 10, 30), TAG_VIEW, None, None, 10.25, 9.0),
    (date(2026, 11, 1), TAG_VIEW, None, None, 7.133, 7.133),
    (date(2026, 10, 30), costs.PURCHASE_VIEW, None, None, 10.25, 9.0),
]
# By hand: 10.25 + 1.5 + 2.1 + 3.333 + 0.1 + 0.2, the service+region rows of the period only.
PERIOD_TOTAL_USD = 17.48


def hand_made_spend() -> costs.Spend:
    rows = []
    for day, view, service, region, billed, amortized in CHARGES:
        row: dict[str, Any] = {
            "ChargePeriodStart": day,
            "x_CostView": view,
            "x_Estimated": day >= date(2026, 11, 2),
            "BilledCost": billed,
            "EffectiveCost": amortized,
            "BillingCurrency": "USD",
            "Tags": "{}",
        }
        if view == costs.SERVICE_REGION_VIEW:
            row |= {"ServiceName": service, "RegionId": region}
        elif view == TAG_VIEW:
            row |= {costs.tag_column(TEAM): "vision", costs.tag_column(ENVIRONMENT): "dev"}
        else:
            row |= {"x_PurchaseType": "On Demand Instances", "x_InstanceType": "g5.xlarge"}
        rows.append(row)
    tags = (TEAM, ENVIRONMENT)
    return costs.Spend(
        start=PERIOD.fetch_start,
        end=PERIOD.end,
        mandatory_tags=tags,
        frame=costs.focus_frame(rows, tags),
        complete_views={costs.SERVICE_REGION_VIEW, TAG_VIEW, costs.PURCHASE_VIEW},
    )


def line_item(day: date, service: str, region: str | None, billed: float, **columns: Any) -> dict[str, Any]:
    """One FOCUS 1.2 row the way an AWS FOCUS export has it (hourly EC2 usage unless told otherwise)."""
    start = pd.Timestamp(day, tz=UTC)
    month, next_month = focus_file.billing_period(start)
    return {
        "BilledCost": billed,
        "BillingAccountId": ACCOUNT,
        "BillingAccountName": "ml-platform",
        "BillingCurrency": "USD",
        "BillingPeriodEnd": next_month,
        "BillingPeriodStart": month,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{service} usage",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": start + pd.Timedelta(days=1),
        "ChargePeriodStart": start,
        "ConsumedQuantity": 24.0,
        "ConsumedUnit": "Hours",
        "ContractedCost": billed,
        "EffectiveCost": billed,
        "InvoiceIssuerName": focus_file.AWS,
        "ListCost": billed,
        "PricingCategory": "Standard",
        "PricingQuantity": 24.0,
        "PricingUnit": "Hours",
        "ProviderName": focus_file.AWS,
        "PublisherName": focus_file.AWS,
        "RegionId": region,
        "RegionName": focus_file.REGION_NAMES.get(region) if region else None,
        "ServiceCategory": focus_file.service_category(service)[0],
        "ServiceName": service,
        "ServiceSubcategory": focus_file.service_category(service)[1],
        "Tags": json.dumps({TEAM: "vision"}),
        "x_Operation": "RunInstances",
        **columns,
    }


def hand_made_line_items() -> pd.DataFrame:
    return pd.DataFrame(
        [
            line_item(date(2026, 10, 28), EC2, "us-east-1", 99.0),  # before the period
            line_item(date(2026, 10, 30), EC2, "us-east-1", 24.144),
            line_item(date(2026, 11, 1), EC2, "us-west-2", 12.0, x_Operation="RunInstances:SV001"),
            line_item(date(2026, 11, 2), "Amazon Route 53", None, 0.5, PricingUnit="Queries",
                      ConsumedUnit="Queries", PricingQuantity=1e6, ConsumedQuantity=1e6),
            line_item(date(2026, 11, 3), EC2, "us-east-1", 7.0),  # the end is exclusive
        ]
    )  # fmt: skip


# --- The validator ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOutcome:
    rule_id: str
    check: str  # "Type", "Nullability", ..., "Composite"
    outcome: str  # "failure" or "error"
    message: str


@dataclass(frozen=True)
class Validation:
    path: Path
    rules_run: int
    failed: list[RuleOutcome]

    @property
    def failed_rules(self) -> set[str]:
        return {outcome.rule_id for outcome in self.failed}

    def failed_mandatory(self, *, ignore: frozenset[str] = frozenset()) -> list[str]:
        """Mandatory (-M) rules that failed, but not those only failing for an absent optional column.

        A composite fails when any of its parts does, SHOULD and conditional parts too; each mandatory
        part is a rule of its own here, so composites are left out.
        """
        return sorted(
            {
                outcome.rule_id
                for outcome in self.failed
                if outcome.rule_id.endswith("-M")
                and outcome.check != "Composite"
                and outcome.rule_id not in ignore
                and not ABSENT_OPTIONAL_COLUMN.search(outcome.message)
            }
        )


# An optional column's rules (e.g. InvoiceId-C-001-M) report an error when the column is not there.
ABSENT_OPTIONAL_COLUMN = re.compile(r"Upstream dependency failed: CostAndUsage-D-\d+-O\b")
# CSV has no types: the validator infers a 12-digit account id as an integer. The Parquet file
# carries it as a string and is held to these rules.
CSV_INFERRED_ACCOUNT_TYPE_RULES = frozenset(
    {"BillingAccountId-C-000-M", "BillingAccountId-C-002-M", "BillingAccountName-C-001-M"}
)


def validator_binary() -> Path:
    configured = os.environ.get(VALIDATOR_ENV)
    binary = Path(configured) if configured else DEFAULT_VALIDATOR
    if not binary.is_file():
        pytest.skip(f"focus-validator not found at {binary}: run `make scanners` or set ${VALIDATOR_ENV}")
    return binary


def run_validator(path: Path, workdir: Path) -> Validation:
    """focus-validator 2.2.1 over one file, offline, against its bundled FOCUS 1.2 rules."""
    binary = validator_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    # It opens its currency codes by a path relative to the working directory, and logs there.
    for package in binary.parent.parent.glob("lib/python*/site-packages/focus_validator"):
        (workdir / "focus_validator").symlink_to(package)
    results = workdir / f"{path.name}.xml"
    completed = subprocess.run(
        [str(binary), "--data-file", str(path), "--validate-version", "1.2", "--block-download",
         "--output-type", "unittest", "--output-destination", str(results)],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0 and results.is_file(), completed.stderr[-3000:]
    suites = ET.parse(results).getroot()
    failed = [
        RuleOutcome(*case.get("name", "").partition(" :: ")[::2], verdict.tag, verdict.get("message", ""))
        for case in suites.iter("testcase")
        for verdict in case
        if verdict.tag in {"failure", "error"}
    ]
    return Validation(path=path, rules_run=int(suites.get("tests", "0")), failed=failed)


def assert_focus_valid(validation: Validation) -> None:
    csv_leniency = CSV_INFERRED_ACCOUNT_TYPE_RULES if validation.path.suffix == ".csv" else frozenset()
    failed = validation.failed_mandatory(ignore=csv_leniency)
    assert validation.rules_run > 500, f"the validator ran only {validation.rules_run} rules"
    assert not failed, f"{validation.path.name} fails mandatory FOCUS 1.2 rules: {', '.join(failed)}"


def validations(out: Path, workdir: Path) -> dict[str, Validation]:
    return {name: run_validator(out / name, workdir / name) for name in focus_file.FOCUS_FILE_NAMES}


# --- Cost Explorer source ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cost_explorer_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ce-focus")
    dataset = focus_file.focus_dataset(
        hand_made_spend(), PERIOD.start, PERIOD.end, billing_account_id=ACCOUNT
    )
    focus_file.write_focus_files(dataset, out)
    return out


@pytest.fixture(scope="module")
def cost_explorer_rows(cost_explorer_out: Path) -> pd.DataFrame:
    return pd.read_parquet(cost_explorer_out / focus_file.PARQUET_NAME)


def test_billed_cost_sums_to_the_period_total_once(cost_explorer_rows: pd.DataFrame) -> None:
    spend = hand_made_spend()
    analysis = analyze_spend(spend, PERIOD)

    assert round(cost_explorer_rows["BilledCost"].sum(), 2) == PERIOD_TOTAL_USD
    assert round(analysis.total_usd, 2) == PERIOD_TOTAL_USD
    assert set(cost_explorer_rows["x_CostView"]) == {costs.SERVICE_REGION_VIEW}
    assert len(cost_explorer_rows) == 6


def test_csv_and_parquet_hold_the_same_rows(
    cost_explorer_out: Path, cost_explorer_rows: pd.DataFrame
) -> None:
    csv = pd.read_csv(cost_explorer_out / focus_file.CSV_NAME, dtype={"BillingAccountId": str})

    assert list(csv.columns) == list(cost_explorer_rows.columns)
    assert csv["BilledCost"].tolist() == cost_explorer_rows["BilledCost"].tolist()
    assert csv["ChargePeriodStart"].iloc[0] == "2026-10-30T00:00:00Z"
    assert (csv["BillingAccountId"] == ACCOUNT).all()


def test_every_mandatory_column_is_present_and_filled(cost_explorer_rows: pd.DataFrame) -> None:
    assert set(MANDATORY_COLUMNS) <= set(cost_explorer_rows.columns)
    for column in set(MANDATORY_COLUMNS) - NULLABLE_MANDATORY:
        assert cost_explorer_rows[column].notna().all(), column
    assert (
        (cost_explorer_rows[["ProviderName", "PublisherName", "InvoiceIssuerName"]] == focus_file.AWS)
        .all()
        .all()
    )
    assert (cost_explorer_rows["BillingAccountId"] == ACCOUNT).all()
    assert cost_explorer_rows["ChargeClass"].isna().all()
    # Extension columns come after every FOCUS column, with the x_ prefix.
    columns = list(cost_explorer_rows.columns)
    custom = [column for column in columns if not column[0].isupper()]
    assert all(column.startswith("x_") for column in custom)
    assert columns[-len(custom) :] == custom


def test_service_category_region_and_charge_category(cost_explorer_rows: pd.DataFrame) -> None:
    by_service = cost_explorer_rows.set_index("ServiceName")

    assert by_service.loc[EC2, "ServiceCategory"] == "Compute"
    assert by_service.loc["EC2 - Other", "ServiceCategory"] == "Storage"
    assert by_service.loc["Amazon ElastiCache", "ServiceCategory"] == "Databases"
    assert by_service.loc["Brand New Service", "ServiceCategory"] == "Other"
    assert pd.isna(by_service.loc["Amazon Route 53", "RegionId"])
    assert pd.isna(by_service.loc["Amazon Route 53", "RegionName"])
    assert by_service.loc["EC2 - Other", "RegionName"] == "US West (Oregon)"
    assert by_service.loc[focus_file.TAX_SERVICE, "ChargeCategory"] == "Tax"
    assert pd.isna(by_service.loc[focus_file.TAX_SERVICE, "RegionId"])
    assert set(by_service.drop(index=focus_file.TAX_SERVICE)["ChargeCategory"]) == {"Usage"}
    assert by_service.loc[EC2, "ChargeDescription"] == f"{EC2} usage in us-east-1"
    assert by_service.loc[EC2, "EffectiveCost"] == 9.0
    assert cost_explorer_rows["PricingQuantity"].isna().all()
    assert cost_explorer_rows["ConsumedQuantity"].isna().all()


def test_billing_period_is_the_calendar_month_of_each_charge(cost_explorer_rows: pd.DataFrame) -> None:
    october = cost_explorer_rows[cost_explorer_rows["ChargePeriodStart"] < pd.Timestamp("2026-11-01", tz=UTC)]
    november = cost_explorer_rows.drop(index=october.index)

    assert set(october["BillingPeriodStart"]) == {pd.Timestamp("2026-10-01", tz=UTC)}
    assert set(october["BillingPeriodEnd"]) == {pd.Timestamp("2026-11-01", tz=UTC)}
    assert set(november["BillingPeriodStart"]) == {pd.Timestamp("2026-11-01", tz=UTC)}
    assert set(november["BillingPeriodEnd"]) == {pd.Timestamp("2026-12-01", tz=UTC)}
    days = cost_explorer_rows["ChargePeriodEnd"] - cost_explorer_rows["ChargePeriodStart"]
    assert (days == pd.Timedelta(days=1)).all()


def test_a_missing_service_region_view_leaves_the_file_empty_not_counted_from_other_views() -> None:
    spend = hand_made_spend()
    spend.frame = spend.frame[spend.frame["x_CostView"] != costs.SERVICE_REGION_VIEW]
    spend.complete_views.discard(costs.SERVICE_REGION_VIEW)

    dataset = focus_file.focus_dataset(spend, PERIOD.start, PERIOD.end, billing_account_id=ACCOUNT)

    assert dataset.empty
    assert list(dataset.columns) == list(focus_file.COST_EXPLORER_COLUMNS)


@pytest.fixture(scope="module")
def cost_explorer_validations(cost_explorer_out: Path, tmp_path_factory: pytest.TempPathFactory):
    return validations(cost_explorer_out, tmp_path_factory.mktemp("ce-validator"))


@pytest.mark.parametrize("name", focus_file.FOCUS_FILE_NAMES)
def test_cost_explorer_file_passes_the_focus_validator(cost_explorer_validations, name: str) -> None:
    assert_focus_valid(cost_explorer_validations[name])


@pytest.mark.parametrize("name", focus_file.FOCUS_FILE_NAMES)
def test_cost_explorer_file_fails_no_rule_but_the_invoice_it_cannot_know(
    cost_explorer_validations, name
) -> None:
    validation = cost_explorer_validations[name]
    # Cost Explorer names no invoice, so the recommended InvoiceId column is absent.
    unknowable = {rule for rule in validation.failed_rules if rule.startswith("InvoiceId-")} | {
        "CostAndUsage-D-033-O"
    }
    leniency = CSV_INFERRED_ACCOUNT_TYPE_RULES if name.endswith(".csv") else set()

    assert validation.failed_rules - unknowable - leniency == set()


# --- FOCUS export source -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def line_items_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export-focus")
    spend = hand_made_spend()
    spend.source = focus.FOCUS_SOURCE
    spend.line_items = focus.LineItems.from_frame(hand_made_line_items())
    dataset = focus_file.focus_dataset(spend, PERIOD.start, PERIOD.end, billing_account_id=None)
    assert isinstance(dataset, focus.LineItems)
    focus_file.write_focus_files(dataset, out)
    spend.line_items.close()
    return out


@pytest.mark.parametrize("name", focus_file.FOCUS_FILE_NAMES)
def test_line_items_of_the_period_are_written_as_they_are(line_items_out: Path, name: str) -> None:
    path = line_items_out / name
    written = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    expected = hand_made_line_items()

    assert list(written.columns) == list(expected.columns)
    assert written["BilledCost"].tolist() == [24.144, 12.0, 0.5]
    assert written["x_Operation"].tolist() == ["RunInstances", "RunInstances:SV001", "RunInstances"]
    assert (written["BillingAccountName"] == "ml-platform").all()
    starts = pd.to_datetime(written["ChargePeriodStart"], utc=True)
    assert [f"{start:%Y-%m-%d}" for start in starts] == ["2026-10-30", "2026-11-01", "2026-11-02"]
    assert json.loads(written["Tags"][0]) == {TEAM: "vision"}


def test_line_items_csv_timestamps_are_iso_8601_utc(line_items_out: Path) -> None:
    header, first, *_ = (line_items_out / focus_file.CSV_NAME).read_text().splitlines()
    start = header.split(",").index("ChargePeriodStart")
    assert first.split(",")[start] == "2026-10-30T00:00:00Z"


@pytest.fixture(scope="module")
def line_items_validations(line_items_out: Path, tmp_path_factory: pytest.TempPathFactory):
    return validations(line_items_out, tmp_path_factory.mktemp("export-validator"))


@pytest.mark.parametrize("name", focus_file.FOCUS_FILE_NAMES)
def test_line_items_file_passes_the_focus_validator(line_items_validations, name: str) -> None:
    assert_focus_valid(line_items_validations[name])


# --- Real reports of the sandbox ---------------------------------------------------------------------

SANDBOX_DAYS = 30


@pytest.fixture(scope="module")
def sandbox_reports(
    sandbox: Sandbox, seeded: SeedManifest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The sandbox's report from Cost Explorer and from its FOCUS export, each in its own folder."""
    moment = datetime.now(UTC)
    period = report_period(SANDBOX_DAYS, moment.date())
    outs = {source: tmp_path_factory.mktemp(f"sandbox-{source}") for source in ("cost-explorer", "focus")}
    with sandbox_environment(sandbox):
        spend = costs.fetch_spend(period.fetch_start, period.end, use_cache=False, today=moment.date())
        built = report.build_report(spend, period, idle=[], untagged=[], generated_at=moment)
        report.write_report(built, outs["cost-explorer"], billing_account_id=sandbox.account_id)
        report.run_nightly(
            SANDBOX_DAYS,
            outs["focus"],
            scope=single_account_scope(list(seeded.regions), sandbox.account_id),
            source=FocusExportSource(focus.choose_focus_source(focus.FOCUS_SOURCE, focus_export.EXPORT_URI)),
            now=moment,
        )
    return outs


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["cost-explorer", "focus"])
def test_sandbox_report_focus_file_sums_to_findings_total(
    sandbox_reports: dict[str, Path], source: str
) -> None:
    out = sandbox_reports[source]
    findings = json.loads((out / "findings.json").read_text())
    for name in focus_file.FOCUS_FILE_NAMES:
        rows = pd.read_parquet(out / name) if name.endswith(".parquet") else pd.read_csv(out / name)
        assert findings["spend"]["total_usd"] > 0
        assert round(rows["BilledCost"].sum(), 2) == findings["spend"]["total_usd"], name


@pytest.fixture(scope="module")
def sandbox_validations(sandbox_reports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    return {
        source: validations(out, tmp_path_factory.mktemp(f"sandbox-validator-{source}"))
        for source, out in sandbox_reports.items()
    }


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["cost-explorer", "focus"])
@pytest.mark.parametrize("name", focus_file.FOCUS_FILE_NAMES)
def test_sandbox_report_focus_file_passes_the_focus_validator(
    sandbox_validations, source: str, name: str
) -> None:
    assert_focus_valid(sandbox_validations[source][name])
