"""The private, retained S3 bucket every component that keeps data uses, with its own KMS key.

Checkpoints, the FOCUS cost export and the FinOps reports all outlive the stack that creates them, so
they share one shape: a customer-managed key retained on delete (protected where the bucket is), a
bucket that is never force-destroyed and depends on its key (a destroy that fails on a non-empty
bucket cannot schedule the key for deletion first), object ownership enforced, every public-access
block, versioning and SSE-KMS with bucket keys. What differs is the caller's: the key's users, the
bucket policy (always starting from `tls_only_policy`) and the lifecycle rules.

The children are parented to the caller's component under `<name>-...`, so the URNs are the ones each
component had before it used this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.kms import KeyUse, customer_managed_key


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request that does not arrive over TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


def housekeeping_rules(*, noncurrent_days: int, abort_upload_days: int) -> list[dict[str, Any]]:
    """Lifecycle rules every retained bucket has: overwritten versions expire, stalled uploads abort."""
    return [
        {
            "id": "expire-noncurrent-versions",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "noncurrent_version_expiration": {"noncurrent_days": noncurrent_days},
        },
        {
            "id": "abort-incomplete-multipart-uploads",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "abort_incomplete_multipart_upload": {"days_after_initiation": abort_upload_days},
        },
    ]


@dataclass(frozen=True)
class RetainedBucket:
    key: aws.kms.Key
    bucket: aws.s3.Bucket
    # Lifecycle rules on versions need versioning first; writers (Data Exports) need the policy and
    # the encryption settings in place.
    versioning: aws.s3.BucketVersioning
    encryption: aws.s3.BucketServerSideEncryptionConfiguration
    policy: aws.s3.BucketPolicy


def retained_bucket(
    name: str,
    *,
    parent: pulumi.ComponentResource,
    alias: str,
    description: str,
    bucket_prefix: str,
    key_uses: Sequence[KeyUse],
    protect: bool,
    policy: Callable[[pulumi.Output[str]], pulumi.Input[str]] = lambda arn: arn.apply(tls_only_policy),
    policy_name: str = "tls-only",
) -> RetainedBucket:
    """The key `<name>-key` (alias `alias/<alias>`), the bucket `<name>` and its settings.

    `policy` maps the bucket's ARN to its policy document (TLS-only by default), created as
    `<name>-<policy_name>` once the public-access block and ownership controls are in place.
    """
    child = pulumi.ResourceOptions(parent=parent)
    key = customer_managed_key(
        f"{name}-key",
        parent=parent,
        description=description,
        uses=key_uses,
        protect=protect,
        retain_on_delete=True,
    )
    aws.kms.Alias(f"{name}-key", name=f"alias/{alias}", target_key_id=key.key_id, opts=child)
    bucket = aws.s3.Bucket(
        name,
        bucket_prefix=bucket_prefix,
        # Never delete the data with the stack: a non-empty bucket makes the destroy fail instead.
        force_destroy=False,
        # Deleted (when empty) before the key is touched, never after it.
        opts=pulumi.ResourceOptions(
            parent=parent, protect=protect, retain_on_delete=protect, depends_on=[key]
        ),
    )
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
    )
    encryption = aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": key.arn,
                },
                # Bucket keys cut KMS request charges for many small writes.
                "bucket_key_enabled": True,
            }
        ],
        opts=child,
    )
    bucket_policy = aws.s3.BucketPolicy(
        f"{name}-{policy_name}",
        bucket=bucket.id,
        policy=policy(bucket.arn),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[public_access, ownership]),
    )
    return RetainedBucket(key, bucket, versioning, encryption, bucket_policy)
