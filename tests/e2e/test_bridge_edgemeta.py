"""edgemeta beside a bridged edge broker: the cloud link comes and goes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge import CLOUD_CONF, EdgeNode, SessionSubscriber
from tests.support.broker import Broker
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess

NODES = ("node-a", "node-b")
FAST_QUERIES = {"remoteQueryTimeout": 5, "remoteQueryAttempts": 3}


class Node:
    """One edge node: its bridged broker, its edgemeta and a probe on the edge broker."""

    def __init__(self, edge: EdgeNode, tmp: Path) -> None:
        self.edge = edge
        self.prefix = edge.prefix
        self.service = EdgemetaProcess(
            edge.host,
            edge.port,
            tmp / f"edgemeta-{edge.node}",
            prefix=edge.prefix,
            overrides={"modules": {"metaManager": dict(FAST_QUERIES)}},
        )
        self.probe = edge.probe()

    def topic(self, group: str) -> str:
        return f"{self.prefix}/{group}"

    def answer_to(self, request: dict[str, Any], group: str = "edged", timeout: float = 5) -> Any:
        msg_id = request["header"]["msg_id"]
        return self.probe.expect(
            self.topic(group),
            lambda m: m.json["header"]["parent_msg_id"] == msg_id,
            timeout=timeout,
        ).json


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Broker]:
    with Broker(CLOUD_CONF, tmp_dir=tmp_path / "cloud") as broker:
        yield broker


@pytest.fixture
def nodes(cloud: Broker, tmp_path: Path) -> Iterator[dict[str, Node]]:
    started: list[Node] = []
    try:
        for name in NODES:
            edge = EdgeNode(name, cloud, tmp_path / name)
            edge.broker.start()
            edge.wait_linked(cloud)
            node = Node(edge, tmp_path)
            started.append(node)
            node.service.start()
            node.probe.subscribe(node.topic("edged"))
        yield {n.edge.node: n for n in started}
    finally:
        for node in reversed(started):
            node.probe.close()
            node.service.close()
            node.edge.broker.stop()


def consumer(cloud: Broker, topic: str) -> SessionSubscriber:
    return SessionSubscriber(cloud.host, cloud.port, f"cloud-{uuid.uuid4().hex[:8]}", topic)


def test_edged_update_reaches_the_cloud_and_a_cloud_insert_reaches_edgemeta(
    cloud: Broker, nodes: dict[str, Node]
) -> None:
    a = nodes["node-a"]
    with consumer(cloud, a.topic("hub")) as hub:
        update = envelope("update", "default/pod/web", "edged", content={"spec": 1})
        a.probe.publish(a.topic("meta"), update)
        assert a.answer_to(update)["content"] == "OK"
        forwarded = json.loads(hub.collect(1)[0].payload)
        assert forwarded["header"]["msg_id"] == update["header"]["msg_id"]

        insert = envelope("insert", "default/configmap/cfg", "edgecontroller", content={"k": "v"})
        with MqttProbe(cloud.host, cloud.port) as controller:
            controller.publish(a.topic("meta"), insert)
        to_edged = a.probe.expect(
            a.topic("edged"), lambda m: m.json["header"]["msg_id"] == insert["header"]["msg_id"]
        )
        assert to_edged.json["content"] == {"k": "v"}
        ok = json.loads(hub.collect(1)[0].payload)
        assert ok["header"]["parent_msg_id"] == insert["header"]["msg_id"]
        assert ok["content"] == "OK"


def test_link_loss_local_answers_flow_then_queued_messages_and_a_sync_arrive(
    cloud: Broker, nodes: dict[str, Node]
) -> None:
    a = nodes["node-a"]
    consumer_id = f"cloud-{uuid.uuid4().hex[:8]}"
    pod = envelope("insert", "default/pod/web", "edgecontroller", content={"name": "web"})
    cfg = envelope("insert", "default/configmap/cfg", "edgecontroller", content={"k": "v"})
    with SessionSubscriber(cloud.host, cloud.port, consumer_id, a.topic("hub")) as hub:
        with MqttProbe(cloud.host, cloud.port) as controller:
            controller.publish(a.topic("meta"), pod)
            controller.publish(a.topic("meta"), cfg)
        assert [json.loads(m.payload)["content"] for m in hub.collect(2)] == ["OK", "OK"]

        # A remote query is under way (the cloud will never answer it) when the link drops.
        pending = envelope("query", "default/secret/token", "edged")
        with MqttProbe(cloud.host, cloud.port) as announcer:
            announcer.publish(
                a.topic("meta"),
                envelope("publish", "node/connection", "edgehub", content="cloud_connected"),
            )
        a.probe.subscribe(a.topic("hub"))
        a.probe.publish(a.topic("meta"), pending)
        a.probe.expect(a.topic("hub"), lambda m: m.json["route"]["operation"] == "query", timeout=5)

    cloud.stop()
    a.edge.wait_state(b"0")
    failed = a.answer_to(pending, timeout=3)
    assert failed["route"]["operation"] == "error"
    assert "disconnected" in failed["content"]

    # While the cloud is away: local answers keep coming, pod statuses are stored only.
    query = envelope("query", "default/configmap/cfg", "edged")
    a.probe.publish(a.topic("meta"), query)
    assert a.answer_to(query, timeout=3)["content"] == ['{"k":"v"}']
    statuses = [
        envelope("update", "default/podstatus/web", "edged", content={"phase": p, "n": i})
        for i, p in enumerate(["Pending", "Running", "Failed", "Running"])
    ]
    queued = [
        envelope("update", f"default/pod/job-{i}", "edged", content={"i": i}) for i in range(20)
    ]
    for msg in statuses[:2] + queued[:10] + statuses[2:] + queued[10:]:
        a.probe.publish(a.topic("meta"), msg)
    for msg in statuses + queued:
        assert a.answer_to(msg)["content"] == "OK"

    cloud.start()
    with SessionSubscriber(cloud.host, cloud.port, consumer_id, a.topic("hub")) as hub:
        # the query's one attempt (sent before the outage), the queued updates, the sync
        got = [json.loads(m.payload) for m in hub.collect(len(queued) + 2, timeout=20)]
    assert [m["route"]["operation"] for m in got].count("query") == 1
    forwarded = [m for m in got if m["route"]["resource"].startswith("default/pod/")]
    assert [m["header"]["msg_id"] for m in forwarded] == [m["header"]["msg_id"] for m in queued]
    syncs = [m for m in got if m["route"]["resource"] == "default/podstatus"]
    assert len(syncs) == 1, "one pod status sync right after the link returns"
    assert syncs[0]["content"] == [statuses[-1]["content"]]
    assert not [m for m in got if m["route"]["resource"] == "default/podstatus/web"]


def test_two_nodes_never_see_each_other(cloud: Broker, nodes: dict[str, Node]) -> None:
    a, b = nodes["node-a"], nodes["node-b"]
    b.probe.subscribe(f"{b.prefix}/#")
    insert = envelope("insert", "default/pod/only-a", "edgecontroller", content={"n": "a"})
    with MqttProbe(cloud.host, cloud.port) as controller:
        controller.publish(a.topic("meta"), insert)
    a.probe.expect(
        a.topic("edged"), lambda m: m.json["header"]["msg_id"] == insert["header"]["msg_id"]
    )
    marker = envelope("insert", "default/pod/only-b", "edgecontroller", content={"n": "b"})
    with MqttProbe(cloud.host, cloud.port) as controller:
        controller.publish(b.topic("meta"), marker)
    b.probe.expect(
        b.topic("edged"), lambda m: m.json["header"]["msg_id"] == marker["header"]["msg_id"]
    )
    leaked = [m for m in b.probe.drain() if b"only-a" in m.payload]
    assert leaked == []
    query = envelope("query", "default/pod", "edged")
    b.probe.publish(b.topic("meta"), query)
    assert b.answer_to(query)["content"] == ['{"n":"b"}']
