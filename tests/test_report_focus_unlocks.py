"""What the FOCUS export's line items add to the report, over a small hand-built set of line items.

Every expected figure is worked out by hand from the rows below. The Cost Explorer source has no line
items: its findings.json says `"line_items": null` and its report.md is the report as it was, checked
against a small fixed report rendered by the renderer before it moved to a jinja template.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from finops import analysis
from finops.analysis import LINE_ITEMS_RELATION, analyze_line_items
from finops.costs import Spend
from finops.dashboard import render_dashboard, render_markdown
from finops.findings import Report, ScanMissing
from finops.report import build_report
from finops.sandbox.cost_explorer import LineItem
from tests.test_costs import NOW
from tests.test_report import IDLE, PERIOD, UNTAGGED_RESOURCES, read_spend

RESEARCH, PRODUCTION = "111111111111", "222222222222"
EC2, EC2_OTHER, S3 = "Amazon Elastic Compute Cloud - Compute", "EC2 - Other", "Amazon Simple Storage Service"
SAVINGS_PLANS = "Savings Plans for AWS Compute usage"
DAY_ONE, DAY_TWO = PERIOD.end - timedelta(days=3), PERIOD.end - timedelta(days=2)
BEFORE_THE_PERIOD = PERIOD.start - timedelta(days=1)
IDLE_ARN = "arn:aws:ec2:us-east-1:111111111111:instance/i-0idle1"  # IDLE[0], billed under its ARN
UNTAGGED_INSTANCE_ARN = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"  # UNTAGGED_RESOURCES[0]


def row(
    day: date,
    account: str,
    service: str,
    billed: float,
    effective: float,
    *,
    category: str = "Usage",
    resource: str | None = None,
    hours: float | None = None,
    unit: str | None = None,
) -> dict[str, object]:
    return {
        "ChargePeriodStart": pd.Timestamp(day, tz=UTC),
        "SubAccountId": account,
        "SubAccountName": {RESEARCH: "research", PRODUCTION: "production"}[account],
        "ServiceName": service,
        "RegionId": "us-east-1",
        "ChargeCategory": category,
        "ResourceId": resource,
        "BilledCost": billed,
        "EffectiveCost": effective,
        "ConsumedQuantity": hours,
        "ConsumedUnit": unit or ("Hours" if hours is not None else None),
    }


LINE_ITEMS = pd.DataFrame(
    [
        # The idle instance: 24 h at $0.80, then 10 h at $0.90 on its last day; its data transfer
        # (not hours) is no part of its hourly cost.
        row(DAY_ONE, RESEARCH, EC2, 19.20, 19.20, resource=IDLE_ARN, hours=24.0),
        row(DAY_TWO, RESEARCH, EC2, 9.00, 9.00, resource=IDLE_ARN, hours=10.0),
        row(DAY_TWO, RESEARCH, EC2, 1.00, 1.00, resource=IDLE_ARN, hours=3.0, unit="GB"),
        # The untagged volume, billed under its id; its day before the period is not the period's.
        row(DAY_ONE, RESEARCH, EC2_OTHER, 3.00, 3.00, resource="vol-1"),
        row(DAY_TWO, RESEARCH, EC2_OTHER, 2.50, 2.50, resource="vol-1"),
        row(BEFORE_THE_PERIOD, RESEARCH, EC2_OTHER, 7.00, 7.00, resource="vol-1"),
        # A savings plan: its fee is billed, the usage it covers is effective cost only.
        row(DAY_ONE, RESEARCH, SAVINGS_PLANS, 10.00, 0.00, category="Purchase"),
        row(DAY_ONE, RESEARCH, EC2, 0.00, 6.00, resource="i-0covered", hours=8.0),
        # The untagged bucket under its name, the untagged instance under its ARN, a tax and a credit.
        row(DAY_ONE, PRODUCTION, S3, 4.25, 4.25, resource="scratch"),
        row(DAY_TWO, PRODUCTION, EC2, 12.00, 12.00, resource=UNTAGGED_INSTANCE_ARN, hours=12.0),
        row(DAY_TWO, PRODUCTION, S3, 2.10, 2.10, category="Tax"),
        row(DAY_TWO, PRODUCTION, S3, -5.00, -5.00, category="Credit"),
    ]
)


def with_line_items(spend: Spend, line_items: object) -> Spend:
    return dataclasses.replace(spend, source="focus", line_items=line_items)


@pytest.fixture(scope="module")
def cost_explorer_spend() -> Spend:
    return read_spend([])


@pytest.fixture(scope="module")
def from_export(cost_explorer_spend: Spend) -> Report:
    return build_report(
        with_line_items(cost_explorer_spend, LINE_ITEMS),
        PERIOD,
        idle=IDLE,
        untagged=UNTAGGED_RESOURCES,
        generated_at=NOW,
    )


def test_spend_by_account_billed_and_effective(from_export: Report) -> None:
    line_items = from_export.findings["line_items"]
    assert line_items is not None
    assert line_items["by_account"] == [
        # 19.20 + 9.00 + 1.00 + 3.00 + 2.50 + 10.00 + 0.00; effective 19.20 + 9.00 + 1.00 + 3.00 + 2.50 + 6.00
        {"account_id": RESEARCH, "account_name": "research", "billed_usd": 44.70, "effective_usd": 40.70},
        # 4.25 + 12.00 + 2.10 - 5.00, the same effective
        {"account_id": PRODUCTION, "account_name": "production", "billed_usd": 13.35, "effective_usd": 13.35},
    ]
    assert line_items["total"] == {"billed_usd": 58.05, "effective_usd": 54.05}


def test_billed_beside_effective_cost_by_service(from_export: Report) -> None:
    line_items = from_export.findings["line_items"]
    assert line_items is not None
    assert line_items["by_service"] == [
        {"service": EC2, "billed_usd": 41.20, "effective_usd": 47.20},
        {"service": SAVINGS_PLANS, "billed_usd": 10.00, "effective_usd": 0.00},
        {"service": EC2_OTHER, "billed_usd": 5.50, "effective_usd": 5.50},
        {"service": S3, "billed_usd": 1.35, "effective_usd": 1.35},
    ]


def test_credits_tax_and_purchases_apart_from_usage(from_export: Report) -> None:
    line_items = from_export.findings["line_items"]
    assert line_items is not None
    assert line_items["by_charge_category"] == [
        {"category": "Usage", "billed_usd": 50.95, "effective_usd": 56.95},
        {"category": "Purchase", "billed_usd": 10.00, "effective_usd": 0.00},
        {"category": "Tax", "billed_usd": 2.10, "effective_usd": 2.10},
        {"category": "Credit", "billed_usd": -5.00, "effective_usd": -5.00},
        {"category": "Adjustment", "billed_usd": 0.00, "effective_usd": 0.00},
    ]


def test_untagged_dollars_per_resource_match_arns_and_ids(from_export: Report) -> None:
    line_items = from_export.findings["line_items"]
    assert line_items is not None
    assert line_items["untagged_resources"] == [
        {
            "arn": UNTAGGED_INSTANCE_ARN,
            "resource_type": "ec2:instance",
            "region": "us-east-1",
            "billed_as": [UNTAGGED_INSTANCE_ARN],
            "billed_usd": 12.00,
            "effective_usd": 12.00,
        },
        {
            "arn": "arn:aws:ec2:us-east-1:123456789012:volume/vol-1",
            "resource_type": "ec2:volume",
            "region": "us-east-1",
            "billed_as": ["vol-1"],
            "billed_usd": 5.50,
            "effective_usd": 5.50,
        },
        {
            "arn": "arn:aws:s3:::scratch",
            "resource_type": "s3:bucket",
            "region": "us-west-2",
            "billed_as": ["scratch"],
            "billed_usd": 4.25,
            "effective_usd": 4.25,
        },
    ]


def test_idle_waste_in_billed_dollars_with_list_price_as_the_fallback(from_export: Report) -> None:
    line_items = from_export.findings["line_items"]
    assert line_items is not None
    assert line_items["idle_waste"] == [
        # Its last day's rate, $9.00 over 10 h, for its 12 idle hours.
        {
            "resource_id": "i-0idle1",
            "region": "us-east-1",
            "instance_type": "g5.xlarge",
            "idle_hours": 12.0,
            "hourly_cost_usd": 0.90,
            "wasted_usd": 10.80,
            "cost_basis": "billed",
        },
        # No line item of its own: its list price, as the idle scan priced it.
        {
            "resource_id": "i-0idle2",
            "region": "us-west-2",
            "instance_type": "g4dn.xlarge",
            "idle_hours": 6.0,
            "hourly_cost_usd": 0.526,
            "wasted_usd": 3.156,
            "cost_basis": "list price",
        },
    ]
    assert line_items["idle_wasted_usd"] == 13.96


class ParquetLineItems:
    """Line items as DuckDB over a local Parquet file: the shape the export's reader is moving to."""

    def __init__(self, path: Path) -> None:
        self.connection = duckdb.connect()
        self.connection.execute(f"CREATE VIEW {LINE_ITEMS_RELATION} AS SELECT * FROM read_parquet('{path}')")

    def aggregate(self, sql: str) -> pd.DataFrame:
        return self.connection.execute(sql).df()


