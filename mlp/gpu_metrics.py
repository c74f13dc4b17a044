"""The GPU telemetry contract between the fleets that publish it and FinOps that reads it.

EC2 publishes no GPU metric by itself: every GPU instance we launch (training fleets through their
boot script, serving GPU nodes through a DaemonSet) runs the CloudWatch agent with this config, so
`nvidia_smi_utilization_gpu` lands in namespace `CWAgent` rolled up to the single dimension
`InstanceId`, which is exactly what the idle-GPU scan queries.
"""

from __future__ import annotations

import json
from typing import Any

NAMESPACE = "CWAgent"
DIMENSION = "InstanceId"
# The agent names its metrics `nvidia_smi_<measurement>`.
MEASUREMENTS: tuple[str, ...] = ("utilization_gpu", "utilization_memory", "memory_used", "memory_total")
GPU_UTILIZATION_METRIC = "nvidia_smi_utilization_gpu"
INTERVAL_SECONDS = 60


def cloudwatch_agent_config() -> dict[str, Any]:
    """The agent's JSON config; `${aws:InstanceId}` is the agent's own placeholder, filled on the host."""
    return {
        "agent": {"metrics_collection_interval": INTERVAL_SECONDS, "run_as_user": "root"},
        "metrics": {
            "namespace": NAMESPACE,
            "append_dimensions": {DIMENSION: "${aws:InstanceId}"},
            "aggregation_dimensions": [[DIMENSION]],
            "metrics_collected": {
                "nvidia_gpu": {
                    "measurement": list(MEASUREMENTS),
                    "metrics_collection_interval": INTERVAL_SECONDS,
                }
            },
        },
    }


def cloudwatch_agent_config_json() -> str:
    return json.dumps(cloudwatch_agent_config(), separators=(",", ":"))
