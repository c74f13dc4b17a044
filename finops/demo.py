"""`mlp demo`: the nightly job, end to end, against the embedded sandbox.

The sandbox (moto's server on a free 127.0.0.1 port) is seeded with a realistic account, then the
same `run_nightly` a user runs every night reads it over HTTP through the real boto3 code paths: only
the AWS environment differs, and it is isolated so no profile, token or per-service endpoint of the
user's shell can send a request to real AWS. Spend is read from the sandbox's FOCUS export with DuckDB
by default, or from its Cost Explorer (`cost_source="cost-explorer"`); both hold the same line items,
the payer's and its members' (a consolidated bill).

The sandbox's payer heads an organization, so the demo scans it as `mlp report --org-role
FinOpsReadOnly --regions <the organization's regions>` would: every account, in the regions the
sandbox seeded (moto enables every region of every partition; scanning them all shows nothing more).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from pathlib import Path

from finops import focus
from finops.cost_source import choose_cost_source
from finops.findings import Report
from finops.report import Step, run_nightly
from finops.sandbox import Sandbox, SeedManifest, focus_export, seed_account
from finops.scope import ScanScope, organization_accounts, resolve_scope

DEMO_DAYS = 30
# The hour of the current UTC day the demo's data is laid out around: two demos of a day print the same.
# Midnight, when a nightly job runs: a moment that has always passed, so a demo never reports from
# the future.
DEMO_HOUR = 0
# Variables that could point boto3 somewhere other than the sandbox.
SHADOWING_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@contextmanager
def sandbox_environment(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """os.environ pointed at the sandbox only, restored afterwards; yields the variables set."""
    overrides = {
        **sandbox.environ(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    removed = [
        name for name in os.environ if name in SHADOWING_VARIABLES or name.startswith("AWS_ENDPOINT_URL_")
    ]
    saved = {name: os.environ.get(name) for name in [*overrides, *removed]}
    for name in removed:
        del os.environ[name]
    os.environ.update(overrides)
    try:
        yield overrides
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class DemoRun:
    report: Report
    manifest: SeedManifest
    out_dir: Path
    seed_seconds: float
    job_seconds: float

    @property
    def dashboard(self) -> Path:
        return self.out_dir / "index.html"


def run_demo(
    out_dir: Path,
    *,
    on_step: Callable[[Step], None] = lambda step: None,
    cost_source: str | None = None,
    while_running: Callable[[Sandbox, DemoRun], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    now: datetime | None = None,
) -> DemoRun:
    """Start and seed the sandbox, run the nightly job against it; `while_running` runs before it stops.

    The sandbox is seeded, and the job run, as of `now` (default `demo_now()`): with moto's ids drawn
    from a fixed seed, two demos as of one moment write the same findings.
    """
    moment = now or demo_now()
    # The sandbox's HTTP server logs every request; the demo's output is the report.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with Sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="mlp-demo-cache-") as cache_dir:
        log(f"sandbox listening on {sandbox.endpoint}; seeding a dev+prod account with 3 teams")
        started = time.perf_counter()
        manifest = seed_account(sandbox, now=moment, member_spend=True)
        seeded = time.perf_counter()
        log(
            f"seeded {len(manifest.instances)} instances, {len(manifest.resources)} resources and "
            f"{len(manifest.line_items)} spend line items in {seeded - started:.1f}s; running the nightly job"
        )
        # The demo reads the sandbox's own export, whatever $MLP_FOCUS_URI of the shell says.
        focus_source = focus.choose_focus_source(cost_source or focus.FOCUS_SOURCE, focus_export.EXPORT_URI)
        log(
            f"reading spend from the sandbox's {focus_source.describe()}"
            if focus_source is not None
            else "reading spend from the sandbox's Cost Explorer"
        )
        with sandbox_environment(sandbox):
            scope = organization_scope(manifest)
            log(
                f"scanning the sandbox's organization with --org-role {manifest.organization.scan_role_name}: "
                f"{len(scope.accounts)} accounts x {', '.join(scope.regions)}"
            )
            report = run_nightly(
                DEMO_DAYS,
                out_dir,
                scope=scope,
                source=choose_cost_source(focus_source, cache_dir=Path(cache_dir)),
                now=moment,
                on_step=on_step,
            )
            run = DemoRun(
                report=report,
                manifest=manifest,
                out_dir=out_dir,
                seed_seconds=seeded - started,
                job_seconds=time.perf_counter() - seeded,
            )
            if while_running is not None:
                while_running(sandbox, run)
    return run


def demo_now(today: date | None = None) -> datetime:
    """`DEMO_HOUR` of `today` (default the current UTC day): the dashboard shows current dates, and
    every demo of the day the same figures."""
    return datetime.combine(today or datetime.now(UTC).date(), time_of_day(DEMO_HOUR), UTC)


def organization_scope(manifest: SeedManifest) -> ScanScope:
    """The seeded organization's accounts (members through its scan role) in its regions."""
    organization = manifest.organization
    accounts = organization_accounts(organization.scan_role_name, organization.payer_account_id)
    return resolve_scope(accounts, list(organization.regions))


def wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return
