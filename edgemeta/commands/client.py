"""The tools' MQTT client: short-lived, clean start, no Last Will, automatic acks.

The service's client (``edgemeta.bus``) owns a persistent session and the
status topic's Last Will; a tool must touch neither, so it has this small
client of its own. As in ``bus``, paho's callbacks only hand over into
queues, inside try/except, and paho's codes become BusError here.
"""

from __future__ import annotations

import contextlib
import json
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..config import MqttConfig
from ..errors import BusError
from ..message import Message
from ..topics import Topics


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None
    correlation: bytes | None
    at: float

    def message(self) -> Message | None:
        """The beehive message in the payload, or None when it is none."""
        return read_message(self.payload)


def read_message(payload: bytes) -> Message | None:
    """A message to show, read leniently; None when the payload is no beehive message.

    Not ``message.decode``: that one guards edgemeta's input, and refuses, say,
    the resource an error answer echoes back ("a//b"), or a big list answer.
    A tool only shows what it got.
    """
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    header = data.get("header")
    route = data.get("route")
    hdr = header if isinstance(header, dict) else {}
    if not isinstance(route, dict):
        return None
    operation, source = route.get("operation"), route.get("source")
    if not isinstance(operation, str) or not isinstance(source, str):
        return None

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    stamp = hdr.get("timestamp")
    return Message(
        msg_id=text(hdr.get("msg_id")),
        operation=operation,
        resource=text(route.get("resource")),
        source=source,
        group=text(route.get("group")),
        parent_msg_id=text(hdr.get("parent_msg_id")),
        timestamp=stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0,
        sync=hdr.get("sync") is True,
        content=data.get("content"),
    )


def reply_topic(config: MqttConfig, topics: Topics) -> str:
    """A fresh Response Topic: ``<prefix>/reply/<username or cli>/<uuid>`` (see mosquitto/acl)."""
    return f"{topics.prefix}/reply/{config.username or 'cli'}/{uuid.uuid4().hex}"


def disconnect_reason(flags: Any, rc: Any) -> str:
    """Why a connection ended, in words: paho says "Unspecified error" for a closed socket."""
    from_server = bool(getattr(flags, "is_disconnect_packet_from_server", False))
    if not from_server:
        return "the connection to the broker was closed (broker stopped or network down)"
    return f"the broker disconnected this client: {rc}"


def _reports(report: bytes, sent: bytes, msg_id: str) -> bool:
    """Whether a ``meta/error`` report is about the payload ``sent``."""
    try:
        data = json.loads(report)
    except ValueError:
        return False
    if not isinstance(data, dict) or not isinstance(data.get("payload"), str):
        return False
    shown: str = data["payload"]
    head = sent[:1024].decode("utf-8", "replace")
    return bool(shown) and (msg_id in shown or head.startswith(shown[:1000]))


