"""CheckpointBucket: where training runs keep their checkpoints, under `runs/<run-id>/`.

It lives in the environment stack, never in a training stack, so destroying a run's stack cannot
take its checkpoints with it; in prod it is also protected and retained on delete. Its KMS key is
retained on delete everywhere (and protected in prod), since the bucket's objects may outlive the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.buckets import housekeeping_rules, retained_bucket
from infra.config import CheckpointConfig
from infra.kms import ViaServiceUse
from infra.training.checkpoints import RUNS_PREFIX


def checkpoint_bucket_prefix(environment: str) -> str:
    """What every checkpoint bucket's name starts with: FinOps finds an environment's by it."""
    return f"mlp-{environment}-checkpoints-"


# The environment a checkpoint bucket's name belongs to, as `checkpoint_bucket_prefix` writes it.
CHECKPOINT_BUCKET_NAME = re.compile(r"mlp-(?P<environment>[a-z0-9-]+?)-checkpoints-.+")


@dataclass(frozen=True)
class CheckpointBucketArgs:
    environment: str
    config: CheckpointConfig
    protect: bool


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
        config = args.config

        # Checkpoints can outlive any `pulumi destroy`: the key is retained with them in every environment.
        stored = retained_bucket(
            name,
            parent=self,
            alias=f"mlp-{args.environment}-checkpoints",
            description=f"ml-platform {args.environment} checkpoint encryption",
            bucket_prefix=checkpoint_bucket_prefix(args.environment),
            # Training run roles' kms:Decrypt / GenerateDataKey work on checkpoint objects through S3 only.
            key_uses=[ViaServiceUse("s3")],
            protect=args.protect,
        )
        key, bucket, versioning = stored.key, stored.bucket, stored.versioning
        rules = housekeeping_rules(
            noncurrent_days=config.noncurrent_version_expiration_days,
            abort_upload_days=config.abort_incomplete_upload_days,
        )
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
