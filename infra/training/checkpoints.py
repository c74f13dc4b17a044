"""Reading a run's checkpoints and its `_COMPLETE` marker, as the launcher, `status` and the reaper do.

The marker is written by the instance's user-data script when the training command succeeds:
`{"run_id", "final_checkpoint_key", "sha256", "instance_id", "completed_at"}`. A run counts as
completed only when the checkpoint it names exists with the recorded checksum.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import botocore.exceptions

# Every run keeps its checkpoints and markers under this prefix of the environment's bucket.
RUNS_PREFIX = "runs/"
COMPLETE_MARKER = "_COMPLETE"
CHECKPOINTS_DIR = "checkpoints/"
_HASH_CHUNK = 8 * 1024 * 1024


def completion_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/{COMPLETE_MARKER}"


def checkpoints_prefix(run_id: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/{CHECKPOINTS_DIR}"


@dataclass(frozen=True)
class Completion:
    run_id: str
    final_checkpoint_key: str
    sha256: str
    completed_at: str
    verified: bool
    why: str


@dataclass(frozen=True)
class Checkpoint:
    key: str
    last_modified: datetime
    size: int


def _missing(error: botocore.exceptions.ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


def _sha256_of(s3: Any, bucket: str, key: str) -> str:
    """The object's SHA-256: from S3's stored checksum when it has one, else by streaming it."""
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    stored = head.get("ChecksumSHA256")
    if stored and "-" not in stored:
        return base64.b64decode(stored).hex()
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def read_completion(s3: Any, bucket: str, run_id: str) -> Completion | None:
    """The run's completion marker, checked against the checkpoint it names; None if there is none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=completion_key(run_id))["Body"].read()
    except botocore.exceptions.ClientError as error:
        if _missing(error):
            return None
        raise
    try:
        marker = json.loads(body)
        final_key, recorded = str(marker["final_checkpoint_key"]), str(marker["sha256"]).lower()
    except (ValueError, KeyError, TypeError):
        return Completion(
            run_id, "", "", "", verified=False, why=f"{completion_key(run_id)} is not valid marker JSON"
        )
    completed_at = str(marker.get("completed_at", ""))

    def judged(verified: bool, why: str) -> Completion:
        return Completion(run_id, final_key, recorded, completed_at, verified=verified, why=why)

    if not final_key.startswith(f"{RUNS_PREFIX}{run_id}/"):
        return judged(False, f"final checkpoint {final_key} is outside the run's prefix")
    try:
        actual = _sha256_of(s3, bucket, final_key)
    except botocore.exceptions.ClientError as error:
        if _missing(error):
            return judged(False, f"final checkpoint {final_key} does not exist")
        raise
    if actual != recorded:
        return judged(
            False, f"final checkpoint {final_key} checksum {actual[:12]}… ≠ recorded {recorded[:12]}…"
        )
    return judged(True, f"_COMPLETE names {final_key} with a matching sha256")


def latest_checkpoint(s3: Any, bucket: str, run_id: str) -> Checkpoint | None:
    newest: Checkpoint | None = None
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=checkpoints_prefix(run_id)
    ):
        for item in page.get("Contents", []):
            if newest is None or item["LastModified"] > newest.last_modified:
                newest = Checkpoint(item["Key"], item["LastModified"], item["Size"])
    return newest
