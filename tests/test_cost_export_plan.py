"""The FOCUS cost export planned offline under mocks: the dev stack with ml-platform:costExport enabled."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.components.cost_export import FOCUS_COLUMNS, focus_query
from infra.config import StackConfig, parse_stack_config, read_stack_file
from infra.mocks import ACCOUNT_ID
from infra.plan import PlanResult, plan_environment
from infra.tagging import untagged_in_plan
from tests.plan_helpers import inputs, of_type, one

COST_EXPORT = {
    "enabled": True,
    "exportName": "finops-focus",
    "prefix": "billing/focus",
    "bytesScannedCutoffGb": 25,
    "noncurrentVersionExpirationDays": 45,
}
BUCKET = "aws:s3/bucket:Bucket"
EXPORT = "aws:bcmdata/export:Export"
GLUE_TABLE = "aws:glue/catalogTable:CatalogTable"
WORKGROUP = "aws:athena/workgroup:Workgroup"
COST_EXPORT_TYPES = (
    "ml-platform:infra:CostExport",
    EXPORT,
    "aws:glue/catalogDatabase:CatalogDatabase",
    GLUE_TABLE,
    WORKGROUP,
)
SOURCE_CONDITION = {
    "StringLike": {
        "aws:SourceAccount": ACCOUNT_ID,
        "aws:SourceArn": [
            f"arn:aws:cur:us-east-1:{ACCOUNT_ID}:definition/*",
            f"arn:aws:bcm-data-exports:us-east-1:{ACCOUNT_ID}:export/*",
        ],
    }
}
DATA_EXPORTS_PRINCIPALS = ["billingreports.amazonaws.com", "bcm-data-exports.amazonaws.com"]


def plan_with_cost_export(region: str | None = None) -> tuple[StackConfig, PlanResult]:
    raw = read_stack_file("dev")
    raw["ml-platform:costExport"] = COST_EXPORT
    if region:
        raw["aws:region"] = region
    config = parse_stack_config("dev", raw)
    return config, plan_environment(config, raw)


@pytest.fixture(scope="module")
def planned() -> tuple[StackConfig, PlanResult]:
    return plan_with_cost_export()


@pytest.fixture(scope="module")
def plan(planned: tuple[StackConfig, PlanResult]) -> dict[str, Any]:
    return planned[1].to_json()


@pytest.fixture(scope="module")
def outputs(planned: tuple[StackConfig, PlanResult]) -> dict[str, Any]:
    return planned[1].outputs


def in_component(plan: dict[str, Any], resource_type: str) -> dict[str, Any]:
    matches = [item for item in of_type(plan, resource_type) if "CostExport" in item["urn"]]
    assert len(matches) == 1, [item["name"] for item in matches]
    return matches[0]


def export_bucket(plan: dict[str, Any]) -> dict[str, Any]:
    return one(plan, BUCKET, "cost-export")


def bucket_settings(plan: dict[str, Any], resource_type: str) -> dict[str, Any]:
    """The inputs of the one `resource_type` (versioning, policy, ...) that configures the export bucket."""
    urn = export_bucket(plan)["urn"]
    matches = [
        item["inputs"]
        for item in of_type(plan, resource_type)
        if urn in item["propertyDependencies"].get("bucket", [])
    ]
    assert len(matches) == 1
    return matches[0]


def bucket_name(plan: dict[str, Any]) -> str:
    return bucket_settings(plan, "aws:s3/bucketVersioning:BucketVersioning")["bucket"]


def s3_destination(plan: dict[str, Any]) -> dict[str, Any]:
    return inputs(plan, EXPORT)["export"]["destinationConfigurations"][0]["s3Destinations"][0]


def test_every_resource_of_the_component_is_its_child(plan: dict[str, Any]) -> None:
    component = one(plan, "ml-platform:infra:CostExport")
    children = [
        item for item in plan["resources"] if item["urn"].startswith(component["urn"].rsplit("::", 1)[0])
    ]
    assert {item["type"] for item in children} >= set(COST_EXPORT_TYPES)
    assert all(item["parent"] == component["urn"] for item in children if item is not component)


def test_bucket_policy_lets_only_data_exports_of_this_account_deliver_over_tls(plan: dict[str, Any]) -> None:
    bucket_arn = f"arn:aws:s3:::{bucket_name(plan)}"
    policy = json.loads(bucket_settings(plan, "aws:s3/bucketPolicy:BucketPolicy")["policy"])
    deny, delivery = policy["Statement"]
    assert deny == {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    assert delivery == {
        "Sid": "EnableAWSDataExportsToWriteToS3AndCheckPolicy",
        "Effect": "Allow",
        "Principal": {"Service": DATA_EXPORTS_PRINCIPALS},
        "Action": ["s3:PutObject", "s3:GetBucketPolicy"],
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": SOURCE_CONDITION,
    }


def test_bucket_is_versioned_private_and_encrypted_with_its_own_key(plan: dict[str, Any]) -> None:
    key = in_component(plan, "aws:kms/key:Key")
    assert bucket_settings(plan, "aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"] == {
        "status": "Enabled"
    }
    block = bucket_settings(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(
        block[flag] is True
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    (rule,) = bucket_settings(
        plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms"
    assert default["kmsMasterKeyId"].startswith(f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/")
    assert key["retainOnDelete"] is True
    assert export_bucket(plan)["inputs"]["forceDestroy"] is False


def test_key_policy_lets_data_exports_use_the_key_under_the_same_conditions(plan: dict[str, Any]) -> None:
    statements = {
        s["Sid"]: s
        for s in json.loads(in_component(plan, "aws:kms/key:Key")["inputs"]["policy"])["Statement"]
    }
    delivery = statements["AllowDataExportsDelivery"]
    assert delivery["Principal"] == {"Service": DATA_EXPORTS_PRINCIPALS}
    assert delivery["Condition"] == SOURCE_CONDITION
    assert set(delivery["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    assert (
        statements["AllowUseViaS3"]["Condition"]["StringEquals"]["kms:ViaService"]
        == "s3.us-east-1.amazonaws.com"
    )


def test_lifecycle_expires_noncurrent_versions_from_config_and_aborts_uploads(plan: dict[str, Any]) -> None:
    rules = {
        rule["id"]: rule
        for rule in bucket_settings(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")[
            "rules"
        ]
    }
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 45}
    assert (
        rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        > 0
    )
    assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_export_is_focus_1_2_daily_parquet_overwritten_into_the_bucket(plan: dict[str, Any]) -> None:
    export = inputs(plan, EXPORT)["export"]
    assert export["name"] == "finops-focus"
    (query,) = export["dataQueries"]
    assert query["queryStatement"] == focus_query()
    assert query["queryStatement"].endswith(" FROM FOCUS_1_2_AWS")
    assert query["tableConfigurations"] == {"FOCUS_1_2_AWS": {"TIME_GRANULARITY": "DAILY"}}
    assert export["refreshCadences"] == [{"frequency": "SYNCHRONOUS"}]
    destination = s3_destination(plan)
    assert destination["s3Bucket"] == bucket_name(plan)
    assert destination["s3Prefix"] == "billing/focus"
    assert destination["s3Region"] == "us-east-1"
    assert destination["s3OutputConfigurations"] == [
        {
            "outputType": "CUSTOM",
            "format": "PARQUET",
            "compression": "PARQUET",
            "overwrite": "OVERWRITE_REPORT",
        }
    ]


def test_export_waits_for_the_bucket_policy(plan: dict[str, Any]) -> None:
    policy = in_component(plan, "aws:s3/bucketPolicy:BucketPolicy")
    assert policy["urn"] in one(plan, EXPORT)["dependencies"]


def test_glue_table_projects_the_billing_period_partitions(
    plan: dict[str, Any], outputs: dict[str, Any]
) -> None:
    table = inputs(plan, GLUE_TABLE)
    data = f"{outputs['costExportFocusUri']}/data"
    assert table["storageDescriptor"]["location"] == f"{data}/"
    assert table["storageDescriptor"]["serDeInfo"]["serializationLibrary"] == (
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    )
    assert table["partitionKeys"] == [{"name": "billing_period", "type": "string"}]
    parameters = table["parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.billing_period.type"] == "date"
    assert parameters["projection.billing_period.format"] == "yyyy-MM"
    assert parameters["projection.billing_period.range"].endswith(",NOW")
    assert parameters["projection.billing_period.interval"] == "1"
    assert parameters["projection.billing_period.interval.unit"] == "MONTHS"
    assert parameters["storage.location.template"] == f"{data}/BILLING_PERIOD=${{billing_period}}"


def test_glue_columns_are_the_exported_columns_with_athena_types(plan: dict[str, Any]) -> None:
    columns = {
        column["name"]: column["type"] for column in inputs(plan, GLUE_TABLE)["storageDescriptor"]["columns"]
    }
    assert list(columns) == [name.lower() for name, _ in FOCUS_COLUMNS]
    assert columns["billedcost"] == "double"
    assert columns["effectivecost"] == "double"
    assert columns["chargeperiodstart"] == "timestamp"
    assert columns["tags"] == "map<string,string>"
    assert columns["servicename"] == "string"


def test_workgroup_enforces_encrypted_results_and_the_configured_scan_cutoff(plan: dict[str, Any]) -> None:
    configuration = inputs(plan, WORKGROUP)["configuration"]
    bucket = bucket_name(plan)
    key = in_component(plan, "aws:kms/key:Key")
    assert configuration["enforceWorkgroupConfiguration"] is True
    assert configuration["bytesScannedCutoffPerQuery"] == 25 * 2**30
    results = configuration["resultConfiguration"]
    assert results["outputLocation"] == f"s3://{bucket}/athena-results/"
    assert results["encryptionConfiguration"]["encryptionOption"] == "SSE_KMS"
    assert key["urn"] in one(plan, WORKGROUP)["propertyDependencies"]["configuration"]


def test_outputs_point_finops_at_the_export(plan: dict[str, Any], outputs: dict[str, Any]) -> None:
    bucket = bucket_name(plan)
    assert outputs["costExportFocusUri"] == f"s3://{bucket}/billing/focus/finops-focus"
    assert (
        outputs["costExportGlueDatabase"] == inputs(plan, "aws:glue/catalogDatabase:CatalogDatabase")["name"]
    )
    assert outputs["costExportGlueTable"] == inputs(plan, GLUE_TABLE)["name"]
    assert outputs["costExportAthenaWorkgroup"] == inputs(plan, WORKGROUP)["name"] == "mlp-dev-finops"


def test_every_taggable_resource_carries_the_mandatory_tags(planned: tuple[StackConfig, PlanResult]) -> None:
    config, result = planned
    assert untagged_in_plan(result.resources, config.mandatory_tags) == []


def test_outside_us_east_1_the_export_alone_goes_through_a_tagged_us_east_1_provider() -> None:
    config, result = plan_with_cost_export("eu-west-1")
    plan = result.to_json()
    providers = {item["name"]: item for item in of_type(plan, "pulumi:providers:aws")}
    assert set(providers) == {"aws", "cost-export-us-east-1"}
    data_exports = providers["cost-export-us-east-1"]
    assert data_exports["inputs"]["region"] == "us-east-1"
    assert data_exports["inputs"]["defaultTags"]["tags"] == config.resource_tags
    assert one(plan, EXPORT)["provider"] == data_exports["urn"]
    assert export_bucket(plan)["provider"] == providers["aws"]["urn"]
    assert s3_destination(plan)["s3Region"] == "eu-west-1"
    assert untagged_in_plan(result.resources, config.mandatory_tags) == []


def test_disabled_by_default_plans_none_of_it() -> None:
    raw = read_stack_file("dev")
    config = parse_stack_config("dev", raw)
    assert config.cost_export.enabled is False
    result = plan_environment(config, raw)
    plan = result.to_json()
    assert [item["name"] for t in COST_EXPORT_TYPES for item in of_type(plan, t)] == []
    assert not [item for item in plan["resources"] if "cost-export" in item["name"]]
    assert not [key for key in result.outputs if key.startswith("costExport")]
