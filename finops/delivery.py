"""Optional delivery of a written report: to S3 by night with a history, and a summary to Slack.

Both are off unless asked for. Targets are validated before the nightly job runs, so a typo fails in
a second instead of after the scans; a delivery failure names the target and leaves the files in
place.

With `--s3-uri s3://bucket/reports/` a night lands as

    reports/YYYY-MM-DD/...      the report's files (the date is the report period's end: the run's day)
    reports/latest/...          a copy of the newest night, so the dashboard has a fixed address
    reports/history.jsonl       one line per night (`history_line`), oldest first

history.jsonl is read-modify-written under S3 conditional writes (create with `If-None-Match: *`,
replace with `If-Match: <ETag>`), so two runs at once cannot lose each other's line.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions
import requests
from boto3.exceptions import S3UploadFailedError

import mlp.aws
from mlp.errors import UserError

SLACK_WEBHOOK_ENV = "MLP_SLACK_WEBHOOK"
# Where a scheduled job finds the webhook: a Secrets Manager secret whose string is the URL.
SLACK_WEBHOOK_SECRET_ENV = "MLP_SLACK_WEBHOOK_SECRET_ARN"
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):[0-9]{12}:secret:.+")
# Slack cuts a message's text at 40,000 characters; stay below with room for the notice.
SLACK_TEXT_LIMIT = 39_000
SLACK_TIMEOUT_SECONDS = 15
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")

FINDINGS_NAME = "findings.json"
DASHBOARD_NAME = "index.html"
HISTORY_NAME = "history.jsonl"
LATEST_FOLDER = "latest/"
HISTORY_NIGHTS = 90
# Each lost race means another run's write completed in between, so a few attempts are plenty.
HISTORY_ATTEMPTS = 5
# The conditional write lost: another write landed first (412), one is in flight (409), or the
# history was deleted between the read and the write (404 on If-Match). Re-read and try again.
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"})
# findings.json's `missing[].scan` values (docs/findings-json.md) whose figures the history holds.
_IDLE_SCAN = "idle"
_LEFTOVERS_SCAN = "leftovers"


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def folder(self, name: str) -> S3Target:
        """The target one folder down: `name` ends with `/`."""
        return S3Target(self.bucket, self.key(name))


@dataclass(frozen=True)
class S3Delivery:
    """Where a night went: its dated folder, whether it is now `latest/`, and the history's length."""

    night: S3Target
    uploaded: list[str]
    is_latest: bool
    history_uri: str
    nights_recorded: int


def parse_s3_uri(uri: str) -> S3Target:
    """`s3://bucket/prefix` (prefix optional); the prefix always ends with `/` when present."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise UserError(f"--s3-uri {uri!r}: not a URI ({exc}); use the form s3://bucket/prefix") from exc
    if parts.scheme != "s3" or not parts.netloc:
        raise UserError(f"--s3-uri {uri!r}: use the form s3://bucket/prefix")
    if not _BUCKET_NAME.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise UserError(
            f"--s3-uri {uri!r}: {parts.netloc!r} is not a valid bucket name (3-63 of a-z 0-9 . -)"
        )
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Target(parts.netloc, prefix)


def upload_directory(directory: Path, target: S3Target, names: Sequence[str]) -> list[str]:
    """Upload the named files of `directory` under the target prefix; returns the s3:// URIs."""
    s3 = mlp.aws.client("s3")
    uploaded = []
    with mlp.aws.aws_errors(f"uploading the report to {target.uri}"):
        for name in names:
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if name.endswith(".md"):
                content_type = "text/markdown"
            try:
                s3.upload_file(
                    str(directory / name),
                    target.bucket,
                    target.key(name),
                    ExtraArgs={"ContentType": f"{content_type}; charset=utf-8"},
                )
            except (botocore.exceptions.ClientError, S3UploadFailedError) as exc:
                raise UserError(
                    f"--s3-uri {target.uri}: upload of {name} failed ({_reason(exc)}); check the bucket "
                    f"exists and this role may s3:PutObject there. The report is in {directory}"
                ) from exc
            uploaded.append(f"s3://{target.bucket}/{target.key(name)}")
    return uploaded


