"""The tools' MQTT client: short-lived, clean start, no Last Will, automatic acks.

Built on the service's own client module (``edgemeta.bus.MqttBus`` with
``persistent=False``): one paho wrapper for everything. The bus hands its
events to a queue; this class waits on them with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from ..bus import (
    BusEvent,
    Connected,
    Disconnected,
    Failed,
    Inbound,
    MqttBus,
    Published,
    Subscribed,
    SubscribeDone,
    Subscription,
)
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
    #: MQTT 5 user properties (empty on MQTT 3.1.1).
    properties: tuple[tuple[str, str], ...] = ()

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


#: Under ``<prefix>/``: topics each tool user may write and read (``<prefix>/tool/%u/#``).
TOOL_LEVEL = "tool"


def tool_topic(config: MqttConfig, prefix: str) -> str:
    """A fresh topic the tool writes and reads: ``<prefix>/tool/<username or cli>/<uuid>``
    (an end marker: see ``BrokerClient.retained``)."""
    return f"{prefix}/{TOOL_LEVEL}/{config.username or 'cli'}/{uuid.uuid4().hex}"


def reply_topic(config: MqttConfig, topics: Topics) -> str:
    """A fresh Response Topic: ``<prefix>/reply/<username or cli>/<uuid>`` (see mosquitto/acl)."""
    return f"{topics.prefix}/reply/{config.username or 'cli'}/{uuid.uuid4().hex}"


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
        self._closing = False
        #: Link changes for long-running tools: "lost: <why>" and "back".
        self.link_events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._messages: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._acks: dict[tuple[str, int], str] = {}
        self._up = False
        self._failed: str | None = None
        where = f"{config.host}:{config.port}"
        self._bus = self._connect(False, timeout)
        if self._failed is not None and "nsupported protocol version" in self._failed:
            # An MQTT 3.1.1-only broker (the MQTT listener of a NATS cluster,
            # deploy/nats/): the tools need no MQTT 5 property there except
            # Response Topics, which `request` then does without.
            self._bus.stop()
            self._failed = None
            self._bus = self._connect(True, timeout)
        if not (self._up or self._failed):
            self.close()
            raise BusError(f"no answer from the MQTT broker at {where} within {timeout:g} s")
        if self._failed is not None:
            self.close()
            reason = self._failed
            prefix = "broker refused the connection: "
            if reason.startswith(prefix):
                reason = (
                    f"the MQTT broker at {where} refused the connection: {reason[len(prefix) :]}"
                )
            raise BusError(reason)

    def _connect(self, mqtt311: bool, timeout: float) -> MqttBus:
        bus = MqttBus(
            self.config,
            subscriptions=[],
            status_topic=None,
            events=self._on_event,
            client_id=self.client_id,
            persistent=False,
            mqtt311=mqtt311,
        )
        bus.start()
        self._wait(lambda: True if (self._up or self._failed) else None, timeout)
        return bus

    @property
    def mqtt5(self) -> bool:
        return self._bus.mqtt5

    # -- events (the bus's network thread: never raise) ---------------------
    def _on_event(self, event: BusEvent) -> None:
        try:
            if isinstance(event, Inbound):
                self._messages.put(
                    Received(
                        event.topic,
                        event.payload,
                        event.retain,
                        event.response_topic,
                        event.correlation,
                        time.time(),
                        event.user_properties,
                    )
                )
                return
            with self._cond:
                if isinstance(event, Subscribed):
                    self._up = True
                elif isinstance(event, Failed):
                    self._failed = event.reason
                elif isinstance(event, Published):
                    self._acks[("pub", event.mid)] = event.refused
                elif isinstance(event, SubscribeDone):
                    self._acks[("sub", event.mid)] = event.refused
                elif isinstance(event, Disconnected):
                    if not self._closing and self._up:
                        self.link_events.put(f"lost: {event.reason}")
                elif isinstance(event, Connected) and event.session > 1:
                    self.link_events.put("back")
                self._cond.notify_all()
        except Exception:  # pragma: no cover - must not kill paho's thread
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

    def _ack(self, kind: str, mid: int, what: str) -> str:
        value = self._wait(lambda: self._acks.pop((kind, mid), None), self.timeout)
        if value is None:
            raise BusError(f"the broker did not acknowledge {what} within {self.timeout:g} s")
        return str(value)

    # -- API --------------------------------------------------------------
    def subscribe(self, topic_filter: str, *, qos: int = 1, retained: bool = True) -> None:
        """Subscribe and wait for the SUBACK; ``retained=False`` skips retained messages."""
        mid = self._bus.subscribe(Subscription(topic_filter, retained=retained), qos=qos)
        refused = self._ack("sub", mid, f"the subscription to {topic_filter!r}")
        if refused:
            raise BusError(f"the broker refused the subscription to {topic_filter!r}: {refused}")

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
        mid = self._bus.publish(
            topic,
            payload,
            qos,
            retain=retain,
            correlation=correlation,
            response_topic=response_topic,
        )
        if qos == 0:
            return
        refused = self._ack("pub", mid, f"the message to {topic!r}")
        if refused:
            raise BusError(f"the broker refused the message to {topic!r}: {refused}")

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
        self._bus.stop()

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
    probe = replace(config, sessionExpiry=300)

    def connect_once(persistent: bool) -> bool | None:
        answers: queue.SimpleQueue[BusEvent] = queue.SimpleQueue()
        bus = MqttBus(
            probe,
            subscriptions=[],
            status_topic=None,
            events=answers.put,
            client_id=client_id,
            persistent=persistent,
        )
        bus.start()
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = answers.get(timeout=left)
                except queue.Empty:
                    return None
                if isinstance(event, Connected):
                    return event.session_present
                if isinstance(event, Failed):
                    return None
            return None
        finally:
            bus.stop()

    try:
        if connect_once(True) is None:
            return None
        return connect_once(True)
    finally:
        connect_once(False)  # a clean start with no expiry ends the session it made
