"""An MQTT 5 test client: every paho callback feeds a queue, tests wait on deadlines."""

from __future__ import annotations

import itertools
import json
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.client import QueuedClient, payload_bytes, publish_properties

Predicate = Callable[["Received"], bool]

_probe_numbers = itertools.count(1)


@dataclass(frozen=True)
class ReceivedProperties:
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    json: Any
    properties: ReceivedProperties
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


def envelope(
    operation: str,
    resource: str,
    source: str,
    content: Any = None,
    group: str = "meta",
    msg_id: str | None = None,
    parent_msg_id: str = "",
    sync: bool = False,
) -> dict[str, Any]:
    """A SPEC §1 message as a dict, with a fresh uuid4 msg_id and a ms timestamp."""
    return {
        "header": {
            "msg_id": msg_id if msg_id is not None else str(uuid.uuid4()),
            "parent_msg_id": parent_msg_id,
            "timestamp": int(time.time() * 1000),
            "sync": sync,
        },
        "route": {
            "source": source,
            "group": group,
            "operation": operation,
            "resource": resource,
        },
        "content": content,
    }


def _decode_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # hostile payloads nest deeper than json goes
        return None


def _received(message: mqtt.MQTTMessage) -> Received:
    props = message.properties
    response_topic = getattr(props, "ResponseTopic", None)
    correlation_data = getattr(props, "CorrelationData", None)
    user_properties = [(str(k), str(v)) for k, v in getattr(props, "UserProperty", [])]
    payload = bytes(message.payload)
    return Received(
        topic=message.topic,
        payload=payload,
        json=_decode_json(payload),
        properties=ReceivedProperties(
            response_topic=response_topic,
            correlation_data=bytes(correlation_data) if correlation_data is not None else None,
            user_properties=user_properties,
        ),
        retain=bool(message.retain),
        qos=int(message.qos),
    )


def _matches(received: Received, topic: str | None, predicate: Predicate | None) -> bool:
    if topic is not None and not mqtt.topic_matches_sub(topic, received.topic):
        return False
    if predicate is None:
        return True
    try:
        return bool(predicate(received))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        # A predicate digging into JSON of another shape simply does not match.
        return False


class MqttProbe(QueuedClient):
    """A paho-mqtt 2 client (MQTT 5, clean start) for driving and observing tests.

    It connects again after a lost connection and renews its subscriptions.
    Messages are decoded into `Received`; those read but not asked for stay
    pending for later `expect` calls.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(
            host,
            port,
            client_id or f"probe-{next(_probe_numbers)}-{uuid.uuid4().hex[:8]}",
            timeout=timeout,
            nodelay=True,
        )
        # Owned by the test thread: messages read but not yet asked for.
        self._pending: list[Received] = []
        self._subscriptions: dict[str, int] = {}
        self._connected_once = False
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        with self._closing_on_error():
            self._connect()

    def _connected(
        self, client: mqtt.Client, flags: mqtt.ConnectFlags, reason_code: ReasonCode
    ) -> tuple[ReasonCode, list[int]]:
        """The CONNACK's reason code and the mids of the subscriptions renewed on it."""
        mids: list[int] = []
        if self._connected_once and not reason_code.is_failure:
            # Clean start: after a broker restart the subscriptions are gone.
            for topic, qos in list(self._subscriptions.items()):
                _, mid = client.subscribe(topic, qos=qos)
                if mid is not None:
                    mids.append(mid)
        self._connected_once = self._connected_once or not reason_code.is_failure
        return reason_code, mids

    def _decode(self, message: mqtt.MQTTMessage) -> Received:
        return _received(message)

    def wait_disconnected(self, timeout: float | None = None) -> None:
        """Wait until the connection to the broker is lost (or closed)."""
        self._get(self._disconnects, timeout or self.timeout, "disconnect")

    def wait_reconnected(self, timeout: float = 15.0) -> None:
        """Wait for the next successful connection and its renewed subscriptions."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            code, mids = self._get(self._connacks, remaining, "reconnection")
            if not code.is_failure:
                break
        for mid in mids:
            remaining = max(0.0, deadline - time.monotonic())
            codes = self._wait_ack("SUBACK", self._subacks, mid, remaining)
            if any(c.is_failure for c in codes):
                raise AssertionError(f"{self.client_id}: resubscription refused: {codes}")

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float | None = None) -> None:
        """Subscribe and wait for the SUBACK; resubscribed after a reconnect."""
        self._subscribe(topic_filter, qos, timeout or self.timeout)
        self._subscriptions[topic_filter] = qos

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any],
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        user_properties: list[tuple[str, str]] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish; with QoS 1 or 2, wait until the broker has acknowledged it."""
        props = publish_properties(response_topic, correlation_data, user_properties)
        info = self._publish(topic, payload_bytes(payload), qos, retain, props)
        if qos == 0:
            return
        code = self._wait_ack("PUBACK", self._pubacks, info.mid, timeout or self.timeout)
        if code.is_failure:
            raise AssertionError(f"publish to {topic!r} refused by the broker: {code}")

    def _incoming(self, deadline: float) -> Iterator[Received]:
        """Messages not yet consumed, then new ones until the deadline."""
        self._check_errors()
        yield from list(self._pending)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                received = self._messages.get(timeout=remaining)
            except queue.Empty:
                self._check_errors()
                return
            self._pending.append(received)
            yield received

    def expect(
        self,
        topic: str | None = None,
        predicate: Predicate | None = None,
        timeout: float = 5.0,
    ) -> Received:
        """The first message matching the topic filter and predicate.

        Messages that do not match stay queued for later calls.
        """
        for received in self._incoming(time.monotonic() + timeout):
            if _matches(received, topic, predicate):
                self._pending.remove(received)
                return received
        seen = ", ".join(f"{r.topic}: {r.payload[:200]!r}" for r in self._pending) or "nothing"
        raise AssertionError(
            f"{self.client_id}: no message on {topic or '#'} matching the predicate "
            f"within {timeout} s; unconsumed: {seen}"
        )

    def expect_none(
        self,
        topic: str | None = None,
        predicate: Predicate | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert that nothing matching arrives for `within` seconds."""
        for received in self._incoming(time.monotonic() + within):
            if _matches(received, topic, predicate):
                raise AssertionError(
                    f"{self.client_id}: unexpected message on {received.topic}: "
                    f"{received.payload[:500]!r}"
                )

    def drain(self) -> list[Received]:
        """Every message received so far and not consumed, oldest first."""
        drained, self._pending = self._pending + self._take_all(), []
        return drained

    def __repr__(self) -> str:
        return f"MqttProbe({self.client_id} @ {self.host}:{self.port})"
