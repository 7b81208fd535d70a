"""A stand-in for a bridge that carries edgemeta's heartbeat (edgemeta.heartbeat).

Every beat edgemeta publishes on `<prefix>/meta/bridge/heartbeat` comes back
on `<prefix>/meta/bridge/echo/heartbeat` while `echoing` is set, as the
cloud broker's copy does through a bridge rendered from the shipped
templates. Clearing `echoing` is a link that died silently.
"""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt

from tests.support.client import QueuedClient


def heartbeat_topic(prefix: str) -> str:
    return f"{prefix}/meta/bridge/heartbeat"


def echo_topic(prefix: str) -> str:
    return f"{prefix}/meta/bridge/echo/heartbeat"


class HeartbeatEcho(QueuedClient):
    def __init__(self, host: str, port: int, prefix: str, *, timeout: float = 5.0) -> None:
        super().__init__(host, port, f"echo-{uuid.uuid4().hex[:8]}", timeout=timeout, nodelay=True)
        self.prefix = prefix
        self.echoing = threading.Event()
        self.echoing.set()
        with self._closing_on_error():
            self._connect()
            self._subscribe(heartbeat_topic(prefix), 0, timeout)

    def _decode(self, message: mqtt.MQTTMessage) -> bytes:
        """Runs on paho's thread (errors go to the test through QueuedClient)."""
        payload = bytes(message.payload)
        if self.echoing.is_set():
            self._client.publish(echo_topic(self.prefix), payload, qos=0)
        return payload

    def beats(self, count: int, timeout: float) -> list[bytes]:
        """The next `count` beats edgemeta sends (echoed or not)."""

        def failure(got: list[bytes]) -> str:
            return f"{len(got)} of {count} heartbeats within {timeout} s: {got!r}"

        return self._collect(lambda got: len(got) >= count, timeout, failure)
