"""The one place that builds boto3 clients: region, endpoint, retries, and readable AWS errors.

Endpoint, credentials and profile come from the standard AWS environment (`AWS_ENDPOINT_URL`,
`AWS_PROFILE`, ...), which boto3 honours by itself; the embedded sandbox only sets those.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from mlp.errors import UserError

DEFAULT_REGION = "us-east-1"
# Cost Explorer answers only in us-east-1, whatever region the resources are in.
COST_EXPLORER_REGION = "us-east-1"


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


@functools.cache
def _session(profile: str | None) -> boto3.session.Session:
    try:
        return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except botocore.exceptions.ProfileNotFound as exc:
        raise UserError(f"AWS profile {profile!r} not found: fix AWS_PROFILE or ~/.aws/config") from exc


def client(service: str, region: str | None = None, *, max_attempts: int = 8) -> Any:
    """A boto3 client with adaptive retries (client-side rate limiting on throttles)."""
    config = Config(
        region_name=region or default_region(),
        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=20,
    )
    return _session(os.environ.get("AWS_PROFILE")).client(service, config=config)


def caller_account_id(region: str | None = None) -> str:
    """The account the current credentials act in."""
    return client("sts", region).get_caller_identity()["Account"]


def parse_regions(value: str | None) -> list[str]:
    """`--regions r1,r2` into a list; the environment's region when absent."""
    if not value:
        return [default_region()]
    regions = [part.strip() for part in value.split(",") if part.strip()]
    for region in regions:
        if not region.replace("-", "").isalnum() or region.count("-") < 2:
            raise UserError(f"--regions: {region!r} is not an AWS region name (e.g. us-east-1,eu-west-1)")
    return regions


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn credential, endpoint and access errors into one actionable line (exit 2)."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        raise UserError(
            f"{action}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from exc
    except botocore.exceptions.EndpointConnectionError as exc:
        raise UserError(
            f"{action}: cannot reach the AWS endpoint {exc.kwargs.get('endpoint_url', '')}; "
            "check AWS_ENDPOINT_URL and the network"
        ) from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "AuthFailure",
            "ExpiredToken",
            "ExpiredTokenException",
            "SignatureDoesNotMatch",
        }:
            raise UserError(
                f"{action}: AWS rejected the credentials ({code}); refresh them or fix AWS_PROFILE"
            ) from exc
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            raise UserError(
                f"{action}: access denied ({exc.operation_name}); grant the role this permission or use another profile"
            ) from exc
        raise
