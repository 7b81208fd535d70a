"""An MQTT 5 client that logs in (username, password, TLS) and reports what the broker says.

`MqttProbe` asserts that the broker accepts everything; the secure broker's
tests need the refusals themselves: the CONNACK reason code, a PUBACK's
reason code, a TLS handshake error. Every paho callback only feeds a queue;
the test thread waits on those queues with deadlines.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

#: MQTT 5 reason code "Not authorized".
NOT_AUTHORIZED = 0x87


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


def tls_context(
    cafile: Path, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext:
    """A client context that trusts `cafile` only and checks the host name."""
    context = ssl.create_default_context(cafile=str(cafile))
    if certfile is not None:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return context


class SecureClient:
    """One MQTT 5 connection, never re-established once it is lost or refused."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        client_id: str = "",
        will: Will | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.timeout = timeout
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.session_present: bool | None = None
        self._tls = tls
        self._connacks: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self._disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[tuple[int, list[ReasonCode]]] = queue.Queue()
        self._pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self._messages: queue.Queue[Message] = queue.Queue()
        self._errors: queue.Queue[BaseException] = queue.Queue()
        self._acks_seen: dict[tuple[str, int], Any] = {}
        self._closed = threading.Event()

        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client

    # -- paho callbacks (network thread): decode, enqueue, never raise -----

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._connacks.put((reason_code, bool(flags.session_present)))
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
            # paho's loop thread would connect again; a test wants to see the
            # loss, and two clients of one username would take turns forever.
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
            self._messages.put(Message(message.topic, bytes(message.payload), bool(message.retain)))
        except Exception as exc:
            self._errors.put(exc)

    # -- test thread ---------------------------------------------------------

    def _check_errors(self) -> None:
        try:
            exc = self._errors.get_nowait()
        except queue.Empty:
            return
        raise AssertionError(f"a paho callback of {self!r} failed: {exc!r}") from exc

    def _get(self, q: queue.Queue[Any], timeout: float, what: str) -> Any:
        self._check_errors()
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            self._check_errors()
            raise AssertionError(f"{self!r}: no {what} within {timeout} s") from None

    def _wait_ack(self, kind: str, q: queue.Queue[tuple[int, Any]], mid: int) -> Any:
        deadline = time.monotonic() + self.timeout
        while (kind, mid) not in self._acks_seen:
            self._check_errors()
            if not self._disconnects.empty():
                raise AssertionError(f"{self!r}: connection lost while waiting for {kind}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self!r}: no {kind} for mid {mid} within {self.timeout} s")
            try:
                got_mid, value = q.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            self._acks_seen[(kind, got_mid)] = value
        return self._acks_seen.pop((kind, mid))

    def connect(self) -> ReasonCode:
        """Connect and return the CONNACK's reason code, success or not.

        A TLS handshake failure raises its `ssl.SSLError` here. A connection
        the broker closes without a CONNACK raises `ConnectionError`.
        """
        if self._tls is not None:
            # paho never closes its socket when the handshake fails (a
            # ResourceWarning later, an error under -W error): meet a TLS
            # failure on a socket of our own first.
            with (
                socket.create_connection((self.host, self.port), timeout=self.timeout) as raw,
                self._tls.wrap_socket(raw, server_hostname=self.host),
            ):
                pass
        props: Properties | None = None
        if self.session_expiry:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        # Synchronous: TCP and the TLS handshake happen in this thread.
        self._client.connect(
            self.host, self.port, keepalive=30, clean_start=self.clean_start, properties=props
        )
        self._client.loop_start()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                code, present = self._connacks.get(timeout=0.05)
            except queue.Empty:
                self._check_errors()
                if not self._disconnects.empty():
                    self.close()
                    raise ConnectionError(
                        f"{self!r}: the broker closed the connection without a CONNACK "
                        f"({self._disconnects.get()})"
                    ) from None
                if time.monotonic() >= deadline:
                    self.close()
                    raise AssertionError(f"{self!r}: no CONNACK within {self.timeout} s") from None
                continue
            break
        self.session_present = present
        if code.is_failure:
            self.close()
        return code

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and return the SUBACK's reason codes."""
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise AssertionError(f"subscribe {topic_filter!r}: {mqtt.error_string(result)}")
        codes: list[ReasonCode] = self._wait_ack("SUBACK", self._subacks, mid)
        return codes

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        retain: bool = False,
        response_topic: str | None = None,
    ) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code.

        (At QoS 2 paho reports the PUBCOMP's reason code, which is "Success"
        even when the broker refused the message in its PUBREC.)
        """
        props: Properties | None = None
        if response_topic is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
        info = self._publish(topic, payload, 1, retain, props)
        code: ReasonCode = self._wait_ack("PUBACK", self._pubacks, info.mid)
        return code

    def publish_qos0(self, topic: str, payload: bytes | str) -> None:
        """Publish at QoS 0: nothing comes back, whatever the broker does with it."""
        self._publish(topic, payload, 0, False, None).wait_for_publish(self.timeout)

    def _publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int,
        retain: bool,
        props: Properties | None,
    ) -> mqtt.MQTTMessageInfo:
        data = payload.encode() if isinstance(payload, str) else payload
        info = self._client.publish(topic, data, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic!r}: {mqtt.error_string(info.rc)}")
        return info

    def receive_until(self, topic: str, payload: bytes, timeout: float = 5.0) -> list[Message]:
        """Every message received up to and including the first `payload` on `topic`.

        Mosquitto delivers to a subscriber in the order it accepted the
        messages, so this is what arrived before that "fence" message.
        """
        received: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            message = self._get(
                self._messages, max(0.0, remaining), f"message {payload!r} on {topic}"
            )
            received.append(message)
            if message.topic == topic and message.payload == payload:
                return received

    def expect(self, timeout: float = 5.0) -> Message:
        """The next message received."""
        message: Message = self._get(self._messages, timeout, "message")
        return message

    def wait_disconnected(self, timeout: float = 5.0) -> ReasonCode:
        """Wait until the broker closes the connection; its reason code."""
        code: ReasonCode = self._get(self._disconnects, timeout, "disconnect")
        return code

    def disconnect_with_will(self) -> None:
        """MQTT 5 DISCONNECT 0x04: end the connection and have the broker publish the will."""
        self._client.disconnect(
            reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        )
        self._client.loop_stop()
        self._closed.set()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> SecureClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SecureClient({self.username or 'anonymous'} @ {self.host}:{self.port})"
