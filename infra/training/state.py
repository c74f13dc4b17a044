"""Reading a self-managed ("DIY") Pulumi backend straight from its files: listing, tags, outputs, no CLI.

The layout is the one pulumi/pulumi `pkg/backend/diy` writes (meta.go, store.go, state.go,
stack_tags.go):

    .pulumi/meta.yaml                        `version: 1`: project-scoped; absent or `version: 0`: legacy
    .pulumi/stacks/<project>/<stack>.json    a stack's checkpoint (project-scoped)
    .pulumi/stacks/<stack>.json              a stack's checkpoint (legacy)
    ....json.gz / ....json.zst               the same, compressed (PULUMI_DIY_BACKEND_GZIP / _ZSTD)
    <stack file without .json>.pulumi-tags   `{"version": 1, "tags": {...}}`, the stack's tags

`*.json.bak` (what `pulumi stack rm` leaves), `.pulumi/backups`, `.pulumi/history` and
`.pulumi/locks` are never stacks. Only `pulumi up`/`destroy` need the CLI; this module never writes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import botocore.exceptions
import yaml

from infra.config import PROJECT
from infra.training.automation import StackSummary, local_path
from mlp.aws import client as aws_client
from mlp.errors import UserError

META_KEY = ".pulumi/meta.yaml"
STACKS_DIR = ".pulumi/stacks"
CHECKPOINT_SUFFIX = ".json"
TAGS_SUFFIX = ".pulumi-tags"
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
# Pulumi's property-value signatures (sdk/go/common/resource/sig/sig.go).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SECRET_PLACEHOLDER = "[secret]"
STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# Checkpoint versions pkg/resource/stack/checkpoint.go reads; 0 is the unversioned document itself.
CHECKPOINT_VERSIONS = range(0, 5)
S3_PAGE_SIZE = 1000
_COMPRESSED = re.compile(r"\.(gz|zst)$")
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class StackReader(Protocol):
    """What reading the runs needs from a state backend: no deploying, so no Pulumi CLI."""

    def list_stacks(self) -> list[StackSummary]: ...

    def outputs(self, stack: str) -> dict[str, Any]: ...

    def has_stack(self, stack: str) -> bool: ...


@dataclass(frozen=True)
class _Object:
    key: str
    modified: datetime


class _Unreadable(Exception):
    """A stack file that cannot be used; the message completes "<key> ..."."""


class _FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self) -> bool:
        return self.root.is_dir()

    def list(self, directory: str) -> list[_Object]:
        try:
            entries = list(os.scandir(self.root / directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise UserError(f"cannot list {self.root / directory}: {error.strerror}") from error
        found = []
        for entry in entries:
            try:
                if entry.is_file():
                    modified = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
                    found.append(_Object(f"{directory}/{entry.name}", modified))
            except FileNotFoundError:
                continue  # removed since the listing, by a concurrent `pulumi stack rm`
        return found

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None


class _S3Store:
    def __init__(self, bucket: str, prefix: str, region: str | None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("s3", self.region)
        return self._client

    def exists(self) -> bool:
        # A listing rather than HeadBucket: it needs no more than reading the state does, and its
        # errors carry codes (AccessDenied, NoSuchBucket) where HeadBucket's have only a status.
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except botocore.exceptions.ClientError as error:
            if _missing(error):
                return False
            raise
        return True

    def list(self, directory: str) -> list[_Object]:
        paginator = self.client.get_paginator("list_objects_v2")
        # The delimiter keeps the listing to the directory itself, as Pulumi's listBucket does.
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=f"{self.prefix}{directory}/",
            Delimiter="/",
            PaginationConfig={"PageSize": S3_PAGE_SIZE},
        )
        return [
            _Object(item["Key"].removeprefix(self.prefix), item["LastModified"])
            for page in pages
            for item in page.get("Contents", [])
        ]

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{key}")["Body"].read()
        except botocore.exceptions.ClientError as error:
            if _missing(error):
                return None
            raise


def _missing(error: botocore.exceptions.ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


def _open(url: str) -> _FileStore | _S3Store:
    if url.startswith("file://"):
        return _FileStore(local_path(url))
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise UserError(f"backend {url!r} names no bucket: use s3://bucket or s3://bucket/prefix")
        # Pulumi's bucket prefix: the URL path without its leading slashes, as a folder.
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        region = parse_qs(parts.query).get("region", [None])[-1]
        return _S3Store(parts.netloc, prefix, region)
    raise UserError(f"backend {url!r}: use a file:// or s3:// URL")


class DiyStateBackend:
    """`StackReader` over a file:// or s3:// Pulumi state, for this project's stacks.

    Whatever cannot be read (a corrupt stack file, a missing backend) is skipped and described in
    `warnings`, so one bad file never hides the other runs.
    """

    def __init__(self, url: str, *, project: str = PROJECT) -> None:
        self.url = url
        self.project = project
        self.warnings: list[str] = []
        self._store = _open(url)

    def list_stacks(self) -> list[StackSummary]:
        directory = self._stacks_dir()
        if directory is None:
            return []
        summaries = []
        for name, key in sorted(self._checkpoint_keys(directory).items()):
            try:
                checkpoint = self._checkpoint(key)
            except _Unreadable as error:
                self._warn(f"skipped {self.url}/{key}: {error}")
                continue
            latest = checkpoint.get("latest")
            summaries.append(
                StackSummary(
                    name=name,
                    tags=self._tags(f"{directory}/{name}{TAGS_SUFFIX}"),
                    last_update=_last_update(latest),
                    resource_count=len(latest.get("resources") or []) if latest is not None else None,
                )
            )
        return summaries

    def outputs(self, stack: str) -> dict[str, Any]:
        """The root stack's outputs; a secret one is `SECRET_PLACEHOLDER`, never decrypted."""
        key = self._find(stack)
        if key is None:
            raise UserError(f"no stack {stack} on {self.url}")
        try:
            checkpoint = self._checkpoint(key)
        except _Unreadable as error:
            raise UserError(f"stack {stack} cannot be read: {self.url}/{key} {error}") from error
        for resource in (checkpoint.get("latest") or {}).get("resources") or []:
            if resource.get("type") == ROOT_STACK_TYPE and not resource.get("parent"):
                return _hide_secrets(resource.get("outputs") or {})
        return {}

    def has_stack(self, stack: str) -> bool:
        """Whether the stack's file is there, readable or not: a corrupt stack still takes its name."""
        return self._find(stack) is not None

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _stacks_dir(self) -> str | None:
        if not self._store.exists():
            self._warn(f"backend {self.url} does not exist, so it has no stacks")
            return None
        try:
            raw = self._store.read(META_KEY)
        except OSError as error:
            self._warn(f"{self.url}: cannot read {META_KEY} ({error.strerror}); not reading its stacks")
            return None
        if raw is None:
            # Pulumi's choice for a state without meta.yaml: legacy if legacy stack files exist.
            version = 0 if self._checkpoint_keys(STACKS_DIR) else 1
        else:
            try:
                version = yaml.safe_load(raw)["version"]
            except (yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError):
                self._warn(f"{self.url}: {META_KEY} is corrupt; not reading its stacks")
                return None
        if isinstance(version, bool) or version not in (0, 1):
            self._warn(f"{self.url}: {META_KEY} has version {version!r}; this reader knows 0 and 1")
            return None
        return STACKS_DIR if version == 0 else f"{STACKS_DIR}/{self.project}"

    def _checkpoint_keys(self, directory: str) -> dict[str, str]:
        """Stack name → its checkpoint's key; of a plain and a compressed one, the newer (as Pulumi)."""
        newest: dict[str, _Object] = {}
        # In key order, so that of two equally new files the later wins, as in Pulumi's stackPath.
        for item in sorted(self._store.list(directory), key=lambda item: item.key):
            base = _COMPRESSED.sub("", item.key.rsplit("/", 1)[-1])
            if not base.endswith(CHECKPOINT_SUFFIX):
                continue
            name = base.removesuffix(CHECKPOINT_SUFFIX)
            if not STACK_NAME.fullmatch(name):
                continue
            if name not in newest or item.modified >= newest[name].modified:
                newest[name] = item
        return {name: item.key for name, item in newest.items()}

    def _find(self, stack: str) -> str | None:
        if not STACK_NAME.fullmatch(stack):
            return None
        directory = self._stacks_dir()
        return None if directory is None else self._checkpoint_keys(directory).get(stack)

    def _checkpoint(self, key: str) -> dict[str, Any]:
        try:
            raw = self._store.read(key)
        except OSError as error:
            raise _Unreadable(f"cannot be read ({error.strerror})") from error
        if raw is None:
            raise _Unreadable("was removed while being read")
        return _parse_checkpoint(raw)

    def _tags(self, key: str) -> dict[str, str]:
        try:
            raw = self._store.read(key)
        except OSError as error:
            self._warn(f"{self.url}/{key} cannot be read ({error.strerror}); its stack shows no tags")
            return {}
        if raw is None:
            return {}
        try:
            document = json.loads(raw)
            tags = document["tags"] if document["version"] == 1 else None
        except (ValueError, TypeError, KeyError):
            tags = None
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            self._warn(f"{self.url}/{key} is not a version-1 tags file; its stack shows no tags")
            return {}
        return tags


