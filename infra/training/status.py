"""What a run is doing right now: its stack's outputs read from the state files, then the live AWS view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.training.checkpoints import latest_checkpoint, read_completion
from infra.training.lifecycle import find_run
from infra.training.state import StackReader
from mlp.tags import EXPIRES_AT, normalize_tags, parse_expires_at


def run_status(
    backend: StackReader,
    run_id: str,
    *,
    client: Callable[[str, str | None], Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """`client(service, region)` builds boto3 clients; the run's own region comes from its outputs."""
    summary = find_run(backend, run_id)
    outputs = backend.outputs(summary.name)
    region = outputs.get("region")
    s3, autoscaling = client("s3", region), client("autoscaling", region)
    tags = normalize_tags(summary.tags)
    bucket = outputs.get("checkpointBucket", "")
    groups = (
        autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[outputs["asgName"]])[
            "AutoScalingGroups"
        ]
        if outputs.get("asgName")
        else []
    )
    instances = [
        {
            "instance_id": item["InstanceId"],
            "instance_type": item.get("InstanceType"),
            "lifecycle": item.get("LifecycleState"),
            "health": item.get("HealthStatus"),
        }
        for group in groups
        for item in group.get("Instances", [])
    ]
    completion = read_completion(s3, bucket, run_id) if bucket else None
    checkpoint = latest_checkpoint(s3, bucket, run_id) if bucket else None
    expires_at = parse_expires_at(tags[EXPIRES_AT]) if tags.get(EXPIRES_AT) else None
    moment = now or datetime.now(UTC)
    if completion is not None and completion.verified:
        state = "completed"
    elif expires_at is not None and moment >= expires_at:
        state = "expired"
    else:
        state = "running" if instances else "pending"
    return {
        "run_id": run_id,
        "stack": summary.name,
        "state": state,
        "expires_at": tags.get(EXPIRES_AT),
        "desired_capacity": groups[0]["DesiredCapacity"] if groups else 0,
        "instances": instances,
        "latest_checkpoint": {
            "key": checkpoint.key,
            "last_modified": checkpoint.last_modified.isoformat(),
            "size": checkpoint.size,
        }
        if checkpoint
        else None,
        "completion": {
            "verified": completion.verified,
            "why": completion.why,
            "final_checkpoint_key": completion.final_checkpoint_key,
        }
        if completion
        else None,
        "tags": tags,
    }
