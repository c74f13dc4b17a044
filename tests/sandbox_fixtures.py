"""Fixtures for tests that need the embedded sandbox; import them into a test module:

    from tests.sandbox_fixtures import sandbox, seeded  # noqa: F401

Module-scoped on purpose: the sandbox serves moto's process-wide backends, which any `mock_aws`
test resets, so a sandbox must not outlive the module that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from finops.sandbox import Sandbox, SeedManifest, seed_account


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="module")
def seeded(sandbox: Sandbox) -> SeedManifest:
    """The sandbox seeded once per module at the current time (the CLI reads the wall clock)."""
    return seed_account(sandbox, now=datetime.now(UTC))


@pytest.fixture
def sandbox_env(sandbox: Sandbox) -> dict[str, str]:
    """The process environment for running `mlp` against the sandbox as a subprocess."""
    return {**os.environ, **sandbox.environ()}
