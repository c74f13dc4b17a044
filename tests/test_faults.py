"""Faults the nightly report and the scans must survive or refuse cleanly, against the sandbox.

A region whose endpoint refuses is one named missing part, every other part is still written, exit 1.
Bad flags (unknown regions, unwritable --out or cache, a webhook that does not parse) are one line,
exit 2, before any Cost Explorer request. An idle GPU without a list price says so on every surface.

`mlp` runs in this process (`mlp.cli.main`), so botocore's retry backoff can be set to zero: the
retries still happen, the test does not wait for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.retries.standard
import pytest

from finops import report
from finops.findings import Report
from finops.idle import IdleFinding, IdleScan
from finops.sandbox import Sandbox, SeedManifest
from finops.scope import ScanScope
from mlp import aws
from mlp.cli import main
from mlp.errors import UserError
from tests.sandbox_fixtures import sandbox_fixture, seeded_fixture  # noqa: F401
from tests.test_costs import NOW, make_line_items
from tests.test_report import IDLE, PERIOD, UNTAGGED_RESOURCES, read_spend

pytestmark = pytest.mark.e2e

REGIONS = "us-east-1,us-west-2"
DOWN = "us-west-2"
TRANSPORT_ERRORS = [
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the wait between them (each retry still sends its request)."""
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0)


@pytest.fixture
def sandbox_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Sandbox:
    for name, value in sandbox.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLP_COST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MLP_SLACK_WEBHOOK", raising=False)
    monkeypatch.delenv("MLP_DEBUG", raising=False)
    return sandbox


