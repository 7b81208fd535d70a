"""Publishing many QoS-1 messages fast, with a bounded window of unacknowledged ones."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.client import QueuedClient, session_properties


class BurstPublisher(QueuedClient):
    """A paho client that publishes a sequence at QoS 1 keeping at most ``window`` in flight."""

    def __init__(self, host: str, port: int, *, window: int = 200, timeout: float = 10.0) -> None:
        super().__init__(host, port, f"burst-{uuid.uuid4().hex[:8]}", timeout=timeout, nodelay=True)
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._window = window
        with self._closing_on_error():
            self._connect(clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY)

    def publish_all(self, topic: str, payloads: Iterable[bytes], timeout: float = 60.0) -> int:
        """Publish every payload; returns how many the broker acknowledged."""
        deadline = time.monotonic() + timeout
        sent = acked = 0
        for payload in payloads:
            while sent - acked >= self._window:
                acked += self._next_ack(deadline)
            # Not checked: while the broker restarts, paho keeps the message
            # and sends it on the next connection.
            self._client.publish(topic, payload, qos=1)
            sent += 1
        while acked < sent:
            acked += self._next_ack(deadline)
        self._check_errors()
        return acked

    def _next_ack(self, deadline: float) -> int:
        remaining = max(0.0, deadline - time.monotonic())
        self._get(self._pubacks, remaining, "acknowledgement of the burst")
        return 1


class SessionObserver(QueuedClient):
    """A subscriber with a persistent session: it misses nothing while the broker restarts."""

    def __init__(self, host: str, port: int, topics: list[str], *, timeout: float = 10.0) -> None:
        super().__init__(host, port, f"observer-{uuid.uuid4().hex[:8]}", timeout=timeout)
        self._topics = topics
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        with self._closing_on_error():
            self._connect(clean_start=False, properties=session_properties(600))
            self._get(self._subacks, timeout, f"SUBACK for {topics}")

    def _connected(
        self, client: mqtt.Client, flags: mqtt.ConnectFlags, reason_code: ReasonCode
    ) -> tuple[ReasonCode, Any]:
        if not reason_code.is_failure and not flags.session_present:
            client.subscribe([(t, 1) for t in self._topics])
        return super()._connected(client, flags, reason_code)

    def collect(self, done: Any, timeout: float) -> list[mqtt.MQTTMessage]:
        """Messages received until ``done(messages)`` is true; fails after ``timeout``."""
        return self._collect(
            done, timeout, lambda got: f"condition not met in {timeout} s ({len(got)} messages)"
        )
