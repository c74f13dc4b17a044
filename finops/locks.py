"""Leased locks so two reapers never act on one stack: a lock file for file:// state, an object for s3://.

A lock is a small JSON record naming its owner (a uuid4 token, pid, host) with `acquired_at` and
`heartbeat_at`. Every change is a compare-and-swap on the version the writer last saw (the S3 ETag;
for files the SHA-256 of the content, swapped under an flock), so:

* only the owner renews or releases its lock;
* a holder renews while it works (every `stale_after / 4`), so a long destroy keeps its lock and a
  crashed holder's lock goes stale after `stale_after` instead of hours;
* of two reapers taking over one stale lock, exactly one swap succeeds;
* a lock whose holder ran on this host and whose process is gone is stale at once.

`hold(name)` yields a `Lease`; call `lease.check()` before each destructive step, since a lease can
be lost (taken over after renewals failed for too long) while its holder works.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import botocore.exceptions

STALE_AFTER = timedelta(minutes=10)
LOCK_DIR_NAME = ".ml-platform-locks"
# A lock can change hands between our failed create and our read; retrying a few times covers that
# without looping forever on a pathological churn.
_ACQUIRE_ATTEMPTS = 3

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LockHeld(Exception):
    """Another reaper holds the lock of this stack."""


class LockLost(LockHeld):
    """The lock this lease held is no longer ours: stop before the next destructive step."""


class Locks(Protocol):
    def hold(self, name: str) -> contextlib.AbstractContextManager[Lease]: ...


def _host_id() -> str:
    """What makes two pids comparable: same boot and same pid namespace, not just the same hostname.

    Containers can share a hostname (or a lock directory) while living in different pid namespaces;
    judging a pid dead across them would take over a live lock.
    """
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return "/".join(parts)


def _pid_is_gone(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) and negative pids address process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _ago(delta: timedelta) -> str:
    return f"{_span(delta)} ago"


def _aware(moment: datetime) -> datetime:
    # A record written without an offset is read as UTC rather than failing every comparison.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Holder:
    """The owner record stored in a lock."""

    token: str
    pid: int
    host: str
    host_id: str
    acquired_at: datetime
    heartbeat_at: datetime
    # Bumped on every renewal so each write has distinct bytes: S3's ETag is the content's MD5, and
    # a renewal under a frozen clock must still change it.
    seq: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "token": self.token,
                "pid": self.pid,
                "host": self.host,
                "host_id": self.host_id,
                "acquired_at": self.acquired_at.isoformat(),
                "heartbeat_at": self.heartbeat_at.isoformat(),
                "seq": self.seq,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """None for a record this version cannot read (an older format, or a torn write)."""
        try:
            raw = json.loads(data)
            return cls(
                token=str(raw["token"]),
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                host_id=str(raw.get("host_id", "")),
                acquired_at=_aware(datetime.fromisoformat(raw["acquired_at"])),
                heartbeat_at=_aware(datetime.fromisoformat(raw["heartbeat_at"])),
                seq=int(raw.get("seq", 0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def describe(self, now: datetime) -> str:
        return (
            f"host {self.host}, pid {self.pid}, acquired {_ago(now - self.acquired_at)}, "
            f"last heartbeat {_ago(now - self.heartbeat_at)}"
        )


@dataclass(frozen=True)
class LockState:
    """A lock as read at one moment: its version (what a swap must match), owner and staleness."""

    name: str
    location: str
    version: str
    holder: Holder | None
    modified: datetime
    observed_at: datetime
    stale_reason: str | None

    def describe(self) -> str:
        if self.holder is None:
            return f"unreadable owner record, written {_ago(self.observed_at - self.modified)}"
        return self.holder.describe(self.observed_at)


class Lease:
    """One holder's claim on a lock: renewed by a heartbeat, released only by its owner."""

    def __init__(
        self, locks: LeasedLocks, name: str, holder: Holder, version: str, confirmed_at: datetime
    ) -> None:
        self.name = name
        self._locks = locks
        self._holder = holder
        self._version = version
        self._confirmed_at = confirmed_at
        self._lost_reason: str | None = None
        # Lost by time is not the same as refused: a lease that timed out may still own the record,
        # and then its release should remove it rather than leave it to go stale.
        self._refused = False
        self._released = False
        # Renewal (heartbeat thread) and release (holder) must not swap on the same version at once.
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        return self._holder.token

    @property
    def holder(self) -> Holder:
        return self._holder

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        if self._lost_reason is None and not self._released:
            unconfirmed = self._locks.clock() - self._confirmed_at
            # Others may take the lock once our heartbeat is `stale_after` old by *their* clock; give
            # up a renewal interval earlier so clock skew and an in-flight step fit in the margin.
            if unconfirmed > self._locks.stale_after - self._locks.renew_every:
                self._lost_reason = f"no heartbeat confirmed for {_span(unconfirmed)}"
        return self._lost_reason

    def check(self) -> None:
        """Raise LockLost unless the lock is still ours; call it before each destructive step."""
        reason = self.lost_reason
        if reason is not None:
            raise LockLost(f"lost the lock of {self.name}: {reason}")

    def renew(self) -> bool:
        """One heartbeat: rewrite the record if it is still ours. False once the lease is lost."""
        with self._mutex:
            if self.lost:
                return False
            now = self._locks.clock()
            fresh = replace(self._holder, heartbeat_at=now, seq=self._holder.seq + 1)
            version = self._locks._replace(self.name, self._version, fresh.to_bytes())
            if version is None:
                self._refused = True
                self._lost_reason = "the lock is no longer ours"
                with contextlib.suppress(Exception):  # the detail is for the message only
                    state = self._locks.inspect(self.name)
                    self._lost_reason = (
                        "the lock was removed"
                        if state is None
                        else f"the lock was taken over ({state.describe()})"
                    )
                return False
            # `now` was read before the write, so the confirmation errs on the early side.
            self._holder, self._version, self._confirmed_at = fresh, version, now
            return True

    def release(self) -> None:
        """Remove the lock if it is still ours; a lock someone else took over is left to them."""
        self._stop_heartbeat()
        with self._mutex:
            if self._released:
                return
            self._released = True
            if not self._refused:
                self._locks._delete(self.name, self._version)
            self._lost_reason = "released"

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = self._locks.renew_every.total_seconds()
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:
                # A blip must not end the heartbeat; if renewals keep failing, `lost` times out.
                continue

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