def run_mlp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`mlp ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


class Refusals:
    """Makes every request of the matching clients fail with `error`, counting the attempts."""

    def __init__(self, error: type[Exception], matches: Callable[[Any], bool]) -> None:
        self.error = error
        self.matches = matches
        self.attempts = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = aws.client

        def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
            made = real(service, region, **kwargs)
            if self.matches(made):
                made.meta.events.register("before-send", self.refuse)
            return made

        monkeypatch.setattr(aws, "client", client)

    def refuse(self, request: Any, **_: Any) -> None:
        self.attempts += 1
        raise self.error(endpoint_url=request.url, proxy_url="http://proxy:3128", error="refused by the test")


def ce_requests(sandbox: Sandbox) -> int:
    return sandbox.cost_explorer.requests


# --- botocore's own retries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [*TRANSPORT_ERRORS, botocore.exceptions.SSLError, botocore.exceptions.ProxyConnectionError]
)
def test_transport_errors_are_retried_then_one_line(
    error: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = Refusals(error, lambda client: True)
    refusals.install(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    # Two are left raw for the Cost Explorer reader's own retry loop; main() words them the same.
    with pytest.raises((UserError, *aws.CALLER_RETRIED_ERRORS)) as raised, aws.aws_errors("checking"):
        aws.client("sts", max_attempts=3).get_caller_identity()

    assert refusals.attempts == 3  # adaptive mode retries every transport error
    error_line = raised.value if isinstance(raised.value, UserError) else aws.describe_aws_error(raised.value)
    line = str(error_line)
    assert line.startswith("checking: ") and error.__name__ in line and "\n" not in line


def test_a_non_aws_answer_is_one_line() -> None:
    from botocore.parsers import ResponseParserError

    with (
        pytest.raises(aws.AwsUnreachable, match=r"not an AWS response.*AWS_ENDPOINT_URL"),
        aws.aws_errors("scanning"),
    ):
        raise ResponseParserError("Unable to parse response, invalid XML received")


# --- one region down ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError]
)
def test_one_region_down_is_one_named_missing_part(
    error: type[Exception],
    sandbox_env: Sandbox,
    seeded: SeedManifest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    refusals = Refusals(error, lambda client: client.meta.region_name == DOWN)
    refusals.install(monkeypatch)
    out = tmp_path / "report"
    before = ce_requests(sandbox_env)

    code, stdout, stderr = run_mlp(
        capsys, "report", "--out", str(out), "--regions", REGIONS, "--format", "json"
    )

    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert refusals.attempts >= aws.DEFAULT_MAX_ATTEMPTS  # retried before giving up on the region
    assert sorted(path.name for path in out.iterdir()) == sorted(report.REPORT_FILES)
    findings = json.loads((out / "findings.json").read_text())
    assert json.loads(stdout) == findings
    assert findings["cost_explorer_requests"] > 0 and ce_requests(sandbox_env) > before

    missing = {part["part"]: part for part in findings["missing"]}
    assert set(missing) == {
        f"idle GPUs in {DOWN}",
        f"untagged resources in {DOWN}",
        f"expired training-run leftovers in {DOWN}",
        f"training runs in {DOWN}",
    }
    idle_part = missing[f"idle GPUs in {DOWN}"]
    assert idle_part["reason"].startswith(f"endpoint unreachable ({error.__name__}")
    assert (idle_part["scan"], idle_part["region"]) == ("idle", DOWN)

    # us-east-1 is whole: its idle instances and untagged resources, and nothing of us-west-2.
    up = {i.instance_id for i in seeded.instances if i.region != DOWN}
    assert {f["resource_id"] for f in findings["idle"]} == set(seeded.idle_instance_ids) & up
    assert {f["arn"] for f in findings["untagged"]} == {r.arn for r in seeded.untagged if r.region != DOWN}
    assert findings["spend"]["total_usd"] > 0

    markdown = (out / "report.md").read_text()
    assert f"**idle GPUs in {DOWN}**: endpoint unreachable" in markdown
    assert f"**Missing: idle GPUs in {DOWN}" in markdown
    html = (out / "index.html").read_text()
    assert f"n/a: {DOWN} unreachable" in html
    assert f"mlp: warning: idle GPUs in {DOWN} is missing from the report" in stderr


def test_a_complete_report_exits_0(
    sandbox_env: Sandbox, seeded: SeedManifest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, stdout, stderr = run_mlp(capsys, "report", "--out", str(tmp_path / "r"), "--regions", REGIONS)

    assert code == 0, stderr
    assert "idle GPUs" in stdout and "n/a:" not in stdout


@pytest.mark.parametrize("command", ["report", "idle", "untagged"])
def test_every_call_timing_out_is_one_line_exit_2(
    command: str,
    sandbox_env: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    Refusals(botocore.exceptions.ConnectTimeoutError, lambda client: True).install(monkeypatch)
    before = ce_requests(sandbox_env)
    extra = ["--out", str(tmp_path / "out")] if command == "report" else []

    code, stdout, stderr = run_mlp(capsys, command, "--regions", REGIONS, *extra)

    assert code == 2
    assert stdout == ""
    # The scans say what they scan first; the failure itself is one line, the last.
    *progress, line = stderr.splitlines()
    assert line.startswith("mlp: error: ") and not any("error" in earlier for earlier in progress)
    assert "Traceback" not in stderr
    assert "ConnectTimeoutError" in stderr and "AWS_ENDPOINT_URL" in stderr
    assert ce_requests(sandbox_env) == before
    assert not (tmp_path / "out").exists()


# --- preflight: refused before the first paid request ------------------------------------------------


def assert_refused_before_paying(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str], named: str, *args: str
) -> str:
    before = ce_requests(sandbox)
    code, stdout, stderr = run_mlp(capsys, *args)
    assert code == 2, stderr
    assert stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("mlp: error: "), stderr
    assert named in stderr
    assert "Traceback" not in stderr
    assert ce_requests(sandbox) == before
    return stderr


@pytest.mark.parametrize("region", ["us-middle-9", "xx-yy-1", "eu-north-7", "us-ëast-1", "US-EAST-1"])
@pytest.mark.parametrize("command", ["idle", "untagged", "report"])
def test_unknown_regions_are_refused(
    command: str, region: str, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "report" else []
    stderr = assert_refused_before_paying(
        sandbox_env, capsys, "--regions", command, "--regions", f"us-east-1,{region}", *extra
    )
    assert repr(region) in stderr
    assert not out.exists()


def test_a_region_from_the_environment_is_checked_too(
    sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-middle-9")
    stderr = assert_refused_before_paying(sandbox_env, capsys, "AWS_REGION", "idle")
    assert "us-middle-9" in stderr


def test_regions_of_two_partitions_are_refused(
    sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused_before_paying(
        sandbox_env, capsys, "partitions", "untagged", "--regions", "us-east-1,cn-north-1"
    )


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc"])
def test_unwritable_out_is_refused(
    where: str, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Tests run as root, which writes through any mode bits: these are places nobody can write.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"a file": blocker, "under a file": blocker / "report", "/proc": Path("/proc/mlp-report")}[where]
    assert_refused_before_paying(sandbox_env, capsys, f"--out {out}", "report", "--out", str(out))
    assert blocker.read_text() == "a file"


def test_cache_dir_that_is_a_file_is_refused(
    sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache-file"
    cache.write_text("")
    args = ("report", "--out", str(tmp_path / "out"))
    assert_refused_before_paying(sandbox_env, capsys, "--cache-dir", *args, "--cache-dir", str(cache))
    assert not (tmp_path / "out").exists()


def test_unwritable_cache_variable_is_refused(
    sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MLP_COST_CACHE_DIR", "/proc/mlp-cost-cache")
    stderr = assert_refused_before_paying(
        sandbox_env, capsys, "MLP_COST_CACHE_DIR", "report", "--out", str(tmp_path / "out")
    )
    assert "--no-cache" in stderr
    # Without the cache there is nothing to write there: the same setting is no obstacle.
    code, _, stderr = run_mlp(capsys, "report", "--out", str(tmp_path / "out"), "--no-cache")
    assert code in (0, 1), stderr


@pytest.mark.parametrize(
    "url", ["http://[::1/services/T000/B000/SECRET", "https://hooks.slack.com:port/SECRET", "hooks/SECRET"]
)
def test_bad_webhook_is_refused_without_echoing_it(
    url: str, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stderr = assert_refused_before_paying(
        sandbox_env,
        capsys,
        "--slack-webhook",
        "report",
        "--out",
        str(tmp_path / "out"),
        "--slack-webhook",
        url,
    )
    assert "SECRET" not in stderr


def test_bad_webhook_from_the_environment_is_refused(
    sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MLP_SLACK_WEBHOOK", "http://[::1/x")
    assert_refused_before_paying(
        sandbox_env, capsys, "MLP_SLACK_WEBHOOK", "report", "--out", str(tmp_path / "o")
    )


@pytest.mark.parametrize("uri", ["s3://[bucket/prefix", "s3://a..b/prefix", "bucket/prefix"])
def test_bad_s3_uri_is_refused(
    uri: str, sandbox_env: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert_refused_before_paying(
        sandbox_env, capsys, "--s3-uri", "report", "--out", str(tmp_path / "o"), "--s3-uri", uri
    )


@pytest.mark.parametrize("endpoint", ["not a url", "http://[::1", "ftp://127.0.0.1:5000"])
def test_unusable_endpoint_url_is_refused(
    endpoint: str, sandbox_env: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert_refused_before_paying(sandbox_env, capsys, "AWS_ENDPOINT_URL", "idle")


# --- no list price --------------------------------------------------------------------------------


UNPRICED = IdleFinding(
    resource_id="i-0unpriced",
    region="us-east-1",
    instance_type="g9.mystery",
    telemetry="gpu",
    gpu_util_max=0.5,
    cpu_util_max=None,
    idle_hours=10.0,
    hourly_cost_usd=None,
    wasted_usd=None,
    tags={"team": "vision"},
)


@pytest.fixture(scope="module")
def unpriced_report() -> Report:
    return report.build_report(
        read_spend(make_line_items(days=45)),
        PERIOD,
        idle=[*IDLE, UNPRICED],
        untagged=UNTAGGED_RESOURCES,
        generated_at=NOW,
    )


def test_unpriced_idle_gpu_in_the_report_files(unpriced_report: Report, tmp_path: Path) -> None:
    priced = sum(finding.wasted_usd or 0.0 for finding in IDLE)
    assert unpriced_report.idle_wasted_usd == pytest.approx(priced)
    assert unpriced_report.idle_unpriced == 1

    report.write_report(unpriced_report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    # The idle table's row: no dollar figure anywhere, "no list price" for the cost, waste and month.
    row = next(line for line in markdown.splitlines() if line.startswith("| i-0unpriced |"))
    assert row.count("no list price") == 3 and "$" not in row
    monthly = sum(finding.hourly_cost_usd or 0.0 for finding in IDLE) * 730
    assert (
        f"- Idle GPUs: **${monthly:,.0f}/month**; if left running; 3 GPUs under 5% for 6 h; 1 with no list price, not in the figure"
        in markdown
    )
    html = (tmp_path / "index.html").read_text()
    assert "1 with no list price, not in the figure" in html
    cells = html[html.index("<code>i-0unpriced</code>") :].split("</tr>")[0]
    assert cells.count("no list price") == 3 and "$0.00" not in cells and "n/a" not in cells
    assert json.loads((tmp_path / "findings.json").read_text())["idle"][-1]["wasted_usd"] is None


def test_only_unpriced_idle_gpus_draw_no_zero_bars(tmp_path: Path) -> None:
    only = report.build_report(read_spend(make_line_items(days=45)), PERIOD, idle=[UNPRICED], untagged=[])
    report.write_report(only, tmp_path)
    html = (tmp_path / "index.html").read_text()
    assert "1 idle GPU instance, all with no list price." in html
    # The headline card says the waste is not priced, not "$0/month".
    assert re.search(r'<div class="label">Idle GPUs</div>\s*<div class="value">not priced<', html)


def test_unpriced_idle_gpu_in_the_idle_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = IdleScan(window_hours=6, threshold_pct=5, findings=[*IDLE, UNPRICED], instances_scanned=3)
    monkeypatch.setattr("mlp.cli.scan_cmds.scan_idle", lambda *args, **kwargs: scan)
    monkeypatch.setattr(
        "mlp.cli.scan_cmds.scope_from_options", lambda *args, **kwargs: ScanScope(targets=[], accounts=[])
    )

    code, stdout, stderr = run_mlp(capsys, "idle")

    assert code == 0, stderr
    row = next(line for line in stdout.splitlines() if "i-0unpriced" in line)
    assert row.count("no list price") == 2 and "?" not in row
    total = next(line for line in stdout.splitlines() if "total" in line)
    assert f"${scan.wasted_usd:,.2f}" in total and "3 idle, 1 with no list price" in total


def test_unpriced_idle_gpu_in_the_report_summary(
    unpriced_report: Report,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setattr("mlp.preflight.check_aws_access", lambda region=None: "123456789012")
    monkeypatch.setattr("finops.report.run_nightly", lambda *args, **kwargs: unpriced_report)
    monkeypatch.setattr(
        "mlp.cli.report_cmds.scope_from_options", lambda *args, **kwargs: ScanScope(targets=[], accounts=[])
    )

    code, stdout, stderr = run_mlp(capsys, "report", "--out", str(tmp_path), "--no-cache")

    assert code == 0, stderr
    assert "3 instances" in stdout and "(1 with no list price, not in the total)" in stdout
