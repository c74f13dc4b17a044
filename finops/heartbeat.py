"""The scheduled jobs' heartbeat: one CloudWatch datapoint at the end of a successful run.

The serving cluster's alarm watches `JobSucceeded` per `Job` and fires when a night (or an hour of
the reaper) passes without one, which catches a job that failed, hung, or never started alike.
Only the CronJobs publish it (`--heartbeat`); a run by hand publishes nothing.
"""

from __future__ import annotations

from typing import Any

import mlp.aws

NAMESPACE = "ml-platform/finops"
METRIC_NAME = "JobSucceeded"
JOB_DIMENSION = "Job"
JOBS = ("report", "reap")


def publish_success(job: str, *, client: Any = None) -> None:
    """Put `JobSucceeded=1` for `job` (one of JOBS); an AWS refusal is one line naming the metric."""
    if job not in JOBS:
        raise ValueError(f"job {job!r}: the alarms watch only {', '.join(JOBS)}")
    cloudwatch = client or mlp.aws.client("cloudwatch")
    with mlp.aws.aws_errors(f"publishing the {job} heartbeat ({NAMESPACE} {METRIC_NAME})"):
        cloudwatch.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                {
                    "MetricName": METRIC_NAME,
                    "Dimensions": [{"Name": JOB_DIMENSION, "Value": job}],
                    "Value": 1.0,
                    "Unit": "Count",
                }
            ],
        )
