"""The one place that builds boto3 clients: region, endpoint, retries, and readable AWS errors.

Endpoint, credentials and profile come from the standard AWS environment (`AWS_ENDPOINT_URL`,
`AWS_PROFILE`, `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, ...); the embedded sandbox only sets those.
`--profile NAME` (`use_profile`) sets `AWS_PROFILE`, so boto3 here and the processes mlp starts
(Pulumi's AWS provider) act as the same profile.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
import botocore.parsers
import botocore.session
from botocore.config import Config

from mlp.errors import UserError

DEFAULT_REGION = "us-east-1"
# Cost Explorer answers only in us-east-1, whatever region the resources are in.
COST_EXPLORER_REGION = "us-east-1"
DEFAULT_MAX_ATTEMPTS = 8
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
PROFILE_ENV = "AWS_PROFILE"
LIST_PROFILES = "`aws configure list-profiles` lists them"
MAX_ATTEMPTS_ENV = "AWS_MAX_ATTEMPTS"
RETRY_MODE_ENV = "AWS_RETRY_MODE"
# Both modes retry every transport error (connect/read timeouts, closed connections, refused
# connections) with jittered backoff; adaptive also slows down on throttling. "legacy" retries less.
RETRY_MODES = ("adaptive", "standard")
# Lowercase ASCII only: botocore accepts more (and so reaches a host that does not exist).
REGION_NAME = re.compile(r"[a-z]{2,}(?:-[a-z]+)+-[0-9]{1,2}")

# Everything that means "no answer from the endpoint"; botocore's retry modes retry them all.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ConnectionError,  # refused, connect timeout, SSL, proxy, DNS
    botocore.exceptions.HTTPClientError,  # read timeout, connection closed mid-answer
)
# A caller with its own retry loop (the Cost Explorer reader) catches these two raw, so `aws_errors`
# leaves them as they are; `describe_aws_error` (and so `mlp`'s main) still makes them one line.
CALLER_RETRIED_ERRORS: tuple[type[Exception], ...] = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
_ACTION_ATTRIBUTE = "mlp_action"


class AwsUnreachable(UserError):
    """The endpoint did not answer (or not like AWS) even after botocore's retries."""

    def __init__(self, message: str, *, endpoint: str, reason: str, status: str = "unreachable") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        # Short, for a report's missing part: "endpoint unreachable (EndpointConnectionError)".
        self.reason = reason
        # A word for a dashboard tile: "unreachable", or "misconfigured" for a region or URL setting.
        self.status = status


def default_region() -> str:
    """The region as the AWS CLI picks it: AWS_REGION, AWS_DEFAULT_REGION, the profile's, then us-east-1."""
    return (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or base_session().region_name
        or DEFAULT_REGION
    )


def base_session() -> boto3.session.Session:
    """The session of the caller's own credentials (AWS_PROFILE or the default chain)."""
    return _session(os.environ.get(PROFILE_ENV))


def _config_files() -> str:
    config = os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    return f"{config} or {credentials}"


@functools.cache
def _session(profile: str | None) -> boto3.session.Session:
    try:
        return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except botocore.exceptions.ProfileNotFound as exc:
        raise UserError(
            f"{PROFILE_ENV}={profile}: no such AWS profile in {_config_files()}; {LIST_PROFILES}"
        ) from exc


def use_profile(name: str) -> None:
    """`--profile NAME`: every session from now on, here and in the processes mlp starts, acts as NAME."""
    if name not in botocore.session.Session().available_profiles:
        raise UserError(f"--profile {name}: no such AWS profile in {_config_files()}; {LIST_PROFILES}")
    os.environ[PROFILE_ENV] = name


def default_max_attempts() -> int:
    """`AWS_MAX_ATTEMPTS` when set (the standard AWS knob), else DEFAULT_MAX_ATTEMPTS."""
    value = os.environ.get(MAX_ATTEMPTS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_ATTEMPTS
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{MAX_ATTEMPTS_ENV}={value!r}: use a whole number of attempts >= 1, e.g. 8")
    return int(value)


def retry_mode() -> str:
    value = os.environ.get(RETRY_MODE_ENV, "").strip() or RETRY_MODES[0]
    if value not in RETRY_MODES:
        raise UserError(f"{RETRY_MODE_ENV}={value!r}: use one of {', '.join(RETRY_MODES)}")
    return value


def client(
    service: str,
    region: str | None = None,
    *,
    max_attempts: int | None = None,
    session: boto3.session.Session | None = None,
) -> Any:
    """A boto3 client that retries throttles and transport errors (adaptive mode by default).

    `session` is another account's (see `assumed_role_session`); by default the caller's own.
    """
    config = Config(
        region_name=region or default_region(),
        retries={"mode": retry_mode(), "total_max_attempts": max_attempts or default_max_attempts()},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=20,
    )
    with aws_errors(f"connecting to {service}"):
        return (session or base_session()).client(service, config=config)


def assumed_role_session(
    role_arn: str, *, session_name: str, external_id: str | None = None
) -> boto3.session.Session:
    """A session acting as `role_arn`, assumed from the caller's credentials on first use.

    The credentials refresh themselves shortly before they expire, so a scan longer than the
    role's session duration keeps working.
    """
    source = base_session()
    extra_args: dict[str, str] = {"RoleSessionName": session_name}
    if external_id:
        extra_args["ExternalId"] = external_id
    fetcher = botocore.credentials.AssumeRoleCredentialFetcher(
        client_creator=source._session.create_client,
        source_credentials=source.get_credentials(),
        role_arn=role_arn,
        extra_args=extra_args,
    )
    credentials = botocore.credentials.DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role"
    )
    core = botocore.session.Session()
    core._credentials = credentials
    return boto3.session.Session(botocore_session=core, region_name=source.region_name)


