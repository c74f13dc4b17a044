"""The live progress display on stderr, for a person watching a long command; silent for everyone else.

A command opens one display around its work (`display(show)`); the work reports into it from where
it happens, without being handed anything: `task(...)` adds a line to the display the command opened,
or does nothing when there is none (a test, cron, output piped on, a worker thread). So
`finops.scope.run_targets` shows the account-regions a scan has done, and the Cost Explorer reader the
pages of each view, under whichever command runs them.

    with progress.display(progress.should_show(json_output)) as shown:
        run_nightly(..., on_step=shown.follow_steps)   # the job's numbered steps, as its top line

    with progress.task("Cost Explorer by-service", unit="pages") as pages:
        ...
        pages.advance()

A task's line goes when its block ends, and the display when the command's does, so what stays on
the terminal is the command's output and its log lines, which print above the display meanwhile.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Task as RichTask
from rich.text import Text


class NumberedStep(Protocol):
    """A step of a longer job, numbered from 1 out of `total` (`finops.report.Step`)."""

    description: str
    number: int
    total: int


def should_show(json_output: bool) -> bool:
    """Whether a person watches: stderr is a terminal, and JSON on stdout is not being piped on."""
    return sys.stderr.isatty() and (not json_output or sys.stdout.isatty())


class Task:
    """One line of the display: what is being done, how far (done of a total, or a count), the latest detail.

    Safe to advance from worker threads; a Task of no display does nothing.
    """

    def __init__(self, progress: Progress | None = None, task_id: TaskID | None = None) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, amount: float = 1, *, detail: str | None = None) -> None:
        self.update(advance=amount, detail=detail)

    def update(
        self,
        *,
        description: str | None = None,
        completed: float | None = None,
        total: float | None = None,
        advance: float | None = None,
        detail: str | None = None,
    ) -> None:
        if self._progress is None or self._id is None:
            return
        changes = {"description": description, "completed": completed, "total": total, "advance": advance}
        fields = {name: value for name, value in changes.items() if value is not None}
        if detail is not None:
            fields["detail"] = detail
        self._progress.update(self._id, **fields)

    @property
    def shown(self) -> bool:
        return self._id is not None

    def remove(self) -> None:
        if self._progress is not None and self._id is not None:
            self._progress.remove_task(self._id)
            self._id = None


class _Tally(ProgressColumn):
    """`3/8 account-regions` when the total is known, `12 pages` when it is not."""

    def render(self, task: RichTask) -> Text:
        unit = task.fields.get("unit", "")
        done = int(task.completed)
        if task.total is not None:
            return Text(f"{done}/{int(task.total)} {unit}".rstrip())
        if not unit:
            return Text("")
        # Units are given in the plural: "2 pages", but "1 page".
        return Text(f"{done} {unit[:-1] if done == 1 and unit.endswith('s') else unit}")


class Display:
    """rich's live display on stderr, started with its first line, so early log lines print plainly."""

    def __init__(self, *, silent: bool) -> None:
        self._progress: Progress | None = None
        self._silent = silent
        self._steps = Task()
        self._status = Task()

    def _line(self, description: str, *, total: float | None, unit: str) -> Task:
        if self._silent:
            return Task()
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                _Tally(),
                TextColumn("{task.fields[detail]}", style="dim"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                # stdout is the command's output, maybe piped on: never rendered onto stderr.
                redirect_stdout=False,
            )
            self._progress.start()
        task_id = self._progress.add_task(description, total=total, unit=unit, detail="")
        # Drawn now, not at the next tick: a line shorter than the refresh interval is still seen.
        self._progress.refresh()
        return Task(self._progress, task_id)

    @contextmanager
    def task(self, description: str, *, total: float | None = None, unit: str = "") -> Iterator[Task]:
        """A line for the block's work: `total` of `unit` to do, or None to count them as they come."""
        line = self._line(description, total=total, unit=unit)
        try:
            yield line
        finally:
            line.remove()

    def follow_steps(self, step: NumberedStep) -> None:
        """An `on_step` callback: the job's current step as the top line, the steps before it done."""
        if not self._steps.shown:
            self._status.remove()
            self._steps = self._line(step.description, total=step.total, unit="steps")
        self._steps.update(description=step.description, completed=step.number - 1, total=step.total)

    def log(self, message: str) -> None:
        """A log line, printed above the display and shown as its top line until the next: what runs now."""
        print(message, file=sys.stderr)
        if self._steps.shown:
            return
        if not self._status.shown:
            self._status = self._line(message, total=None, unit="")
        self._status.update(description=message)

    def close(self) -> None:
        """Take the display off the terminal for good: what follows is the command's own output."""
        if self._progress is not None:
            self._progress.stop()
        self._silent = True


_current: ContextVar[Display | None] = ContextVar("mlp_progress_display", default=None)


@contextmanager
def display(show: bool) -> Iterator[Display]:
    """The display of the block's work: live on stderr when `show` (see `should_show`), else silent."""
    opened = Display(silent=not show)
    token = _current.set(opened)
    try:
        yield opened
    finally:
        _current.reset(token)
        opened.close()


@contextmanager
def task(description: str, *, total: float | None = None, unit: str = "") -> Iterator[Task]:
    """A line on the display the running command opened; a Task that does nothing when it opened none."""
    opened = _current.get()
    if opened is None:
        yield Task()
        return
    with opened.task(description, total=total, unit=unit) as line:
        yield line