def _parse_checkpoint(raw: bytes) -> dict[str, Any]:
    """The checkpoint object of a stack file, as pkg/resource/stack/checkpoint.go reads it."""
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise _Unreadable(f"is a broken gzip file ({error})") from error
    elif raw.startswith(_ZSTD_MAGIC):
        raise _Unreadable("is zstd-compressed, which this reader cannot decompress")
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise _Unreadable(f"is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise _Unreadable("is not a checkpoint object")
    version = document.get("version", 0)
    if not isinstance(version, int) or version not in CHECKPOINT_VERSIONS:
        raise _Unreadable(f"has checkpoint version {version!r}; this reader knows 0-4")
    checkpoint = document if version == 0 else document.get("checkpoint")
    if not isinstance(checkpoint, dict):
        raise _Unreadable("has no checkpoint object")
    latest = checkpoint.get("latest")
    if latest is not None and not (
        isinstance(latest, dict) and isinstance(latest.get("resources") or [], list)
    ):
        raise _Unreadable("has a malformed latest deployment")
    return checkpoint


def _last_update(latest: dict[str, Any] | None) -> datetime | None:
    moment = ((latest or {}).get("manifest") or {}).get("time")
    try:
        parsed = datetime.fromisoformat(moment) if isinstance(moment, str) else None
    except ValueError:
        return None
    # Go's zero time marks a deployment that never ran, which Pulumi reports as no update.
    return parsed if parsed is not None and parsed.year > 1 else None


def _hide_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return SECRET_PLACEHOLDER
        return {key: _hide_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hide_secrets(item) for item in value]
    return value
