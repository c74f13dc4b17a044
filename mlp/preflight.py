"""Checks that run before the first paid request: every flag a long job depends on, in seconds.

A Cost Explorer request costs $0.01 and a report makes dozens; a typo in `--out`, `--regions` or the
webhook must fail here, as one line naming the flag and the fix (exit 2), not after the money is
spent. Nothing here writes anything that stays behind.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
import botocore.session

from mlp import aws
from mlp.errors import UserError

if TYPE_CHECKING:
    from finops.delivery import S3Target

REGIONS_FLAG = "--regions"
REGION_ENV = "AWS_REGION / AWS_DEFAULT_REGION"


@functools.cache
def known_regions() -> dict[str, str]:
    """Every region botocore's data lists, with its partition ("aws", "aws-cn", ...).

    EC2's regions of each partition plus the partition data's own list (which names regions some
    services open before EC2's endpoint list does); the "-global" pseudo regions are not regions.
    """
    session = boto3.session.Session()
    regions: dict[str, str] = {}
    for partition in session.get_available_partitions():
        for region in session.get_available_regions("ec2", partition_name=partition):
            regions[region] = partition
    loader = botocore.session.get_session().get_component("data_loader")
    for partition in loader.load_data("partitions").get("partitions", []):
        for region in partition.get("regions", {}):
            if not region.endswith("-global"):
                regions.setdefault(region, partition["id"])
    return regions


def check_regions(regions: Sequence[str], *, flag: str = REGIONS_FLAG) -> None:
    """Every region exists (in botocore's data, even under an emulator) and all share one partition.

    An emulator answers any region name, or answers garbage; AWS would not reach a region that does
    not exist. Either way the region is a typo, so it is refused whatever the endpoint.
    """
    known = known_regions()
    for region in regions:
        if not aws.REGION_NAME.fullmatch(region):
            raise UserError(f"{flag}: {region!r} is not an AWS region name (e.g. us-east-1,eu-west-1)")
        if region not in known:
            raise UserError(
                f"{flag}: unknown region {region!r}; use a region AWS lists (e.g. us-east-1), or upgrade "
                f"boto3 if {region} is newer than botocore {botocore.__version__}"
            )
    partitions = sorted({known[region] for region in regions})
    if len(partitions) > 1:
        listing = "; ".join(
            f"{partition}: {', '.join(r for r in regions if known[r] == partition)}"
            for partition in partitions
        )
        raise UserError(
            f"{flag}: the regions span several AWS partitions ({listing}); one set of credentials "
            "reaches one partition, run once per partition"
        )


def regions_flag(value: str | None) -> str:
    """What to name in an error about the regions: the flag, or the variables they came from."""
    return REGIONS_FLAG if value else REGION_ENV


def check_endpoint_url() -> None:
    """`AWS_ENDPOINT_URL`, when set, is a URL botocore can send to."""
    value = os.environ.get(aws.ENDPOINT_ENV)
    if not value:
        return
    problem = None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "not an http(s) URL with a host"
    if problem:
        raise UserError(
            f"{aws.ENDPOINT_ENV}={value!r}: {problem}; set it to a URL like http://127.0.0.1:5000 or unset it"
        )


def _probe_write(directory: Path) -> str | None:
    """Why a file cannot be created in `directory`, or None when one could.

    A real write, not `os.access`: root passes every permission check, and a read-only mount or
    /proc only refuses the write itself.
    """
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mlp-preflight-"):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def writable_directory_problem(path: Path) -> str | None:
    """Why `path` is not (and cannot be created as) a writable directory; None when it is fine."""
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            return "it exists and is not a directory"
        problem = _probe_write(path)
        return None if problem is None else f"cannot write into it ({problem})"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    problem = _probe_write(parent)
    return None if problem is None else f"cannot create it in {parent} ({problem})"


def check_out_dir(path: Path, *, flag: str = "--out") -> None:
    problem = writable_directory_problem(path)
    if problem:
        raise UserError(f"{flag} {path}: {problem}; choose a directory you can write to")


def check_cache_dir(cache_dir: Path | None, default: Path, *, env: str) -> None:
    """The Cost Explorer cache directory can be written: the flag's, the variable's, or the default."""
    path = cache_dir or default
    problem = writable_directory_problem(path)
    if problem is None:
        return
    if cache_dir is not None:
        where = f"--cache-dir {cache_dir}"
    elif os.environ.get(env):
        where = f"{env}={os.environ[env]}"
    else:
        where = f"the Cost Explorer cache {path}"
    raise UserError(f"{where}: {problem}; pass --cache-dir DIR you can write to, or --no-cache")


def check_aws_access(region: str | None = None) -> str:
    """Credentials and endpoint answer (STS GetCallerIdentity, which is free); the account id."""
    with aws.aws_errors("checking the AWS credentials and endpoint"):
        return aws.caller_account_id(region)


@dataclass(frozen=True)
class ReportPlan:
    """The report's inputs once they passed preflight."""

    regions: list[str]
    s3_target: S3Target | None
    webhook: str | None
    account_id: str


def check_report(
    *,
    regions: str | None,
    out: Path,
    cache_dir: Path | None,
    use_cache: bool,
    s3_uri: str | None,
    slack_webhook: str | None,
    slack_webhook_secret: str | None = None,
) -> ReportPlan:
    """Everything `mlp report` needs, cheapest first, before any Cost Explorer request."""
    from finops import costs, delivery

    region_list = aws.parse_regions(regions)
    check_regions(region_list, flag=regions_flag(regions))
    target = delivery.parse_s3_uri(s3_uri) if s3_uri else None
    webhook = delivery.validate_webhook(slack_webhook) if slack_webhook else None
    check_endpoint_url()
    check_out_dir(out)
    if use_cache:
        check_cache_dir(cache_dir, costs.default_cache_dir(), env=costs.CACHE_DIR_ENV)
    account_id = check_aws_access()
    if webhook is None and slack_webhook_secret:
        webhook = delivery.validate_webhook(delivery.webhook_from_secret(slack_webhook_secret))
    return ReportPlan(regions=region_list, s3_target=target, webhook=webhook, account_id=account_id)


def check_scan(regions: str | None) -> list[str] | None:
    """The regions `--regions` names, parsed and known (None: every enabled region), and a usable endpoint."""
    from finops.scope import parse_regions_option

    region_list = parse_regions_option(regions)
    # Without --regions the scan asks the environment's region which regions are enabled.
    check_regions(region_list or [aws.default_region()], flag=regions_flag(regions if region_list else None))
    check_endpoint_url()
    return region_list
