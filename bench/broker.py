"""The shipped mosquitto/mosquitto.conf, run on a free loopback port with a temp data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = REPO_ROOT / "mosquitto" / "mosquitto.conf"
LOOPBACK = "127.0.0.1"
_OWNED = frozenset({"listener", "persistence_location", "pid_file", "log_dest", "user"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class BenchBroker:
    """One mosquitto process; the config's own settings (inflight, queue, nodelay) are kept."""

    def __init__(self, tmp_dir: Path, conf: Path = SHIPPED_CONF) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self.dir = Path(tmp_dir)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        lines = [
            line
            for line in conf.read_text().splitlines()
            if not line.split() or line.split()[0] not in _OWNED
        ]
        lines += [
            "",
            "# Set by bench/broker.py",
            f"listener {self.port} {self.host}",
            f"persistence_location {self.dir / 'data'}/",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if binary is None:
            raise RuntimeError("mosquitto is not installed (make deps-system)")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> BenchBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