def test_line_items_behind_duckdb_give_the_same_figures(tmp_path: Path) -> None:
    path = tmp_path / "line_items.parquet"
    LINE_ITEMS.to_parquet(path, index=False)
    scans = {"idle": IDLE, "untagged": UNTAGGED_RESOURCES}
    assert analyze_line_items(ParquetLineItems(path), PERIOD, **scans) == analyze_line_items(
        LINE_ITEMS, PERIOD, **scans
    )


def test_arn_resource_ids() -> None:
    assert analysis.arn_resource_id(IDLE_ARN) == "i-0idle1"
    assert analysis.arn_resource_id("arn:aws:s3:::scratch") == "scratch"
    assert analysis.arn_resource_id("arn:aws:elasticache:us-east-1:1:replicationgroup:cache") == "cache"
    assert analysis.arn_resource_id("i-0idle1") is None


def test_the_unlocks_show_in_report_md_and_on_the_dashboard(from_export: Report) -> None:
    markdown = render_markdown(from_export)
    assert "Amounts are FOCUS BilledCost in USD." in markdown
    assert "| 111111111111 | research | $44.70 | $40.70 | 77.0% |" in markdown  # 44.70 / 58.05
    assert f"| {SAVINGS_PLANS} | $10.00 | $0.00 | \u2212$10.00 |" in markdown
    assert "| Credit | \u2212$5.00 | \u2212$5.00 |" in markdown
    assert "| arn:aws:s3:::scratch | s3:bucket | us-west-2 | $4.25 | $4.25 |" in markdown
    assert "| i-0idle1 | us-east-1 | g5.xlarge | 12.0 | $0.90/h | $10.80 | billed |" in markdown
    assert "| i-0idle2 | us-west-2 | g4dn.xlarge | 6.0 | $0.53/h | $3.16 | list price |" in markdown

    html = render_dashboard(from_export)
    assert "Cost source: focus" in html
    for table in (
        "accounts",
        "billed-effective",
        "charge-categories",
        "untagged-resources-spend",
        "idle-billed",
    ):
        assert f'id="table-{table}"' in html
    assert "research" in html and "$10.80" in html

    assert json.loads(json.dumps(from_export.findings))["line_items"] == from_export.findings["line_items"]


