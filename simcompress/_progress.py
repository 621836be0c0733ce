"""One progress bar for every long job (simulation, generation, training, validation, batch).

Wraps :mod:`rich.progress` with the columns used everywhere, so all commands look the same
and ``enabled=False`` costs nothing.

>>> with progress_bar("demo", total=3, enabled=False) as bar:
...     for _ in range(3):
...         bar.advance(1)
>>> bar.completed
3.0
>>> list(track(range(2), "loop", enabled=False))
[0, 1]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["ProgressBar", "progress_bar", "track"]

T = TypeVar("T")


class ProgressBar:
    """A task of a rich progress display, or a counter only when disabled."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task
        self.completed = 0.0
        self.rated = 0.0  # the part of ``completed`` the rate column counts

    def advance(self, n: float = 1, *, rated: bool = True, **fields: Any) -> None:
        """Add ``n`` done; ``rated=False`` for work found already done (a kept shard), left out of the rate."""
        self.completed += n
        if rated:
            self.rated += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n, rated=self.rated, **fields)

    def update(self, *, completed: float | None = None, total: float | None = None, description: str | None = None,
               **fields: Any) -> None:
        if completed is not None:
            self.completed = float(completed)
        if self._progress is not None:
            kw: dict[str, Any] = dict(fields)
            if completed is not None:
                kw["completed"] = completed
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            self._progress.update(self._task, **kw)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool = True, rate_unit: str | None = None,
                 transient: bool = False, stderr: bool = True) -> Iterator[ProgressBar]:
    """Context manager: a bar with description, bar, ``M/N``, (rate,) elapsed and remaining time.

    ``rate_unit`` (e.g. ``"showers"``) adds a ``12,345 showers/s`` column: the work advanced with
    ``rated=True`` divided by the elapsed time. The bar draws on standard error (``stderr=False``:
    standard output), so a command's printed results stay alone on standard output.
    """
    if not enabled:
        yield ProgressBar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[str | ProgressColumn] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate_unit:
        columns.append(_rate_column(rate_unit))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    from rich.console import Console

    with Progress(*columns, transient=transient, console=Console(stderr=stderr)) as prog:
        task = prog.add_task(description, total=total, rated=0.0)
        yield ProgressBar(prog, task)


def _rate_column(unit: str) -> Any:
    """A column showing ``12,345 <unit>/s`` (rich has none with a custom unit)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            rated = float(task.fields.get("rated", 0.0))
            return Text(f"{rated / elapsed:,.0f} {unit}/s" if elapsed and rated else "")

    return RateColumn()


def track(iterable: Iterable[T], description: str, *, total: float | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar advancing by one per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(description, total, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.advance(1)
