"""CostExport: the organisation's billing data as AWS Data Exports' "FOCUS 1.2 with AWS columns" table,
delivered daily as Parquet to an encrypted bucket and queryable in Athena without a crawler.

Deploy it where the bills are, normally the payer (management) account: an export there covers
every member account. The Data Exports API exists only in us-east-1, so when the stack runs
elsewhere the export alone goes through a us-east-1 provider carrying the same default tags; the
bucket, Glue catalog and Athena workgroup stay in the stack's region.

The export lands under `s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/`, and
`focus_uri` (`s3://<bucket>/<prefix>/<export-name>`) is what `mlp report --focus-uri` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.buckets import housekeeping_rules, retained_bucket, tls_only_policy
from infra.config import CostExportConfig
from infra.kms import PUBLISHER_ACTIONS, KeyScope, ViaServiceUse, account_scope

DATA_EXPORTS_REGION = "us-east-1"
DATA_EXPORTS_PRINCIPALS: tuple[str, ...] = ("billingreports.amazonaws.com", "bcm-data-exports.amazonaws.com")
FOCUS_TABLE = "FOCUS_1_2_AWS"
# Every column of the table with its Athena type (Data Exports table dictionary, "FOCUS 1.2 with AWS
# columns"). Data Exports refuses `SELECT *`, so the export's query names the same columns the Glue
# table declares; Glue keeps column names lower-case, and Athena matches Parquet columns without case.
FOCUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AvailabilityZone", "string"),
    ("BilledCost", "double"),
    ("BillingAccountId", "string"),
    ("BillingAccountName", "string"),
    ("BillingAccountType", "string"),
    ("BillingCurrency", "string"),
    ("BillingPeriodEnd", "timestamp"),
    ("BillingPeriodStart", "timestamp"),
    ("CapacityReservationId", "string"),
    ("CapacityReservationStatus", "string"),
    ("ChargeCategory", "string"),
    ("ChargeClass", "string"),
    ("ChargeDescription", "string"),
    ("ChargeFrequency", "string"),
    ("ChargePeriodEnd", "timestamp"),
    ("ChargePeriodStart", "timestamp"),
    ("CommitmentDiscountCategory", "string"),
    ("CommitmentDiscountId", "string"),
    ("CommitmentDiscountName", "string"),
    ("CommitmentDiscountQuantity", "double"),
    ("CommitmentDiscountStatus", "string"),
    ("CommitmentDiscountType", "string"),
    ("CommitmentDiscountUnit", "string"),
    ("ConsumedQuantity", "double"),
    ("ConsumedUnit", "string"),
    ("ContractedCost", "double"),
    ("ContractedUnitPrice", "double"),
    ("EffectiveCost", "double"),
    ("InvoiceId", "string"),
    ("InvoiceIssuerName", "string"),
    ("ListCost", "double"),
    ("ListUnitPrice", "double"),
    ("PricingCategory", "string"),
    ("PricingCurrency", "string"),
    ("PricingCurrencyContractedUnitPrice", "double"),
    ("PricingCurrencyEffectiveCost", "double"),
    ("PricingCurrencyListUnitPrice", "double"),
    ("PricingQuantity", "double"),
    ("PricingUnit", "string"),
    ("ProviderName", "string"),
    ("PublisherName", "string"),
    ("RegionId", "string"),
    ("RegionName", "string"),
    ("ResourceId", "string"),
    ("ResourceName", "string"),
    ("ResourceType", "string"),
    ("ServiceCategory", "string"),
    ("ServiceName", "string"),
    ("ServiceSubcategory", "string"),
    ("SkuId", "string"),
    ("SkuMeter", "string"),
    ("SkuPriceDetails", "map<string,string>"),
    ("SkuPriceId", "string"),
    ("SubAccountId", "string"),
    ("SubAccountName", "string"),
    ("SubAccountType", "string"),
    ("Tags", "map<string,string>"),
    ("x_Discounts", "map<string,double>"),
    ("x_Operation", "string"),
    ("x_ServiceCode", "string"),
)
PARTITION_KEY = "billing_period"
# Data Exports backfills at most 36 months before an export's creation; older periods never exist.
FIRST_BILLING_PERIOD = "2022-01"
GLUE_TABLE = "focus_1_2_aws"
ATHENA_RESULTS_PREFIX = "athena-results/"
ATHENA_RESULTS_RETENTION_DAYS = 30
ABORT_INCOMPLETE_UPLOAD_DAYS = 7
GIB = 1 << 30


@dataclass(frozen=True)
class CostExportArgs:
    environment: str
    region: str
    config: CostExportConfig
    # The mandatory tags, for the default tags of the us-east-1 provider the export may need.
    tags: Mapping[str, str]
    protect: bool


def focus_query() -> str:
    """The export's query: every column of the FOCUS 1.2 table, by name."""
    return f"SELECT {', '.join(name for name, _ in FOCUS_COLUMNS)} FROM {FOCUS_TABLE}"


