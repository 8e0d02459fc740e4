"""Progress that people can follow: rich bars on a terminal, a log line at a steady interval elsewhere.

:class:`Progress` has the part of :class:`rich.progress.Progress`'s interface smallfleet
uses (``add_task``, ``update``, ``advance``, ``start_task``), so a stage reports the same
way whether it runs in a terminal or with its output sent to a file or a CI log. On a
terminal it *is* a rich progress display (elapsed, done of total, time left). Elsewhere a
rich display prints nothing until it stops, so a long stage was silent for minutes:
instead every running task gets a line when it starts and when its step changes, one
every ``interval`` seconds (:data:`DEFAULT_INTERVAL`, 15) while it runs, and one when it ends.

:func:`quiet_third_party` keeps the model-loading bars of transformers and huggingface_hub
out of it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_INTERVAL", "Progress", "quiet_third_party"]

#: Seconds between log lines of a running task when the output is not a terminal.
DEFAULT_INTERVAL = 15.0


def quiet_third_party() -> None:
    """Switch off the progress bars and advisory warnings of transformers and huggingface_hub.

    Environment defaults first (read when those libraries are imported, here or in spawned
    worker processes), then their switches where they are imported already. Nothing is imported.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:  # pragma: no cover - an old huggingface_hub
            pass
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float | None = None
    finished: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def line(self, now: float) -> str:
        elapsed = now - (self.started or now)
        parts = [self.description]
        if self.total and self.total > 1:
            done = min(self.completed, self.total)
            parts.append(f"{done:,.0f}/{self.total:,.0f} ({done / self.total:.0%})")
            if 0 < done < self.total and elapsed >= 1:
                parts.append(f"about {_duration(elapsed * (self.total - done) / done)} left")
        parts.append(f"{_duration(elapsed)} elapsed")
        return " · ".join(parts)


class _LogProgress:
    """The rich interface, as log lines: at a task's start, every ``interval`` seconds, at its end."""

    def __init__(self, console: Console, interval: float) -> None:
        self.console = console
        self.interval = interval
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _LogProgress:
        self._thread = threading.Thread(target=self._tick, name="smallfleet-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        now = time.monotonic()
        with self._lock:
            for task in self._tasks.values():
                if task.started is not None and task.finished is None:
                    self._print(task.line(now))

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                running = [t for t in self._tasks.values() if t.started is not None and t.finished is None]
                for task in running:
                    self._print(task.line(now))

    def add_task(
        self, description: str, total: float | None = 100.0, start: bool = True, **fields: Any
    ) -> int:
        with self._lock:
            task_id = len(self._tasks)
            self._tasks[task_id] = _Task(description, total, fields=fields)
        if start:
            self.start_task(task_id)
        return task_id

    def start_task(self, task_id: int) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if task.started is not None:
                return
            task.started = time.monotonic()
            to_do = f" · {task.total:,.0f} to do" if task.total and task.total > 1 else ""
            self._print(task.description + to_do)
            self._check_done(task)

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None and description != task.description:
                task.description = description
                completing = bool(task.total) and task.completed >= (task.total or 0)
                if task.started is not None:  # the next step: say so now, not at the next tick
                    task.finished = None
                    if not completing:  # (the closing line names it)
                        now = time.monotonic()
                        self._print(task.line(now) if task.total and task.total > 1 else description)
            task.fields.update(fields)
            self._check_done(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _check_done(self, task: _Task) -> None:
        """Print the closing line of a task that just reached its total (the lock is held)."""
        if task.finished is None and task.started is not None and task.total and task.completed >= task.total:
            task.finished = time.monotonic()
            self._print(f"{task.description} · done in {_duration(task.finished - task.started)}")


class _Off:
    """No output at all (``enabled=False``)."""

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(
        self, description: str, total: float | None = 100.0, start: bool = True, **fields: Any
    ) -> int:
        return 0

    def start_task(self, task_id: int) -> None:
        pass

    def update(self, task_id: int, **kwargs: Any) -> None:
        pass

    def advance(self, task_id: int, advance: float = 1) -> None:
        pass


def Progress(  # it stands in for the rich class of that name
    enabled: bool = True,
    *,
    console: Console | None = None,
    transient: bool = False,
    interval: float | None = None,
) -> Any:
    """A progress display: rich bars on a terminal, interval log lines elsewhere, nothing when not enabled.

    Use it as a context manager; what it yields has ``add_task``, ``update``, ``advance``
    and ``start_task`` with rich's meaning.
    """
    if not enabled:
        return _Off()
    from rich.console import Console as RichConsole

    console = console or RichConsole()
    if not console.is_terminal:
        return _LogProgress(console, DEFAULT_INTERVAL if interval is None else interval)
    from rich import progress as rp

    return rp.Progress(
        rp.SpinnerColumn(),
        rp.TextColumn("[bold]{task.description}"),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TimeElapsedColumn(),
        rp.TextColumn("left"),
        rp.TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