class BrokerClient:
    """Connect on construction, then subscribe / publish / receive with deadlines."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        name: str = "cli",
        timeout: float = 5.0,
        client_id: str | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.client_id = client_id or f"edgemeta-{name}-{uuid.uuid4().hex[:8]}"
        self._messages: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._connack: Any = None
        self._acks: dict[tuple[str, int], Any] = {}
        self._subscriptions: dict[str, SubscribeOptions] = {}
        self._disconnected = threading.Event()
        self._closing = False
        #: Link changes for long-running tools: "lost: <why>" and "back".
        self.link_events: queue.SimpleQueue[str] = queue.SimpleQueue()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls.enable:
            client.tls_set(
                ca_certs=config.tls.caFile or None,
                certfile=config.tls.certFile or None,
                keyfile=config.tls.keyFile or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client = client
        where = f"{config.host}:{config.port}"
        try:
            client.connect(config.host, config.port, keepalive=30, clean_start=True)
        except (OSError, ssl.SSLError) as exc:
            raise BusError(f"cannot reach the MQTT broker at {where}: {exc}") from exc
        client.loop_start()
        code = self._wait(lambda: self._connack, timeout)
        if code is None:
            self.close()
            raise BusError(f"no answer from the MQTT broker at {where} within {timeout:g} s")
        if code.is_failure:
            self.close()
            raise BusError(f"the MQTT broker at {where} refused the connection: {code}")

    # -- paho callbacks (network thread: never raise) -----------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            if not rc.is_failure and self._connack is not None:
                # A clean start after a lost connection: subscribe again.
                for topic, options in list(self._subscriptions.items()):
                    client.subscribe(topic, options=options)
                self.link_events.put("back")
            with self._cond:
                self._connack = rc
                self._cond.notify_all()
        except Exception:  # pragma: no cover - must not kill paho's thread
            pass

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            self._disconnected.set()
            if not self._closing and self._connack is not None:
                self.link_events.put(f"lost: {disconnect_reason(flags, rc)}")
        except Exception:  # pragma: no cover - must not kill paho's thread
            pass

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        self._hand_over("sub", mid, codes)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self._hand_over("pub", mid, rc)

    def _hand_over(self, kind: str, mid: int, value: Any) -> None:
        try:
            with self._cond:
                self._acks[(kind, mid)] = value
                self._cond.notify_all()
        except Exception:  # pragma: no cover
            pass

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            props = getattr(msg, "properties", None)
            correlation = getattr(props, "CorrelationData", None) if props else None
            self._messages.put(
                Received(
                    msg.topic,
                    bytes(msg.payload),
                    bool(msg.retain),
                    getattr(props, "ResponseTopic", None) if props else None,
                    bytes(correlation) if correlation is not None else None,
                    time.time(),
                )
            )
        except Exception:  # pragma: no cover
            pass

    # -- waiting ----------------------------------------------------------
    def _wait(self, ready: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = ready()
                if value is not None:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _ack(self, kind: str, mid: int, what: str) -> Any:
        value = self._wait(lambda: self._acks.pop((kind, mid), None), self.timeout)
        if value is None:
            raise BusError(f"the broker did not acknowledge {what} within {self.timeout:g} s")
        return value

    # -- API --------------------------------------------------------------
    def subscribe(self, topic_filter: str, *, qos: int = 1, retained: bool = True) -> None:
        """Subscribe and wait for the SUBACK; ``retained=False`` skips retained messages."""
        options = SubscribeOptions(qos=qos, retainHandling=0 if retained else 2)
        result, mid = self._client.subscribe(topic_filter, options=options)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"cannot subscribe to {topic_filter!r}: {mqtt.error_string(result)}")
        codes = self._ack("sub", mid, f"the subscription to {topic_filter!r}")
        if any(code.is_failure for code in codes):
            raise BusError(f"the broker refused the subscription to {topic_filter!r}: {codes}")
        self._subscriptions[topic_filter] = options

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        """Publish; at QoS 1 or 2, return once the broker has accepted it."""
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except ValueError as exc:
            raise BusError(f"cannot publish to {topic!r}: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BusError(f"cannot publish to {topic!r}: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return
        code = self._ack("pub", info.mid, f"the message to {topic!r}")
        if getattr(code, "is_failure", False):
            raise BusError(f"the broker refused the message to {topic!r}: {code}")

    def receive(self, timeout: float | None) -> Received | None:
        """The next message of the subscriptions, or None after ``timeout`` seconds."""
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def receive_message(self, timeout: float | None) -> Message | None:
        """The next beehive message of the subscriptions, or None.

        None after ``timeout`` seconds, and for a payload that is no beehive message.
        """
        got = self.receive(timeout)
        return None if got is None else got.message()

    def request(
        self,
        topic: str,
        message: Message,
        reply_to: str,
        timeout: float,
        reports: str | None = None,
    ) -> Received | None:
        """Publish ``message`` with a Response Topic and wait for its answer there.

        With ``reports`` (``<prefix>/meta/error``), a report of this very message
        (edgemeta could not answer it: too big, not JSON ...) is returned too.
        """
        self.subscribe(reply_to)
        if reports is not None:
            with contextlib.suppress(BusError):  # an ACL may hide the reports
                self.subscribe(reports, retained=False)
        correlation = uuid.uuid4().bytes
        payload = message.encode()
        self.publish(topic, payload, response_topic=reply_to, correlation=correlation)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = self.receive(remaining)
            if got is None:
                break
            if got.topic == reports and _reports(got.payload, payload, message.msg_id):
                return got
            if got.topic != reply_to:
                continue
            if got.correlation == correlation:
                return got
            answer = got.message()
            if answer is not None and answer.parent_msg_id == message.msg_id:
                return got
        return None

    def retained(self, topic: str, marker: str, timeout: float) -> Received | None:
        """The retained message of ``topic``, None when there is none.

        Mosquitto sends retained messages right after the SUBACK, before
        anything published later on this connection: a message published to
        ``marker`` (a topic of our own) after subscribing tells "none" without
        waiting out the timeout. Where the broker refuses the marker (ACL),
        the timeout decides.
        """
        self.subscribe(topic)
        self.subscribe(marker)
        with contextlib.suppress(BusError):
            self.publish(marker, b"", qos=1)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = self.receive(remaining)
            if got is None:
                break
            if got.topic == topic and got.retain:
                return got
            if got.topic == marker:
                return None
        return None

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def broker_keeps_sessions(config: MqttConfig, timeout: float = 5.0) -> bool | None:
    """Whether the broker keeps a persistent session across a reconnect (None: no answer).

    Uses a throwaway client id of its own, never the service's (connecting
    with that one would take the service's session over), and clears the
    session it made.
    """
    client_id = f"edgemeta-doctor-{uuid.uuid4().hex[:8]}"
    answers: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with contextlib.suppress(Exception):
            answers.put(bool(getattr(flags, "session_present", False)))

    def connect_once(clean: bool, expiry: int) -> bool | None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls.enable:
            client.tls_set(
                ca_certs=config.tls.caFile or None,
                certfile=config.tls.certFile or None,
                keyfile=config.tls.keyFile or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = on_connect
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        try:
            client.connect(
                config.host, config.port, keepalive=30, clean_start=clean, properties=props
            )
        except (OSError, ssl.SSLError):
            return None
        client.loop_start()
        try:
            return answers.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            client.disconnect()
            client.loop_stop()

    try:
        if connect_once(True, 300) is None:
            return None
        return connect_once(False, 300)
    finally:
        connect_once(True, 0)
