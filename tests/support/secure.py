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
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.broker import Broker
from tests.support.client import QueuedClient, payload_bytes, publish_properties, session_properties

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


class SecureClient(QueuedClient):
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
        super().__init__(host, port, client_id, timeout=timeout, reconnect=False)
        self.username = username
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.session_present: bool | None = None
        self._tls = tls
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _decode(self, message: mqtt.MQTTMessage) -> Message:
        return Message(message.topic, bytes(message.payload), bool(message.retain))

    def _who(self) -> str:
        return repr(self)

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
        props = session_properties(self.session_expiry) if self.session_expiry else None
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
        return self._subscribe(topic_filter, qos, self.timeout, granted=False)

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
        props = publish_properties(response_topic)
        info = self._publish(topic, payload_bytes(payload), 1, retain, props)
        code: ReasonCode = self._wait_ack("PUBACK", self._pubacks, info.mid, self.timeout)
        return code

    def publish_qos0(self, topic: str, payload: bytes | str) -> None:
        """Publish at QoS 0: nothing comes back, whatever the broker does with it."""
        self._publish(topic, payload_bytes(payload), 0, False, None).wait_for_publish(self.timeout)

    def receive_until(self, topic: str, payload: bytes, timeout: float = 5.0) -> list[Message]:
        """Every message received up to and including the first `payload` on `topic`.

        Mosquitto delivers to a subscriber in the order it accepted the
        messages, so this is what arrived before that "fence" message.
        """

        def fenced(received: list[Message]) -> bool:
            return bool(received) and (received[-1].topic, received[-1].payload) == (topic, payload)

        return self._collect(
            fenced,
            timeout,
            lambda received: f"{self!r}: no message {payload!r} on {topic} within {timeout} s",
        )

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
        self._disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))

    def __repr__(self) -> str:
        return f"SecureClient({self.username or 'anonymous'} @ {self.host}:{self.port})"


#: The broker users `scripts/make-secrets.sh` creates (devices are added apart).
ROLES = ("edgemeta", "edged", "edgemesh", "edgefunction", "edgehub", "observer")


@dataclass(frozen=True)
class SiteFiles:
    """A broker running production.conf, and the files the scripts made for it."""

    root: Path
    broker: Broker

    @property
    def secrets(self) -> Path:
        return self.root / "mosquitto" / "secrets"

    @property
    def certs(self) -> Path:
        return self.root / "mosquitto" / "certs"

    @property
    def other_ca(self) -> Path:
        """An unrelated CA (and its certificates), made by the same script."""
        return self.root / "other-ca"

    @property
    def tls_port(self) -> int:
        return self.broker.extra_ports[0]

    def password_file(self, user: str) -> Path:
        """A role's password file, or a device's (every user that is not a role)."""
        if user in ROLES:
            return self.secrets / f"{user}.password"
        return self.secrets / "devices" / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()
