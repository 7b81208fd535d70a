"""Edge brokers bridged to a cloud broker: the shipped configs, on free loopback ports.

An edge broker's config is `mosquitto/edge-bridge.conf` rendered by
`scripts/render-bridge-conf.sh` (so the tests exercise the script a newcomer
uses) with the cloud broker's real port; `Broker` then moves its listener and
persistence into the test's temp dir. The cloud broker runs `mosquitto/cloud.conf`.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.support.broker import REPO_ROOT, Broker
from tests.support.client import QueuedClient, session_properties
from tests.support.mqtt import MqttProbe, Received

CLOUD_CONF = REPO_ROOT / "mosquitto" / "cloud.conf"
RENDER_SCRIPT = REPO_ROOT / "scripts" / "render-bridge-conf.sh"

#: Reconnect delay of the bridges under test, `restart_timeout <base> <cap>`:
#: 1-2 s every time. The shipped backoff (2 s growing to 60 s with jitter)
#: would make a test wait up to a minute for the link to come back. A single
#: value ("restart_timeout 1") is no constant delay in Mosquitto 2.0.11: the
#: default jitter (base 5 s, cap 30 s) stays on and the first retry comes
#: after 5-6 s.
TEST_RESTART_TIMEOUT = "1 1"

_RESTART_TIMEOUT_LINE = re.compile(r"^restart_timeout .*$", re.MULTILINE)


def node_prefix(node: str) -> str:
    """The topic prefix of a node: `beehive/<node>` (edgemeta's mqtt.topicPrefix)."""
    return f"beehive/{node}"


def bridge_state_topic(node: str) -> str:
    """Where the edge broker publishes the state of its cloud link, `1` or `0`."""
    return f"{node_prefix(node)}/meta/bridge/state"


def payload_is(payload: bytes) -> Callable[[Received], bool]:
    """A predicate for `MqttProbe.expect`: the message carries exactly `payload`."""

    def matches(received: Received) -> bool:
        return received.payload == payload

    return matches


def render_edge_conf(
    node: str,
    cloud_host: str,
    cloud_port: int,
    *,
    restart_timeout: str | None = TEST_RESTART_TIMEOUT,
    keepalive: int | None = None,
) -> str:
    """The edge config for `node` as the render script writes it (`--keepalive` if given).

    `restart_timeout` replaces the value of the shipped `restart_timeout`
    line; None keeps it. (Replaced, not appended: a second line in the same
    bridge section would only half override the first in Mosquitto 2.0.11.)
    """
    options = ["--keepalive", str(keepalive)] if keepalive is not None else []
    done = subprocess.run(
        ["sh", str(RENDER_SCRIPT), *options, node, cloud_host, str(cloud_port)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{RENDER_SCRIPT.name} failed ({done.returncode}): {done.stderr}")
    text = done.stdout
    if restart_timeout is not None:
        text, count = _RESTART_TIMEOUT_LINE.subn(f"restart_timeout {restart_timeout}", text)
        if count != 1:
            raise RuntimeError(f"expected one restart_timeout line in the rendered config: {count}")
    return text


class EdgeNode:
    """The edge broker of one node, bridged to `cloud`."""

    def __init__(
        self,
        node: str,
        cloud: Broker,
        tmp_dir: Path,
        *,
        restart_timeout: str | None = TEST_RESTART_TIMEOUT,
    ) -> None:
        self.node = node
        self.prefix = node_prefix(node)
        self.state_topic = bridge_state_topic(node)
        tmp_dir = Path(tmp_dir)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.rendered_conf = tmp_dir / f"edge-bridge-{node}.conf"
        self.rendered_conf.write_text(
            render_edge_conf(node, cloud.host, cloud.port, restart_timeout=restart_timeout)
        )
        self.broker = Broker(self.rendered_conf, tmp_dir=tmp_dir / "broker")

    def topic(self, group: str) -> str:
        return f"{self.prefix}/{group}"

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def probe(self) -> MqttProbe:
        """A new probe on this edge broker (the caller closes it)."""
        return MqttProbe(self.broker.host, self.broker.port)

    def wait_state(self, payload: bytes, timeout: float = 10.0) -> None:
        """Wait until the bridge state topic holds `payload` (retained or live)."""
        with MqttProbe(self.host, self.port) as probe:
            probe.subscribe(self.state_topic)
            probe.expect(self.state_topic, lambda r: r.payload == payload, timeout=timeout)

    def wait_linked(self, cloud: Broker, timeout: float = 10.0) -> None:
        """Wait until the bridge is up and its subscription on the cloud works.

        The edge broker publishes `1` on CONNACK, before the cloud has
        processed the bridge's SUBSCRIBE to `<prefix>/meta`; only a message
        from the cloud that arrives proves the way in. Each ping is unique,
        and a late one is only a stray message on `<prefix>/meta`.
        """
        deadline = time.monotonic() + timeout
        self.wait_state(b"1", timeout=timeout)
        meta = self.topic("meta")
        with MqttProbe(self.host, self.port) as edge, MqttProbe(cloud.host, cloud.port) as sender:
            edge.subscribe(meta)
            while True:
                ping = f"link-check {uuid.uuid4().hex}".encode()
                sender.publish(meta, ping)
                try:
                    edge.expect(meta, payload_is(ping), timeout=0.25)
                    return
                except AssertionError:
                    if time.monotonic() >= deadline:
                        raise AssertionError(
                            f"{self.node}: nothing published on the cloud to {meta} reached "
                            f"the edge broker within {timeout} s\n{self.broker.log_text()}"
                        ) from None

    def __repr__(self) -> str:
        return f"EdgeNode({self.node}, {self.broker!r})"


class SessionSubscriber(QueuedClient):
    """A cloud-side consumer with a persistent session (MQTT 5, clean start off).

    Its subscription and the messages queued for it live on the broker while
    it is away, and across a restart of a broker with persistence. It never
    reconnects by itself: a test closes it (a normal disconnect, so the broker
    keeps the session) and opens a new one with the same client id, so what
    the broker kept is what the test sees.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        topic_filter: str,
        *,
        session_expiry: int = 600,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(host, port, client_id, timeout=timeout, reconnect=False)
        self.topic_filter = topic_filter
        self.session_present: bool | None = None
        with self._closing_on_error():
            _, self.session_present = self._connect(
                clean_start=False, properties=session_properties(session_expiry)
            )
            if not self.session_present:
                self._subscribe(topic_filter, 1, self.timeout)

    def collect(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        """The next `count` messages, in arrival order."""
        return self.collect_until(lambda got: len(got) >= count, f"{count} messages", timeout)

    def collect_until(
        self,
        done: Callable[[list[mqtt.MQTTMessage]], bool],
        what: str,
        timeout: float = 10.0,
    ) -> list[mqtt.MQTTMessage]:
        """The next messages, in arrival order, until `done(messages)` says they are all."""

        def failure(got: list[mqtt.MQTTMessage]) -> str:
            payloads = [m.payload for m in got]
            return f"{self.client_id}: not {what} within {timeout} s: {len(got)}: {payloads!r}"

        return self._collect(done, timeout, failure)

    def pending(self) -> list[mqtt.MQTTMessage]:
        """Messages received and not collected yet."""
        return self._take_all()
