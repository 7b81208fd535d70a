"""A real Mosquitto process, run from the shipped config on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.process import LoggedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF = REPO_ROOT / "mosquitto" / "mosquitto.conf"
LOOPBACK = "127.0.0.1"

# Options the harness owns: every path points into the temp dir, and logging
# goes to one file the harness can show when something fails.
_REPLACED_OPTIONS = frozenset({"persistence_location", "pid_file", "log_dest", "user"})


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed: run `make deps-system` "
            "(apt-get install mosquitto mosquitto-clients)"
        )
    return found


class Broker(LoggedProcess):
    """One mosquitto process; its port, data and log survive stop/start/restart."""

    def __init__(
        self,
        conf: Path = DEFAULT_CONF,
        *,
        tmp_dir: Path,
        extra_conf: str = "",
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        super().__init__(self.tmp_dir / "mosquitto.log")
        self.host = LOOPBACK
        self.port = free_port(self.host)
        self.extra_ports: list[int] = []
        self.data_dir = self.tmp_dir / "data"
        self.pid_path = self.tmp_dir / "mosquitto.pid"
        self.conf_path = self.tmp_dir / "mosquitto.conf"
        # Relative paths left in the config (password files, certificates)
        # resolve from here, as when `make run` starts the broker.
        self.cwd = Path(cwd)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._rewrite(Path(conf).read_text(), extra_conf))

    def _rewrite(self, text: str, extra_conf: str) -> str:
        lines: list[str] = []
        listeners = 0
        for line in text.splitlines():
            words = line.split()
            option = words[0] if words and not words[0].startswith("#") else ""
            if option in _REPLACED_OPTIONS:
                continue
            if option == "listener":
                if listeners == 0:
                    port = self.port
                else:
                    port = free_port(self.host)
                    self.extra_ports.append(port)
                listeners += 1
                line = f"listener {port} {self.host}"
            lines.append(line)
        if listeners == 0:
            raise ValueError("the broker config has no `listener` line")
        lines += [
            "",
            "# Set by tests/support/broker.py",
            f"persistence_location {self.data_dir}/",
            f"pid_file {self.pid_path}",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the `mosquitto` user, which
            # cannot write into the test's private temp dir.
            lines.append("user root")
        if extra_conf:
            lines += ["", extra_conf]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and return once its listener accepts connections."""
        if self.is_running():
            raise RuntimeError(f"broker on port {self.port} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = self._spawn([find_mosquitto(), "-c", str(self.conf_path)], cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {proc.returncode} during start\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RuntimeError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} "
                    f"within {timeout} s\n{self.log_text()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(0.05, remaining))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait: a clean stop writes the persistence file."""
        return self._terminate(timeout, f"mosquitto ignored SIGTERM for {timeout} s")

    def close(self) -> None:
        """Stop: the port, data and log stay for a later `start`."""
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"Broker({self.host}:{self.port}, {state}, {self.tmp_dir})"