class LeasedLocks:
    """Acquire, take over and renew leases; subclasses provide the compare-and-swap storage."""

    def __init__(
        self,
        clock: Clock = _utc_now,
        *,
        stale_after: timedelta = STALE_AFTER,
        renew_every: timedelta | None = None,
        renew_in_background: bool = True,
    ) -> None:
        self.clock = clock
        self.stale_after = stale_after
        self.renew_every = renew_every if renew_every is not None else stale_after / 4
        if not timedelta(0) < self.renew_every <= stale_after / 2:
            raise ValueError(f"renew_every must be in (0, stale_after / 2], got {self.renew_every}")
        self.renew_in_background = renew_in_background
        self.host = socket.gethostname()
        self.host_id = _host_id()

    # Storage: versions are opaque strings; None/False means the precondition failed.
    def _location(self, name: str) -> str:
        raise NotImplementedError

    def _read(self, name: str) -> tuple[str, bytes, datetime] | None:
        raise NotImplementedError

    def _create(self, name: str, body: bytes) -> str | None:
        raise NotImplementedError

    def _replace(self, name: str, expected: str, body: bytes) -> str | None:
        raise NotImplementedError

    def _delete(self, name: str, expected: str) -> bool:
        raise NotImplementedError

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[Lease]:
        """Hold the lock of `name` for the block, renewing it meanwhile; LockHeld if another holds it."""
        lease = self.acquire(name)
        if self.renew_in_background:
            lease._start_heartbeat()
        try:
            yield lease
        except BaseException:
            # The block's own error matters more than a failed cleanup; the lock then goes stale.
            with contextlib.suppress(Exception):
                lease.release()
            raise
        lease.release()

    def acquire(self, name: str) -> Lease:
        """Take the lock (creating it, or taking over a stale one) without a heartbeat thread."""
        for _ in range(_ACQUIRE_ATTEMPTS):
            now = self.clock()
            holder = self._new_holder(now)
            version = self._create(name, holder.to_bytes())
            if version is not None:
                return Lease(self, name, holder, version, now)
            state = self.inspect(name)
            if state is None:  # released between our create and our read
                continue
            return self.take_over(state)
        raise LockHeld(f"{name} is locked by another reaper: the lock keeps changing hands")

    def inspect(self, name: str) -> LockState | None:
        """The lock as it is now, with why it is stale (None if it is live); None if there is no lock."""
        found = self._read(name)
        if found is None:
            return None
        version, body, modified = found
        now = self.clock()
        holder = Holder.from_bytes(body)
        return LockState(
            name=name,
            location=self._location(name),
            version=version,
            holder=holder,
            modified=modified,
            observed_at=now,
            stale_reason=self._stale_reason(holder, modified, now),
        )

    def take_over(self, state: LockState) -> Lease:
        """Replace a stale lock, if it is still exactly as `state` saw it; LockHeld otherwise."""
        if state.stale_reason is None:
            raise LockHeld(self._held_message(state))
        now = self.clock()
        holder = self._new_holder(now)
        version = self._replace(state.name, state.version, holder.to_bytes())
        if version is None:
            current = self.inspect(state.name)
            raise LockHeld(
                self._held_message(current)
                if current is not None
                else f"{state.name} is locked by another reaper: the stale lock changed hands"
            )
        return Lease(self, state.name, holder, version, now)

    def _new_holder(self, now: datetime) -> Holder:
        return Holder(
            token=str(uuid.uuid4()),
            pid=os.getpid(),
            host=self.host,
            host_id=self.host_id,
            acquired_at=now,
            heartbeat_at=now,
        )

    def _stale_reason(self, holder: Holder | None, modified: datetime, now: datetime) -> str | None:
        if (
            holder is not None
            and holder.host == self.host
            and holder.host_id == self.host_id
            and _pid_is_gone(holder.pid)
        ):
            return f"its holder, pid {holder.pid} on this host, is not running"
        # The later of the storage's write time and the holder's own stamp: a holder whose clock lags
        # is not judged stale while it still writes.
        last = modified if holder is None else max(modified, holder.heartbeat_at)
        if now - last > self.stale_after:
            return f"no heartbeat for {_span(now - last)}"
        return None

    def _held_message(self, state: LockState) -> str:
        return f"{state.name} is locked by another reaper: {state.describe()} ({state.location})"


