"""docs/scaling.md, "Deploy it on three machines": the two render commands, as written.

The server file is checked by `nats-server -t` (it parses, binds nothing).
The bridge file goes into the conf.d folder of a copy of Debian's stock
Mosquitto; its 10.0.0.x addresses become loopback ports where nothing
listens (only loopback may be a target here), and the broker must start
and try them.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.broker import LOOPBACK, REPO_ROOT, find_mosquitto, free_port
from tests.support.docs import documented_command, stock_debian_broker
from tests.support.nats import find_nats_server

SCALING = REPO_ROOT / "docs" / "scaling.md"
DEADLINE = 30.0


def redirected(command: str) -> tuple[list[str], str]:
    words = shlex.split(command)
    assert words[-2] == ">", words
    return words[:-2], words[-1]


@pytest.mark.skipif(find_nats_server() is None, reason="nats-server is not installed")
def test_documented_server_file_is_valid(tmp_path: Path) -> None:
    args, target = redirected(documented_command(SCALING, "scripts/render-nats-conf.sh"))
    assert target == "/etc/nats/nats-1.conf"
    store = tmp_path / "nats-1"
    store.mkdir()
    args = [str(store) if a == "/var/lib/nats/nats-1" else a for a in args]
    out = tmp_path / "nats-1.conf"
    with out.open("w") as sink:
        subprocess.run(args, cwd=REPO_ROOT, stdout=sink, check=True, timeout=10)
    text = out.read_text()
    assert "nats-route://10.0.0.2:6222" in text and "stream_replicas: 3" in text
    binary = find_nats_server()
    assert binary is not None
    checked = subprocess.run(
        [binary, "-t", "-c", str(out)], capture_output=True, text=True, timeout=DEADLINE
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_documented_bridge_file_runs_in_debian_conf_d(tmp_path: Path) -> None:
    args, target = redirected(documented_command(SCALING, "scripts/render-nats-bridge-conf.sh"))
    assert target == "/etc/mosquitto/conf.d/edge-bridge.conf"
    assert "--conf-d" in args
    port = free_port()
    unused = {f"10.0.0.{i}:1883": f"{LOOPBACK}:{free_port()}" for i in (1, 2, 3)}
    args = [str(port) if a == "1883" else unused.get(a, a) for a in args]
    conf, conf_d = stock_debian_broker(tmp_path / "etc")
    with (conf_d / "edge-bridge.conf").open("w") as sink:
        subprocess.run(args, cwd=REPO_ROOT, stdout=sink, check=True, timeout=10)
    log = tmp_path / "etc" / "mosquitto.log"
    broker = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while "Connecting bridge (step 1)" not in (log.read_text() if log.exists() else ""):
            assert broker.poll() is None, log.read_text() if log.exists() else "no log"
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.1)
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(DEADLINE)
