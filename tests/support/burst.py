"""Publishing many QoS-1 messages fast, with a bounded window of unacknowledged ones."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class BurstPublisher:
    """A paho client that publishes a sequence at QoS 1 keeping at most ``window`` in flight."""

    def __init__(self, host: str, port: int, *, window: int = 200, timeout: float = 10.0) -> None:
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._errors: list[BaseException] = []
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"burst-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client
        self._window = window
        client.connect(host, port, keepalive=30)
        client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise AssertionError(f"no CONNACK from {host}:{port}")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            sock = client.socket()
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connected.set()
        except Exception as exc:
            self._errors.append(exc)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self._acked.put(mid)

    def publish_all(self, topic: str, payloads: Iterable[bytes], timeout: float = 60.0) -> int:
        """Publish every payload; returns how many the broker acknowledged."""
        deadline = time.monotonic() + timeout
        sent = acked = 0
        for payload in payloads:
            while sent - acked >= self._window:
                acked += self._wait_ack(deadline)
            self._client.publish(topic, payload, qos=1)
            sent += 1
        while acked < sent:
            acked += self._wait_ack(deadline)
        if self._errors:
            raise self._errors[0]
        return acked

    def _wait_ack(self, deadline: float) -> int:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the broker did not acknowledge the burst in time")
        try:
            self._acked.get(timeout=left)
        except queue.Empty:
            raise AssertionError("the broker did not acknowledge the burst in time") from None
        return 1

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # see MqttProbe.close

    def __enter__(self) -> BurstPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SessionObserver:
    """A subscriber with a persistent session: it misses nothing while the broker restarts."""

    def __init__(self, host: str, port: int, topics: list[str], *, timeout: float = 10.0) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self._topics = topics
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect(host, port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(timeout):
            self.close()
            raise AssertionError("observer could not subscribe")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not rc.is_failure and not flags.session_present:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def collect(self, done: Any, timeout: float) -> list[mqtt.MQTTMessage]:
        """Messages received until ``done(messages)`` is true; fails after ``timeout``."""
        got: list[mqtt.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout} s ({len(got)} messages)")
            try:
                got.append(self.messages.get(timeout=min(left, 0.5)))
            except queue.Empty:
                continue
        return got

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)  # see MqttProbe.close

    def __enter__(self) -> SessionObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
