"""The baseline: a bare forwarder with paho-mqtt 2.x.

Subscribes to ``<prefix>/meta`` at QoS 1, decodes each message's JSON and
republishes it to ``<prefix>/hub`` at QoS 1. It stores nothing and answers
nothing: whatever edgemeta does beyond this is its own cost. Like edgemeta it
speaks MQTT 5 with a Receive Maximum of 1000, allows 1000 outgoing messages
in flight and sets TCP_NODELAY. Prints ``READY`` once subscribed; stops on
SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paho echo: <prefix>/meta -> <prefix>/hub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    source = f"{args.prefix}/meta"
    sink = f"{args.prefix}/hub"

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"echo-{args.prefix}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe(source, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        print("READY", flush=True)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        c.publish(sink, json.dumps(json.loads(msg.payload)), qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda signum, frame: client.disconnect())
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 1000
    client.connect(args.host, args.port, keepalive=60, clean_start=True, properties=props)
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
