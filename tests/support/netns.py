"""An edge node and its cloud in network namespaces of their own, joined by a veth pair.

`ip netns add` needs root (CAP_SYS_ADMIN); `NetnsPair.create` raises
`NetnsUnavailable` where it is refused, and the tests skip with that reason.
The addresses (10.200.<n>.1 cloud, .2 edge) exist only inside the two
namespaces; nothing is added to the machine's own network.
`ip link set ... down` on the cloud end cuts the link silently: no FIN, no
reset, the packets just stop.
"""

from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.broker import REPO_ROOT, Broker, find_mosquitto
from tests.support.cli import cli_env, command
from tests.support.process import LoggedProcess


class NetnsUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class NetnsPair:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.cloud_ns = f"emc-{tag}"
        self.edge_ns = f"eme-{tag}"
        self.cloud_if = f"vc{tag}"
        self.edge_if = f"ve{tag}"
        subnet = random.randrange(1, 250)
        self.cloud_ip = f"10.200.{subnet}.1"
        self.edge_ip = f"10.200.{subnet}.2"
        self._made: list[str] = []

    @classmethod
    def create(cls) -> NetnsPair:
        pair = cls()
        try:
            _ip("netns", "add", pair.cloud_ns)
        except (RuntimeError, OSError) as exc:
            raise NetnsUnavailable(f"`ip netns add` is not permitted here: {exc}") from exc
        pair._made.append(pair.cloud_ns)
        try:
            _ip("netns", "add", pair.edge_ns)
            pair._made.append(pair.edge_ns)
            _ip("link", "add", pair.cloud_if, "netns", pair.cloud_ns, "type", "veth",
                "peer", "name", pair.edge_if, "netns", pair.edge_ns)  # fmt: skip
            for ns, ifname, ip in (
                (pair.cloud_ns, pair.cloud_if, pair.cloud_ip),
                (pair.edge_ns, pair.edge_if, pair.edge_ip),
            ):
                _ip("-n", ns, "addr", "add", f"{ip}/30", "dev", ifname)
                _ip("-n", ns, "link", "set", ifname, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            pair.close()
            raise
        return pair

    def cut(self) -> None:
        """Take the cloud end of the link down: the edge sees packets vanish, nothing more."""
        _ip("-n", self.cloud_ns, "link", "set", self.cloud_if, "down")

    def mend(self) -> None:
        _ip("-n", self.cloud_ns, "link", "set", self.cloud_if, "up")

    def close(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self._made.clear()


class NetnsBroker(Broker):
    """A Mosquitto in namespace `ns`, listening on `host` there."""

    def __init__(self, ns: str, host: str, conf: Path, *, tmp_dir: Path) -> None:
        super().__init__(conf, tmp_dir=tmp_dir)
        self.ns = ns
        text = self.conf_path.read_text()
        self.conf_path.write_text(
            text.replace(f"listener {self.port} {self.host}", f"listener {self.port} {host}")
        )
        self.host = host

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = self._spawn(
            ["ip", "netns", "exec", self.ns, find_mosquitto(), "-c", str(self.conf_path)],
            cwd=self.cwd,
        )
        deadline = time.monotonic() + timeout
        while " running" not in self.log_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto in {self.ns} did not start\n{self.log_text()}")
            time.sleep(0.05)


class NetnsEdgemeta(LoggedProcess):
    def __init__(self, ns: str, config: Path, log: Path) -> None:
        super().__init__(log)
        self.ns = ns
        self.config = config

    def start(self) -> None:
        self._spawn(
            ["ip", "netns", "exec", self.ns, *command("run", "--config", str(self.config))],
            cwd=self.config.parent,
            env=cli_env({}),
        )

    def close(self) -> None:
        self._terminate(15, "edgemeta ignored SIGTERM")


class NetnsAgent:
    """`tests/support/netns_agent.py` in namespace `ns`: what it sees, with wall-clock times."""

    def __init__(self, ns: str, port: int, topics: list[str]) -> None:
        self._proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "tests.support.netns_agent",
                str(port),
                *topics,
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.seen: queue.Queue[dict[str, Any]] = queue.Queue()
        # Owned by the test thread: read, not matched yet.
        self._pending: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.seen.put(json.loads(line))

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"topic": topic, "payload": payload}) + "\n")
        self._proc.stdin.flush()

    def expect(self, topic: str, payload: str | Callable[[str], bool], timeout: float) -> float:
        """Wall-clock time at which `payload` (or a payload it accepts) arrived on `topic`.

        Messages read but not matched stay pending for later calls, in order.
        """

        def matches(got: dict[str, Any]) -> bool:
            if got["topic"] != topic:
                return False
            return (
                payload == got["payload"] if isinstance(payload, str) else payload(got["payload"])
            )

        for i, got in enumerate(self._pending):
            if matches(got):
                del self._pending[i]
                return float(got["t"])
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {payload!r} on {topic} within {timeout} s") from None
            if matches(got):
                return float(got["t"])
            self._pending.append(got)

    def forget(self) -> None:
        """Drop what was received so far: later expectations see only what comes next."""
        self._pending.clear()
        while True:
            try:
                self.seen.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()  # the agent's cue to stop
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)
        self._proc.stdout.close()
