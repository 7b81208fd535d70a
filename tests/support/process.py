"""A child process of the tests that writes into a log file: start, stop, kill, its log."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Self


class LoggedProcess:
    """One process at a time; `start` may follow `stop` or `kill`, the log is appended to.

    Subclasses say how to `start` and `close`; ``with`` starts and closes.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _spawn(
        self, args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self._proc

    def _terminate(self, timeout: float, stuck: str) -> int | None:
        """SIGTERM and wait: the exit code, None if never started.

        Past `timeout`, SIGKILL and a RuntimeError saying `stuck` and the log.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{stuck}\n{self.log_text()}") from None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as in a crash: no clean shutdown, what was not saved yet is lost."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
