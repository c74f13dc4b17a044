"""CheckpointBucket: where training runs keep their checkpoints, under `runs/<run-id>/`.

It lives in the environment stack, never in a training stack, so destroying a run's stack cannot
take its checkpoints with it; in prod it is also protected and retained on delete. Its KMS key is
retained on delete everywhere (and protected in prod), since the bucket's objects may outlive the stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import CheckpointConfig
from infra.kms import ViaServiceUse, customer_managed_key
from infra.training.checkpoints import RUNS_PREFIX


@dataclass(frozen=True)
class CheckpointBucketArgs:
    environment: str
    config: CheckpointConfig
    protect: bool


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


class CheckpointBucket(pulumi.ComponentResource):
    """Versioned, KMS-encrypted, private, TLS-only S3 bucket with lifecycle rules.

    Outputs: `bucket_name`, `bucket_arn`, `kms_key_arn`.
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: CheckpointBucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:CheckpointBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config

        # The bucket is never force-destroyed, so its objects can outlive any `pulumi destroy`: the key
        # must too, in every environment, or a destroy that fails on a non-empty bucket would still
        # schedule the key for deletion and leave those checkpoints unreadable.
        key = customer_managed_key(
            f"{name}-key",
            parent=self,
            description=f"ml-platform {args.environment} checkpoint encryption",
            # Training run roles' kms:Decrypt / GenerateDataKey work on checkpoint objects through S3 only.
            uses=[ViaServiceUse("s3")],
            protect=args.protect,
            retain_on_delete=True,
        )
        aws.kms.Alias(
            f"{name}-key",
            name=f"alias/mlp-{args.environment}-checkpoints",
            target_key_id=key.key_id,
            opts=child,
        )

        bucket = aws.s3.Bucket(
            f"{name}",
            bucket_prefix=f"mlp-{args.environment}-checkpoints-",
            # Never delete checkpoints with the stack: a non-empty bucket makes the destroy fail instead.
            force_destroy=False,
            # Deleted (when empty) before the key is touched, never after it.
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect, depends_on=[key]
            ),
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
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
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": key.arn,
                    },
                    # Bucket keys cut KMS request charges for the many small writes of checkpointing.
                    "bucket_key_enabled": True,
                }
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(tls_only_policy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access, ownership]),
        )
        rules: list[dict] = [
            {
                "id": "expire-noncurrent-versions",
                "status": "Enabled",
                "filter": {"prefix": ""},
                "noncurrent_version_expiration": {
                    "noncurrent_days": config.noncurrent_version_expiration_days
                },
            },
            {
                "id": "abort-incomplete-multipart-uploads",
                "status": "Enabled",
                "filter": {"prefix": ""},
                "abort_incomplete_multipart_upload": {
                    "days_after_initiation": config.abort_incomplete_upload_days
                },
            },
        ]
        if config.transition_runs_after_days:
            rules.append(
                {
                    "id": "transition-old-runs",
                    "status": "Enabled",
                    "filter": {"prefix": RUNS_PREFIX},
                    "transitions": [
                        {
                            "days": config.transition_runs_after_days,
                            "storage_class": config.transition_storage_class,
                        }
                    ],
                }
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=rules,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.register_outputs(
            {"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "kms_key_arn": self.kms_key_arn}
        )
