"""Report assembly (figures, findings.json, report.md, dashboard, CSV) and delivery (S3, Slack).

Spend comes from the sandbox's Cost Explorer emulator over line items made in `tests.test_costs`;
every expected figure is recomputed here from those line items.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from finops import costs, delivery, inventory, report
from finops.analysis import MAX_DAYS, RUN_RATE_DAYS, TOP_MOVERS, Period, join_untagged, report_period
from finops.costs import UNTAGGED_LABEL
from finops.dashboard import render_markdown
from finops.findings import Report
from finops.idle import IdleFinding
from finops.sandbox.cost_explorer import CostExplorerEmulator, LineItem
from finops.scope import Gap
from finops.untagged import UntaggedFinding
from mlp import pricing
from mlp.errors import UserError
from mlp.tags import DEFAULT_MANDATORY_TAGS
from tests.test_costs import NOW, TODAY, EmulatedCostExplorer, SleepRecorder, make_line_items

DAYS = 14
PERIOD = report_period(DAYS, TODAY)
UNTAGGED = UNTAGGED_LABEL

# findings.json's idle and untagged entries, as the contract has them.
IDLE_JSON = [
    {
        "resource_id": "i-0idle1",
        "account_id": "",
        "account_name": "",
        "region": "us-east-1",
        "instance_type": "g5.xlarge",
        "telemetry": "gpu",
        "gpu_util_max": 1.5,
        "cpu_util_max": None,
        "idle_hours": 12.0,
        "hourly_cost_usd": 1.006,
        "wasted_usd": 12.072,
        "tags": {"team": "vision", "run-id": "r1"},
        "run_id": "r1",
    },
    {
        "resource_id": "i-0idle2",
        "account_id": "",
        "account_name": "",
        "region": "us-west-2",
        "instance_type": "g4dn.xlarge",
        "telemetry": "cpu",
        "gpu_util_max": None,
        "cpu_util_max": 2.0,
        "idle_hours": 6.0,
        "hourly_cost_usd": 0.526,
        "wasted_usd": 3.156,
        "tags": {},
    },
]
UNTAGGED_JSON = [
    {
        "arn": "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc",
        "account_id": "",
        "account_name": "",
        "resource_type": "ec2:instance",
        "region": "us-east-1",
        "missing_tags": ["team", "owner"],
        "tags": {"project": "recsys", "environment": "dev", "cost-center": "CC-4410", "managed-by": "pulumi"},
    },
    {
        "arn": "arn:aws:ec2:us-east-1:123456789012:volume/vol-1",
        "account_id": "",
        "account_name": "",
        "resource_type": "ec2:volume",
        "region": "us-east-1",
        "missing_tags": list(DEFAULT_MANDATORY_TAGS),
        "tags": {},
    },
    {
        "arn": "arn:aws:s3:::scratch",
        "account_id": "",
        "account_name": "",
        "resource_type": "s3:bucket",
        "region": "us-west-2",
        "missing_tags": ["team"],
        "tags": {"owner": "bob@example.com"},
    },
]
IDLE = [
    IdleFinding(**{key: value for key, value in finding.items() if key not in {"run_id", "pulumi_stack"}})
    for finding in IDLE_JSON
]
UNTAGGED_RESOURCES = [
    UntaggedFinding(
        finding["arn"],
        finding["resource_type"],
        finding["region"],
        tuple(finding["missing_tags"]),
        tags=finding["tags"],
    )
    for finding in UNTAGGED_JSON
]


def read_spend(line_items: list[LineItem], throttle: int = 0, max_attempts: int = 6) -> costs.Spend:
    emulator = CostExplorerEmulator(page_size=40)
    emulator.load(line_items, NOW)
    emulator.throttle_next(throttle)
    reader = costs.CostExplorerReader(
        EmulatedCostExplorer(emulator), sleep=SleepRecorder(), max_attempts=max_attempts
    )
    return costs.read_spend(reader, PERIOD.fetch_start, PERIOD.end)


@pytest.fixture(scope="module")
def line_items() -> list[LineItem]:
    return make_line_items(days=45)


@pytest.fixture(scope="module")
def built(line_items: list[LineItem]) -> Report:
    return report.build_report(
        read_spend(line_items), PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES, generated_at=NOW
    )


def between(items: list[LineItem], start: date, end: date) -> list[LineItem]:
    return [item for item in items if start <= item.day < end]


def sums_by(items: list[LineItem], label) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for item in items:
        totals[label(item)] += item.unblended_cost
    return dict(totals)


def assert_money_maps_equal(got: dict[str, float], expected: dict[str, float]) -> None:
    assert got.keys() == expected.keys()
    for key, amount in expected.items():
        assert got[key] == pytest.approx(amount, abs=0.006), key


def test_period_is_the_full_days_before_today() -> None:
    period = report_period(30, date(2026, 3, 5))
    assert (period.start, period.end) == (date(2026, 2, 3), date(2026, 3, 5))
    assert period.previous == Period(date(2026, 1, 4), date(2026, 2, 3))
    assert period.fetch_start == date(2026, 1, 4)  # the previous period reaches further than March 1st
    # the forecast card shows the previous month whole, so a short period still reads from its first day
    assert report_period(3, date(2026, 3, 20)).fetch_start == date(2026, 2, 1)


@pytest.mark.parametrize("days", [0, -3, MAX_DAYS + 1])
def test_days_out_of_range_is_a_user_error(days: int) -> None:
    with pytest.raises(UserError, match="--days"):
        report_period(days, TODAY)


def test_spend_figures_equal_the_line_item_sums(built: Report, line_items: list[LineItem]) -> None:
    current = between(line_items, PERIOD.start, PERIOD.end)
    spend = built.findings["spend"]

    total = sum(item.unblended_cost for item in current)
    assert spend["total_usd"] == pytest.approx(total, abs=0.006)
    assert spend["total_effective_usd"] == pytest.approx(
        sum(item.amortized_cost for item in current), abs=0.006
    )
    assert_money_maps_equal(
        spend["by_team"], sums_by(current, lambda item: item.tags.get("team") or UNTAGGED)
    )
    assert_money_maps_equal(
        spend["by_environment"], sums_by(current, lambda item: item.tags.get("environment") or UNTAGGED)
    )
    assert_money_maps_equal(spend["by_service"], sums_by(current, lambda item: item.service))
    assert_money_maps_equal(spend["by_region"], sums_by(current, lambda item: item.region))

    untagged = sum(
        item.unblended_cost
        for item in current
        if any(not item.tags.get(key) for key in DEFAULT_MANDATORY_TAGS)
    )
    assert spend["untagged_usd"] == pytest.approx(untagged, abs=0.006)
    assert spend["untagged_share"] == pytest.approx(untagged / total, abs=1e-4)
    for key in DEFAULT_MANDATORY_TAGS:
        missing_key = sum(item.unblended_cost for item in current if not item.tags.get(key))
        assert spend["untagged_by_tag"][key] == pytest.approx(missing_key, abs=0.006)


def test_spot_share_and_savings(built: Report, line_items: list[LineItem]) -> None:
    current = between(line_items, PERIOD.start, PERIOD.end)
    spot = [item for item in current if item.purchase_type == "Spot Instances"]
    instance_spend = sum(item.unblended_cost for item in current if item.instance_type)
    savings = sum(
        item.usage_quantity * pricing.on_demand_hourly(item.instance_type) - item.unblended_cost
        for item in spot
    )
    spend = built.findings["spend"]
    assert spot, "the line items must contain spot usage for this test to mean anything"
    assert spend["spot_usd"] == pytest.approx(sum(item.unblended_cost for item in spot), abs=0.006)
    assert spend["spot_share"] == pytest.approx(spend["spot_usd"] / instance_spend, abs=1e-4)
    assert spend["spot_savings_usd"] == pytest.approx(savings, abs=0.006)


def test_spot_usage_of_an_unpriced_type_is_left_out_and_named(line_items: list[LineItem]) -> None:
    mystery = LineItem(
        day=PERIOD.start,
        service="Amazon Elastic Compute Cloud - Compute",
        region="us-east-1",
        purchase_type="Spot Instances",
        instance_type="x9z.mega",
        linked_account="123456789012",
        tags={},
        unblended_cost=10.0,
        amortized_cost=10.0,
        usage_quantity=5.0,
    )
    with_mystery = report.build_report(read_spend([*line_items, mystery]), PERIOD, idle=[], untagged=[])
    without = report.build_report(read_spend(line_items), PERIOD, idle=[], untagged=[])
    assert with_mystery.analysis.spot_unpriced_instance_types == ["x9z.mega"]
    assert with_mystery.findings["spend"]["spot_savings_usd"] == without.findings["spend"]["spot_savings_usd"]
    assert "x9z.mega" in render_markdown(with_mystery)


def test_top_movers_compare_with_the_previous_period(built: Report, line_items: list[LineItem]) -> None:
    current = between(line_items, PERIOD.start, PERIOD.end)
    previous = between(line_items, PERIOD.previous.start, PERIOD.previous.end)
    changes = {}
    for dimension, label in (
        ("team", lambda item: item.tags.get("team") or UNTAGGED),
        ("environment", lambda item: item.tags.get("environment") or UNTAGGED),
        ("service", lambda item: item.service),
    ):
        now, before = sums_by(current, label), sums_by(previous, label)
        for name in now.keys() | before.keys():
            changes[(dimension, name)] = now.get(name, 0.0) - before.get(name, 0.0)
    movers = built.findings["spend"]["top_movers"]
    assert len(movers) == min(TOP_MOVERS, len(changes))
    for mover in movers:
        assert mover["change_usd"] == pytest.approx(changes[(mover["dimension"], mover["name"])], abs=0.011)
    biggest = max(changes, key=lambda key: abs(changes[key]))
    assert (movers[0]["dimension"], movers[0]["name"]) == biggest
    assert [abs(m["change_usd"]) for m in movers] == sorted(
        (abs(m["change_usd"]) for m in movers), reverse=True
    )


def test_month_end_forecast(built: Report, line_items: list[LineItem]) -> None:
    month_start = TODAY.replace(day=1)
    month_to_date = sum(item.unblended_cost for item in between(line_items, month_start, TODAY))
    run_rate = (
        sum(item.unblended_cost for item in between(line_items, TODAY - timedelta(days=RUN_RATE_DAYS), TODAY))
        / RUN_RATE_DAYS
    )
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    days_left = (next_month - TODAY).days
    forecast = built.findings["spend"]["forecast"]
    assert forecast["days_left"] == days_left
    assert forecast["month_to_date_usd"] == pytest.approx(month_to_date, abs=0.006)
    assert forecast["forecast_usd"] == pytest.approx(month_to_date + run_rate * days_left, abs=0.02)


def test_findings_follow_the_contract(built: Report) -> None:
    findings = built.findings
    assert findings["period"] == {"start": PERIOD.start.isoformat(), "end": PERIOD.end.isoformat()}
    for key in ("total_usd", "by_team", "by_environment", "by_service", "untagged_usd", "untagged_share"):
        assert key in findings["spend"]
    assert "spot_savings_usd" in findings["spend"]
    assert findings["idle"] == IDLE_JSON
    assert findings["untagged"] == UNTAGGED_JSON
    assert findings["reap"] == []
    assert findings["cost_explorer_requests"] == built.spend.requests > 0
    assert findings["cost_explorer_usd"] == pytest.approx(built.spend.requests * 0.01)
    assert "missing" not in findings
    json.dumps(findings)  # plain JSON types only


def test_spend_compares_the_period_with_the_same_days_before_it(
    built: Report, line_items: list[LineItem]
) -> None:
    items = line_items
    current = sum(item.unblended_cost for item in items if PERIOD.start <= item.day < PERIOD.end)
    previous_period = PERIOD.previous
    previous = sum(
        item.unblended_cost for item in items if previous_period.start <= item.day < previous_period.end
    )
    assert previous > 0
    assert built.findings["spend"]["total_usd"] == pytest.approx(current, abs=0.01)
    assert built.findings["spend"]["previous_total_usd"] == pytest.approx(previous, abs=0.01)


def test_untagged_resources_are_joined_with_untagged_dollars(built: Report) -> None:
    joined = {(row["service"], row["region"]): row for row in built.findings["spend"]["untagged_by_service"]}
    untagged_spend = built.analysis.untagged_by_service_region
    assert untagged_spend is not None
    for record in untagged_spend.itertuples(index=False):
        assert joined[(record.ServiceName, record.RegionId)]["untagged_usd"] == pytest.approx(
            record.untagged_usd, abs=0.006
        )
    compute = joined[("Amazon Elastic Compute Cloud - Compute", "us-east-1")]
    assert compute["resources"] == 1
    assert compute["resource_types"] == {"ec2:instance": 1}
    assert joined[("EC2 - Other", "us-east-1")]["resource_types"] == {"ec2:volume": 1}
    assert joined[("Amazon Simple Storage Service", "us-west-2")]["resources"] == 1
    assert sum(row["resources"] for row in joined.values()) == len(UNTAGGED_RESOURCES)


def test_every_scanned_kind_names_the_cost_explorer_service_its_spend_shows_under() -> None:
    services = {t.kind: t.cost_service for t in inventory.untagged_scan_types()}
    assert services and all(services.values()), services


def test_join_without_untagged_dollars_does_not_show_zero_dollars() -> None:
    joined = join_untagged(UNTAGGED_RESOURCES, None)
    assert {row["untagged_usd"] for row in joined} == {None}


def test_a_missing_cost_explorer_part_is_named_not_zeroed(line_items: list[LineItem], tmp_path: Path) -> None:
    spend = read_spend(line_items, throttle=3, max_attempts=3)
    partial = report.build_report(spend, PERIOD, idle=IDLE, untagged=UNTAGGED_RESOURCES, generated_at=NOW)

    findings = partial.findings
    assert findings["spend"]["by_team"] is None
    assert findings["spend"]["by_environment"] is None
    assert findings["spend"]["total_usd"] is not None  # other views still give the total
    assert [part["part"] for part in findings["missing"]] == ["spend by team", "spend by environment"]
    assert "LimitExceededException" in findings["missing"][0]["reason"]

    report.write_report(partial, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Missing from this report" in markdown
    assert "**spend by team**" in markdown
    html = (tmp_path / "index.html").read_text()
    assert 'id="missing"' in html
    assert 'id="chart-team"' not in html
    assert "Missing: daily spend by team" in html
    assert json.loads((tmp_path / "findings.json").read_text())["missing"] == findings["missing"]


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (
            "endpoint unreachable (EndpointConnectionError: https://ec2.us-west-2.amazonaws.com)",
            "unreachable",
        ),
        ("TLS failed (SSLError: https://ec2.us-west-2.amazonaws.com)", "unreachable"),
        ("AccessDenied: not authorized to perform ec2:DescribeInstances", "access denied"),
        ("UnauthorizedOperation: You are not authorized", "access denied"),
        ("Throttling: Rate exceeded", "failed"),
    ],
)
def test_a_gap_of_one_region_is_one_named_part(reason: str, status: str) -> None:
    gap = Gap("123456789012", "", "us-west-2", reason)

    [part] = report.missing_parts("idle", [gap], name_accounts=False)

    assert (part.part, part.reason, part.status) == ("idle GPUs in us-west-2", reason, status)
    assert part.to_json() == {
        "part": "idle GPUs in us-west-2",
        "reason": reason,
        "scan": "idle",
        "account_id": "123456789012",
        "account_name": "",
        "region": "us-west-2",
    }
    partial = report.build_report(read_spend([]), PERIOD, idle=[], untagged=[], scan_missing=[part])
    assert partial.scan_note("idle") == f"n/a: us-west-2 {status}"
    assert partial.scan_note("untagged") is None
    assert partial.findings["missing"] == [part.to_json()]


def test_gaps_name_their_account_when_the_report_covers_several() -> None:
    region_gap = Gap("222222222222", "ml-team-a", "eu-west-1", "Throttling: Rate exceeded")
    account_gap = Gap(
        "333333333333", "ml-team-b", "", "AccessDenied: not authorized to perform sts:AssumeRole"
    )

    parts = report.missing_parts("untagged", [region_gap, account_gap], name_accounts=True)

    assert [part.part for part in parts] == [
        "untagged resources in account 222222222222 (ml-team-a) eu-west-1",
        "untagged resources in account 333333333333 (ml-team-b)",
    ]
    assert [part.short for part in parts] == ["ml-team-a eu-west-1 failed", "account ml-team-b access denied"]
    assert "region" not in parts[1].to_json()


def test_write_report_writes_every_report_file(built: Report, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report"
    paths = report.write_report(built, out, billing_account_id="123456789012")

    assert sorted(path.name for path in paths) == sorted(report.REPORT_FILES)
    assert all(path.is_file() for path in paths)
    assert json.loads((out / "findings.json").read_text()) == json.loads(json.dumps(built.findings))
    csv = pd.read_csv(out / "costs.focus.csv")
    starts = pd.to_datetime(csv["ChargePeriodStart"], utc=True)
    assert starts.min().date() == PERIOD.start
    assert starts.max().date() == PERIOD.end - timedelta(days=1)
    assert set(csv["x_CostView"]) == {costs.SERVICE_REGION_VIEW}
    assert round(csv["BilledCost"].sum(), 2) == built.findings["spend"]["total_usd"]
    markdown = (out / "report.md").read_text()
    assert PERIOD.label() in markdown
    assert "i-0idle1" in markdown
    assert "arn:aws:s3:::scratch" in markdown


def test_dashboard_is_self_contained(built: Report, tmp_path: Path) -> None:
    report.write_report(built, tmp_path)
    html = (tmp_path / "index.html").read_text()

    # Charts are inline SVG: no script to run, nothing to fetch.
    assert "<script" not in html
    assert "<link" not in html
    assert re.findall(r'(?:src|href)="(?!#|data:)[^"]*"', html) == []
    assert "plotly" not in html.lower()
    for chart_id in (
        "team",
        "environment",
        "service",
        "pricing",
        "untagged-tags",
        "untagged-resources",
        "idle",
    ):
        assert f'id="chart-{chart_id}"' in html
    assert 'id="chart-forecast"' in html and 'id="chart-movers-service"' in html


def test_tag_values_cannot_break_out_of_the_page(line_items: list[LineItem], tmp_path: Path) -> None:
    hostile = "</script><script>alert(1)</script>"
    item = line_items[-1]
    evil = LineItem(**{**item.__dict__, "tags": {"team": hostile, "environment": "dev"}, "day": PERIOD.start})
    idle = [dataclasses.replace(IDLE[0], tags={"team": hostile})]
    hostile_report = report.build_report(read_spend([*line_items, evil]), PERIOD, idle=idle, untagged=[])
    report.write_report(hostile_report, tmp_path)
    html = (tmp_path / "index.html").read_text()
    assert hostile not in html
    assert hostile_report.findings["spend"]["by_team"][hostile] > 0


# --- delivery -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://reports/nightly", "reports", "nightly/"),
        ("s3://reports", "reports", ""),
        ("s3://r.b-1/a/b/", "r.b-1", "a/b/"),
    ],
)
def test_parse_s3_uri(uri: str, bucket: str, prefix: str) -> None:
    assert delivery.parse_s3_uri(uri) == delivery.S3Target(bucket, prefix)


@pytest.mark.parametrize("uri", ["reports/nightly", "https://reports/x", "s3://", "s3://Upper_Case/x"])
def test_bad_s3_uri_is_a_user_error(uri: str) -> None:
    with pytest.raises(UserError, match="--s3-uri"):
        delivery.parse_s3_uri(uri)


def test_upload_puts_every_file_under_the_prefix(built: Report, tmp_path: Path) -> None:
    report.write_report(built, tmp_path)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="finance-reports")
        uploaded = delivery.upload_directory(
            tmp_path, delivery.parse_s3_uri("s3://finance-reports/nightly/2026-11-23"), report.REPORT_FILES
        )
        listed = s3.list_objects_v2(Bucket="finance-reports")["Contents"]
        html = s3.get_object(Bucket="finance-reports", Key="nightly/2026-11-23/index.html")

    assert sorted(item["Key"] for item in listed) == sorted(
        f"nightly/2026-11-23/{name}" for name in report.REPORT_FILES
    )
    assert len(uploaded) == len(report.REPORT_FILES)
    assert html["ContentType"].startswith("text/html")
    assert html["Body"].read() == (tmp_path / "index.html").read_bytes()


def test_upload_to_a_missing_bucket_is_a_user_error(built: Report, tmp_path: Path) -> None:
    report.write_report(built, tmp_path)
    with mock_aws(), pytest.raises(UserError, match=r"s3://no-such-bucket/x/.*bucket does not exist"):
        delivery.upload_directory(
            tmp_path, delivery.parse_s3_uri("s3://no-such-bucket/x"), report.REPORT_FILES
        )


class SlackStub:
    """An incoming-webhook endpoint on 127.0.0.1 that records what is posted."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.posts.append(
                    {"path": self.path, "json": json.loads(body), "type": self.headers["Content-Type"]}
                )
                answer = b"ok" if stub.status == 200 else b"no_service"
                self.send_response(stub.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret"

    def __enter__(self) -> SlackStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    with SlackStub() as stub:
        yield stub


def test_slack_gets_report_md_as_mrkdwn(built: Report, slack: SlackStub) -> None:
    markdown = render_markdown(built)
    delivery.post_to_slack(slack.url, markdown)

    assert len(slack.posts) == 1
    post = slack.posts[0]
    assert post["path"] == "/services/T000/B000/secret"
    assert post["type"] == "application/json"
    text = post["json"]["text"]
    assert text.startswith(f"*Nightly cost report — {PERIOD.label()}*")
    assert "**" not in text
    assert text.count("```") % 2 == 0 and text.count("```") >= 2  # tables kept in code blocks
    assert "i-0idle1" in text


def test_slack_refusal_is_a_user_error_without_the_secret(built: Report) -> None:
    with SlackStub(status=404) as stub, pytest.raises(UserError) as error:
        delivery.post_to_slack(stub.url, "# report")
    assert "404" in str(error.value)
    assert "secret" not in str(error.value)


def test_unreachable_slack_is_a_user_error() -> None:
    with SlackStub() as stub:
        url = stub.url
    with pytest.raises(UserError, match="cannot reach"):
        delivery.post_to_slack(url, "# report")


def test_long_reports_are_cut_for_slack() -> None:
    markdown = "# Title\n\n" + "\n".join(f"| row {n} | {'x' * 50} |" for n in range(2000))
    text = delivery.slack_text(markdown, full_report="/out/report.md")
    assert len(text) < 40_000
    assert text.endswith("the whole report is in /out/report.md_")
    assert text.count("```") % 2 == 0


@pytest.mark.parametrize("url", ["hooks.slack.com/services/x", "ftp://hooks.slack.com/x", ""])
def test_bad_webhook_is_a_user_error(url: str) -> None:
    with pytest.raises(UserError, match="--slack-webhook"):
        delivery.validate_webhook(url)


# --- CLI ------------------------------------------------------------------------------------------


def run_mlp(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A closed local port as the endpoint: any AWS call would fail at once, never reach AWS.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "MLP_COST_CACHE_DIR": str(tmp_path / "cache"),
    }
    mlp = Path(sys.executable).parent / "mlp"
    return subprocess.run([str(mlp), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days 0"),
        (["--s3-uri", "bucket/prefix"], "--s3-uri"),
        (["--slack-webhook", "not-a-url"], "--slack-webhook"),
        (["--regions", "mars"], "--regions"),
    ],
)
def test_bad_report_options_fail_fast_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_mlp("report", "--out", str(tmp_path / "out"), *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mlp: error: ") and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_endpoint_is_a_user_error(tmp_path: Path) -> None:
    result = run_mlp("report", "--out", str(tmp_path / "out"), "--format", "json", tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "AWS_ENDPOINT_URL" in result.stderr and result.stderr.count("\n") == 1


def test_an_account_without_spend_says_so(tmp_path: Path) -> None:
    empty = report.build_report(read_spend([]), PERIOD, idle=[], untagged=[])

    assert empty.analysis.no_spend
    assert empty.findings["spend"]["total_usd"] == 0.0
    assert empty.findings["spend"]["untagged_share"] is None  # a share of nothing is not 0 %
    report.write_report(empty, tmp_path)
    assert "Cost Explorer reports no spend" in (tmp_path / "report.md").read_text()
    assert 'id="no-spend"' in (tmp_path / "index.html").read_text()
    assert not report.build_report(
        read_spend(make_line_items(days=45)), PERIOD, idle=[], untagged=[]
    ).analysis.no_spend


def test_a_report_not_delivered_has_no_trend_and_no_scope_claims(built: Report, tmp_path: Path) -> None:
    report.write_report(built, tmp_path)

    assert built.trend == []
    assert "No trend: the report is not delivered" in (tmp_path / "index.html").read_text()
    assert (built.findings["scope"], built.findings["unscanned_spend"]) == (None, None)
    assert "Scanned" not in (tmp_path / "report.md").read_text()
