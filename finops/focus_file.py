"""The report's FOCUS 1.2 dataset: `costs.focus.parquet` and `costs.focus.csv`, the same rows twice.

What finance sums must be the bill, so the file holds exactly one non-overlapping grain of the
report period, whatever the cost source:

- Cost Explorer, or the FOCUS export read by Athena (`Spend.line_items is None`): the
  `service+region` view's rows, one per day x service x region. Its BilledCost sums to the report's total; the other views (tags, purchase type,
  untagged) cut the same dollars other ways and would count them again, so they stay out.
- The FOCUS export (`Spend.line_items`): its own line items of the period, columns as they are,
  streamed from DuckDB to both files (a month of a large account never sits in a pandas frame).

Cost Explorer answers neither a list price, a contracted price, a unit-consistent quantity nor a
charge's record type for this view, so those columns are derived as docs/focus-file.md explains.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date
from pathlib import Path

import pandas as pd

from finops.costs import SERVICE_REGION_VIEW, Spend
from finops.focus import ISO_8601_UTC, LINE_ITEMS_RELATION, LineItems, identifier_sql

PARQUET_NAME = "costs.focus.parquet"
CSV_NAME = "costs.focus.csv"
FOCUS_FILE_NAMES: tuple[str, ...] = (PARQUET_NAME, CSV_NAME)

AWS = "Amazon Web Services"
USAGE = "Usage"
TAX = "Tax"
# Cost Explorer's SERVICE value for the tax of the bill: the one charge of the view that is not usage.
TAX_SERVICE = "Tax"
# Cost Explorer's REGION values for spend not operated from one region (FOCUS: RegionId null).
NO_REGION_VALUES = frozenset({"", "global", "NoRegion"})

# Cost Explorer SERVICE values of what the platform runs, to FOCUS 1.2 (ServiceCategory,
# ServiceSubcategory); anything else is Other. "EC2 - Other" is mostly EBS volumes and snapshots here.
SERVICE_CATEGORIES: dict[str, tuple[str, str]] = {
    "Amazon Elastic Compute Cloud - Compute": ("Compute", "Virtual Machines"),
    "EC2 - Other": ("Storage", "Block Storage"),
    "Amazon Elastic Block Store": ("Storage", "Block Storage"),
    "Amazon Simple Storage Service": ("Storage", "Object Storage"),
    "Amazon ElastiCache": ("Databases", "Caching"),
    "Amazon DynamoDB": ("Databases", "NoSQL Databases"),
    "Amazon Elastic Container Service for Kubernetes": ("Compute", "Containers"),
    "Amazon Elastic Kubernetes Service": ("Compute", "Containers"),
    "Amazon EC2 Container Registry (ECR)": ("Compute", "Containers"),
    "Amazon Elastic Container Registry": ("Compute", "Containers"),
    "AWS Lambda": ("Compute", "Serverless Compute"),
    "Amazon SageMaker": ("AI and Machine Learning", "Machine Learning"),
    "AmazonCloudWatch": ("Management and Governance", "Observability"),
    "Amazon CloudWatch": ("Management and Governance", "Observability"),
    "AWS CloudTrail": ("Management and Governance", "Compliance"),
    "AWS Config": ("Management and Governance", "Compliance"),
    "AWS Cost Explorer": ("Management and Governance", "Cost Management"),
    "AWS Key Management Service": ("Security", "Secret Management"),
    "AWS Secrets Manager": ("Security", "Secret Management"),
    "Amazon GuardDuty": ("Security", "Threat Detection and Response"),
    "Amazon Simple Queue Service": ("Integration", "Messaging"),
    "Amazon Simple Notification Service": ("Integration", "Messaging"),
    "Amazon Virtual Private Cloud": ("Networking", "Network Infrastructure"),
    "Amazon Elastic Load Balancing": ("Networking", "Application Networking"),
    "Elastic Load Balancing": ("Networking", "Application Networking"),
    "Amazon Route 53": ("Networking", "Network Routing"),
    "Amazon CloudFront": ("Networking", "Content Delivery"),
    "AWS Data Transfer": ("Networking", "Network Connectivity"),
    "Amazon Athena": ("Analytics", "Analytics Platforms"),
    "AWS Glue": ("Analytics", "Data Processing"),
}
OTHER_SERVICE = ("Other", "Other (Other)")

# RegionName MUST be set wherever RegionId is; a region missing here keeps its id as its name.
REGION_NAMES: dict[str, str] = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)",
    "eu-west-1": "Europe (Ireland)",
    "eu-west-2": "Europe (London)",
    "eu-west-3": "Europe (Paris)",
    "eu-central-1": "Europe (Frankfurt)",
    "eu-north-1": "Europe (Stockholm)",
    "eu-south-1": "Europe (Milan)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "sa-east-1": "South America (Sao Paulo)",
}

# The FOCUS 1.2 columns of a Cost Explorer report, in order; extension columns follow.
COST_EXPLORER_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "Tags",
    "x_CostSource",
    "x_CostView",
    "x_Estimated",
    "x_ListCostKnown",
)


def service_category(service_name: str) -> tuple[str, str]:
    """FOCUS (ServiceCategory, ServiceSubcategory) of a Cost Explorer SERVICE value."""
    return SERVICE_CATEGORIES.get(service_name, OTHER_SERVICE)


def region_id(cost_explorer_region: object) -> str | None:
    """FOCUS RegionId of a Cost Explorer REGION value: null for spend of no single region."""
    if not isinstance(cost_explorer_region, str) or cost_explorer_region in NO_REGION_VALUES:
        return None
    return cost_explorer_region


def billing_period(day: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The calendar month (UTC) a day is billed in: [first of the month, first of the next)."""
    start = pd.Timestamp(day.year, day.month, 1, tz=UTC)
    return start, start + pd.Timedelta(days=calendar.monthrange(day.year, day.month)[1])