def test_cost_explorer_has_no_line_items_and_shows_what_it_did(cost_explorer_spend: Spend) -> None:
    built = build_report(
        cost_explorer_spend, PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES, generated_at=NOW
    )
    assert built.findings["line_items"] is None
    # No line items, yet spend by account: Cost Explorer's account+service view answers it.
    assert built.findings["spend"]["by_account"] == []
    assert "## Spend by account\n\nNo spend." in render_markdown(built)
    html = render_dashboard(built)
    assert "Cost source: cost-explorer" in html
    assert 'id="table-accounts"' in html and 'id="table-idle-billed"' not in html


def cost_explorer_item(
    day: date, service: str, region: str, tags: dict[str, str], cost: float, **extra: object
) -> LineItem:
    fields: dict[str, object] = {
        "purchase_type": "On Demand Instances",
        "instance_type": None,
        "usage_quantity": 1.0,
        **extra,
    }
    return LineItem(
        day=day,
        service=service,
        region=region,
        linked_account="123456789012",
        tags=tags,
        unblended_cost=cost,
        amortized_cost=cost * 0.9,
        **fields,  # type: ignore[arg-type]
    )


TAGGED = {
    "team": "vision",
    "project": "p",
    "environment": "prod",
    "cost-center": "cc",
    "owner": "o",
    "managed-by": "pulumi",
}


