"""The ``edgemeta`` command line run as a user runs it: a subprocess with a deadline."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from tests.support.broker import REPO_ROOT

DEADLINE = 30.0


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: the working tree's package, no EDGEMETA_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMETA_")}
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgemeta", *args]


def run_cli(
    *args: str | Path,
    input: str | bytes | None = None,
    timeout: float = DEADLINE,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``edgemeta ARGS`` to its end (text output); fails the test past ``timeout``."""
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run(
        command(*map(str, args)),
        input=data,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
        env=cli_env(env),
        check=False,
    )


class CliProcess:
    """A long-running ``edgemeta`` command; its output lines are read as they come."""

    def __init__(
        self, *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            command(*self.args),
            cwd=cwd or REPO_ROOT,
            env=cli_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    @staticmethod
    def _take(lines: queue.Queue[str | None], deadline: float | None) -> Iterator[str]:
        """The lines read until `deadline` (None: those read already)."""
        while True:
            try:
                if deadline is None:
                    line = lines.get_nowait()
                else:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if line is None:
                # The end of the output, left for whoever reads next.
                lines.put(None)
                return
            yield line

    def _expect(
        self,
        lines: queue.Queue[str | None],
        seen: list[str],
        match: str | Callable[[str], bool],
        timeout: float,
    ) -> str:
        ok = match if callable(match) else (lambda line: match in line)
        for line in self._take(lines, time.monotonic() + timeout):
            seen.append(line)
            if ok(line):
                return line
        raise AssertionError(
            f"edgemeta {' '.join(self.args)}: no line matching {match!r} within {timeout} s\n"
            f"stdout: {self.stdout_lines}\nstderr: {self.stderr_lines}"
        )

    def expect_stdout(self, match: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        return self._expect(self._stdout, self.stdout_lines, match, timeout)

    def expect_stderr(self, match: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        return self._expect(self._stderr, self.stderr_lines, match, timeout)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"edgemeta {' '.join(self.args)} still running after {timeout} s"
            ) from None
        for reader in self._readers:
            reader.join(timeout=5)
        self._collect()
        return code

    def _collect(self) -> None:
        for lines, seen in ((self._stdout, self.stdout_lines), (self._stderr, self.stderr_lines)):
            seen.extend(self._take(lines, None))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
