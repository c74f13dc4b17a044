"""Where the nightly reports go in S3: dated folders, `latest/`, and history.jsonl under conditional writes.

moto honours `If-Match` and `If-None-Match` on PutObject (412 PreconditionFailed), so the races here
are real refusals: a second writer is slipped in between the history's read and its write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finops import delivery
from mlp import aws
from mlp.errors import UserError
from tests.test_report import SlackStub

BUCKET = "finance-nightly"
TARGET = delivery.parse_s3_uri(f"s3://{BUCKET}/reports/")
HISTORY_KEY = "reports/history.jsonl"
NAMES = ("index.html", "report.md", "findings.json")
FIRST_NIGHT = date(2026, 11, 23)
MLP = str(Path(sys.executable).parent / "mlp")


def findings(night: date, *, total: float, idle_wasted: tuple[float | None, ...] = (), missing=()) -> dict:
    """A findings.json in the documented shape (docs/findings-json.md), for the report of `night`."""
    return {
        "period": {"start": (night - timedelta(days=30)).isoformat(), "end": night.isoformat()},
        "spend": {"total_usd": total, "untagged_usd": round(total * 0.1, 2), "untagged_share": 0.1},
        "idle": [{"resource_id": f"i-{n}", "wasted_usd": wasted} for n, wasted in enumerate(idle_wasted)],
        "untagged": [],
        "reap": [{"stack": "train-r1", "run_id": "r1", "hourly_cost_usd": 0.25, "resources": []}],
        "cost_source": "cost-explorer",
        "cost_explorer_requests": 42,
        "cost_explorer_usd": 0.42,
        **({"missing": list(missing)} if missing else {}),
    }


def write_report(directory: Path, content: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "findings.json").write_text(json.dumps(content))
    (directory / "index.html").write_text(f"<html>{content['period']['end']}</html>")
    (directory / "report.md").write_text(f"# report of {content['period']['end']}")
    return directory


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def history(s3: Any) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=BUCKET, Key=HISTORY_KEY)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def body(s3: Any, key: str) -> str:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def test_three_nights_append_three_lines_and_latest_holds_the_third(s3: Any, tmp_path: Path) -> None:
    nights = [FIRST_NIGHT + timedelta(days=n) for n in range(3)]
    for number, night in enumerate(nights):
        delivered = delivery.deliver_to_s3(
            write_report(tmp_path / night.isoformat(), findings(night, total=100.0 + number)), TARGET, NAMES
        )
        assert delivered.is_latest and delivered.nights_recorded == number + 1

    assert [line["date"] for line in history(s3)] == [night.isoformat() for night in nights]
    assert [line["total_usd"] for line in history(s3)] == [100.0, 101.0, 102.0]
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    for night in nights:
        assert {f"reports/{night.isoformat()}/{name}" for name in NAMES} <= keys
    third = nights[2].isoformat()
    assert body(s3, "reports/latest/index.html") == f"<html>{third}</html>"
    assert json.loads(body(s3, "reports/latest/findings.json"))["period"]["end"] == third
    latest = s3.head_object(Bucket=BUCKET, Key="reports/latest/index.html")
    assert latest["ContentType"].startswith("text/html")
    assert delivery.read_history(TARGET, nights=2) == history(s3)[1:]


def test_a_rerun_of_a_night_replaces_its_line(s3: Any, tmp_path: Path) -> None:
    second = FIRST_NIGHT + timedelta(days=1)
    delivery.deliver_to_s3(write_report(tmp_path / "a", findings(FIRST_NIGHT, total=10.0)), TARGET, NAMES)
    delivery.deliver_to_s3(write_report(tmp_path / "b", findings(second, total=20.0)), TARGET, NAMES)
    rerun = delivery.deliver_to_s3(write_report(tmp_path / "c", findings(second, total=25.0)), TARGET, NAMES)

    assert rerun.nights_recorded == 2
    assert [(line["date"], line["total_usd"]) for line in history(s3)] == [
        (FIRST_NIGHT.isoformat(), 10.0),
        (second.isoformat(), 25.0),
    ]


def test_a_late_rerun_of_an_older_night_leaves_latest_alone(s3: Any, tmp_path: Path) -> None:
    newer = FIRST_NIGHT + timedelta(days=1)
    delivery.deliver_to_s3(write_report(tmp_path / "new", findings(newer, total=20.0)), TARGET, NAMES)
    older = delivery.deliver_to_s3(
        write_report(tmp_path / "old", findings(FIRST_NIGHT, total=10.0)), TARGET, NAMES
    )

    assert not older.is_latest
    assert body(s3, "reports/latest/index.html") == f"<html>{newer.isoformat()}</html>"
    assert [line["date"] for line in history(s3)] == [FIRST_NIGHT.isoformat(), newer.isoformat()]


class ConcurrentWriter:
    """Writes its own night into history.jsonl just before the code under test writes its version.

    Hooked on the client the delivery uses, so the write lands between the delivery's read (whose
    ETag it then holds) and its conditional put.
    """

    def __init__(self, s3: Any, nights: list[date], monkeypatch: pytest.MonkeyPatch) -> None:
        self.raw = boto3.client("s3", region_name="us-east-1")
        self.pending = list(nights)
        self.history_puts = 0
        shared = aws.client("s3")
        shared.meta.events.register("before-parameter-build.s3.PutObject", self.interleave)
        monkeypatch.setattr(aws, "client", lambda service, *args, **kwargs: shared)

    def interleave(self, params: dict[str, Any], **_: Any) -> None:
        if params["Key"] != HISTORY_KEY:
            return
        self.history_puts += 1
        if not self.pending:
            return
        night = self.pending.pop(0)
        lines = [json.dumps(line) for line in self.current()]
        lines.append(json.dumps(delivery.history_line(findings(night, total=999.0))))
        self.raw.put_object(Bucket=BUCKET, Key=HISTORY_KEY, Body="\n".join(lines) + "\n")

    def current(self) -> list[dict[str, Any]]:
        try:
            return history(self.raw)
        except self.raw.exceptions.NoSuchKey:
            return []


def test_a_concurrent_create_is_refused_by_if_none_match_and_both_lines_kept(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = FIRST_NIGHT - timedelta(days=1)
    writer = ConcurrentWriter(s3, [other], monkeypatch)
    delivery.deliver_to_s3(write_report(tmp_path / "r", findings(FIRST_NIGHT, total=10.0)), TARGET, NAMES)

    assert writer.history_puts == 2  # the create lost the race and was retried against the new ETag
    assert [(line["date"], line["total_usd"]) for line in history(s3)] == [
        (other.isoformat(), 999.0),
        (FIRST_NIGHT.isoformat(), 10.0),
    ]


def test_a_concurrent_change_is_refused_by_if_match_and_retried(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery.deliver_to_s3(write_report(tmp_path / "a", findings(FIRST_NIGHT, total=10.0)), TARGET, NAMES)
    second, third = FIRST_NIGHT + timedelta(days=1), FIRST_NIGHT + timedelta(days=2)
    writer = ConcurrentWriter(s3, [second], monkeypatch)
    delivery.deliver_to_s3(write_report(tmp_path / "b", findings(third, total=30.0)), TARGET, NAMES)

    assert writer.history_puts == 2
    assert [line["date"] for line in history(s3)] == [d.isoformat() for d in (FIRST_NIGHT, second, third)]


def test_a_history_that_never_holds_still_fails_naming_the_target_and_the_files(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    racing = [FIRST_NIGHT - timedelta(days=n) for n in range(1, delivery.HISTORY_ATTEMPTS + 1)]
    writer = ConcurrentWriter(s3, racing, monkeypatch)
    report_dir = write_report(tmp_path / "r", findings(FIRST_NIGHT, total=10.0))
    with pytest.raises(UserError, match=r"s3://finance-nightly/reports/: history.jsonl changed") as error:
        delivery.deliver_to_s3(report_dir, TARGET, NAMES)

    assert str(report_dir) in str(error.value)
    assert writer.history_puts == delivery.HISTORY_ATTEMPTS
    assert FIRST_NIGHT.isoformat() not in {line["date"] for line in history(s3)}
    # The dated upload stays; latest/ is refreshed only once the night is in the history.
    assert body(s3, f"reports/{FIRST_NIGHT.isoformat()}/index.html")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="reports/latest/")


def test_a_missing_bucket_names_the_target_and_keeps_the_files(tmp_path: Path) -> None:
    report_dir = write_report(tmp_path / "r", findings(FIRST_NIGHT, total=10.0))
    with (
        mock_aws(),
        pytest.raises(UserError, match=r"s3://no-such-bucket/x/.*bucket does not exist") as error,
    ):
        delivery.deliver_to_s3(report_dir, delivery.parse_s3_uri("s3://no-such-bucket/x"), NAMES)
    assert str(report_dir) in str(error.value)
    assert (report_dir / "findings.json").exists()


def test_a_broken_history_line_is_named_not_dropped(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key=HISTORY_KEY, Body=b'{"date": "2026-11-01"}\nnot json\n')
    with pytest.raises(UserError, match=r"history.jsonl line 2 is not JSON"):
        delivery.deliver_to_s3(write_report(tmp_path / "r", findings(FIRST_NIGHT, total=1.0)), TARGET, NAMES)
    assert body(s3, HISTORY_KEY) == '{"date": "2026-11-01"}\nnot json\n'


def test_read_history_keeps_the_last_nights_oldest_first(s3: Any, tmp_path: Path) -> None:
    assert delivery.read_history(TARGET) == []
    for n in range(5):
        night = FIRST_NIGHT + timedelta(days=n)
        delivery.record_night(
            TARGET, delivery.history_line(findings(night, total=float(n))), report_dir=tmp_path
        )
    last = delivery.read_history(TARGET, nights=3)
    assert [line["total_usd"] for line in last] == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="nights"):
        delivery.read_history(TARGET, nights=0)


def test_a_missing_scan_is_null_in_the_history_never_zero() -> None:
    line = delivery.history_line(
        findings(
            FIRST_NIGHT,
            total=10.0,
            idle_wasted=(1.0,),
            missing=[
                {"part": "idle GPUs in us-west-2", "reason": "unreachable", "scan": "idle"},
                {"part": "expired training-run leftovers", "reason": "denied", "scan": "leftovers"},
            ],
        )
    )
    assert line["idle_wasted_usd"] is None and line["idle_gpus"] is None
    assert line["leaks"] is None and line["leak_hourly_usd"] is None and line["reap"] is None
    assert line["missing"] == ["idle GPUs in us-west-2", "expired training-run leftovers"]


# --- a real report's findings.json ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mlp demo`'s report: real findings, with idle GPUs and an expired run (its own sandbox, in a child)."""
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([MLP, "demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.e2e
def test_a_history_line_holds_the_figures_of_its_findings_json(demo_report: Path, s3: Any) -> None:
    source = json.loads((demo_report / "findings.json").read_text())
    assert source["idle"] and source["reap"], "the demo seeds idle GPUs and an expired run"
    delivered = delivery.deliver_to_s3(demo_report, TARGET, NAMES)
    [line] = history(s3)

    assert line["date"] == source["period"]["end"] and delivered.night.prefix == f"reports/{line['date']}/"
    assert line["period"] == source["period"]
    assert line["total_usd"] == source["spend"]["total_usd"]
    assert line["untagged_share"] == source["spend"]["untagged_share"]
    assert line["idle_gpus"] == len(source["idle"])
    assert line["idle_wasted_usd"] == pytest.approx(
        sum(item["wasted_usd"] for item in source["idle"] if item["wasted_usd"] is not None), abs=0.005
    )
    assert line["leaks"] == len(source["reap"])
    assert line["reap"] == [
        {"run_id": run["run_id"], "stack": run["stack"], "hourly_cost_usd": run["hourly_cost_usd"]}
        for run in source["reap"]
    ]
    assert line["leak_hourly_usd"] == pytest.approx(sum(run["hourly_cost_usd"] for run in source["reap"]))
    assert line["cost_explorer_requests"] == source["cost_explorer_requests"]
    assert line["cost_source"] == source["cost_source"]
    assert line["missing"] == []


# --- the Slack summary ----------------------------------------------------------------------------


def test_slack_gets_a_summary_with_the_change_and_the_dashboard_location(s3: Any, tmp_path: Path) -> None:
    second = FIRST_NIGHT + timedelta(days=1)
    delivery.deliver_to_s3(write_report(tmp_path / "a", findings(FIRST_NIGHT, total=100.0)), TARGET, NAMES)
    tonight = write_report(tmp_path / "b", findings(second, total=112.5, idle_wasted=(7.0, None, 3.04)))
    delivery.deliver_to_s3(tonight, TARGET, NAMES)
    with SlackStub() as slack:
        delivery.post_summary(slack.url, tonight, TARGET)

    [post] = slack.posts
    text = post["json"]["text"]
    assert text.startswith("*Nightly cost report")
    assert f"*$112.50* (+$12.50 since {FIRST_NIGHT.isoformat()})" in text
    assert "Untagged: 10.0% of spend" in text
    assert "Idle GPUs: $10.04 wasted" in text
    assert "1 expired run still billing $0.2500/h" in text
    assert "Dashboard: s3://finance-nightly/reports/latest/index.html" in text
    assert "# report of" not in text  # not report.md
    assert len(text.splitlines()) <= 8


def test_without_s3_the_summary_points_at_the_local_dashboard(tmp_path: Path) -> None:
    tonight = write_report(tmp_path / "r", findings(FIRST_NIGHT, total=5.0))
    with SlackStub() as slack:
        delivery.post_summary(slack.url, tonight, None)
    text = slack.posts[0]["json"]["text"]
    assert "since" not in text
    assert f"Dashboard: {(tonight / 'index.html').resolve()}" in text
