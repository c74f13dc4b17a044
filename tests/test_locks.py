"""Leased stack locks, file and S3, under forced interleavings: an injected clock, renewals called by
hand, and the two halves of a take-over (inspect, then swap) run in a chosen order. Nothing sleeps.

S3 runs against moto's in-process mock, which enforces the preconditions the locks rely on
(`If-None-Match: *` and `If-Match` on put_object, `If-Match` on delete_object: 412 on a mismatch),
so no fake client is needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from finops.locks import (
    LOCK_DIR_NAME,
    STALE_AFTER,
    FileLocks,
    LeasedLocks,
    LockHeld,
    LockLost,
    S3Locks,
    locks_for,
)

BUCKET = "mlp-pulumi-state"
NAME = "train-a"
RENEW = STALE_AFTER / 4


class Clock:
    """Starts just ahead of real time: S3's LastModified and file mtimes are real, and must not lead it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class FileSide:
    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "state" / LOCK_DIR_NAME

    def locks(self, clock: Callable[[], datetime], **options: Any) -> LeasedLocks:
        options.setdefault("renew_in_background", False)
        return FileLocks(self.directory, clock, **options)

    def raw(self, name: str) -> bytes | None:
        path = self.directory / f"{name}.lock"
        return path.read_bytes() if path.exists() else None

    def put_raw(self, name: str, body: bytes) -> None:
        """What another process left there, written behind the locks' back."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{name}.lock").write_bytes(body)


class S3Side:
    def __init__(self) -> None:
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)

    def locks(self, clock: Callable[[], datetime], **options: Any) -> LeasedLocks:
        options.setdefault("renew_in_background", False)
        return S3Locks(self.s3, BUCKET, "/state", clock, **options)

    def raw(self, name: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=BUCKET, Key=f"state/{LOCK_DIR_NAME}/{name}.lock")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def put_raw(self, name: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=f"state/{LOCK_DIR_NAME}/{name}.lock", Body=body)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(variable, value)
    with mock_aws():
        yield


@pytest.fixture(params=["file", "s3"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> FileSide | S3Side:
    if request.param == "file":
        return FileSide(tmp_path)
    request.getfixturevalue("aws")
    return S3Side()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def record(side: FileSide | S3Side, name: str = NAME) -> dict[str, Any] | None:
    raw = side.raw(name)
    return None if raw is None else json.loads(raw)


def plant(side: FileSide | S3Side, name: str = NAME, **fields: Any) -> None:
    """Rewrite fields of the stored record, as if a different process had written it."""
    current = record(side, name)
    assert current is not None
    side.put_raw(name, json.dumps({**current, **fields}).encode())


def token_of(side: FileSide | S3Side, name: str = NAME) -> str | None:
    stored = record(side, name)
    return None if stored is None else stored["token"]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_acquire_release_reacquire(side: FileSide | S3Side, clock: Clock) -> None:
    first, second = side.locks(clock), side.locks(clock)
    with first.hold(NAME) as lease:
        stored = record(side)
        assert stored is not None
        assert stored["token"] == lease.token and stored["pid"] == os.getpid()
        assert stored["host"] == socket.gethostname()
        assert stored["acquired_at"] == stored["heartbeat_at"] == clock.now.isoformat()
        with pytest.raises(LockHeld, match=f"{NAME} is locked by another reaper"), second.hold(NAME):
            pass
        with pytest.raises(LockHeld), first.hold(NAME):  # not re-entrant: one holder, one lease
            pass
        with second.hold("train-b"):
            pass
        lease.check()
        assert not lease.lost
    assert side.raw(NAME) is None
    assert lease.lost and lease.lost_reason == "released"
    with second.hold(NAME) as again:
        assert again.token != lease.token
    assert side.raw(NAME) is None and side.raw("train-b") is None


def test_an_error_in_the_block_still_releases(side: FileSide | S3Side, clock: Clock) -> None:
    with pytest.raises(RuntimeError, match="destroy failed"), side.locks(clock).hold(NAME):
        raise RuntimeError("destroy failed")
    assert side.raw(NAME) is None


def test_lock_held_names_the_lock_and_its_holder(side: FileSide | S3Side, clock: Clock) -> None:
    holder = side.locks(clock).acquire(NAME)
    clock.advance(timedelta(minutes=3))
    holder.renew()
    clock.advance(timedelta(seconds=40))
    with pytest.raises(LockHeld) as held:
        side.locks(clock).acquire(NAME)
    message = str(held.value)
    assert message.startswith(f"{NAME} is locked by another reaper: host {socket.gethostname()}, ")
    assert f"pid {os.getpid()}, acquired 3m40s ago, last heartbeat 40s ago" in message
    assert f"{LOCK_DIR_NAME}/{NAME}.lock" in message


def test_two_takers_of_one_stale_lock_exactly_one_wins(side: FileSide | S3Side, clock: Clock) -> None:
    crashed = side.locks(clock).acquire(NAME)
    clock.advance(STALE_AFTER + timedelta(seconds=1))
    first, second = side.locks(clock), side.locks(clock)

    seen_by_first, seen_by_second = first.inspect(NAME), second.inspect(NAME)
    assert seen_by_first is not None and seen_by_second is not None
    assert seen_by_first.stale_reason == seen_by_second.stale_reason == "no heartbeat for 10m01s"

    winner = first.take_over(seen_by_first)
    with pytest.raises(LockHeld, match=f"{NAME} is locked by another reaper: host "):
        second.take_over(seen_by_second)
    stored = record(side)
    assert stored is not None and stored["token"] == winner.token != crashed.token
    with pytest.raises(LockHeld):  # and the winner's fresh lock is not stale to anyone
        second.acquire(NAME)
    winner.check()


def test_a_stale_looking_lock_its_holder_renews_before_the_swap_is_not_taken(
    side: FileSide | S3Side, clock: Clock
) -> None:
    lease = side.locks(clock).acquire(NAME)
    ahead = Clock()  # a taker whose clock runs 11 minutes ahead sees the lock as stale
    ahead.now = clock.now + STALE_AFTER + timedelta(minutes=1)
    taker = side.locks(ahead)
    seen = taker.inspect(NAME)
    assert seen is not None and seen.stale_reason is not None
    clock.advance(RENEW)
    assert lease.renew()  # the holder renews between the taker's read and its swap
    with pytest.raises(LockHeld, match=f"{NAME} is locked by another reaper"):
        taker.take_over(seen)
    assert token_of(side) == lease.token
    lease.check()


def test_a_lease_whose_lock_was_taken_over_is_lost(side: FileSide | S3Side, clock: Clock) -> None:
    locks = side.locks(clock)
    with locks.hold(NAME) as lease:
        ahead = Clock()  # a taker whose clock runs ahead judges the lock stale before its holder does
        ahead.now = clock.now + STALE_AFTER + timedelta(minutes=1)
        taker = side.locks(ahead).acquire(NAME)
        lease.check()  # nothing tells the holder until it next renews
        clock.advance(RENEW)
        assert not lease.renew()
        assert lease.lost and "taken over" in (lease.lost_reason or "")
        with pytest.raises(LockLost, match=f"lost the lock of {NAME}: the lock was taken over"):
            lease.check()
        assert issubclass(LockLost, LockHeld)
    # The lost holder's exit removed nothing: the taker still holds the lock.
    stored = record(side)
    assert stored is not None and stored["token"] == taker.token
    taker.check()


def test_release_by_a_non_owner_leaves_the_owners_lock(side: FileSide | S3Side, clock: Clock) -> None:
    stale = side.locks(clock).acquire(NAME)
    clock.advance(STALE_AFTER + timedelta(minutes=1))
    owner = side.locks(clock).acquire(NAME)
    # The stale holder has not renewed, so it does not know it lost the lock; releasing must not
    # delete the lock the new owner now holds.
    stale.release()
    stored = record(side)
    assert stored is not None and stored["token"] == owner.token
    owner.release()
    assert side.raw(NAME) is None


def test_a_lease_is_lost_when_its_renewals_fail_for_too_long(side: FileSide | S3Side, clock: Clock) -> None:
    lease = side.locks(clock).acquire(NAME)
    clock.advance(STALE_AFTER - RENEW - timedelta(seconds=1))
    lease.check()
    clock.advance(timedelta(seconds=2))
    # Nobody took the lock yet, but others may at any moment: stop before the next step.
    with pytest.raises(LockLost, match="no heartbeat confirmed for 7m31s"):
        lease.check()
    assert not lease.renew()
    lease.release()  # still the owner's record, so the owner may remove it
    assert side.raw(NAME) is None


def test_a_live_holder_renewing_past_two_hours_keeps_its_lock(side: FileSide | S3Side, clock: Clock) -> None:
    locks = side.locks(clock)
    with locks.hold(NAME) as lease:
        started = clock.now
        while clock.now - started < timedelta(hours=3):
            clock.advance(RENEW)
            assert lease.renew()
            with pytest.raises(LockHeld, match="last heartbeat 0s ago"):
                side.locks(clock).acquire(NAME)
        lease.check()
        stored = record(side)
        assert stored is not None and stored["token"] == lease.token
        assert stored["acquired_at"] == started.isoformat() and stored["seq"] == 72
    assert side.raw(NAME) is None


def test_a_dead_holder_on_this_host_is_taken_at_once(side: FileSide | S3Side, clock: Clock) -> None:
    side.locks(clock).acquire(NAME)
    plant(side, pid=dead_pid())
    seen = side.locks(clock).inspect(NAME)
    assert seen is not None and "on this host, is not running" in (seen.stale_reason or "")
    with side.locks(clock).hold(NAME) as lease:
        stored = record(side)
        assert stored is not None and stored["token"] == lease.token


@pytest.mark.parametrize(
    "elsewhere", [{"host": "another-host"}, {"host_id": "another-boot/another-pid-namespace"}]
)
def test_a_dead_looking_pid_of_another_host_is_not_judged(
    side: FileSide | S3Side, clock: Clock, elsewhere: dict[str, str]
) -> None:
    side.locks(clock).acquire(NAME)
    plant(side, pid=dead_pid(), **elsewhere)
    planted = record(side)
    assert planted is not None
    with pytest.raises(LockHeld, match=f"pid {planted['pid']}, "):
        side.locks(clock).acquire(NAME)


def test_an_unreadable_record_goes_stale_by_its_write_time(side: FileSide | S3Side, clock: Clock) -> None:
    side.put_raw(NAME, json.dumps({"pid": os.getpid()}).encode())  # the old format, without an owner
    with pytest.raises(LockHeld, match="unreadable owner record, written"):
        side.locks(clock).acquire(NAME)
    clock.advance(STALE_AFTER + timedelta(minutes=1))
    with side.locks(clock).hold(NAME) as lease:
        assert token_of(side) == lease.token


def test_the_background_heartbeat_renews_and_stops_with_the_block(side: FileSide | S3Side) -> None:
    renewing = threading.Event()
    start = datetime.now(UTC)

    def clock() -> datetime:
        if threading.current_thread().name.startswith("lock-heartbeat-"):
            renewing.set()
        return start

    locks = side.locks(clock, renew_every=timedelta(milliseconds=1), renew_in_background=True)
    with locks.hold(NAME) as lease:
        assert renewing.wait(timeout=30)
    assert lease.holder.seq >= 1  # the release waited for the renewal, then deleted its version
    assert side.raw(NAME) is None
    assert not [t for t in threading.enumerate() if t.name == f"lock-heartbeat-{NAME}"]


def test_stale_after_and_renewal_are_configurable(tmp_path: Path) -> None:
    assert timedelta(0) < STALE_AFTER <= timedelta(minutes=15)
    locks = FileLocks(tmp_path, stale_after=timedelta(minutes=2))
    assert locks.renew_every == timedelta(seconds=30)
    with pytest.raises(ValueError, match="renew_every"):
        FileLocks(tmp_path, renew_every=STALE_AFTER)


def test_file_locks_leave_only_lock_files_and_the_guard(tmp_path: Path, clock: Clock) -> None:
    side = FileSide(tmp_path)
    locks = side.locks(clock)
    with locks.hold(NAME), locks.hold("org/../escape"):
        assert sorted(p.name for p in side.directory.iterdir()) == [
            ".guard",
            "org%2F..%2Fescape.lock",
            f"{NAME}.lock",
        ]
    assert [p.name for p in side.directory.iterdir()] == [".guard"]


def test_locks_live_beside_the_state(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    beside = locks_for(f"file://{tmp_path}/state", lambda: pytest.fail("no S3 for file state"))
    assert isinstance(beside, FileLocks) and beside.directory == tmp_path / "state" / LOCK_DIR_NAME
    with beside.hold(NAME):
        assert (tmp_path / "state" / LOCK_DIR_NAME / f"{NAME}.lock").exists()
    assert not (tmp_path / "home").exists()

    home = locks_for("file://~/state", lambda: None)
    assert isinstance(home, FileLocks) and home.directory == tmp_path / "home" / "state" / LOCK_DIR_NAME

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    shared = locks_for(f"s3://{BUCKET}/teams/ml", lambda: s3)
    assert isinstance(shared, S3Locks)
    with shared.hold(NAME):
        [lock] = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
        assert lock["Key"] == f"teams/ml/{LOCK_DIR_NAME}/{NAME}.lock"
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)

    with pytest.raises(ValueError, match="file:// or s3://"):
        locks_for("gs://bucket/state", lambda: None)
