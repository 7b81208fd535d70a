"""An MQTT 5 test client: every paho callback feeds a queue, tests wait on deadlines."""

from __future__ import annotations

import itertools
import json
import queue
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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


def _payload_bytes(payload: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload).encode("utf-8")


class MqttProbe:
    """A paho-mqtt 2 client (MQTT 5, clean start) for driving and observing tests.

    Callbacks run on paho's network thread; they only put what they saw into
    queues and never raise (an exception there would kill that thread). The
    test thread alone reads the queues.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id or f"probe-{next(_probe_numbers)}-{uuid.uuid4().hex[:8]}"
        self.timeout = timeout
        # (CONNACK reason, mids of the subscriptions renewed on that connection)
        self._connacks: queue.Queue[tuple[ReasonCode, list[int]]] = queue.Queue()
        self._disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[tuple[int, list[ReasonCode]]] = queue.Queue()
        self._pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self._messages: queue.Queue[Received] = queue.Queue()
        self._errors: queue.Queue[BaseException] = queue.Queue()
        # Owned by the test thread: acks and messages read but not yet asked for.
        self._acks_seen: dict[tuple[str, int], Any] = {}
        self._pending: list[Received] = []
        self._subscriptions: dict[str, int] = {}
        self._connected_once = False

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client = client

        client.connect_async(host, port, keepalive=30, clean_start=True)
        client.loop_start()
        try:
            code, _ = self._get(self._connacks, timeout, f"CONNACK from {host}:{port}")
            if code.is_failure:
                raise AssertionError(f"connection to {host}:{port} refused: {code}")
        except BaseException:
            self.close()
            raise

    # -- paho callbacks (network thread) ---------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            sock = client.socket()
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mids: list[int] = []
            if self._connected_once and not reason_code.is_failure:
                # Clean start: after a broker restart the subscriptions are gone.
                for topic, qos in list(self._subscriptions.items()):
                    _, mid = client.subscribe(topic, qos=qos)
                    if mid is not None:
                        mids.append(mid)
            self._connected_once = self._connected_once or not reason_code.is_failure
            self._connacks.put((reason_code, mids))
        except Exception as exc:
            self._errors.put(exc)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._disconnects.put(reason_code)
        except Exception as exc:
            self._errors.put(exc)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            self._subacks.put((mid, list(reason_codes)))
        except Exception as exc:
            self._errors.put(exc)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._pubacks.put((mid, reason_code))
        except Exception as exc:
            self._errors.put(exc)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._messages.put(_received(message))
        except Exception as exc:
            self._errors.put(exc)

    # -- test thread -----------------------------------------------------

    def _check_errors(self) -> None:
        try:
            exc = self._errors.get_nowait()
        except queue.Empty:
            return
        raise AssertionError(f"a paho callback of {self.client_id} failed: {exc!r}") from exc

    def _get(self, q: queue.Queue[Any], timeout: float, what: str) -> Any:
        self._check_errors()
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            self._check_errors()
            raise AssertionError(f"{self.client_id}: no {what} within {timeout} s") from None

    def _wait_ack(
        self, kind: str, q: queue.Queue[tuple[int, Any]], mid: int, timeout: float
    ) -> Any:
        deadline = time.monotonic() + timeout
        while (kind, mid) not in self._acks_seen:
            remaining = max(0.0, deadline - time.monotonic())
            got_mid, value = self._get(q, remaining, f"{kind} for mid {mid}")
            self._acks_seen[(kind, got_mid)] = value
        return self._acks_seen.pop((kind, mid))

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
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise AssertionError(f"subscribe {topic_filter!r} failed: {mqtt.error_string(result)}")
        codes = self._wait_ack("SUBACK", self._subacks, mid, timeout or self.timeout)
        if any(code.is_failure for code in codes):
            raise AssertionError(f"subscribe {topic_filter!r} refused: {codes}")
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
        props: Properties | None = None
        if response_topic is not None or correlation_data is not None or user_properties:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if user_properties:
                props.UserProperty = list(user_properties)
        info = self._client.publish(
            topic, _payload_bytes(payload), qos=qos, retain=retain, properties=props
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
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
        self._check_errors()
        while True:
            try:
                self._pending.append(self._messages.get_nowait())
            except queue.Empty:
                break
        drained, self._pending = self._pending, []
        return drained

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes its wake-up socket pair only in __del__ (eclipse-paho/paho.mqtt.python#627);
        # left to the garbage collector it may warn "unclosed socket", an error under -W error.
        self._client._reset_sockets(sockpair_only=True)

    def __enter__(self) -> MqttProbe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MqttProbe({self.client_id} @ {self.host}:{self.port})"
