"""The tools' MQTT client: short-lived, clean start, no Last Will, automatic acks.

Built on the service's own client module (``edgemeta.bus.MqttBus`` with
``persistent=False``): one paho wrapper for everything. The bus hands its
events to a queue; this class waits on them with deadlines.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from dataclasses import dataclass
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
from ..message import Message, decode
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
        self._acks: dict[tuple[str, int], str] = {}
        self._up = False
        self._failed: str | None = None
        self._bus = MqttBus(
            config,
            subscriptions=[],
            status_topic=None,
            events=self._on_event,
            client_id=self.client_id,
            persistent=False,
        )
        where = f"{config.host}:{config.port}"
        self._bus.start()
        if not self._wait(lambda: True if (self._up or self._failed) else None, timeout):
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
                elif isinstance(event, (Connected, Disconnected)):
                    pass
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
        self._bus.stop()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
