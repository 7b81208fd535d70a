"""Edge to cloud: two edge brokers bridged to one cloud broker, MQTT clients only.

Three real Mosquitto processes on free loopback ports: the cloud broker from
mosquitto/cloud.conf and the edge brokers of `node-a` and `node-b` from
mosquitto/edge-bridge.conf, rendered by scripts/render-bridge-conf.sh.

"Nothing arrives" is shown by order, not by waiting: Mosquitto delivers the
messages of one topic path (publisher -> broker -> bridge -> broker ->
subscriber) in the order they were published, so once a marker published
after X has arrived, X would have arrived before it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bridge import (
    CLOUD_CONF,
    RENDER_SCRIPT,
    EdgeNode,
    SessionSubscriber,
    render_edge_conf,
)
from tests.support.broker import Broker
from tests.support.mqtt import MqttProbe, Received

NODES = ("node-a", "node-b")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Broker]:
    with Broker(CLOUD_CONF, tmp_dir=tmp_path / "cloud") as broker:
        yield broker


@pytest.fixture
def edges(cloud: Broker, tmp_path: Path) -> Iterator[dict[str, EdgeNode]]:
    """Both edge brokers, each with its bridge up in both directions."""
    nodes = {name: EdgeNode(name, cloud, tmp_path / name) for name in NODES}
    started: list[EdgeNode] = []
    try:
        for node in nodes.values():
            node.broker.start()
            started.append(node)
        for node in nodes.values():
            node.wait_linked(cloud)
        yield nodes
    finally:
        for node in reversed(started):
            node.broker.stop()


def token(label: str) -> bytes:
    return f"{label} {uuid.uuid4().hex}".encode()


def seen_until(probe: MqttProbe, topic: str, marker: bytes, timeout: float = 5.0) -> list[Received]:
    """Wait for `marker` on `topic`; return every other message the probe has received."""
    probe.expect(topic, lambda r: r.payload == marker, timeout=timeout)
    return probe.drain()


def test_hub_published_on_the_edge_reaches_the_cloud(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    a = edges["node-a"]
    payload = token("hub from node-a")
    with MqttProbe(cloud.host, cloud.port) as consumer, a.probe() as edged:
        consumer.subscribe("beehive/+/hub")
        edged.publish("beehive/node-a/hub", payload)

        got = consumer.expect("beehive/+/hub", lambda r: r.payload == payload)

    assert got.topic == "beehive/node-a/hub"
    assert got.qos == 1


def test_only_the_hub_topic_leaves_the_edge(cloud: Broker, edges: dict[str, EdgeNode]) -> None:
    a = edges["node-a"]
    secret = token("stays on node-a")
    marker = token("marker")
    local_topics = [
        "beehive/node-a/meta",
        "beehive/node-a/meta/status",
        "beehive/node-a/meta/error",
        "beehive/node-a/edged",
        "beehive/node-a/mesh",
        "beehive/node-a/func",
        "beehive/node-a/hub/sub",
        "beehive/node-a/meta/bridge/echo/heartbeat",
        "beehive/hub",
    ]
    with MqttProbe(cloud.host, cloud.port) as consumer, a.probe() as local:
        consumer.subscribe("#")
        for topic in local_topics:
            local.publish(topic, secret)
        local.publish("beehive/node-a/hub", marker)

        leaked = seen_until(consumer, "beehive/node-a/hub", marker)

    assert [r.topic for r in leaked if r.payload == secret] == []


def test_the_heartbeat_goes_out_and_its_copy_comes_back_once(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    a = edges["node-a"]
    beat = token("beat")
    with MqttProbe(cloud.host, cloud.port) as consumer, a.probe() as local:
        consumer.subscribe("beehive/node-a/#")
        local.subscribe("beehive/node-a/meta/bridge/#")
        local.publish("beehive/node-a/meta/bridge/heartbeat", beat, qos=0)

        at_cloud = consumer.expect("beehive/node-a/heartbeat", lambda r: r.payload == beat)
        back = local.expect(
            "beehive/node-a/meta/bridge/echo/heartbeat", lambda r: r.payload == beat
        )
        # No loop: the copy is not sent out again, and comes back once.
        consumer.expect_none("beehive/node-a/#", lambda r: r.payload == beat, within=1.0)
        local.expect_none(
            "beehive/node-a/meta/bridge/echo/heartbeat", lambda r: r.payload == beat, within=0.1
        )

    assert (at_cloud.qos, back.qos) == (0, 0)


def test_meta_published_on_the_cloud_reaches_its_node_only(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    a, b = edges["node-a"], edges["node-b"]
    request = token("request for node-a")
    marker = token("marker for node-b")
    with (
        MqttProbe(cloud.host, cloud.port) as controller,
        a.probe() as on_a,
        b.probe() as on_b,
    ):
        on_a.subscribe("#")
        on_b.subscribe("#")
        controller.publish("beehive/node-a/meta", request)

        got = on_a.expect("beehive/node-a/meta", lambda r: r.payload == request)
        controller.publish("beehive/node-b/meta", marker)
        seen_on_b = seen_until(on_b, "beehive/node-b/meta", marker)

    assert got.topic == "beehive/node-a/meta"
    assert got.qos == 1
    assert [r.topic for r in seen_on_b if r.payload == request] == []


def test_only_the_meta_topic_enters_the_edge(cloud: Broker, edges: dict[str, EdgeNode]) -> None:
    """The cloud cannot write node-a's other topics, its bridge state included."""
    a = edges["node-a"]
    forged = b"0"
    marker = token("marker")
    cloud_only_topics = [
        "beehive/node-a/hub",
        "beehive/node-a/edged",
        "beehive/node-a/meta/status",
        "beehive/node-a/meta/error",
        "beehive/node-a/meta/sub",
        "beehive/meta",
    ]
    with MqttProbe(cloud.host, cloud.port) as controller, a.probe() as on_a:
        on_a.subscribe("#")
        on_a.expect(a.state_topic, lambda r: r.payload == b"1" and r.retain)
        controller.publish(a.state_topic, forged)
        for topic in cloud_only_topics:
            controller.publish(topic, forged)
        controller.publish("beehive/node-a/meta", marker)

        seen = seen_until(on_a, "beehive/node-a/meta", marker)

    assert [r.topic for r in seen if r.payload == forged] == []


