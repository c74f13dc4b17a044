"""The sandbox account's FOCUS 1.2 export, written from the line items that answer its Cost Explorer.

Laid out as AWS Data Exports delivers the *FOCUS 1.2 with AWS columns* table (daily granularity,
Parquet, one partition per billing period, a manifest per partition):

    s3://ml-platform-billing-exports/focus/ml-platform-focus/data/BILLING_PERIOD=YYYY-MM/ml-platform-focus-00001.snappy.parquet
    s3://ml-platform-billing-exports/focus/ml-platform-focus/metadata/BILLING_PERIOD=YYYY-MM/ml-platform-focus-Manifest.json

One FOCUS row per sandbox line item, so both cost sources sum to the same cents. ServiceName keeps Cost
Explorer's SERVICE value (e.g. "EC2 - Other"), which real exports spell their own way, so the sandbox
can compare the two sources service by service.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finops import focus_file
from finops.focus import USER_TAG_PREFIX
from finops.sandbox.cost_explorer import SAVINGS_PLANS, SPOT, LineItem

EXPORT_BUCKET = "ml-platform-billing-exports"
EXPORT_REGION = "us-east-1"
EXPORT_PREFIX = "focus"
EXPORT_NAME = "ml-platform-focus"
EXPORT_URI = f"s3://{EXPORT_BUCKET}/{EXPORT_PREFIX}/{EXPORT_NAME}"
EXPORT_BUCKET_ARN = f"arn:aws:s3:::{EXPORT_BUCKET}"
FOCUS_TABLE = "FOCUS_1_2_AWS"
# SubAccountName of the payer's own line items (members' are their organization names).
PAYER_ACCOUNT_NAME = "ml-platform-sandbox"

HOURS = "Hours"
GB_MONTHS = "GB-Months"
# CUR's usage-type region prefix (us-east-1 has none for instance hours).
USAGE_TYPE_PREFIX = {"us-east-1": "", "us-west-2": "USW2-", "eu-west-1": "EU-"}
SERVICE_CODES = {
    "Amazon Elastic Compute Cloud - Compute": "AmazonEC2",
    "EC2 - Other": "AmazonEC2",
    "Amazon Elastic Container Service for Kubernetes": "AmazonEKS",
    "Amazon ElastiCache": "AmazonElastiCache",
    "Amazon Simple Storage Service": "AmazonS3",
}

SCHEMA = pa.schema(
    [
        ("AvailabilityZone", pa.string()),
        ("BilledCost", pa.float64()),
        ("BillingAccountId", pa.string()),
        ("BillingAccountName", pa.string()),
        ("BillingCurrency", pa.string()),
        ("BillingPeriodEnd", pa.timestamp("ms", tz="UTC")),
        ("BillingPeriodStart", pa.timestamp("ms", tz="UTC")),
        ("ChargeCategory", pa.string()),
        ("ChargeClass", pa.string()),
        ("ChargeDescription", pa.string()),
        ("ChargeFrequency", pa.string()),
        ("ChargePeriodEnd", pa.timestamp("ms", tz="UTC")),
        ("ChargePeriodStart", pa.timestamp("ms", tz="UTC")),
        ("CommitmentDiscountCategory", pa.string()),
        ("CommitmentDiscountStatus", pa.string()),
        ("CommitmentDiscountType", pa.string()),
        ("ConsumedQuantity", pa.float64()),
        ("ConsumedUnit", pa.string()),
        ("ContractedCost", pa.float64()),
        ("EffectiveCost", pa.float64()),
        ("InvoiceIssuerName", pa.string()),
        ("ListCost", pa.float64()),
        ("PricingCategory", pa.string()),
        ("PricingQuantity", pa.float64()),
        ("PricingUnit", pa.string()),
        ("ProviderName", pa.string()),
        ("PublisherName", pa.string()),
        ("RegionId", pa.string()),
        ("RegionName", pa.string()),
        ("ResourceId", pa.string()),
        ("ResourceType", pa.string()),
        ("ServiceCategory", pa.string()),
        ("ServiceSubcategory", pa.string()),
        ("ServiceName", pa.string()),
        ("SkuId", pa.string()),
        ("SkuMeter", pa.string()),
        ("SubAccountId", pa.string()),
        ("SubAccountName", pa.string()),
        ("Tags", pa.map_(pa.string(), pa.string())),
        ("x_Discounts", pa.map_(pa.string(), pa.string())),
        ("x_Operation", pa.string()),
        ("x_ServiceCode", pa.string()),
    ]
)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _month_bounds(day: date) -> tuple[datetime, datetime]:
    first = day.replace(day=1)
    return _midnight(first), _midnight((first + timedelta(days=32)).replace(day=1))


def _meter(item: LineItem) -> tuple[str, str, str]:
    """SkuMeter (CUR's usage type), x_Operation and the consumed unit of a line item."""
    prefix = USAGE_TYPE_PREFIX.get(item.region, "")
    if item.instance_type and item.service.startswith("Amazon ElastiCache"):
        return f"{prefix}NodeUsage:{item.instance_type}", "CreateCacheCluster:0002", HOURS
    if item.instance_type:
        usage = "SpotUsage" if item.purchase_type == SPOT else "BoxUsage"
        return f"{prefix}{usage}:{item.instance_type}", "RunInstances", HOURS
    if item.service == "EC2 - Other":
        return f"{prefix}EBS:VolumeUsage.gp3", "CreateVolume-Gp3", GB_MONTHS
    if item.service.startswith("Amazon Simple Storage"):
        return f"{prefix}TimedStorage-ByteHrs", "StandardStorage", GB_MONTHS
    return f"{prefix}AmazonEKS-Hours:perCluster", "CreateOperation", HOURS


def focus_row(item: LineItem, account_id: str, sub_account_name: str = PAYER_ACCOUNT_NAME) -> dict[str, Any]:
    """One FOCUS 1.2 line item with AWS columns for one sandbox line item (a day of one stream)."""
    meter, operation, unit = _meter(item)
    service_code = SERVICE_CODES.get(item.service, "AWS")
    category, subcategory = focus_file.service_category(item.service)
    spot, savings_plan = item.purchase_type == SPOT, item.purchase_type == SAVINGS_PLANS
    period_start, period_end = _month_bounds(item.day)
    return {
        "AvailabilityZone": None,
        "BilledCost": item.unblended_cost,
        "BillingAccountId": account_id,
        "BillingAccountName": "ml-platform-sandbox",
        "BillingCurrency": "USD",
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{item.service} {meter}",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": _midnight(item.day + timedelta(days=1)),
        "ChargePeriodStart": _midnight(item.day),
        "CommitmentDiscountCategory": "Spend" if savings_plan else None,
        "CommitmentDiscountStatus": "Used" if savings_plan else None,
        "CommitmentDiscountType": "Savings Plan" if savings_plan else None,
        "ConsumedQuantity": item.usage_quantity,
        "ConsumedUnit": unit,
        "ContractedCost": item.amortized_cost,
        "EffectiveCost": item.amortized_cost,
        "InvoiceIssuerName": focus_file.AWS,
        "ListCost": item.unblended_cost,
        "PricingCategory": "Dynamic" if spot else "Committed" if savings_plan else "Standard",
        "PricingQuantity": item.usage_quantity,
        "PricingUnit": unit,
        "ProviderName": focus_file.AWS,
        "PublisherName": focus_file.AWS,
        "RegionId": item.region,
        "RegionName": focus_file.REGION_NAMES.get(item.region, item.region),
        "ResourceId": None,
        "ResourceType": None,
        "ServiceCategory": category,
        "ServiceSubcategory": subcategory,
        "ServiceName": item.service,
        "SkuId": f"{service_code}-{meter}",
        "SkuMeter": meter,
        "SubAccountId": item.linked_account,
        "SubAccountName": sub_account_name,
        "Tags": [(f"{USER_TAG_PREFIX}{key}", value) for key, value in sorted(item.tags.items())],
        "x_Discounts": None,
        "x_Operation": operation,
        "x_ServiceCode": service_code,
    }


def export_tables(
    line_items: Iterable[LineItem], account_id: str, sub_account_names: Mapping[str, str] | None = None
) -> dict[str, pa.Table]:
    """The export's rows by billing period (`YYYY-MM`); accounts not in `sub_account_names` are the payer."""
    names = sub_account_names or {}
    by_period: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in line_items:
        name = names.get(item.linked_account, PAYER_ACCOUNT_NAME)
        by_period[f"{item.day:%Y-%m}"].append(focus_row(item, account_id, name))
    return {period: pa.Table.from_pylist(rows, schema=SCHEMA) for period, rows in sorted(by_period.items())}


def manifest(period: str, data_keys: list[str], rows: int, now: datetime, account_id: str) -> dict[str, Any]:
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    _, end = _month_bounds(start.date())
    return {
        "exportArn": f"arn:aws:bcm-data-exports:us-east-1:{account_id}:export/{EXPORT_NAME}",
        "exportName": EXPORT_NAME,
        "executionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "billingPeriod": {
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "queryStatement": f"SELECT {', '.join(SCHEMA.names)} FROM {FOCUS_TABLE}",
        "tableConfigurations": {FOCUS_TABLE: {"TIME_GRANULARITY": "DAILY"}},
        "dataFiles": [f"s3://{EXPORT_BUCKET}/{key}" for key in data_keys],
        "numberOfRecords": rows,
        "columns": [{"name": column.name, "type": str(column.type)} for column in SCHEMA],
    }


def seed_focus_export(
    s3: Any,
    line_items: Iterable[LineItem],
    *,
    now: datetime,
    account_id: str,
    bucket_tags: Mapping[str, str],
    sub_account_names: Mapping[str, str] | None = None,
) -> str:
    """Create the export bucket (tagged, so the untagged scan has nothing new) and write the export.

    Returns the bucket's ARN.
    """
    s3.create_bucket(Bucket=EXPORT_BUCKET)
    s3.put_bucket_tagging(
        Bucket=EXPORT_BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in bucket_tags.items()]}
    )
    for period, table in export_tables(line_items, account_id, sub_account_names).items():
        key = f"{EXPORT_PREFIX}/{EXPORT_NAME}/data/BILLING_PERIOD={period}/{EXPORT_NAME}-00001.snappy.parquet"
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="snappy")
        s3.put_object(Bucket=EXPORT_BUCKET, Key=key, Body=buffer.getvalue())
        s3.put_object(
            Bucket=EXPORT_BUCKET,
            Key=f"{EXPORT_PREFIX}/{EXPORT_NAME}/metadata/BILLING_PERIOD={period}/{EXPORT_NAME}-Manifest.json",
            Body=json.dumps(manifest(period, [key], table.num_rows, now, account_id), indent=2).encode(),
        )
    return EXPORT_BUCKET_ARN