def data_exports_source_arns(account_id: str) -> list[str]:
    """The ARNs Data Exports (and legacy CUR) deliver for: this account's exports, always in us-east-1."""
    return [
        f"arn:aws:cur:{DATA_EXPORTS_REGION}:{account_id}:definition/*",
        f"arn:aws:bcm-data-exports:{DATA_EXPORTS_REGION}:{account_id}:export/*",
    ]


def data_exports_conditions(account_id: str) -> dict[str, Any]:
    """The documented delivery condition, binding the service principals to this account's exports."""
    return {
        "StringLike": {
            "aws:SourceAccount": account_id,
            "aws:SourceArn": data_exports_source_arns(account_id),
        }
    }


@dataclass(frozen=True)
class DataExportsUse:
    """Data Exports writing SSE-KMS objects with the key, for this account's exports only."""

    def statements(self, scope: KeyScope) -> list[dict[str, Any]]:
        return [
            {
                "Sid": "AllowDataExportsDelivery",
                "Effect": "Allow",
                "Principal": {"Service": list(DATA_EXPORTS_PRINCIPALS)},
                "Action": list(PUBLISHER_ACTIONS),
                "Resource": "*",
                "Condition": data_exports_conditions(scope.account_id),
            }
        ]


def export_bucket_policy(bucket_arn: str, account_id: str) -> str:
    """TLS only, and Data Exports may check the policy and write the export's objects."""
    document = json.loads(tls_only_policy(bucket_arn))
    document["Statement"].append(
        {
            "Sid": "EnableAWSDataExportsToWriteToS3AndCheckPolicy",
            "Effect": "Allow",
            "Principal": {"Service": list(DATA_EXPORTS_PRINCIPALS)},
            "Action": ["s3:PutObject", "s3:GetBucketPolicy"],
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": data_exports_conditions(account_id),
        }
    )
    return json.dumps(document)


def glue_name(environment: str) -> str:
    """Glue and Athena take lower-case letters, digits and '_' in database names."""
    return f"mlp_{environment.replace('-', '_')}_finops"


