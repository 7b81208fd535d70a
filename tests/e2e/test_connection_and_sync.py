"""SPEC §3 publish on node/connection, meta-internal-sync, edgeSite."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import ServiceFactory
from tests.support.helpers import Edge, msg_id
from tests.support.mqtt import MqttProbe, Received
from tests.support.service import EdgemetaProcess


def is_sync(r: Received, ns: str | None = None) -> bool:
    route = r.json["route"]
    return (
        route["operation"] == "update"
        and route["source"] == "metaManager"
        and (ns is None or route["resource"] == f"{ns}/podstatus")
    )


def expect_sync(edge: Edge, ns: str, timeout: float = 3.0) -> Received:
    got = edge.probe.expect(edge.hub, lambda r: is_sync(r, ns), timeout=timeout)
    assert got.json["route"]["group"] == "resource", got.json
    assert got.json["header"]["parent_msg_id"] == "", got.json
    assert isinstance(got.json["content"], list), got.json
    return got


def no_sync(edge: Edge, within: float = 0.3) -> None:
    edge.probe.expect_none(edge.hub, is_sync, within=within)


def same_items(got: list[Any], expected: list[Any]) -> bool:
    def key(v: Any) -> str:
        return json.dumps(v, sort_keys=True)

    return sorted(got, key=key) == sorted(expected, key=key)


def add_pod(edge: Edge, ns: str, name: str, status: Any) -> None:
    edge.insert(f"{ns}/pod/{name}", {"metadata": {"name": name}})
    edge.insert(f"{ns}/podstatus/{name}", status)


def asks_the_cloud(edge: Edge, resource: str) -> bool:
    """Whether a configmap miss is asked of the cloud (connected) or answered []."""
    request = edge.send("query", resource, "edged")
    got = edge.probe.expect(
        predicate=lambda r: (
            (
                r.topic == edge.hub
                and r.json["route"]["operation"] == "query"
                and r.json["route"]["resource"] == resource
                and r.json["header"]["msg_id"] != msg_id(request)
            )
            or (r.topic == edge.edged and r.json["header"]["parent_msg_id"] == msg_id(request))
        )
    )
    if got.topic == edge.hub:
        return True
    assert got.json["content"] == [], got.json
    return False


# -- node/connection ------------------------------------------------------


def test_connection_state_changes_are_not_answered(edge: Edge) -> None:
    connected = edge.connect("cloud_connected")
    assert asks_the_cloud(edge, "default/configmap/a")
    disconnected = edge.connect("cloud_disconnected")
    assert not asks_the_cloud(edge, "default/configmap/b")

    edge.no_answer(connected, within=0.05)
    edge.no_answer(disconnected, within=0.05)
    edge.no_report(within=0.05)


def test_bad_publish_is_an_error_and_leaves_the_state(edge: Edge) -> None:
    edge.connect("cloud_connected")

    bad_state = edge.connect("cloud_maybe")
    edge.error(bad_state, edge.hub)
    assert asks_the_cloud(edge, "default/configmap/a")

    other = edge.send("publish", "node/other", "edgehub", "cloud_disconnected")
    edge.error(other, edge.hub)
    assert asks_the_cloud(edge, "default/configmap/b")

    from_edged = edge.send("publish", "default/pod/x", "edged", "hello")
    edge.error(from_edged, edge.edged)
    assert asks_the_cloud(edge, "default/configmap/c")


# -- meta-internal-sync on a timer ----------------------------------------


def test_sync_runs_every_interval_first_one_interval_after_start(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    interval = 1.0
    make_service(modules={"metaManager": {"podStatusSyncInterval": interval}})
    started = time.monotonic()
    edge = Edge(probe, prefix)
    add_pod(edge, "default", "web", {"phase": "Running"})

    first = expect_sync(edge, "default", timeout=3 * interval)
    t_first = time.monotonic()
    expect_sync(edge, "default", timeout=3 * interval)
    t_second = time.monotonic()

    assert first.json["content"] == [{"phase": "Running"}]
    assert t_first - started >= 0.5 * interval
    assert t_second - t_first >= 0.5 * interval


def test_sync_sends_nothing_when_there_is_nothing(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    make_service(modules={"metaManager": {"podStatusSyncInterval": 0.2}})
    edge = Edge(probe, prefix)
    edge.insert("default/pod/no-status", {"a": 1})

    no_sync(edge, within=0.8)
    # The timer does run: a status added now is synced.
    edge.insert("default/podstatus/no-status", {"phase": "Pending"})
    assert expect_sync(edge, "default").json["content"] == [{"phase": "Pending"}]


# -- meta-internal-sync on demand -----------------------------------------


def test_sync_on_demand_one_message_per_namespace_orphans_removed(edge: Edge) -> None:
    add_pod(edge, "alpha", "a1", {"phase": "Running", "n": 1})
    add_pod(edge, "alpha", "a2", "not JSON text")
    add_pod(edge, "beta", "b1", [1, 2])
    edge.insert("alpha/podstatus/orphan", {"phase": "Gone"})
    edge.insert("gamma/podstatus/orphan", {"phase": "Gone"})

    request = edge.send("meta-internal-sync", "", "edged")

    alpha = expect_sync(edge, "alpha")
    beta = expect_sync(edge, "beta")
    assert same_items(alpha.json["content"], [{"phase": "Running", "n": 1}, "not JSON text"])
    assert beta.json["content"] == [[1, 2]]
    no_sync(edge, within=0.2)
    edge.no_answer(request, within=0.05)
    assert edge.query("alpha/podstatus/orphan") == []
    assert edge.query("gamma/podstatus") == []
    assert edge.query("alpha/podstatus") == ['{"phase":"Running","n":1}', "not JSON text"]


def test_sync_needs_no_resource_and_is_accepted_from_any_client(edge: Edge) -> None:
    add_pod(edge, "default", "web", {"phase": "Running"})
    message = {
        "header": {"msg_id": "sync-1", "timestamp": 1, "sync": False},
        "route": {"source": "cli", "operation": "meta-internal-sync"},
    }

    edge.send_raw(message)

    assert expect_sync(edge, "default").json["content"] == [{"phase": "Running"}]
    edge.no_report(within=0.05)


def test_sync_of_an_empty_store_sends_nothing(edge: Edge) -> None:
    edge.insert("default/pod/web", {"a": 1})
    edge.send("meta-internal-sync", "", "edged")

    no_sync(edge)
    edge.served()


# -- sync when the link comes up -------------------------------------------


def test_sync_at_once_when_connected_not_on_a_repeat(edge: Edge) -> None:
    add_pod(edge, "default", "web", {"phase": "Running"})

    edge.connect("cloud_connected")
    assert expect_sync(edge, "default").json["content"] == [{"phase": "Running"}]

    edge.connect("cloud_connected")
    no_sync(edge)

    edge.connect("cloud_disconnected")
    no_sync(edge, within=0.2)
    edge.connect("cloud_connected")
    expect_sync(edge, "default")


def test_podstatus_is_held_back_while_known_disconnected(edge: Edge) -> None:
    add_pod(edge, "default", "web", {"phase": "Pending"})
    edge.connect("cloud_disconnected")

    first = edge.send("update", "default/podstatus/web", "edged", {"phase": "Running"})
    edge.ok(first, edge.edged)
    latest = edge.send("update", "default/podstatus/web", "edged", {"phase": "Succeeded"})
    edge.ok(latest, edge.edged)
    other = edge.send("update", "default/nodestatus/n1", "edged", {"ready": True})
    edge.ok(other, edge.edged)

    edge.forwarded(other, edge.hub)
    edge.not_forwarded(first, edge.hub, within=0.05)
    edge.not_forwarded(latest, edge.hub, within=0.05)
    assert edge.query("default/podstatus/web") == ['{"phase":"Succeeded"}']
    # The sync sent when the link returns carries the latest status.
    edge.connect("cloud_connected")
    assert expect_sync(edge, "default").json["content"] == [{"phase": "Succeeded"}]
    # Connected again: a change is forwarded at once.
    after = edge.send("update", "default/podstatus/web", "edged", {"phase": "Failed"})
    edge.forwarded(after, edge.hub)


# -- edgeSite -------------------------------------------------------------


def test_edge_site_is_always_connected(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    service: EdgemetaProcess = make_service(modules={"metaManager": {"edgeSite": True}})
    edge = Edge(probe, prefix)
    assert service.is_running()
    add_pod(edge, "default", "web", {"phase": "Running"})

    assert asks_the_cloud(edge, "default/configmap/a")
    edge.connect("cloud_connected")
    no_sync(edge)
    edge.connect("cloud_disconnected")
    assert asks_the_cloud(edge, "default/configmap/b")
    status = edge.send("update", "default/podstatus/web", "edged", {"phase": "Failed"})
    edge.forwarded(status, edge.hub)
    edge.ok(status, edge.edged)
