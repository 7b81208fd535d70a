"""A 3-server NATS JetStream cluster with MQTT listeners, from the shipped template.

Each server's config is `deploy/nats/nats-server.conf` rendered by
`scripts/render-nats-conf.sh` on free loopback ports, so the tests exercise
what a deployer runs. Edge brokers bridge to it with
`deploy/edge-bridge-nats.conf` (`render_nats_bridge_conf`). NATS speaks MQTT
3.1.1 only: `Mqtt311Consumer` is the cloud-side consumer.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import LOOPBACK, REPO_ROOT, free_port
from tests.support.process import LoggedProcess

RENDER_NATS = REPO_ROOT / "scripts" / "render-nats-conf.sh"
RENDER_NATS_BRIDGE = REPO_ROOT / "scripts" / "render-nats-bridge-conf.sh"

_RESTART_TIMEOUT_LINE = re.compile(r"^restart_timeout .*$", re.MULTILINE)
_CONNECTING = re.compile(r"Connecting bridge \(step 1\) \S+ \(([\d.]+:\d+)\)")


def find_nats_server() -> str | None:
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[1]} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def render_nats_bridge_conf(
    node: str,
    local_port: int,
    data_dir: Path,
    servers: list[str],
    *,
    keepalive: int | None = None,
    restart_timeout: str | None = None,
) -> str:
    """The edge broker config of `node` as `scripts/render-nats-bridge-conf.sh` writes it."""
    args = ["sh", str(RENDER_NATS_BRIDGE)]
    if keepalive is not None:
        args += ["--keepalive", str(keepalive)]
    text = _run([*args, node, str(local_port), str(data_dir), *servers])
    if restart_timeout is not None:
        text, count = _RESTART_TIMEOUT_LINE.subn(f"restart_timeout {restart_timeout}", text)
        assert count == 1, text
    return text


def attached_server(broker_log: str) -> str | None:
    """HOST:PORT the edge broker's bridge connected to last (from its log)."""
    found = _CONNECTING.findall(broker_log)
    return found[-1] if found else None


class NatsServer(LoggedProcess):
    def __init__(self, name: str, conf: Path, mqtt_port: int, tmp_dir: Path) -> None:
        super().__init__(tmp_dir / f"{name}.log")
        self.name = name
        self.conf = conf
        self.host = LOOPBACK
        self.mqtt_port = mqtt_port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.mqtt_port}"

    def start(self) -> None:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server is not installed: run `make deps-nats`")
        self._spawn([binary, "-c", str(self.conf)], cwd=self.conf.parent)

    def close(self) -> None:
        self._terminate(10, f"{self.name} ignored SIGTERM")


class NatsCluster:
    """Three nats-server processes on free loopback ports, routed to each other."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        self.servers: list[NatsServer] = []
        for i, (client, mqtt_port, route) in enumerate(ports, start=1):
            name = f"nats-{i}"
            store = self.tmp_dir / name
            store.mkdir(exist_ok=True)
            routes = [f"{LOOPBACK}:{p[2]}" for j, p in enumerate(ports, start=1) if j != i]
            conf = self.tmp_dir / f"{name}.conf"
            conf.write_text(
                _run(
                    [
                        "sh",
                        str(RENDER_NATS),
                        name,
                        LOOPBACK,
                        str(client),
                        str(mqtt_port),
                        str(route),
                        str(store),
                        *routes,
                    ]
                )
            )
            self.servers.append(NatsServer(name, conf, mqtt_port, self.tmp_dir))

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.servers]

    def server(self, address: str) -> NatsServer:
        return next(s for s in self.servers if s.address == address)

    def start(self, timeout: float = 90.0) -> None:
        for server in self.servers:
            server.start()
        for server in self.servers:
            self.wait_ready(server, timeout)

    def wait_ready(self, server: NatsServer, timeout: float = 90.0) -> None:
        """Until a QoS 1 publish on `server` is acknowledged: JetStream has its MQTT streams."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with Mqtt311Consumer(server.host, server.mqtt_port, "ready-probe", None) as c:
                    c.publish("cluster/ready", b"x")
                    return
            except (OSError, RuntimeError):
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{server.name} not ready within {timeout} s\n{server.log_text()}"
                    ) from None
                time.sleep(0.5)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Mqtt311Consumer:
    """An MQTT 3.1.1 client for NATS: persistent session (clean session off), QoS 1.

    Every message lands in a queue with its arrival time; paho reconnects
    by itself to the same server.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        topic_filter: str | None,
        *,
        clean_session: bool = False,
        timeout: float = 15.0,
    ) -> None:
        self.messages: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.topic_filter = topic_filter
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.reconnect_delay_set(1, 2)
        self._client = client
        client.connect(host, port, keepalive=30)
        client.loop_start()
        try:
            kind, rc = self._events.get(timeout=timeout)
            if kind != "connack" or rc.is_failure:
                raise RuntimeError(f"{client_id}: connection to {host}:{port} refused: {rc}")
            if topic_filter is not None:
                client.subscribe(topic_filter, qos=1)
                kind, codes = self._next("suback", timeout)
                if any(c.is_failure for c in codes):
                    raise RuntimeError(f"{client_id}: subscription refused: {codes}")
        except BaseException:
            self.close()
            raise

    def _next(self, kind: str, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {kind} within {timeout} s") from None
            if got[0] == kind:
                return got

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        # An unbounded queue's put never raises: nothing here can kill paho's thread.
        self._events.put(("connack", rc))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        # An unbounded queue's put never raises: nothing here can kill paho's thread.
        self._events.put(("suback", codes))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        # An unbounded queue's put never raises: nothing here can kill paho's thread.
        self._events.put(("puback", mid))

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # An unbounded queue's put never raises: nothing here can kill paho's thread.
        self.messages.put((time.monotonic(), message.topic, bytes(message.payload)))

    def publish(self, topic: str, payload: bytes, timeout: float = 15.0) -> None:
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise RuntimeError(f"no PUBACK for {topic} within {timeout} s")

    def get(self, timeout: float) -> tuple[float, str, bytes] | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Mqtt311Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
