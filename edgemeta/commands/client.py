"""The tools' MQTT client: short-lived, clean start, no Last Will, automatic acks.

The service's client (``edgemeta.bus``) owns a persistent session and the
status topic's Last Will; a tool must touch neither, so it has this small
client of its own. As in ``bus``, paho's callbacks only hand over into
queues, inside try/except, and paho's codes become BusError here.
"""

from __future__ import annotations

import contextlib
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
from ..message import Message, decode
from ..topics import Topics

#: CONNACK reason code of an MQTT 5 CONNECT to a broker that speaks 3.1.1 only.
_UNSUPPORTED_PROTOCOL = 132


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
        try:
            return decode(self.payload)
        except Exception:
            return None


def reply_topic(config: MqttConfig, topics: Topics) -> str:
    """A fresh Response Topic: ``<prefix>/reply/<username or cli>/<uuid>`` (see mosquitto/acl)."""
    return f"{topics.prefix}/reply/{config.username or 'cli'}/{uuid.uuid4().hex}"


class BrokerClient:
    """Connect on construction, then subscribe / publish / receive with deadlines."""

    def __init__(self, config: MqttConfig, *, name: str = "cli", timeout: float = 5.0) -> None:
        self.config = config
        self.timeout = timeout
        self.client_id = f"edgemeta-{name}-{uuid.uuid4().hex[:8]}"
        self._messages: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._connack: Any = None
        self._acks: dict[tuple[str, int], Any] = {}
        self._subscriptions: dict[str, SubscribeOptions] = {}
        self._disconnected = threading.Event()
        self.protocol = mqtt.MQTTv5
        self._client = self._connect(timeout)
        # Set by paho's callback during _connect: mypy cannot know.
        first: Any = self._connack
        if first.is_failure and first.value == _UNSUPPORTED_PROTOCOL:
            # An MQTT 3.1.1-only broker (the MQTT listener of a NATS cluster,
            # deploy/nats/): the tools need no MQTT 5 property there except
            # Response Topics, which `request` then does without.
            self.close()
            self.protocol = mqtt.MQTTv311
            self._connack = None
            self._client = self._connect(timeout)
        code: Any = self._connack
        where = f"{config.host}:{config.port}"
        if code.is_failure:
            self.close()
            raise BusError(f"the MQTT broker at {where} refused the connection: {code}")

    def _connect(self, timeout: float) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol
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
            if self.protocol == mqtt.MQTTv5:
                client.connect(config.host, config.port, keepalive=30, clean_start=True)
            else:
                client.connect(config.host, config.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BusError(f"cannot reach the MQTT broker at {where}: {exc}") from exc
        client.loop_start()
        if self._wait(lambda: self._connack, timeout) is None:
            self.close()
            raise BusError(f"no answer from the MQTT broker at {where} within {timeout:g} s")
        return client

    # -- paho callbacks (network thread: never raise) -----------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            if not rc.is_failure and self._connack is not None:
                # A clean start after a lost connection: subscribe again.
                for topic, options in list(self._subscriptions.items()):
                    if self.protocol == mqtt.MQTTv5:
                        client.subscribe(topic, options=options)
                    else:
                        client.subscribe(topic, qos=options.QoS)
            with self._cond:
                self._connack = rc
                self._cond.notify_all()
        except Exception:  # pragma: no cover - must not kill paho's thread
            pass

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._disconnected.set()

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
        if self.protocol == mqtt.MQTTv5:
            result, mid = self._client.subscribe(topic_filter, options=options)
        else:
            result, mid = self._client.subscribe(topic_filter, qos=qos)
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
        if self.protocol == mqtt.MQTTv5 and (response_topic is not None or correlation is not None):
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
        self, topic: str, message: Message, reply_to: str, timeout: float
    ) -> Received | None:
        """Publish ``message`` with a Response Topic and wait for its answer there."""
        self.subscribe(reply_to)
        correlation = uuid.uuid4().bytes
        self.publish(topic, message.encode(), response_topic=reply_to, correlation=correlation)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            got = self.receive(remaining)
            if got is None:
                break
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
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