def test_node_b_traffic_never_shows_on_node_a(cloud: Broker, edges: dict[str, EdgeNode]) -> None:
    a, b = edges["node-a"], edges["node-b"]
    status = token("node-b status")
    request = token("request for node-b")
    marker = token("marker for node-a")
    with (
        MqttProbe(cloud.host, cloud.port) as cloud_side,
        a.probe() as on_a,
        b.probe() as on_b,
    ):
        on_a.subscribe("#")
        on_b.subscribe("beehive/node-b/meta")
        cloud_side.subscribe("beehive/node-b/hub")

        on_b.publish("beehive/node-b/hub", status)
        cloud_side.expect("beehive/node-b/hub", lambda r: r.payload == status)
        cloud_side.publish("beehive/node-b/meta", request)
        on_b.expect("beehive/node-b/meta", lambda r: r.payload == request)
        cloud_side.publish("beehive/node-a/meta", marker)

        seen_on_a = seen_until(on_a, "beehive/node-a/meta", marker)

    assert [r.topic for r in seen_on_a if r.payload in (status, request)] == []
    assert [r.topic for r in seen_on_a if r.topic.startswith("beehive/node-b/")] == []


def test_bridge_state_is_1_while_linked_and_0_after_the_cloud_stops(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    a = edges["node-a"]
    with a.probe() as watcher:
        watcher.subscribe(a.state_topic)
        linked = watcher.expect(a.state_topic)
        assert (linked.payload, linked.retain) == (b"1", True)

        cloud.stop()
        down = watcher.expect(a.state_topic, timeout=5)
        assert down.payload == b"0"

        with a.probe() as late:
            late.subscribe(a.state_topic)
            kept = late.expect(a.state_topic)
        assert (kept.payload, kept.retain) == (b"0", True)

        cloud.start()
        up = watcher.expect(a.state_topic, timeout=10)
        assert up.payload == b"1"


def test_bridge_state_stays_on_the_edge(cloud: Broker, edges: dict[str, EdgeNode]) -> None:
    """notifications_local_only: the cloud gets no state, retained or live."""
    marker = token("marker")
    with MqttProbe(cloud.host, cloud.port) as observer:
        observer.subscribe("#")
        observer.subscribe("$SYS/broker/connection/#")
        observer.publish("beehive/marker", marker)

        seen = seen_until(observer, "beehive/marker", marker)

    assert [r.topic for r in seen if r.topic.endswith("/state")] == []


def test_hub_messages_sent_while_the_cloud_is_down_arrive_in_order_after_it_returns(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    """The bridge queues QoS 1 while the link is down; QoS 0 is not queued.

    The cloud consumer has a persistent session on a cloud broker with
    persistence: its subscription survives the restart, so what the bridge
    flushes right after reconnecting is queued for it even before it is back.
    (A consumer that subscribes after the restart races the bridge's flush.)
    """
    a = edges["node-a"]
    hub = a.topic("hub")
    consumer_id = f"cloud-consumer-{uuid.uuid4().hex[:8]}"
    first = token("before the outage")
    during = [f"during the outage {i:03d}".encode() for i in range(50)]
    lost = token("qos 0 during the outage")
    last = token("after the outage")

    with SessionSubscriber(cloud.host, cloud.port, consumer_id, hub) as consumer:
        assert consumer.session_present is False
        with a.probe() as edged:
            edged.publish(hub, first)
        assert [m.payload for m in consumer.collect(1)] == [first]

    cloud.stop()
    a.wait_state(b"0")
    with a.probe() as edged:
        for payload in during[:25]:
            edged.publish(hub, payload, qos=1)
        edged.publish(hub, lost, qos=0)
        for payload in during[25:]:
            edged.publish(hub, payload, qos=1)
    cloud.start()

    with SessionSubscriber(cloud.host, cloud.port, consumer_id, hub) as consumer:
        assert consumer.session_present is True
        got = consumer.collect(len(during), timeout=15)
        assert [m.payload for m in got] == during
        assert {m.topic for m in got} == {hub}

        with a.probe() as edged:
            edged.publish(hub, last)
        assert [m.payload for m in consumer.collect(1)] == [last]
        assert consumer.pending() == []


def test_hub_queue_survives_a_restart_of_the_edge_broker(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    """local_cleansession false + persistence: the bridge's queue is on disk at a clean stop."""
    a = edges["node-a"]
    hub = a.topic("hub")
    consumer_id = f"cloud-consumer-{uuid.uuid4().hex[:8]}"
    during = [f"queued across an edge restart {i:03d}".encode() for i in range(20)]

    SessionSubscriber(cloud.host, cloud.port, consumer_id, hub).close()
    cloud.stop()
    a.wait_state(b"0")
    with a.probe() as edged:
        for payload in during:
            edged.publish(hub, payload)
    a.broker.restart()
    cloud.start()

    with SessionSubscriber(cloud.host, cloud.port, consumer_id, hub) as consumer:
        assert consumer.session_present is True
        got = consumer.collect(len(during), timeout=15)
    assert [m.payload for m in got] == during


def test_meta_messages_sent_while_the_edge_is_down_arrive_in_order_after_it_returns(
    cloud: Broker, edges: dict[str, EdgeNode]
) -> None:
    """cleansession false: the cloud queues `<prefix>/meta` for the bridge's session.

    The edge-side subscriber stands for edgemeta: a persistent session on the
    edge broker, which keeps it across the edge broker's restart, so what
    the bridge brings in before the subscriber is back waits for it.
    """
    a = edges["node-a"]
    meta = a.topic("meta")
    edgemeta_id = f"edgemeta-{uuid.uuid4().hex[:8]}"
    during = [f"request while node-a is down {i:03d}".encode() for i in range(30)]

    with SessionSubscriber(a.host, a.port, edgemeta_id, meta) as edgemeta:
        assert edgemeta.session_present is False
    a.broker.stop()
    with MqttProbe(cloud.host, cloud.port) as controller:
        for payload in during:
            controller.publish(meta, payload)
    a.broker.start()

    with SessionSubscriber(a.host, a.port, edgemeta_id, meta) as edgemeta:
        assert edgemeta.session_present is True
        got = edgemeta.collect(len(during), timeout=15)
    assert [m.payload for m in got] == during


def test_bridge_state_is_0_when_the_edge_starts_without_the_cloud(
    cloud: Broker, tmp_path: Path
) -> None:
    cloud.stop()
    c = EdgeNode("node-c", cloud, tmp_path / "node-c")
    with c.broker, c.probe() as watcher:
        watcher.subscribe(c.state_topic)
        offline = watcher.expect(c.state_topic)
        assert (offline.payload, offline.retain) == (b"0", True)

        cloud.start()
        assert watcher.expect(c.state_topic, timeout=10).payload == b"1"


def test_rendered_config_has_no_placeholder_left() -> None:
    text = render_edge_conf("node-x", "cloud.example", 8883, restart_timeout=None)
    assert "@" not in text
    for line in (
        "address cloud.example:8883",
        "topic hub out 1 beehive/node-x/ beehive/node-x/",
        "topic meta in 1 beehive/node-x/ beehive/node-x/",
        "topic heartbeat out 0 beehive/node-x/meta/bridge/ beehive/node-x/",
        "topic heartbeat in 0 beehive/node-x/meta/bridge/echo/ beehive/node-x/",
        "try_private false",
        "remote_clientid bridge-node-x",
        "local_clientid bridge-node-x-local",
        "notification_topic beehive/node-x/meta/bridge/state",
        "cleansession false",
        "notifications_local_only true",
    ):
        assert line in text.splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["node/a", "cloud", "1883"],
        ["node+", "cloud", "1883"],
        ["", "cloud", "1883"],
        ["node-a", "cloud", "0"],
        ["node-a", "cloud", "1883", "65536"],
        ["node-a", "cloud", "1883", "1883", "relative/dir"],
        ["node-a", "cloud"],
    ],
)
def test_render_script_refuses_bad_arguments(args: list[str]) -> None:
    done = subprocess.run(
        ["sh", str(RENDER_SCRIPT), *args], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr
