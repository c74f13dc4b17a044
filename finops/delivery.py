"""Optional delivery of a written report: upload its directory to S3, post report.md to Slack.

Both are off unless asked for. Targets are validated before the nightly job runs, so a typo fails in
a second instead of after the scans; a delivery failure names the target and leaves the files in
place.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import botocore.exceptions
import requests
from boto3.exceptions import S3UploadFailedError

import mlp.aws
from mlp.errors import UserError

SLACK_WEBHOOK_ENV = "MLP_SLACK_WEBHOOK"
# Slack cuts a message's text at 40,000 characters; stay below with room for the notice.
SLACK_TEXT_LIMIT = 39_000
SLACK_TIMEOUT_SECONDS = 15
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


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


def _reason(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "error")
    return str(exc).split(":")[-1].strip() or type(exc).__name__


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


def _webhook_host(url: str) -> str:
    """Where the webhook points, without its secret path, for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post_to_slack(url: str, markdown: str, *, full_report: str = "report.md") -> None:
    """Post the report to a Slack incoming webhook; any refusal is a one-line UserError."""
    where = _webhook_host(url)
    try:
        response = requests.post(
            url, json={"text": slack_text(markdown, full_report=full_report)}, timeout=SLACK_TIMEOUT_SECONDS
        )
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
