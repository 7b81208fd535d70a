"""Runs inside an edge node's network namespace (tests/support/netns.py, NetnsAgent).

    python -m tests.support.netns_agent PORT TOPIC...

Subscribes to the TOPICs on 127.0.0.1:PORT of the namespace and prints one
JSON line per message: {"t": wall-clock seconds, "topic", "payload"}. Each
line read on stdin, {"topic", "payload"}, is published at QoS 1.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

_print_lock = threading.Lock()


def _emit(record: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    port, topics = int(argv[0]), argv[1:]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        for topic in topics:
            c.subscribe(topic, qos=1)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        text = msg.payload.decode("utf-8", errors="replace")
        _emit({"t": time.time(), "topic": msg.topic, "payload": text})

    client.on_connect = on_connect
    client.on_message = on_message
    deadline = time.monotonic() + 15
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    client.loop_start()
    for line in sys.stdin:
        order = json.loads(line)
        client.publish(order["topic"], json.dumps(order["payload"]), qos=1)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