def caller_account_id(region: str | None = None) -> str:
    """The account the current credentials act in."""
    return client("sts", region).get_caller_identity()["Account"]


def parse_regions(value: str | None) -> list[str]:
    """`--regions r1,r2` into a list without repeats; the environment's region when absent."""
    if not value:
        return [default_region()]
    regions = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not regions:
        raise UserError("--regions is empty; pass region names like --regions us-east-1,eu-west-1")
    for region in regions:
        if not REGION_NAME.fullmatch(region):
            raise UserError(f"--regions: {region!r} is not an AWS region name (e.g. us-east-1,eu-west-1)")
    return regions


def _endpoint_hint() -> str:
    override = os.environ.get(ENDPOINT_ENV)
    if override:
        return f"check {ENDPOINT_ENV}={override} is up and the network reaches it"
    return f"check the network (and {ENDPOINT_ENV} if you meant an emulator)"


def _error_endpoint(exc: BaseException) -> str:
    kwargs = getattr(exc, "kwargs", {}) or {}
    return str(kwargs.get("endpoint_url") or kwargs.get("proxy_url") or os.environ.get(ENDPOINT_ENV) or "AWS")


def unreachable(exc: BaseException, action: str | None = None) -> AwsUnreachable | None:
    """`exc` as one actionable line when it is a transport, endpoint or region error; else None."""
    prefix = f"{action}: " if action else ""
    name = type(exc).__name__
    if isinstance(exc, botocore.exceptions.ProxyConnectionError):
        proxy = _error_endpoint(exc)
        return AwsUnreachable(
            f"{prefix}cannot connect to the proxy {proxy} ({name}); check HTTPS_PROXY/HTTP_PROXY",
            endpoint=proxy,
            reason=f"proxy unreachable ({name}: {proxy})",
        )
    if isinstance(exc, botocore.exceptions.SSLError):
        endpoint = _error_endpoint(exc)
        return AwsUnreachable(
            f"{prefix}TLS to {endpoint} failed ({name}); check AWS_CA_BUNDLE and {ENDPOINT_ENV}",
            endpoint=endpoint,
            reason=f"TLS failed ({name}: {endpoint})",
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        endpoint = _error_endpoint(exc)
        return AwsUnreachable(
            f"{prefix}cannot reach the AWS endpoint {endpoint} ({name}, after retries); {_endpoint_hint()}",
            endpoint=endpoint,
            reason=f"endpoint unreachable ({name}: {endpoint})",
        )
    if isinstance(exc, botocore.parsers.ResponseParserError):
        endpoint = os.environ.get(ENDPOINT_ENV) or "AWS"
        return AwsUnreachable(
            f"{prefix}the endpoint {endpoint} answered something that is not an AWS response; "
            f"check {ENDPOINT_ENV} points at AWS or an AWS emulator, and the region name",
            endpoint=endpoint,
            reason=f"not an AWS answer from {endpoint} (ResponseParserError)",
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return AwsUnreachable(
            f"{prefix}no AWS region configured; set AWS_REGION or pass --regions",
            endpoint="",
            reason="no region",
            status="misconfigured",
        )
    if isinstance(exc, botocore.exceptions.InvalidRegionError):
        region = (getattr(exc, "kwargs", {}) or {}).get("region_name", "")
        return AwsUnreachable(
            f"{prefix}{region!r} is not an AWS region name; fix --regions or AWS_REGION (e.g. us-east-1)",
            endpoint="",
            reason=f"invalid region {region!r}",
            status="misconfigured",
        )
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint"):
        # botocore's own words for an AWS_ENDPOINT_URL it cannot use.
        return AwsUnreachable(
            f"{prefix}{exc}; set {ENDPOINT_ENV} to a URL like http://127.0.0.1:5000 or unset it",
            endpoint=os.environ.get(ENDPOINT_ENV, ""),
            reason=str(exc),
            status="misconfigured",
        )
    return None


def describe_aws_error(exc: BaseException) -> str | None:
    """The one line for an AWS error that escaped every handler (used by `mlp`'s main); else None."""
    found = unreachable(exc, getattr(exc, _ACTION_ATTRIBUTE, None))
    return None if found is None else found.message


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn credential, endpoint, region and access errors into one actionable line (exit 2)."""
    try:
        yield
    except CALLER_RETRIED_ERRORS as exc:
        # The innermost action is the most precise one.
        if not hasattr(exc, _ACTION_ATTRIBUTE):
            setattr(exc, _ACTION_ATTRIBUTE, action)
        raise
    except botocore.exceptions.NoCredentialsError as exc:
        raise UserError(
            f"{action}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
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
    except (
        *TRANSPORT_ERRORS,
        botocore.parsers.ResponseParserError,
        botocore.exceptions.NoRegionError,
        botocore.exceptions.InvalidRegionError,
        ValueError,
    ) as exc:
        error = unreachable(exc, action)
        if error is None:
            raise
        raise error from exc
