"""The one thin boundary around the Pulumi CLI (Automation API): deploy, destroy, remove, list.

Everything that decides *what* to do lives outside this module and is tested with a fake of
`StackBackend`; this module only translates calls to `pulumi.automation` and needs the CLI.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from infra.config import PROJECT
from mlp.errors import UserError

DEFAULT_BACKEND_URL = "file://~/.ml-platform/state"
BACKEND_ENV = "MLP_BACKEND_URL"
# The Pulumi CLI's own override, which it prefers even to a project's backend.url (pkg/workspace/creds.go).
PULUMI_BACKEND_ENV = "PULUMI_BACKEND_URL"
SUPPORTED_SCHEMES = ("file://", "s3://")


@dataclass(frozen=True)
class StackSummary:
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    last_update: datetime | None = None
    resource_count: int | None = None


class StackExists(UserError):
    """`deploy` was asked for a stack that is already there: it belongs to someone, so it is not touched."""

    def __init__(self, stack: str) -> None:
        run_id = stack.removeprefix("train-")
        super().__init__(
            f"stack {stack} already exists on this backend; `mlp train status {run_id}` shows it, "
            "or pick another --run-id"
        )


class StackBackend(Protocol):
    """What the training lifecycle and the reaper need from Pulumi."""

    def deploy(
        self,
        stack: str,
        program: Callable[[], None],
        *,
        config: dict[str, str],
        tags: dict[str, str],
        on_output: Callable[[str], None],
    ) -> dict[str, Any]:
        """Create the stack and `up` it; raises `StackExists` when the stack is already there."""
        ...

    def destroy(
        self, stack: str, program: Callable[[], None], *, on_output: Callable[[str], None]
    ) -> None: ...

    def remove(self, stack: str) -> None: ...

    def list_stacks(self) -> list[StackSummary]: ...

    def outputs(self, stack: str) -> dict[str, Any]: ...


def backend_url(explicit: str | None = None) -> str:
    """The state backend: `--backend`, else $MLP_BACKEND_URL, else $PULUMI_BACKEND_URL, else ~/.ml-platform/state.

    A file:// URL comes back absolute (`~` and relative paths resolved as the Pulumi CLI does), so
    the CLI, the state reader and anything that creates the folder agree on one directory.
    """
    source, url = next(
        (source, value)
        for source, value in (
            ("--backend", explicit),
            (BACKEND_ENV, os.environ.get(BACKEND_ENV)),
            (PULUMI_BACKEND_ENV, os.environ.get(PULUMI_BACKEND_ENV)),
            ("the default", DEFAULT_BACKEND_URL),
        )
        if value
    )
    if url.startswith("file://"):
        query = urlsplit(url).query
        return f"file://{local_path(url)}" + (f"?{query}" if query else "")
    if not url.startswith(SUPPORTED_SCHEMES) or not urlsplit(url).netloc:
        raise UserError(
            f"backend {url!r}: use a file:// or s3:// URL (s3://bucket/prefix; azblob://, gs:// and "
            f"the Pulumi Cloud are not supported); it came from {source}"
        )
    return url


def local_path(url: str) -> Path:
    """A file:// backend's directory, the way the Pulumi CLI reads the URL (pkg/backend/diy/backend.go).

    Everything after `file://` up to any `?query` is a path: `~` is the home directory and a
    relative path is relative to the working directory.
    """
    path = unquote(url.removeprefix("file://").split("?", 1)[0])
    if path == "~" or path.startswith("~/"):
        path = str(Path.home()) + path[1:]
    return Path(os.path.abspath(path))


class PulumiAutomationBackend:
    """`StackBackend` on the real Pulumi CLI, with a self-managed (file:// or s3://) state backend."""

    def __init__(self, url: str, work_dir: Path | None = None) -> None:
        if shutil.which("pulumi") is None:
            raise UserError(
                "the Pulumi CLI is not installed (see pulumi.com/docs/install); it is needed to deploy or destroy "
                "stacks — `mlp train plan` runs the same program offline"
            )
        from pulumi import automation as auto

        self._auto = auto
        if url.startswith("file://"):
            Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        self._options = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir) if work_dir else None,
            project_settings=auto.ProjectSettings(
                name=PROJECT, runtime="python", backend=auto.ProjectBackend(url=url)
            ),
            # Training stacks hold no secrets; an empty passphrase keeps unattended runs possible.
            # The CLI prefers PULUMI_BACKEND_URL over the project's backend: pin it to the one we read.
            env_vars={
                "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
                "PULUMI_BACKEND_URL": url,
            },
        )

    def _stack(self, stack: str, program: Callable[[], None]) -> Any:
        return self._auto.select_stack(
            stack_name=stack, project_name=PROJECT, program=program, opts=self._options
        )

    def deploy(
        self,
        stack: str,
        program: Callable[[], None],
        *,
        config: dict[str, str],
        tags: dict[str, str],
        on_output: Callable[[str], None],
    ) -> dict[str, Any]:
        try:
            handle = self._auto.create_stack(
                stack_name=stack, project_name=PROJECT, program=program, opts=self._options
            )
        except self._auto.StackAlreadyExistsError:
            raise StackExists(stack) from None
        # Inline programs get no plugin resolution from a requirements file: pin the provider we import.
        handle.workspace.install_plugin("aws", f"v{importlib.metadata.version('pulumi-aws')}")
        handle.set_all_config({key: self._auto.ConfigValue(value=value) for key, value in config.items()})
        for key, value in tags.items():
            handle.set_tag(key, value)
        result = handle.up(on_output=on_output)
        return {key: output.value for key, output in result.outputs.items()}

    def destroy(self, stack: str, program: Callable[[], None], *, on_output: Callable[[str], None]) -> None:
        self._stack(stack, program).destroy(on_output=on_output)

    def remove(self, stack: str) -> None:
        self._workspace().remove_stack(stack)

    def _workspace(self) -> Any:
        return self._auto.LocalWorkspace(
            project_settings=self._options.project_settings, env_vars=self._options.env_vars
        )

    def list_stacks(self) -> list[StackSummary]:
        workspace = self._workspace()
        return [
            StackSummary(
                name=summary.name,
                tags=dict(workspace.list_tags(summary.name)),
                last_update=summary.last_update,
                resource_count=summary.resource_count,
            )
            for summary in workspace.list_stacks()
        ]

    def outputs(self, stack: str) -> dict[str, Any]:
        return {key: output.value for key, output in self._stack(stack, lambda: None).outputs().items()}