def deliver_to_s3(directory: Path, target: S3Target, names: Sequence[str]) -> S3Delivery:
    """Upload tonight's report to `<prefix>YYYY-MM-DD/`, record its history line, then refresh `latest/`.

    `latest/` is refreshed only after the dated upload and the history write succeeded, and only when
    no later night is in the history (a late rerun of an older night must not replace a newer one).
    """
    line = history_line(read_findings(directory))
    night = target.folder(f"{line['date']}/")
    uploaded = upload_directory(directory, night, names)
    nights = record_night(target, line, report_dir=directory)
    is_latest = nights[-1]["date"] == line["date"]
    if is_latest:
        _copy_folder(night, target.folder(LATEST_FOLDER), names, report_dir=directory)
    return S3Delivery(
        night=night,
        uploaded=uploaded,
        is_latest=is_latest,
        history_uri=f"s3://{target.bucket}/{target.key(HISTORY_NAME)}",
        nights_recorded=len(nights),
    )


def _copy_folder(source: S3Target, destination: S3Target, names: Sequence[str], *, report_dir: Path) -> None:
    s3 = mlp.aws.client("s3")
    with mlp.aws.aws_errors(f"copying the report to {destination.uri}"):
        for name in names:
            try:
                # A server-side copy keeps the content type and is byte for byte the dated file.
                s3.copy_object(
                    Bucket=destination.bucket,
                    Key=destination.key(name),
                    CopySource={"Bucket": source.bucket, "Key": source.key(name)},
                )
            except botocore.exceptions.ClientError as exc:
                raise UserError(
                    f"--s3-uri {destination.uri}: copying {name} from {source.uri} failed ({_reason(exc)}); "
                    f"check this role may s3:GetObject and s3:PutObject there. The report is in {report_dir} "
                    f"and at {source.uri}"
                ) from exc


def read_findings(directory: Path) -> dict[str, Any]:
    """The report's findings.json, or one line saying why it cannot be read."""
    path = directory / FINDINGS_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the report's findings ({exc}); re-run mlp report") from exc


def history_line(findings: Mapping[str, Any]) -> dict[str, Any]:
    """One night of history.jsonl, from that night's findings.json (docs/findings-json.md).

    Like findings.json, a figure whose source is missing is null, never zero; `missing` names the parts.
    """
    period = findings["period"]
    spend = findings["spend"]
    gaps = {part.get("scan") for part in findings.get("missing", [])}
    idle_wasted = None
    if _IDLE_SCAN not in gaps:
        idle_wasted = round(
            sum(item["wasted_usd"] for item in findings["idle"] if item.get("wasted_usd") is not None), 2
        )
    reap_runs = None
    if _LEFTOVERS_SCAN not in gaps:
        reap_runs = [
            {"run_id": run["run_id"], "stack": run["stack"], "hourly_cost_usd": run["hourly_cost_usd"]}
            for run in findings["reap"]
        ]
    return {
        "date": date.fromisoformat(period["end"]).isoformat(),
        "period": {"start": period["start"], "end": period["end"]},
        "cost_source": findings.get("cost_source"),
        "total_usd": spend["total_usd"],
        "untagged_share": spend["untagged_share"],
        "idle_gpus": None if idle_wasted is None else len(findings["idle"]),
        "idle_wasted_usd": idle_wasted,
        "leaks": None if reap_runs is None else len(reap_runs),
        "leak_hourly_usd": None
        if reap_runs is None
        else round(sum(run["hourly_cost_usd"] for run in reap_runs), 4),
        "reap": reap_runs,
        "cost_explorer_requests": findings.get("cost_explorer_requests"),
        "cost_explorer_usd": findings.get("cost_explorer_usd"),
        "missing": [part["part"] for part in findings.get("missing", [])],
    }


def record_night(target: S3Target, line: Mapping[str, Any], *, report_dir: Path) -> list[dict[str, Any]]:
    """Put `line` into the target's history.jsonl (replacing the same date's); returns every night, oldest first.

    Read, change, write only if nobody wrote in between (the ETag read, or "no object yet"); on a lost
    race read again, so a concurrent run's line is kept.
    """
    s3 = mlp.aws.client("s3")
    key = target.key(HISTORY_NAME)
    uri = f"s3://{target.bucket}/{key}"
    with mlp.aws.aws_errors(f"writing {uri}"):
        for _attempt in range(HISTORY_ATTEMPTS):
            nights, etag = _read_history_object(s3, target)
            nights = sorted(
                [night for night in nights if night["date"] != line["date"]] + [dict(line)],
                key=lambda night: night["date"],
            )
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                s3.put_object(
                    Bucket=target.bucket,
                    Key=key,
                    Body="".join(json.dumps(night, sort_keys=True) + "\n" for night in nights).encode(),
                    ContentType="application/x-ndjson; charset=utf-8",
                    **condition,
                )
            except botocore.exceptions.ClientError as exc:
                if _reason(exc) in _LOST_RACE_CODES:
                    continue
                raise UserError(
                    f"--s3-uri {target.uri}: writing {HISTORY_NAME} failed ({_reason(exc)}); check this role "
                    f"may s3:PutObject there. The report is in {report_dir}"
                ) from exc
            return nights
    raise UserError(
        f"--s3-uri {target.uri}: {HISTORY_NAME} changed between every read and write ({HISTORY_ATTEMPTS} "
        f"attempts); another run is writing it, re-run once it is done. The report is in {report_dir}"
    )


def read_history(target: S3Target, nights: int = HISTORY_NIGHTS) -> list[dict[str, Any]]:
    """The last `nights` nights of the target's history.jsonl, oldest first (`history_line`'s shape).

    An empty list when no night has been recorded yet.
    """
    if nights < 1:
        raise ValueError(f"nights must be at least 1, not {nights}")
    s3 = mlp.aws.client("s3")
    with mlp.aws.aws_errors(f"reading s3://{target.bucket}/{target.key(HISTORY_NAME)}"):
        recorded, _etag = _read_history_object(s3, target)
    return recorded[-nights:]


def _read_history_object(s3: Any, target: S3Target) -> tuple[list[dict[str, Any]], str | None]:
    """The history's nights and the ETag they were read at; ([], None) when there is none yet."""
    key = target.key(HISTORY_NAME)
    try:
        answer = s3.get_object(Bucket=target.bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if _reason(exc) in ("NoSuchKey", "404"):
            return [], None
        raise UserError(
            f"--s3-uri {target.uri}: reading {HISTORY_NAME} failed ({_reason(exc)}); check the bucket exists "
            "and this role may s3:GetObject there"
        ) from exc
    nights = []
    for number, text in enumerate(answer["Body"].read().decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            nights.append(json.loads(text))
        except ValueError as exc:
            raise UserError(
                f"s3://{target.bucket}/{key} line {number} is not JSON ({exc}); fix or delete that line"
            ) from exc
    return sorted(nights, key=lambda night: night["date"]), answer["ETag"]


def _reason(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "error")
    return str(exc).split(":")[-1].strip() or type(exc).__name__


def webhook_from_secret(secret_arn: str) -> str:
    """The webhook URL a Secrets Manager secret holds; one line naming the secret when it cannot be read."""
    where = f"--slack-webhook-secret / {SLACK_WEBHOOK_SECRET_ENV}"
    match = _SECRET_ARN.fullmatch(secret_arn.strip())
    if match is None:
        raise UserError(f"{where}: {secret_arn!r} is not a Secrets Manager secret ARN")
    client = mlp.aws.client("secretsmanager", match.group(1))
    with mlp.aws.aws_errors(f"{where}: reading the secret"):
        try:
            secret = client.get_secret_value(SecretId=secret_arn.strip())
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise UserError(f"{where}: no secret {secret_arn}; create it or fix the ARN") from exc
    url = (secret.get("SecretString") or "").strip()
    if not url:
        raise UserError(f"{where}: the secret holds no string; put the webhook URL in it")
    return url


def validate_webhook(url: str) -> str:
    """The webhook URL as given, once it parses as http(s) with a host (and a numeric port if any).

    The URL is a secret: messages name what is wrong with it, never the URL itself.
    """
    fix = "use the incoming webhook URL Slack gave you (https://hooks.slack.com/services/...)"
    where = f"--slack-webhook / {SLACK_WEBHOOK_ENV}"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:  # e.g. "http://[::1/..." (an unclosed IPv6 bracket)
        raise UserError(f"{where}: not a URL ({exc}); {fix}") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UserError(f"{where}: not an http(s) URL; {fix}")
    if any(ch.isspace() for ch in url.strip()):
        raise UserError(f"{where}: the URL contains whitespace; {fix}")
    return url.strip()


def slack_text(markdown: str, *, full_report: str = "report.md") -> str:
    """report.md in Slack's mrkdwn: headings and bold as `*...*`, tables kept aligned in code blocks."""
    lines: list[str] = []
    in_table = False
    for line in markdown.splitlines():
        is_table = line.startswith("|")
        if is_table and not in_table:
            lines.append("```")
        if not is_table and in_table:
            lines.append("```")
        in_table = is_table
        if line.startswith("#"):
            lines.append(f"*{line.lstrip('#').strip()}*")
        else:
            lines.append(line.replace("**", "*"))
    if in_table:
        lines.append("```")
    text = "\n".join(lines)
    if len(text) <= SLACK_TEXT_LIMIT:
        return text
    cut = text[:SLACK_TEXT_LIMIT].rsplit("\n", 1)[0]
    if cut.count("```") % 2:
        cut += "\n```"
    return f"{cut}\n_... truncated; the whole report is in {full_report}_"


def summary_text(night: Mapping[str, Any], previous: Mapping[str, Any] | None, dashboard: str) -> str:
    """The nightly Slack message, in mrkdwn: the night's headline figures and where the dashboard is."""

    def usd(value: float | None, places: int = 2) -> str:
        return "n/a (missing)" if value is None else f"${value:,.{places}f}"

    start, end = date.fromisoformat(night["period"]["start"]), date.fromisoformat(night["period"]["end"])
    total = f"Total spend: *{usd(night['total_usd'])}*"
    if previous is not None and night["total_usd"] is not None and previous["total_usd"] is not None:
        change = night["total_usd"] - previous["total_usd"]
        sign = "+" if change >= 0 else "-"
        total += f" ({sign}${abs(change):,.2f} since {previous['date']})"
    share = night["untagged_share"]
    if night["leaks"] is None:
        leaks = "n/a (missing)"
    elif night["leaks"]:
        runs = "1 expired run" if night["leaks"] == 1 else f"{night['leaks']} expired runs"
        leaks = f"{runs} still billing {usd(night['leak_hourly_usd'], 4)}/h (mlp reap)"
    else:
        leaks = "none"
    lines = [
        f"*Nightly cost report — {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}*",
        f"• {total}",
        f"• Untagged: {'n/a (missing)' if share is None else f'{share:.1%}'} of spend",
        f"• Idle GPUs: {usd(night['idle_wasted_usd'])} wasted",
        f"• Leaks: {leaks}",
    ]
    if night["missing"]:
        lines.append(f"• Missing from this report: {', '.join(night['missing'])}")
    lines.append(f"Dashboard: {dashboard}")
    return "\n".join(lines)


def post_summary(url: str, directory: Path, target: S3Target | None) -> None:
    """Post the night's summary; its change is against the previous night of `target`'s history, if any."""
    night = history_line(read_findings(directory))
    previous = None
    if target is None:
        dashboard = str((directory / DASHBOARD_NAME).resolve())
    else:
        dashboard = f"s3://{target.bucket}/{target.folder(LATEST_FOLDER).key(DASHBOARD_NAME)}"
        earlier = [recorded for recorded in read_history(target) if recorded["date"] < night["date"]]
        previous = earlier[-1] if earlier else None
    _post(url, summary_text(night, previous, dashboard), full_report=str(directory / "report.md"))


def _webhook_host(url: str) -> str:
    """Where the webhook points, without its secret path, for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post_to_slack(url: str, markdown: str, *, full_report: str = "report.md") -> None:
    """Post markdown (a report, a notification) to a Slack incoming webhook; any refusal is a one-line UserError."""
    _post(url, slack_text(markdown, full_report=full_report), full_report=full_report)


def _post(url: str, text: str, *, full_report: str) -> None:
    where = _webhook_host(url)
    try:
        response = requests.post(url, json={"text": text}, timeout=SLACK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise UserError(
            f"--slack-webhook: cannot reach {where} ({type(exc).__name__}); check the URL and the network. "
            f"The report is in {full_report}"
        ) from exc
    if not response.ok:
        raise UserError(
            f"--slack-webhook: {where} answered {response.status_code} {response.text[:80]!r}; check the "
            f"webhook URL is current. The report is in {full_report}"
        )
