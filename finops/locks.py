"""Locks so two reapers never act on one stack: a lock file for file:// state, an object for s3://.

Both are create-if-absent (O_EXCL / S3 `If-None-Match: *`), and a lock left by a crashed reaper
goes stale after `STALE_AFTER`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore.exceptions

STALE_AFTER = timedelta(hours=2)
LOCAL_LOCK_DIR = Path.home() / ".ml-platform" / "locks"


class LockHeld(Exception):
    """Another reaper holds the lock of this stack."""


class Locks(Protocol):
    def hold(self, name: str) -> contextlib.AbstractContextManager[None]: ...


class FileLocks:
    """One lock file per stack, for reapers sharing a machine (file:// state)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.lock"
        if path.exists() and self.clock() - path.stat().st_mtime > STALE_AFTER.total_seconds():
            path.unlink(missing_ok=True)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise LockHeld(f"{name} is locked by another reaper ({path})") from None
        try:
            os.write(descriptor, json.dumps({"pid": os.getpid(), "at": self.clock()}).encode())
            os.close(descriptor)
            yield
        finally:
            path.unlink(missing_ok=True)


class S3Locks:
    """One lock object per stack beside s3:// state, for reapers on different machines."""

    def __init__(
        self, s3: Any, bucket: str, prefix: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.clock = clock

    def _key(self, name: str) -> str:
        return "/".join(part for part in (self.prefix, ".ml-platform-locks", f"{name}.lock") if part)

    def _create(self, key: str) -> bool:
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps({"pid": os.getpid()}).encode(), IfNoneMatch="*"
            )
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {
                "PreconditionFailed",
                "ConditionalRequestConflict",
            }:
                return False
            raise
        return True

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        key = self._key(name)
        if not self._create(key):
            held = LockHeld(f"{name} is locked by another reaper (s3://{self.bucket}/{key})")
            taken_at = self.s3.head_object(Bucket=self.bucket, Key=key)["LastModified"]
            if self.clock() - taken_at <= STALE_AFTER:
                raise held
            # A crashed reaper's lock: take it over, unless another reaper just did.
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            if not self._create(key):
                raise held
        try:
            yield
        finally:
            self.s3.delete_object(Bucket=self.bucket, Key=key)


def locks_for(backend_url: str, s3_client: Callable[[], Any]) -> Locks:
    """Locks that every reaper of this state backend sees."""
    if backend_url.startswith("s3://"):
        parts = urlsplit(backend_url)
        return S3Locks(s3_client(), parts.netloc, parts.path)
    return FileLocks(LOCAL_LOCK_DIR)
