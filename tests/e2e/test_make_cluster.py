"""`make cluster` as the docs tell: both nodes online and linked, then Ctrl-C stops all."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.broker import LOOPBACK, REPO_ROOT
from tests.support.mqtt import MqttProbe
from tests.support.nats import find_nats_server

pytestmark = pytest.mark.skipif(
    find_nats_server() is None, reason="nats-server is not installed (make deps-nats)"
)

DEADLINE = 120.0
PORTS = 12  # CLUSTER_PORT_BASE + 1 .. + 11 (scripts/cluster.sh)


def free_port_range(count: int) -> int:
    """A base port whose next `count` ports are free on loopback now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} free consecutive ports")


def retained(port: int, topic: str, want: bytes) -> None:
    with MqttProbe(LOOPBACK, port) as probe:
        probe.subscribe(topic)
        probe.expect(topic, lambda r: r.payload == want, timeout=DEADLINE)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_cluster_runs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base = free_port_range(PORTS)
    env = dict(os.environ, CLUSTER_DIR=str(tmp_path / "cluster"), CLUSTER_PORT_BASE=str(base))
    out_path = tmp_path / "make.out"
    with out_path.open("wb") as out:
        make = subprocess.Popen(
            ["make", "cluster"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while b"cluster: up" not in out_path.read_bytes():
            assert make.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        for index, node in enumerate(("node-a", "node-b")):
            port = base + 10 + index
            retained(port, f"beehive/{node}/meta/status", b"online")
            retained(port, f"beehive/{node}/meta/bridge/state", b"1")
        pids = [
            int(line.split()[1])
            for line in (tmp_path / "cluster" / "pids").read_text().splitlines()
        ]
        assert len(pids) == 9 and all(alive(p) for p in pids)
        # The cloud simulators are on NATS, which speaks MQTT 3.1.1 only: the
        # tools' client fell back to it, subscribed and pushed the objects.
        for node in ("node-a", "node-b"):
            log = tmp_path / "cluster" / node / "sim-cloud.log"
            while "pushed insert" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert f"listening on beehive/{node}/hub" in log.read_text()
    finally:
        # Ctrl-C in a terminal: SIGINT to the foreground process group.
        os.killpg(make.pid, signal.SIGINT)
        status = make.wait(60)
    text = out_path.read_text()
    assert "cluster: stopped" in text, text
    assert status != 0  # make reports the interrupted recipe
    left = [p for p in pids if alive(p)]
    assert left == [], text
