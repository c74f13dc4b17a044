"""The boot script of every training instance: `user_data.sh` rendered with one run's values.

The script is a real file so it stays readable and shell-checkable; rendering only fills the values
block at its top, each value shell-quoted so a command holding quotes or `$(...)` stays a literal.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from infra.training.request import ecr_image, validate_run_id
from mlp.errors import UserError
from mlp.gpu_metrics import cloudwatch_agent_config_json

TEMPLATE_PATH = Path(__file__).with_name("user_data.sh")
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"
DEFAULT_SYNC_INTERVAL_SECONDS = 300
# EC2 refuses user data above 16 KB (before base64, after our gzip).
MAX_USER_DATA_BYTES = 16 * 1024
# Each value becomes one `NAME=value` line of docker's --env-file, which has no quoting.
_ENV_FILE_VALUE = re.compile(r"[^\s\x00-\x1f\x7f]+")
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@!-]+")


@dataclass(frozen=True)
class FeatureStoreAccess:
    """Where the trainer finds the feature store; the AUTH token is read from the secret at boot."""

    host: str
    port: int
    auth_secret_arn: str

    def __post_init__(self) -> None:
        # A stack reference hands every number over as a float.
        if isinstance(self.port, float) and self.port.is_integer():
            object.__setattr__(self, "port", int(self.port))
        if not _ENV_FILE_VALUE.fullmatch(self.host):
            raise UserError(
                f"training user data: feature store host {self.host!r} is not a host name;"
                " check the environment stack's featureStoreEndpoint output"
            )
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise UserError(
                f"training user data: feature store port {self.port} is not a TCP port;"
                " check the environment stack's featureStorePort output"
            )
        if not _SECRET_ARN.fullmatch(self.auth_secret_arn):
            raise UserError(
                f"training user data: {self.auth_secret_arn!r} is not a Secrets Manager secret ARN;"
                " check the environment stack's featureStoreAuthSecretArn output"
            )


@dataclass(frozen=True)
class UserDataValues:
    """One run's values for the boot script.

    `image` None runs `command` directly on the host; otherwise `docker run --gpus all` runs it in the
    image with `checkpoint_dir` mounted at the same path; an image in a private ECR registry is
    pulled after logging in to that registry. `feature_store` None gives the trainer no feature store.
    """

    run_id: str
    bucket: str
    region: str
    asg_name: str
    command: str
    max_hours: float
    image: str | None = None
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    sync_interval_seconds: int = DEFAULT_SYNC_INTERVAL_SECONDS
    feature_store: FeatureStoreAccess | None = None

    def __post_init__(self) -> None:
        # The script builds S3 keys and a JMESPath literal from it.
        validate_run_id(self.run_id)
        for name in ("bucket", "region", "asg_name", "command"):
            if not getattr(self, name).strip():
                raise UserError(f"training user data: {name} is empty; give the run a {name}")
        if not self.max_hours > 0:
            raise UserError(
                f"training user data: max_hours is {self.max_hours}; use a positive number of hours"
            )
        if self.sync_interval_seconds <= 0:
            raise UserError(
                f"training user data: sync_interval_seconds is {self.sync_interval_seconds};"
                " use a positive number"
            )
        # The script syncs, searches and mounts this directory: a relative path or / would be unsafe.
        if not self.checkpoint_dir.startswith("/") or not self.checkpoint_dir.strip("/"):
            raise UserError(
                f"training user data: checkpoint_dir {self.checkpoint_dir!r} is not an absolute"
                " directory below /; use a path like /opt/ml/checkpoints"
            )


def render_user_data(values: UserDataValues) -> str:
    """The boot script for one run, ready for a launch template's `user_data` (before base64)."""
    template = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    ).from_string(TEMPLATE_PATH.read_text())
    registry = ecr_image(values.image)
    feature_store = values.feature_store
    script = template.render(
        run_id=shlex.quote(values.run_id),
        bucket=shlex.quote(values.bucket),
        region=shlex.quote(values.region),
        asg_name=shlex.quote(values.asg_name),
        command=shlex.quote(values.command),
        image=shlex.quote(values.image or ""),
        ecr_registry=shlex.quote(registry.registry if registry else ""),
        ecr_region=shlex.quote(registry.region if registry else ""),
        feature_store_host=shlex.quote(feature_store.host if feature_store else ""),
        feature_store_port=shlex.quote(str(feature_store.port) if feature_store else ""),
        feature_store_auth_secret_arn=shlex.quote(feature_store.auth_secret_arn if feature_store else ""),
        checkpoint_dir=shlex.quote(values.checkpoint_dir.rstrip("/")),
        max_run_seconds=math.ceil(values.max_hours * 3600),
        sync_interval_seconds=int(values.sync_interval_seconds),
        cloudwatch_agent_config=shlex.quote(cloudwatch_agent_config_json()),
    )
    return script


def launch_template_user_data(script: str) -> str:
    """The script as a launch template takes it: gzip (cloud-init inflates it), then base64.

    Compressing leaves room for long commands under EC2's 16 KB limit, which counts these bytes.
    """
    payload = gzip.compress(script.encode(), mtime=0)
    if len(payload) > MAX_USER_DATA_BYTES:
        raise UserError(
            f"training user data is {len(payload)} bytes compressed, above EC2's limit of {MAX_USER_DATA_BYTES};"
            " shorten the command"
        )
    return base64.b64encode(payload).decode()
