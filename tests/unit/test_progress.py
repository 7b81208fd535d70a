"""Progress: a redrawn line on a terminal, a log line now and then elsewhere."""

from __future__ import annotations

import io
import logging

import pytest

from edgemeta.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quick_work_shows_nothing() -> None:
    out, clock = Terminal(), Clock()
    with Progress("importing", 10, stream=out, clock=clock) as progress:
        progress.update(10)
    assert out.getvalue() == ""
    assert not progress.shown


def test_a_terminal_gets_one_redrawn_line() -> None:
    out, clock = Terminal(), Clock()
    with Progress("importing", 2_000_000, unit="bytes", stream=out, clock=clock) as progress:
        clock.now += 1.5
        progress.update(500_000)
        clock.now += 0.05
        progress.update(600_000)  # too soon after the last redraw
        clock.now += 0.5
        progress.update(1_000_000)
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3
    assert "importing:  25% (500.0 kB of 2.0 MB)" in text
    assert "600.0 kB" not in text
    assert "importing:  50%" in text
    assert text.endswith("importing: done, 1.0 MB in 2.0 s\n")


def test_elsewhere_a_log_line_every_few_seconds(caplog: pytest.LogCaptureFixture) -> None:
    out, clock = io.StringIO(), Clock()
    caplog.set_level(logging.INFO, logger="edgemeta.progress")
    with Progress("replaying", None, unit="records", stream=out, clock=clock, every=5) as p:
        for _ in range(10):
            clock.now += 1
            p.advance(1000)
    assert out.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == [
        "replaying: 1,000 records",
        "replaying: 6,000 records",
        "replaying: done, 10,000 records in 10.0 s",
    ]