class FileLocks(LeasedLocks):
    """One lock file per stack in a directory shared by every reaper of a file:// backend.

    Creates, swaps and deletes happen under an flock of a `.guard` file in the directory (never
    deleted, so every process locks the same inode); the content is replaced with os.replace so a
    reader outside the guard never sees a torn record.
    """

    def __init__(
        self,
        directory: Path,
        clock: Clock = _utc_now,
        *,
        stale_after: timedelta = STALE_AFTER,
        renew_every: timedelta | None = None,
        renew_in_background: bool = True,
    ) -> None:
        super().__init__(
            clock, stale_after=stale_after, renew_every=renew_every, renew_in_background=renew_in_background
        )
        self.directory = directory

    def path(self, name: str) -> Path:
        if name in {"", ".", ".."}:
            raise ValueError(f"not a lock name: {name!r}")
        return self.directory / f"{quote(name, safe='-_.')}.lock"

    def _location(self, name: str) -> str:
        return str(self.path(name))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.directory / ".guard", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing drops the flock

    def _read(self, name: str) -> tuple[str, bytes, datetime] | None:
        try:
            with self.path(name).open("rb") as handle:
                body = handle.read()
                modified = datetime.fromtimestamp(os.fstat(handle.fileno()).st_mtime, UTC)
        except FileNotFoundError:
            return None
        return hashlib.sha256(body).hexdigest(), body, modified

    @contextlib.contextmanager
    def _staged(self, name: str, body: bytes) -> Iterator[Path]:
        path = self.path(name)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(body)
        try:
            yield temporary
        finally:
            temporary.unlink(missing_ok=True)

    def _write(self, name: str, body: bytes) -> str:
        with self._staged(name, body) as temporary:
            os.replace(temporary, self.path(name))
        return hashlib.sha256(body).hexdigest()

    def _create(self, name: str, body: bytes) -> str | None:
        with self._guard(), self._staged(name, body) as temporary:
            # link() fails if the lock exists: create-if-absent even against a writer without the guard.
            try:
                os.link(temporary, self.path(name))
            except FileExistsError:
                return None
        return hashlib.sha256(body).hexdigest()

    def _replace(self, name: str, expected: str, body: bytes) -> str | None:
        with self._guard():
            current = self._read(name)
            if current is None or current[0] != expected:
                return None
            return self._write(name, body)

    def _delete(self, name: str, expected: str) -> bool:
        with self._guard():
            current = self._read(name)
            if current is None or current[0] != expected:
                return False
            self.path(name).unlink()
            return True


