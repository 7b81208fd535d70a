"""Progress of long work: a redrawn line on a terminal, a log line now and then otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

log = logging.getLogger(__name__)

_REDRAW_EVERY = 0.1


def _amount(value: float, unit: str) -> str:
    if unit != "bytes":
        return f"{int(value):,}" + (f" {unit}" if unit else "")
    for suffix in ("B", "kB", "MB", "GB"):
        if value < 1000 or suffix == "GB":
            return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
        value /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Tells how far a task has come, without a dependency.

    Nothing is shown for work that ends within ``delay`` seconds. On a
    terminal (``stream.isatty()``) one line is redrawn in place; elsewhere
    (logs, pipes, systemd) a log line is written every ``every`` seconds.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        delay: float = 1.0,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        try:
            self._tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._clock = clock
        self._started = clock()
        self._delay = delay
        self._every = every
        self._last_shown: float | None = None
        self.shown = False

    def _text(self) -> str:
        done = _amount(self.done, self.unit)
        if self.total:
            share = min(100.0, 100.0 * self.done / self.total)
            return f"{self.label}: {share:3.0f}% ({done} of {_amount(self.total, self.unit)})"
        return f"{self.label}: {done}"

    def update(self, done: int, total: int | None = None) -> None:
        """Set how much is done (and the total, when it became known)."""
        self.done = done
        if total is not None:
            self.total = total
        now = self._clock()
        if now - self._started < self._delay:
            return
        if self._tty:
            if self._last_shown is None or now - self._last_shown >= _REDRAW_EVERY:
                self._stream.write("\r\x1b[K" + self._text())
                self._stream.flush()
                self._last_shown = now
                self.shown = True
        elif self._last_shown is None or now - self._last_shown >= self._every:
            log.info("%s", self._text())
            self._last_shown = now
            self.shown = True

    def advance(self, amount: int = 1) -> None:
        self.update(self.done + amount)

    def finish(self) -> None:
        """Close the line (terminal) or say it is done (log), if anything was shown."""
        if not self.shown:
            return
        elapsed = self._clock() - self._started
        text = f"{self.label}: done, {_amount(self.done, self.unit)} in {elapsed:.1f} s"
        if self._tty:
            self._stream.write("\r\x1b[K" + text + "\n")
            self._stream.flush()
        else:
            log.info("%s", text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        elif self.shown and self._tty:
            self._stream.write("\n")
            self._stream.flush()
