"""SPEC §3 remote query: asked of the cloud, with retries, while connected."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ServiceFactory
from tests.support.helpers import Edge, msg_id, remote_query
from tests.support.mqtt import MqttProbe, Received, envelope

TIMEOUT = 0.3
ATTEMPTS = 2
SHARED_CONFIG = {
    "modules": {"metaManager": {"remoteQueryTimeout": TIMEOUT, "remoteQueryAttempts": ATTEMPTS}}
}


@pytest.fixture
def cloud(shared: Edge) -> Edge:
    """The module's edgemeta, connected (tests may disconnect it to read the store)."""
    shared.connect("cloud_connected")
    return shared


def remote(edge: Edge, request: dict[str, Any], timeout: float = 5.0) -> Received:
    """The (next attempt of the) remote query edgemeta sends to the cloud for `request`."""
    got = remote_query(edge, request, timeout)
    assert got.json["header"]["sync"] is True, got.json
    assert got.json["route"]["source"] == request["route"]["source"], got.json
    assert got.json["content"] == request["content"], got.json
    return got


def no_remote(edge: Edge, resource: str, within: float = 0.2, but: str = "") -> None:
    """No remote query of `resource` (other than a retry of the one whose msg_id is `but`)."""
    edge.probe.expect_none(
        edge.hub,
        lambda r: (
            r.json["route"]["operation"] == "query"
            and r.json["route"]["resource"] == resource
            and r.json["header"]["msg_id"] != but
        ),
        within=within,
    )


def reply(
    edge: Edge,
    query: Received,
    content: Any,
    operation: str = "response",
    source: str = "edgecontroller",
) -> dict[str, Any]:
    """The cloud answers a remote query on `<prefix>/meta`."""
    message = envelope(
        operation,
        query.json["route"]["resource"],
        source,
        content,
        group="meta",
        parent_msg_id=msg_id(query),
    )
    edge.send_raw(message)
    return message


def relayed(edge: Edge, request: dict[str, Any], topic: str) -> Received:
    """What the requester of `request` gets (not necessarily from metaManager)."""
    return edge.probe.expect(topic, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request))


def test_hit_is_answered_from_the_store(cloud: Edge, ns: str) -> None:
    cloud.insert(f"{ns}/configmap/cfg", {"v": 1})
    request = cloud.send("query", f"{ns}/configmap/cfg", "edged")

    got = cloud.answer(request, cloud.edged)

    assert got.json["content"] == ['{"v":1}']
    no_remote(cloud, f"{ns}/configmap/cfg")


@pytest.mark.parametrize(
    "restype",
    ["configmap", "secret", "endpoints", "persistentvolume", "persistentvolumeclaim"],
)
def test_miss_asks_the_cloud_stores_and_forwards_its_answer(
    cloud: Edge, ns: str, restype: str
) -> None:
    resource = f"{ns}/{restype}/x"
    request = cloud.send("query", resource, "edged")
    query = remote(cloud, request)

    answer = reply(cloud, query, {"from": "cloud"})

    got = relayed(cloud, request, cloud.edged)
    # The cloud's message, forwarded with parent_msg_id set to the original query's id.
    expected = dict(answer, header=dict(answer["header"], parent_msg_id=msg_id(request)))
    assert got.json == expected
    # Stored: asked again, it is a hit.
    second = cloud.send("query", resource, "edged")
    assert cloud.answer(second, cloud.edged).json["content"] == ['{"from":"cloud"}']
    no_remote(cloud, resource, but=msg_id(query))


def test_the_reply_is_consumed_not_processed_as_a_response(cloud: Edge, ns: str) -> None:
    request = cloud.send("query", f"{ns}/configmap/x", "edged")
    query = remote(cloud, request)

    reply(cloud, query, {"v": 1})

    relayed(cloud, request, cloud.edged)
    # Processed as a cloud `response`, it would also be forwarded as is to edged.
    cloud.probe.expect_none(
        f"{cloud.prefix}/#",
        lambda r: r.json["header"]["parent_msg_id"] == msg_id(query) and r.topic != cloud.meta,
        within=0.3,
    )


@pytest.mark.parametrize("restype", ["node", "volumeattachment"])
def test_node_and_volumeattachment_always_ask_the_cloud(cloud: Edge, ns: str, restype: str) -> None:
    resource = f"{ns}/{restype}/n1"
    cloud.insert(resource, {"old": True})
    request = cloud.send("query", resource, "edged")

    query = remote(cloud, request)
    reply(cloud, query, {"new": True})

    assert relayed(cloud, request, cloud.edged).json["content"] == {"new": True}
    cloud.connect("cloud_disconnected")
    assert cloud.query(resource) == ['{"new":true}']


