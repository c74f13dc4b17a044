"""Fixtures for tests that need the embedded sandbox; import them into a test module:

    from tests.sandbox_fixtures import sandbox_fixture, seeded_fixture, sandbox_env_fixture  # noqa: F401

and ask for them by name: `sandbox`, `seeded` (a SeedManifest) and `sandbox_env`.

Module-scoped on purpose: the sandbox serves moto's process-wide backends, which any `mock_aws`
test resets, so a sandbox must not outlive the module that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from finops.sandbox import Sandbox, SeedManifest, seed_account


@pytest.fixture(scope="module", name="sandbox")
def sandbox_fixture() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="module", name="seeded")
def seeded_fixture(sandbox: Sandbox) -> SeedManifest:
    """The sandbox seeded once per module at the current time (the CLI reads the wall clock)."""
    return seed_account(sandbox, now=datetime.now(UTC))


def process_env(sandbox: Sandbox) -> dict[str, str]:
    """This process's environment without any AWS setting of the machine, pointed at the sandbox."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return {
        **env,
        **sandbox.environ(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@pytest.fixture(name="sandbox_env")
def sandbox_env_fixture(sandbox: Sandbox) -> dict[str, str]:
    """The environment for running `mlp` against the sandbox as a subprocess."""
    return process_env(sandbox)
