"""What the tests' MQTT clients share: a paho client whose callbacks only feed queues.

Callbacks run on paho's network thread; they put what they saw into queues
and never raise (an exception there would kill that thread): a failure is
queued too, and the test thread raises it at its next wait. The test thread
alone reads the queues, every wait with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: How often a wait that may end early (a lost connection) looks again.
_POLL = 0.1


def session_properties(expiry: int) -> Properties:
    """CONNECT properties asking the broker to keep the session `expiry` seconds."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


def publish_properties(
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    user_properties: list[tuple[str, str]] | None = None,
) -> Properties | None:
    """PUBLISH properties, or None when there is none to send."""
    if response_topic is None and correlation_data is None and not user_properties:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if user_properties:
        props.UserProperty = list(user_properties)
    return props


def payload_bytes(payload: bytes | str | dict[str, Any]) -> bytes:
    """A payload as sent: bytes as they are, text in UTF-8, a dict as JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload).encode("utf-8")


class QueuedClient:
    """One paho-mqtt 2 client (MQTT 5); subclasses add what they test with it.

    With ``reconnect=False`` a lost connection stays lost (paho would connect
    again by itself) and a wait for an acknowledgement ends when it is lost.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        timeout: float,
        reconnect: bool = True,
        nodelay: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.timeout = timeout
        self._reconnect = reconnect
        self._nodelay = nodelay
        self._connacks: queue.Queue[tuple[ReasonCode, Any]] = queue.Queue()
        self._disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[tuple[int, list[ReasonCode]]] = queue.Queue()
        self._pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self._messages: queue.Queue[Any] = queue.Queue()
        self._errors: queue.Queue[BaseException] = queue.Queue()
        # Owned by the test thread: acks read while waiting for another one.
        self._acks_seen: dict[tuple[str, int], Any] = {}
        self._closed = threading.Event()

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client

    # -- what subclasses change (network thread) -------------------------

    def _connected(
        self, client: mqtt.Client, flags: mqtt.ConnectFlags, reason_code: ReasonCode
    ) -> tuple[ReasonCode, Any]:
        """What a CONNACK puts into the queue: its reason code and the session flag."""
        return reason_code, bool(flags.session_present)

    def _decode(self, message: mqtt.MQTTMessage) -> Any:
        """What a received message puts into the queue."""
        return message

    # -- paho callbacks (network thread): enqueue, never raise ------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if self._nodelay:
                sock = client.socket()
                if isinstance(sock, socket.socket):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connacks.put(self._connected(client, flags, reason_code))
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
            if not self._reconnect and not self._closed.is_set():
                # Stop paho's loop from connecting again: a test wants to see
                # the loss, a reconnect with the same id would hide what the
                # broker kept, and two clients of one username would take
                # turns forever.
                client.disconnect()
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
            self._messages.put(self._decode(message))
        except Exception as exc:
            self._errors.put(exc)

    # -- test thread -------------------------------------------------------

    def _who(self) -> str:
        """How failure messages name this client."""
        return self.client_id

    def _check_errors(self) -> None:
        try:
            exc = self._errors.get_nowait()
        except queue.Empty:
            return
        raise AssertionError(f"a paho callback of {self._who()} failed: {exc!r}") from exc

    def _get(self, q: queue.Queue[Any], timeout: float, what: str) -> Any:
        self._check_errors()
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            self._check_errors()
            raise AssertionError(f"{self._who()}: no {what} within {timeout} s") from None

    def _take_all(self) -> list[Any]:
        """Every message received and not taken yet, oldest first."""
        self._check_errors()
        taken: list[Any] = []
        while True:
            try:
                taken.append(self._messages.get_nowait())
            except queue.Empty:
                return taken

    def _collect(
        self, done: Callable[[list[Any]], bool], timeout: float, failure: Callable[[list[Any]], str]
    ) -> list[Any]:
        """Messages received until ``done(messages)``; fails with ``failure(messages)``."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            self._check_errors()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(failure(got))
            with contextlib.suppress(queue.Empty):
                got.append(self._messages.get(timeout=min(remaining, _POLL)))
        return got

    def _wait_ack(
        self, kind: str, q: queue.Queue[tuple[int, Any]], mid: int, timeout: float
    ) -> Any:
        """The ack `kind` of `mid`; acks of other mids are kept for their own wait."""
        deadline = time.monotonic() + timeout
        while (kind, mid) not in self._acks_seen:
            self._check_errors()
            if not self._reconnect and not self._disconnects.empty():
                raise AssertionError(f"{self._who()}: connection lost while waiting for {kind}")
            remaining = deadline - time.monotonic()
            try:
                got_mid, value = q.get(timeout=min(max(remaining, 0.0), _POLL))
            except queue.Empty:
                if remaining <= 0:
                    raise AssertionError(
                        f"{self._who()}: no {kind} for mid {mid} within {timeout} s"
                    ) from None
                continue
            self._acks_seen[(kind, got_mid)] = value
        return self._acks_seen.pop((kind, mid))

    @contextlib.contextmanager
    def _closing_on_error(self) -> Iterator[None]:
        """Close the client when the block fails (a constructor, say), and re-raise."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _connect(
        self, *, clean_start: bool | int = True, properties: Properties | None = None
    ) -> tuple[ReasonCode, Any]:
        """Connect from paho's thread; the CONNACK's queue entry, once the broker accepted."""
        where = f"{self.host}:{self.port}"
        self._client.connect_async(
            self.host, self.port, keepalive=30, clean_start=clean_start, properties=properties
        )
        self._client.loop_start()
        connack: tuple[ReasonCode, Any] = self._get(
            self._connacks, self.timeout, f"CONNACK from {where}"
        )
        if connack[0].is_failure:
            raise AssertionError(f"{self._who()}: connection to {where} refused: {connack[0]}")
        return connack

    def _subscribe(
        self, topic_filter: str, qos: int, timeout: float, *, granted: bool = True
    ) -> list[ReasonCode]:
        """Subscribe; the SUBACK's reason codes. With `granted`, a refusal fails the test."""
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise AssertionError(f"subscribe {topic_filter!r} failed: {mqtt.error_string(result)}")
        codes: list[ReasonCode] = self._wait_ack("SUBACK", self._subacks, mid, timeout)
        if granted and any(code.is_failure for code in codes):
            raise AssertionError(f"subscribe {topic_filter!r} refused: {codes}")
        return codes

    def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None
    ) -> mqtt.MQTTMessageInfo:
        """Hand a message to paho; the caller waits for its PUBACK if it wants one."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        return info

    def _disconnect(self, reasoncode: ReasonCode | None = None) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._client.disconnect(reasoncode=reasoncode)
        self._client.loop_stop()
        # paho closes its wake-up socket pair only in __del__ (eclipse-paho/paho.mqtt.python#627);
        # left to the garbage collector it may warn "unclosed socket", an error under -W error.
        self._client._reset_sockets(sockpair_only=True)

    def close(self) -> None:
        """Disconnect normally (a kept session stays on the broker); again, nothing."""
        self._disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