def test_query_without_resid_is_forwarded_only(cloud: Edge, ns: str) -> None:
    cloud.insert(f"{ns}/configmap/kept", {"k": 1})
    request = cloud.send("query", f"{ns}/configmap", "edged")
    query = remote(cloud, request)

    reply(cloud, query, [{"a": 1}, {"b": 2}])

    got = relayed(cloud, request, cloud.edged)
    assert got.json["content"] == [{"a": 1}, {"b": 2}]
    assert got.json["route"]["operation"] == "response"
    cloud.connect("cloud_disconnected")
    assert cloud.query(f"{ns}/configmap") == ['{"k":1}']


def test_no_reply_retries_with_the_same_msg_id_then_errors(cloud: Edge, ns: str) -> None:
    resource = f"{ns}/secret/s"
    request = cloud.send("query", resource, "edged")

    first = remote(cloud, request)
    t_first = time.monotonic()
    second = remote(cloud, request, timeout=3)
    t_second = time.monotonic()
    error = cloud.error(request, cloud.edged, timeout=3)

    assert second.json == first.json
    # One attempt waits remoteQueryTimeout, then min(0.5, remoteQueryTimeout) before the next.
    assert t_second - t_first >= TIMEOUT + 0.15
    assert error.json["header"]["parent_msg_id"] == msg_id(request)
    # Exactly remoteQueryAttempts attempts.
    no_remote(cloud, resource, within=2 * TIMEOUT + 0.2)
    cloud.connect("cloud_disconnected")
    assert cloud.query(resource) == []


def test_reply_to_a_later_attempt_is_accepted(cloud: Edge, ns: str) -> None:
    request = cloud.send("query", f"{ns}/configmap/late", "edged")
    remote(cloud, request)
    second = remote(cloud, request, timeout=3)

    reply(cloud, second, {"v": "second"})

    got = relayed(cloud, request, cloud.edged)
    assert got.json["route"]["operation"] == "response"
    assert got.json["content"] == {"v": "second"}
    cloud.probe.expect_none(
        cloud.edged, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.5
    )


def test_reply_after_the_query_ended_is_dropped(cloud: Edge, ns: str) -> None:
    request = cloud.send("query", f"{ns}/configmap/gone", "edged")
    query = remote(cloud, request)
    cloud.error(request, cloud.edged, timeout=3)

    late = reply(cloud, query, {"too": "late"})

    cloud.probe.expect_none(
        f"{cloud.prefix}/#",
        lambda r: (
            r.topic != cloud.meta
            and msg_id(late) in (r.json["header"]["msg_id"], r.json["header"]["parent_msg_id"])
        ),
        within=0.3,
    )
    cloud.no_report(within=0.05)
    cloud.connect("cloud_disconnected")
    assert cloud.query(f"{ns}/configmap/gone") == []


def test_error_reply_is_an_error_to_the_requester(cloud: Edge, ns: str) -> None:
    cloud.insert(f"{ns}/node/n1", {"kept": True})
    request = cloud.send("query", f"{ns}/node/n1", "edgemesh")
    query = remote(cloud, request)

    reply(cloud, query, "no such node", operation="error")

    error = cloud.error(request, cloud.mesh)
    assert error.json["header"]["parent_msg_id"] == msg_id(request)
    cloud.probe.expect_none(
        cloud.hub, lambda r: r.json["header"]["msg_id"] == msg_id(query), within=0.2
    )
    cloud.no_report(within=0.05)
    cloud.connect("cloud_disconnected")
    assert cloud.query(f"{ns}/node/n1") == ['{"kept":true}']


def test_the_main_loop_never_waits_for_a_remote_query(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    make_service(modules={"metaManager": {"remoteQueryTimeout": 5, "remoteQueryAttempts": 1}})
    edge = Edge(probe, prefix)
    edge.connect("cloud_connected")
    request = edge.send("query", "default/configmap/slow", "edged")
    query = remote(edge, request)

    # While the query waits for the cloud, other messages are served at once.
    started = time.monotonic()
    edge.insert("default/pod/meanwhile", {"a": 1})
    assert edge.query("default/pod/meanwhile") == ['{"a":1}']
    assert time.monotonic() - started < 2
    reply(edge, query, {"v": 1})
    assert relayed(edge, request, edge.edged).json["content"] == {"v": 1}


def test_pending_query_is_answered_with_an_error_on_stop(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(
        modules={"metaManager": {"remoteQueryTimeout": 30, "remoteQueryAttempts": 1}}
    )
    edge = Edge(probe, prefix)
    edge.connect("cloud_connected")
    request = edge.send("query", "default/secret/s", "edged")
    remote(edge, request)

    started = time.monotonic()
    assert service.stop() == 0

    assert time.monotonic() - started < 10
    edge.error(request, edge.edged, timeout=1)