def test_report_md_is_the_report_it_was_for_a_fixed_report() -> None:
    items = [
        cost_explorer_item(
            PERIOD.start, EC2, "us-east-1", TAGGED, 100.0, instance_type="g5.xlarge", usage_quantity=99.4
        ),
        cost_explorer_item(
            PERIOD.start + timedelta(days=3),
            EC2,
            "us-west-2",
            {"team": "nlp"},
            40.0,
            purchase_type="Spot Instances",
            instance_type="g4dn.xlarge",
            usage_quantity=120.0,
        ),
        cost_explorer_item(PERIOD.end - timedelta(days=1), S3, "us-east-1", {}, 12.5),
        cost_explorer_item(
            PERIOD.previous.start,
            EC2,
            "us-east-1",
            TAGGED,
            80.0,
            instance_type="g5.xlarge",
            usage_quantity=79.5,
        ),
    ]
    leftovers = [
        {
            "stack": "train-r9",
            "run_id": "r9",
            "reason": "expired",
            "action": "destroy",
            "why": "2 resource(s) still billing $0.1600/h after expires-at 2026-11-20T00:00:00+00:00",
            "hourly_cost_usd": 0.16,
            "resources": [{"kind": "ec2:volume"}, {"kind": "ec2:volume"}],
        }
    ]
    gap = ScanMissing(
        "untagged resources in us-west-2",
        "endpoint unreachable (EndpointConnectionError)",
        scan="untagged",
        region="us-west-2",
        status="unreachable",
    )
    fixed = build_report(
        read_spend(items),
        PERIOD,
        idle=IDLE,
        untagged=UNTAGGED_RESOURCES,
        leftovers=leftovers,
        scan_missing=[gap],
        generated_at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    )
    assert render_markdown(fixed) == FIXED_REPORT_MD


