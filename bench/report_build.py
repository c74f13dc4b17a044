"""Report build time for a million cost rows: a synthetic FOCUS frame shaped like `finops.costs` output.

The rows are spread over every Cost Explorer view of the report and 60 days (a 30-day report and the
previous period), with the cardinalities of a large account. Prints the time of each step; no
assertions. Run: .venv/bin/python bench/report_build.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from finops import costs, focus_file, report
from finops.analysis import Period, report_period
from finops.dashboard import render_dashboard, render_markdown
from finops.idle import IdleFinding
from finops.untagged import UntaggedFinding
from mlp.pricing import EC2
from mlp.tags import DEFAULT_MANDATORY_TAGS

# The bench's stand-in payer account, for the FOCUS file's BillingAccountId.
ACCOUNT_ID = "123456789012"

TODAY = date(2026, 11, 23)
DAYS = 30
TEAMS = [f"team-{n:02d}" for n in range(40)] + [""]
ENVIRONMENTS = ["dev", "staging", "prod", ""]
SERVICES = [f"Service {n:02d}" for n in range(60)]
REGIONS = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "global"]
PURCHASE_TYPES = ["On Demand Instances", "Spot Instances", "Savings Plans", "Standard Reserved Instances"]
INSTANCE_TYPES = [*EC2, "NoInstanceType"]
# An organization's member accounts, for the account+service view.
ACCOUNTS = [f"{100000000000 + n}" for n in range(12)]


def synthetic_spend(rows: int, period: Period, seed: int = 1) -> costs.Spend:
    """`rows` rows over every view and every day from the period's fetch start, random amounts."""
    rng = np.random.default_rng(seed)
    tag_keys = costs.report_tag_keys()
    views = costs.plan_views()
    days = pd.date_range(
        pd.Timestamp(period.fetch_start, tz="UTC"), pd.Timestamp(period.end, tz="UTC"), freq="D"
    )[:-1]
    per_view = rows // len(views)
    values_of = {
        "SERVICE": SERVICES,
        "REGION": REGIONS,
        "PURCHASE_TYPE": PURCHASE_TYPES,
        "INSTANCE_TYPE": INSTANCE_TYPES,
        "LINKED_ACCOUNT": ACCOUNTS,
    }
    frames = []
    for view in views:
        frame = pd.DataFrame(
            {
                "ChargePeriodStart": days[rng.integers(0, len(days), per_view)],
                "BilledCost": rng.gamma(2.0, 6.0, per_view),
                "x_CostView": view.name,
                "x_Estimated": False,
            }
        )
        frame["EffectiveCost"] = frame["BilledCost"] * rng.uniform(0.7, 1.0, per_view)
        tags: dict[str, np.ndarray] = {}
        for kind, key in view.group_by:
            if kind == "TAG":
                choices = (
                    TEAMS if key == "team" else ENVIRONMENTS if key == "environment" else [f"{key}-a", ""]
                )
                tags[key] = np.asarray(choices, dtype=object)[rng.integers(0, len(choices), per_view)]
                frame[costs.tag_column(key)] = tags[key]
            else:
                choices = values_of[key]
                column = costs.DIMENSION_COLUMNS[key]
                frame[column] = np.asarray(choices, dtype=object)[rng.integers(0, len(choices), per_view)]
        if tags:
            combos = pd.DataFrame(tags)
            frame["Tags"] = [
                json.dumps({key: value for key, value in zip(combos.columns, row, strict=True) if value})
                for row in combos.itertuples(index=False)
            ]
        if costs.USAGE_METRIC in view.metrics:
            frame["ConsumedQuantity"] = rng.uniform(0, 24, per_view)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    for column in [*costs.FOCUS_COLUMNS, *(costs.tag_column(key) for key in tag_keys)]:
        if column not in frame:
            frame[column] = None
    frame["ChargePeriodEnd"] = frame["ChargePeriodStart"] + pd.Timedelta(days=1)
    frame["BillingCurrency"] = "USD"
    frame["Tags"] = frame["Tags"].fillna("{}")
    frame["PricingCategory"] = frame["x_PurchaseType"].map(
        {value: costs.pricing_category(value) for value in PURCHASE_TYPES}
    )
    return costs.Spend(
        start=period.fetch_start,
        end=period.end,
        mandatory_tags=DEFAULT_MANDATORY_TAGS,
        frame=frame,
        complete_views={view.name for view in views},
    )


def timed(label: str, results: list[tuple[str, float]], action):
    started = time.perf_counter()
    value = action()
    results.append((label, time.perf_counter() - started))
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    period = report_period(DAYS, TODAY)

    steps: list[tuple[str, float]] = []
    spend = timed(
        "generate synthetic frame (not part of the build)", steps, lambda: synthetic_spend(args.rows, period)
    )
    idle = [
        IdleFinding(resource_id=f"i-{n:017x}", region="us-east-1", instance_type="g5.xlarge", telemetry="gpu",
                    gpu_util_max=1.0, cpu_util_max=None, idle_hours=6.0, hourly_cost_usd=1.006,
                    wasted_usd=6.036, tags={"team": TEAMS[n % 40]})
        for n in range(200)
    ]  # fmt: skip
    untagged = [
        UntaggedFinding(f"arn:aws:ec2:us-east-1:123456789012:volume/vol-{n:017x}", "ec2:volume", "us-east-1",
                        ("team",))
        for n in range(2000)
    ]  # fmt: skip
    built = timed(
        "analyze spend + assemble findings",
        steps,
        lambda: report.build_report(spend, period, idle=idle, untagged=untagged),
    )
    with tempfile.TemporaryDirectory() as out:
        timed("write the four files (write_report)", steps, lambda: report.write_report(built, Path(out)))
        sizes = {path.name: path.stat().st_size for path in Path(out).iterdir()}
        # The parts of write_report, for where the time goes.
        parts = [
            ("  of which index.html", lambda: render_dashboard(built)),
            ("  of which report.md", lambda: render_markdown(built)),
            (
                "  of which costs.focus.parquet + .csv",
                lambda: focus_file.write_focus_files(
                    focus_file.focus_dataset(
                        built.spend, built.period.start, built.period.end, billing_account_id=ACCOUNT_ID
                    ),
                    Path(out),
                ),
            ),
        ]
        breakdown: list[tuple[str, float]] = []
        for label, action in parts:
            timed(label, breakdown, action)

    in_period = len(
        focus_file.focus_dataset(
            built.spend, built.period.start, built.period.end, billing_account_id=ACCOUNT_ID
        )
    )
    print(f"report build for {len(spend.frame):,} cost rows ({in_period:,} in the {DAYS}-day period)")
    for label, seconds in [*steps, *breakdown]:
        print(f"  {label:<52} {seconds:8.2f} s")
    build = sum(seconds for _, seconds in steps[1:])
    print(f"  {'total build (excluding generation)':<52} {build:8.2f} s")
    for name, size in sorted(sizes.items()):
        print(f"  {name:<52} {size / 1e6:8.1f} MB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  {'peak memory':<52} {peak:8.0f} MB")


if __name__ == "__main__":
    main()