_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"}


def _lost_race(error: botocore.exceptions.ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _LOST_RACE


class S3Locks(LeasedLocks):
    """One lock object per stack beside s3:// state, for reapers on different machines.

    Create is `If-None-Match: *`; renew and take-over are `put_object(IfMatch=etag)`; release is
    `delete_object(IfMatch=etag)`. S3 lets exactly one of concurrent conditional writes succeed.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        prefix: str,
        clock: Clock = _utc_now,
        *,
        stale_after: timedelta = STALE_AFTER,
        renew_every: timedelta | None = None,
        renew_in_background: bool = True,
    ) -> None:
        super().__init__(
            clock, stale_after=stale_after, renew_every=renew_every, renew_in_background=renew_in_background
        )
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, name: str) -> str:
        return "/".join(part for part in (self.prefix, LOCK_DIR_NAME, f"{name}.lock") if part)

    def _location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def _read(self, name: str) -> tuple[str, bytes, datetime] | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(name))
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise
        return response["ETag"], response["Body"].read(), response["LastModified"]

    def _put(self, name: str, body: bytes, **condition: str) -> str | None:
        try:
            response = self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key(name),
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except botocore.exceptions.ClientError as error:
            if _lost_race(error):
                return None
            raise
        return response["ETag"]

    def _create(self, name: str, body: bytes) -> str | None:
        return self._put(name, body, IfNoneMatch="*")

    def _replace(self, name: str, expected: str, body: bytes) -> str | None:
        return self._put(name, body, IfMatch=expected)

    def _delete(self, name: str, expected: str) -> bool:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key(name), IfMatch=expected)
        except botocore.exceptions.ClientError as error:
            if _lost_race(error):
                return False
            raise
        return True


def locks_for(backend_url: str, s3_client: Callable[[], Any]) -> Locks:
    """Locks that every reaper of this state backend sees, stored beside the state."""
    if backend_url.startswith("s3://"):
        parts = urlsplit(backend_url)
        return S3Locks(s3_client(), parts.netloc, parts.path)
    if backend_url.startswith("file://"):
        # Not urlsplit: it would read the `~` of file://~/state as a host name.
        directory = backend_url.removeprefix("file://")
        if not directory:
            raise ValueError(f"backend {backend_url!r} names no directory")
        return FileLocks(Path(directory).expanduser() / LOCK_DIR_NAME)
    raise ValueError(f"no locks for backend {backend_url!r}: use a file:// or s3:// URL")