# report.md of the fixed report above: the dashboard's headline and tables as text, every amount with its
# dollar sign (a minus as U+2212 before it), then the spend tables, the scans' rows and the engineers'
# commands. The sandbox's Cost Explorer gives no account names: the id stands for it.
FIXED_REPORT_MD = """# Nightly cost report — 09 Nov 2026 to 22 Nov 2026 (14 days)

Generated 2026-11-23 09:30 UTC. Amounts are Cost Explorer UnblendedCost in USD.

Cost source: cost-explorer.

## Missing from this report

- **untagged resources in us-west-2**: endpoint unreachable (EndpointConnectionError)

## Headline

- Spend, last 14 days: **$152.50**; 9 Nov 2026 to 22 Nov 2026; amortized $137.25; up $72.50 (+90.6%) on the previous 14 days' $80.00
- November 2026: month to date (no budget known): **$152**; Forecast $167 by 30 November; Method: the month to date plus the last 7 days' average ($1.79) for each of the 8 days left.
- Idle GPUs: **$1,118/month**; if left running; 2 GPUs under 5% for 6 h
- Untagged spend: **34.4%**; $52.50 misses a mandatory tag (team, project, environment, cost-center, owner, managed-by); 3 resources to tag; n/a: scan unreachable
- Leaks: **1 run**; expired training runs still owning resources: $117/month
- Reaper recovered: **n/a**; the training runs were not read
- Spot savings: **$23.12**; spot is 28.6% of instance spend; saved against on-demand prices

## Budgets

No environment or team budget is known for this account.

## Showback by cost-center

| Cost-center | Month to date | Month-end forecast | Last 14 days | Previous 14 days | Change |
|---|---|---|---|---|---|
| cc | $100.00 | $100.00 | $100.00 | $80.00 | +$20.00 (+25.0%) |
| (untagged) | $52.50 | $66.79 | $52.50 | $0.00 | +$52.50 (new) |

## Showback by team

| Team | Month to date | Month-end forecast | Last 14 days | Previous 14 days | Change |
|---|---|---|---|---|---|
| vision | $100.00 | $100.00 | $100.00 | $80.00 | +$20.00 (+25.0%) |
| nlp | $40.00 | $40.00 | $40.00 | $0.00 | +$40.00 (new) |
| (untagged) | $12.50 | $26.79 | $12.50 | $0.00 | +$12.50 (new) |

## Who to ask

**Missing: untagged resources in us-west-2 (endpoint unreachable (EndpointConnectionError))**; the rows below leave it out.

| Owner | What to do | Per month |
|---|---|---|
| no owner | Find the owner of team vision to end training run r1 on i-0idle1 (g5.xlarge, its GPU idle for 12 h): $734.38/month | $734.38 |
| no owner | Find who owns it and ask them to stop i-0idle2 (g4dn.xlarge, its GPU idle for 6 h): $383.98/month | $383.98 |
| no owner | Find who owns it and ask them to confirm training run r9 is over; the reaper destroys what it still owns: $116.80/month | $116.80 |
| no owner | Find who owns it and ask them to tag ec2:instance i-0abc with team, owner | not priced |
| no owner | Find who owns it and ask them to tag ec2:volume vol-1 with team, project, environment, cost-center, owner, managed-by | not priced |
| bob@example.com (owner tag) | Ask bob@example.com to tag s3:bucket scratch with team | not priced |

## Training runs

The training runs were not read for this report.

## Spend by team

| Name | Spend | Share |
|---|---|---|
| vision | $100.00 | 65.6% |
| nlp | $40.00 | 26.2% |
| (untagged) | $12.50 | 8.2% |

## Spend by environment

| Name | Spend | Share |
|---|---|---|
| prod | $100.00 | 65.6% |
| (untagged) | $52.50 | 34.4% |

## Spend by service

| Name | Spend | Share |
|---|---|---|
| Amazon Elastic Compute Cloud - Compute | $140.00 | 91.8% |
| Amazon Simple Storage Service | $12.50 | 8.2% |

## Spend by region

| Name | Spend | Share |
|---|---|---|
| us-east-1 | $112.50 | 73.8% |
| us-west-2 | $40.00 | 26.2% |

## Spend by account

| Account | Name | Spend | Share |
|---|---|---|---|
| 123456789012 | 123456789012 | $152.50 | 100.0% |

## Biggest changes versus the previous 14 days

| By | Name | Previous | Current | Change |
|---|---|---|---|---|
| service | Amazon Elastic Compute Cloud - Compute | $80.00 | $140.00 | +$60.00 |
| environment | (untagged) | $0.00 | $52.50 | +$52.50 |
| team | nlp | $0.00 | $40.00 | +$40.00 |
| team | vision | $80.00 | $100.00 | +$20.00 |
| environment | prod | $80.00 | $100.00 | +$20.00 |
| team | (untagged) | $0.00 | $12.50 | +$12.50 |
| service | Amazon Simple Storage Service | $0.00 | $12.50 | +$12.50 |

## Untagged spend and resources by service

**Missing: untagged resources in us-west-2 (endpoint unreachable (EndpointConnectionError))**; the rows below leave it out.

| Service | Region | Untagged spend | Resources | Resource types |
|---|---|---|---|---|
| Amazon Elastic Compute Cloud - Compute | us-west-2 | $40.00 | 0 | — |
| Amazon Simple Storage Service | us-east-1 | $12.50 | 0 | — |
| Amazon Elastic Compute Cloud - Compute | us-east-1 | $0.00 | 1 | ec2:instance x 1 |
| EC2 - Other | us-east-1 | $0.00 | 1 | ec2:volume x 1 |
| Amazon Simple Storage Service | us-west-2 | $0.00 | 1 | s3:bucket x 1 |

## Idle GPU instances

GPU under 5% for 6 h: $1,118.36/month if left running.

| Instance | Account | Region | Type | Team | Telemetry | Idle hours | Cost | Wasted while idle | Per month if left running |
|---|---|---|---|---|---|---|---|---|---|
| i-0idle1 |  | us-east-1 | g5.xlarge | vision | gpu | 12.0 | $1.01/h | $12.07 | $734.38 |
| i-0idle2 |  | us-west-2 | g4dn.xlarge | (untagged) | cpu | 6.0 | $0.53/h | $3.16 | $383.98 |

## Training runs left billing after expiry

| Stack | Run | Resources | Cost | Per month | Why |
|---|---|---|---|---|---|
| train-r9 | r9 | 2 | $0.1600/h | $116.80 | 2 resource(s) still billing $0.1600/h after expires-at 2026-11-20T00:00:00+00:00 |

## Resources missing mandatory tags

**Missing: untagged resources in us-west-2 (endpoint unreachable (EndpointConnectionError))**; the rows below leave it out.

| ARN | Type | Account | Region | Missing tags |
|---|---|---|---|---|
| arn:aws:ec2:us-east-1:123456789012:instance/i-0abc | ec2:instance |  | us-east-1 | team, owner |
| arn:aws:ec2:us-east-1:123456789012:volume/vol-1 | ec2:volume |  | us-east-1 | team, project, environment, cost-center, owner, managed-by |
| arn:aws:s3:::scratch | s3:bucket |  | us-west-2 | team |

## For engineers

- `mlp reap --apply` destroys what the expired training runs still own (dry run without `--apply`).
- i-0idle1: `mlp train destroy r1 --apply`
- Cost Explorer: 14 requests ($0.14), 0 view-days from the cache
"""