def _in_period(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    starts = pd.to_datetime(frame["ChargePeriodStart"], utc=True)
    return frame[(starts >= pd.Timestamp(start, tz=UTC)) & (starts < pd.Timestamp(end, tz=UTC))]


def _description(category: str, service: str, region: str | None) -> str:
    if category == TAX:
        return f"Tax in {region}" if region else "Tax"
    return f"{service} usage in {region}" if region else f"{service} usage (no single region)"


def cost_explorer_dataset(
    spend: Spend, start: date, end: date, billing_account_id: str | None
) -> pd.DataFrame:
    """The service+region view's rows of [start, end) as FOCUS 1.2.

    No rows when that view is missing (findings.json names it): a file of other views would count
    the same dollars without the ServiceName FOCUS requires. `billing_account_id` None leaves
    BillingAccountId null, so the file fails FOCUS there rather than carry an account it was not told.
    """
    frame = spend.frame
    rows = _in_period(frame[frame["x_CostView"] == SERVICE_REGION_VIEW], start, end).reset_index(drop=True)
    charge_start = pd.to_datetime(rows["ChargePeriodStart"], utc=True)
    periods = [billing_period(day) for day in charge_start]
    regions = [region_id(value) for value in rows["RegionId"]]
    services = rows["ServiceName"].astype(str).tolist()
    categories = [TAX if service == TAX_SERVICE else USAGE for service in services]
    service_categories = [service_category(service) for service in services]
    billed = rows["BilledCost"].astype("float64")
    dataset = pd.DataFrame(
        {
            "BilledCost": billed,
            "BillingAccountId": billing_account_id,
            # AWS accounts have display names, so FOCUS wants one; Cost Explorer does not say it.
            "BillingAccountName": billing_account_id,
            "BillingCurrency": rows["BillingCurrency"],
            "BillingPeriodEnd": [period_end for _, period_end in periods],
            "BillingPeriodStart": [period_start for period_start, _ in periods],
            "ChargeCategory": categories,
            "ChargeClass": None,  # Cost Explorer restates a day in place: no row is a correction
            "ChargeDescription": [
                _description(category, service, region)
                for category, service, region in zip(categories, services, regions, strict=True)
            ],
            # The bill's tax is charged once a month; everything else is metered usage.
            "ChargeFrequency": ["Recurring" if category == TAX else "Usage-Based" for category in categories],
            "ChargePeriodEnd": charge_start + pd.Timedelta(days=1),
            "ChargePeriodStart": charge_start,
            # One service's usage types mix GB, requests and hours: no quantity adds up, so none.
            "ConsumedQuantity": None,
            "ConsumedUnit": None,
            "ContractedCost": billed,
            "EffectiveCost": rows["EffectiveCost"].astype("float64"),
            "InvoiceIssuerName": AWS,
            "ListCost": billed,
            "PricingQuantity": None,
            "PricingUnit": None,
            "ProviderName": AWS,
            "PublisherName": AWS,
            "RegionId": regions,
            "RegionName": [REGION_NAMES.get(region, region) if region else None for region in regions],
            "ServiceCategory": [category for category, _ in service_categories],
            "ServiceName": services,
            "ServiceSubcategory": [subcategory for _, subcategory in service_categories],
            # A row sums many resources with different tags: their tags are unknown, not empty.
            "Tags": None,
            "x_CostSource": spend.source,
            "x_CostView": SERVICE_REGION_VIEW,
            "x_Estimated": rows["x_Estimated"].astype(bool),
            "x_ListCostKnown": False,
        },
        columns=list(COST_EXPLORER_COLUMNS),
    )
    for numeric in ("ConsumedQuantity", "PricingQuantity"):
        dataset[numeric] = dataset[numeric].astype("float64")
    for text in (
        "BillingAccountId",
        "BillingAccountName",
        "ChargeClass",
        "ConsumedUnit",
        "PricingUnit",
        "Tags",
    ):
        dataset[text] = dataset[text].astype("string")
    return dataset.sort_values(["ChargePeriodStart", "ServiceName", "RegionId"]).reset_index(drop=True)


def line_items_dataset(line_items: LineItems, start: date, end: date) -> LineItems:
    """The FOCUS export's own line items of [start, end), FOCUS columns first, then x_ columns."""
    ordered = sorted(line_items.columns, key=lambda column: column.startswith("x_"))
    return line_items.select(
        f"SELECT {', '.join(identifier_sql(column) for column in ordered)} FROM {LINE_ITEMS_RELATION} "
        f"WHERE ChargePeriodStart >= TIMESTAMPTZ '{start} 00:00:00+00' "
        f"AND ChargePeriodStart < TIMESTAMPTZ '{end} 00:00:00+00'"
    )


def focus_dataset(
    spend: Spend, start: date, end: date, *, billing_account_id: str | None
) -> pd.DataFrame | LineItems:
    """The FOCUS 1.2 rows of [start, end) from whichever source answered."""
    if spend.line_items is not None:
        return line_items_dataset(spend.line_items, start, end)
    return cost_explorer_dataset(spend, start, end, billing_account_id)


def write_focus_files(dataset: pd.DataFrame | LineItems, out_dir: Path) -> list[Path]:
    """The dataset as Parquet and CSV (ISO 8601 UTC timestamps, as FOCUS asks) in `out_dir`."""
    parquet, csv = out_dir / PARQUET_NAME, out_dir / CSV_NAME
    if isinstance(dataset, LineItems):
        return [dataset.write(parquet, "parquet"), dataset.write(csv, "csv")]
    dataset.to_parquet(parquet, index=False)
    dataset.to_csv(csv, index=False, date_format=ISO_8601_UTC)
    return [parquet, csv]
