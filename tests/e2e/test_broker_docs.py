"""The broker steps of the docs, run as written.

- README / docs/scaling.md: the rendered bridge file dropped into the
  conf.d folder of Debian's stock Mosquitto (`--conf-d`). The stock
  /etc/mosquitto/mosquitto.conf below is a copy, pointed at a temp folder and
  a free port: the machine's own Mosquitto and /etc are never touched.
- mosquitto/cloud.conf: the line in its header, from a folder laid out like
  the repository; sessions and queued messages survive a restart, also when
  run as root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.bridge import CLOUD_CONF, SessionSubscriber
from tests.support.broker import LOOPBACK, REPO_ROOT, Broker, find_mosquitto, free_port
from tests.support.docs import documented_command, stock_debian_broker
from tests.support.mqtt import MqttProbe

DEADLINE = 30.0


def run_documented_render(command: str, cloud: Broker, local_port: int, out: Path) -> None:
    words = shlex.split(command)
    assert words[-2] == ">" and words[-1].startswith("/etc/mosquitto/conf.d/"), words
    args = words[:-2]
    # The doc's placeholders: the cloud at cloud.example:8883, the broker on 1883.
    args = [
        {"cloud.example": cloud.host, "8883": str(cloud.port), "1883": str(local_port)}.get(a, a)
        for a in args
    ]
    with out.open("w") as sink:
        subprocess.run(args, cwd=REPO_ROOT, stdout=sink, check=True, timeout=10)


def test_bridge_in_conf_d_of_debian_stock_mosquitto(tmp_path: Path) -> None:
    command = documented_command(REPO_ROOT / "README.md", "scripts/render-bridge-conf.sh")
    assert command == documented_command(
        REPO_ROOT / "docs" / "scaling.md", "scripts/render-bridge-conf.sh"
    )
    assert "--conf-d" in command
    with Broker(CLOUD_CONF, tmp_dir=tmp_path / "cloud") as cloud:
        conf, conf_d = stock_debian_broker(tmp_path / "etc")
        port = free_port()
        run_documented_render(command, cloud, port, conf_d / "edge-bridge.conf")
        broker = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    socket.create_connection((LOOPBACK, port), timeout=1).close()
                    break
                except OSError:
                    assert broker.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
            with MqttProbe(LOOPBACK, port, timeout=DEADLINE) as probe:
                probe.subscribe("beehive/node-a/meta/bridge/state")
                probe.expect(None, lambda r: r.payload == b"1", timeout=DEADLINE)
        finally:
            broker.send_signal(signal.SIGTERM)
            _, err = broker.communicate(timeout=DEADLINE)
        assert "Duplicate" not in err, err


def test_without_conf_d_the_stock_broker_refuses_the_file(tmp_path: Path) -> None:
    """What the docs said before: a full config in conf.d stops the broker."""
    conf, conf_d = stock_debian_broker(tmp_path / "etc")
    with (conf_d / "edge-bridge.conf").open("w") as out:
        subprocess.run(
            ["sh", "scripts/render-bridge-conf.sh", "node-a", LOOPBACK, "1", str(free_port())],
            cwd=REPO_ROOT,
            stdout=out,
            check=True,
            timeout=10,
        )
    done = subprocess.run(
        [find_mosquitto(), "-c", str(conf)], capture_output=True, text=True, timeout=DEADLINE
    )
    assert done.returncode != 0
    assert "Duplicate persistence_location value" in done.stdout + done.stderr


def test_cloud_conf_keeps_sessions_across_a_restart(tmp_path: Path) -> None:
    command = documented_command(CLOUD_CONF, "mkdir -p data/mosquitto-cloud")
    root = tmp_path / "repo"
    (root / "mosquitto").mkdir(parents=True)
    port = free_port()
    text = CLOUD_CONF.read_text()
    text, count = re.subn(
        r"^listener 1884 127.0.0.1$", f"listener {port} 127.0.0.1", text, flags=re.M
    )
    assert count == 1
    (root / "mosquitto" / "cloud.conf").write_text(text)
    env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:/usr/sbin")
    # A world-readable folder, as a checkout is: if the broker dropped to
    # `mosquitto`, that user could get in and still not write.
    for folder in (tmp_path, root):
        folder.chmod(0o755)

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["sh", "-c", f"exec sh -c {shlex.quote(command)}"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=1):
                    return proc
            except OSError:
                assert proc.poll() is None, "the cloud broker exited"
                assert time.monotonic() < deadline
                time.sleep(0.05)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        # The shell ends at once; mosquitto, in the same group, saves and ends after it.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(DEADLINE)
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            assert time.monotonic() < deadline, "the cloud broker ignored SIGTERM"
            time.sleep(0.05)

    consumer = f"cloud-{uuid.uuid4().hex[:8]}"
    proc = start()
    try:
        with SessionSubscriber(LOOPBACK, port, consumer, "beehive/node-a/hub"):
            pass
        with MqttProbe(LOOPBACK, port) as node:
            node.publish("beehive/node-a/hub", b"queued while the consumer is away")
    finally:
        stop(proc)
    saved = root / "data" / "mosquitto-cloud" / "mosquitto-cloud.db"
    assert saved.exists(), "the cloud broker saved nothing"
    proc = start()
    try:
        with SessionSubscriber(LOOPBACK, port, consumer, "beehive/node-a/hub") as hub:
            assert hub.session_present
            assert [m.payload for m in hub.collect(1)] == [b"queued while the consumer is away"]
    finally:
        stop(proc)
    shutil.rmtree(root / "data")