class CostExport(pulumi.ComponentResource):
    """The FOCUS 1.2 export, its bucket and key, a partition-projected Glue table and an Athena workgroup.

    Outputs: `bucket`, `prefix`, `export_name`, `focus_uri`, `glue_database`, `glue_table`,
    `athena_workgroup`, `kms_key_arn`.
    """

    bucket: pulumi.Output[str]
    prefix: pulumi.Output[str]
    export_name: pulumi.Output[str]
    focus_uri: pulumi.Output[str]
    glue_database: pulumi.Output[str]
    glue_table: pulumi.Output[str]
    athena_workgroup: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(self, name: str, args: CostExportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ml-platform:infra:CostExport", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config
        environment = args.environment

        # Billing history outlives the stack (the bucket is never force-destroyed), so its key does too.
        scope = account_scope(self)
        stored = retained_bucket(
            name,
            parent=self,
            alias=f"mlp-{environment}-cost-export",
            description=f"ml-platform {environment} FOCUS cost export encryption",
            bucket_prefix=f"mlp-{environment}-cost-export-",
            # Data Exports writes the objects; Athena users read them and write results through S3 only.
            key_uses=[DataExportsUse(), ViaServiceUse("s3")],
            protect=args.protect,
            policy=lambda bucket_arn: pulumi.Output.all(bucket_arn, scope).apply(
                lambda values: export_bucket_policy(values[0], values[1].account_id)
            ),
            policy_name="policy",
        )
        key, bucket, versioning = stored.key, stored.bucket, stored.versioning
        policy, encryption = stored.policy, stored.encryption
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                # OVERWRITE_REPORT replaces each period's files up to three times a day.
                *housekeeping_rules(
                    noncurrent_days=config.noncurrent_version_expiration_days,
                    abort_upload_days=ABORT_INCOMPLETE_UPLOAD_DAYS,
                ),
                {
                    "id": "expire-athena-results",
                    "status": "Enabled",
                    "filter": {"prefix": ATHENA_RESULTS_PREFIX},
                    "expiration": {"days": ATHENA_RESULTS_RETENTION_DAYS},
                },
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        data_exports_provider = (
            None
            if args.region == DATA_EXPORTS_REGION
            else aws.Provider(
                f"{name}-{DATA_EXPORTS_REGION}",
                region=DATA_EXPORTS_REGION,
                default_tags={"tags": dict(args.tags)},
                opts=child,
            )
        )
        data_export = aws.bcmdata.Export(
            name,
            export={
                "name": config.export_name,
                "description": f"ml-platform {environment}: FOCUS 1.2 with AWS columns, daily, Parquet",
                "data_queries": [
                    {
                        "query_statement": focus_query(),
                        "table_configurations": {FOCUS_TABLE: {"TIME_GRANULARITY": "DAILY"}},
                    }
                ],
                "destination_configurations": [
                    {
                        "s3_destinations": [
                            {
                                "s3_bucket": bucket.bucket,
                                "s3_prefix": config.prefix,
                                "s3_region": args.region,
                                "s3_output_configurations": [
                                    {
                                        "output_type": "CUSTOM",
                                        "format": "PARQUET",
                                        "compression": "PARQUET",
                                        "overwrite": "OVERWRITE_REPORT",
                                    }
                                ],
                            }
                        ]
                    }
                ],
                "refresh_cadences": [{"frequency": "SYNCHRONOUS"}],
            },
            # Data Exports checks the bucket policy (and the key behind it) when the export is created.
            opts=pulumi.ResourceOptions(
                parent=self, provider=data_exports_provider, depends_on=[policy, encryption]
            ),
        )
        export_name = data_export.export.apply(lambda spec: spec.name)
        focus_uri = pulumi.Output.concat("s3://", bucket.bucket, "/", config.prefix, "/", export_name)
        data_uri = pulumi.Output.concat(focus_uri, "/data")

        database = aws.glue.CatalogDatabase(
            f"{name}-database",
            name=glue_name(environment),
            description=f"ml-platform {environment} FinOps: the FOCUS 1.2 cost export",
            opts=child,
        )
        table = aws.glue.CatalogTable(
            f"{name}-table",
            name=GLUE_TABLE,
            database_name=database.name,
            table_type="EXTERNAL_TABLE",
            description="FOCUS 1.2 with AWS columns, one partition per billing period",
            partition_keys=[{"name": PARTITION_KEY, "type": "string"}],
            # Partition projection computes the BILLING_PERIOD=YYYY-MM folders, so no crawler runs.
            parameters=data_uri.apply(
                lambda uri: {
                    "classification": "parquet",
                    "EXTERNAL": "TRUE",
                    "projection.enabled": "true",
                    f"projection.{PARTITION_KEY}.type": "date",
                    f"projection.{PARTITION_KEY}.format": "yyyy-MM",
                    f"projection.{PARTITION_KEY}.range": f"{FIRST_BILLING_PERIOD},NOW",
                    f"projection.{PARTITION_KEY}.interval": "1",
                    f"projection.{PARTITION_KEY}.interval.unit": "MONTHS",
                    "storage.location.template": f"{uri}/BILLING_PERIOD=${{{PARTITION_KEY}}}",
                }
            ),
            storage_descriptor={
                "location": pulumi.Output.concat(data_uri, "/"),
                "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "output_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "ser_de_info": {
                    "serialization_library": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                },
                "columns": [{"name": column.lower(), "type": kind} for column, kind in FOCUS_COLUMNS],
            },
            opts=child,
        )
        workgroup = aws.athena.Workgroup(
            f"{name}-workgroup",
            name=f"mlp-{environment}-finops",
            description=f"ml-platform {environment} FinOps queries over the FOCUS cost export",
            configuration={
                # Clients can neither turn result encryption off nor lift the scan cutoff.
                "enforce_workgroup_configuration": True,
                "publish_cloudwatch_metrics_enabled": True,
                "bytes_scanned_cutoff_per_query": config.bytes_scanned_cutoff_gb * GIB,
                "result_configuration": {
                    "output_location": pulumi.Output.concat(
                        "s3://", bucket.bucket, "/", ATHENA_RESULTS_PREFIX
                    ),
                    "encryption_configuration": {"encryption_option": "SSE_KMS", "kms_key_arn": key.arn},
                },
            },
            force_destroy=False,
            opts=child,
        )

        self.bucket = bucket.bucket
        self.prefix = pulumi.Output.from_input(config.prefix)
        self.export_name = export_name
        self.focus_uri = focus_uri
        self.glue_database = database.name
        self.glue_table = table.name
        self.athena_workgroup = workgroup.name
        self.kms_key_arn = key.arn
        self.register_outputs(
            {
                "bucket": self.bucket,
                "prefix": self.prefix,
                "export_name": self.export_name,
                "focus_uri": self.focus_uri,
                "glue_database": self.glue_database,
                "glue_table": self.glue_table,
                "athena_workgroup": self.athena_workgroup,
                "kms_key_arn": self.kms_key_arn,
            }
        )
