"""Remote queries and volume requests as delivered messages (issue 10).

A reply is acknowledged only once its effect is durable, so a crash between
the two does not lose it; calls do not wait for a free thread; a late reply
does not overwrite a newer value.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support.helpers import Edge, msg_id, remote_query
from tests.support.mqtt import MqttProbe, Received, envelope

PATIENT = {"modules": {"metaManager": {"remoteQueryTimeout": 30, "volumeTimeout": 30}}}


def reply_to(edge: Edge, asked: Received, content: Any, source: str) -> dict[str, Any]:
    message = envelope(
        "response",
        asked.json["route"]["resource"],
        source,
        content,
        group="meta",
        parent_msg_id=msg_id(asked),
    )
    edge.send_raw(message)
    return message


def answer_of(edge: Edge, request: dict[str, Any], topic: str, timeout: float) -> Received:
    return edge.probe.expect(
        topic, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), timeout=timeout
    )


def test_a_query_reply_that_arrives_while_edgemeta_is_down_is_answered_and_stored(
    make_service: Any, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(**PATIENT)
    edge = Edge(probe, prefix)
    edge.connect()
    resource = "default/configmap/asked-before-crash"
    request = edge.send("query", resource, "edged")
    asked = remote_query(edge, request)

    service.kill()
    reply_to(edge, asked, {"data": 1}, "edgecontroller")
    service.start()

    got = answer_of(edge, request, edge.edged, timeout=15)
    assert got.json["route"]["operation"] == "response", got.json
    assert got.json["content"] == {"data": 1}, got.json
    assert edge.stored(resource) == '{"data":1}'


def test_a_volume_reply_that_arrives_while_edgemeta_is_down_is_answered(
    make_service: Any, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(**PATIENT)
    edge = Edge(probe, prefix)
    request = edge.send("createvolume", "default/volume/v1", "edgecontroller", {"volumeId": "v1"})
    asked = probe.expect(
        edge.edged,
        lambda r: (
            r.json["route"]["operation"] == "createvolume"
            and r.json["header"]["msg_id"] != msg_id(request)
        ),
    )

    service.kill()
    reply_to(edge, asked, {"created": True}, "edged")
    service.start()

    got = answer_of(edge, request, edge.hub, timeout=15)
    assert got.json["route"]["operation"] == "response", got.json
    assert got.json["content"] == {"created": True}, got.json


def test_300_remote_queries_are_all_sent_at_once(
    make_service: Any, probe: MqttProbe, prefix: str
) -> None:
    make_service(**PATIENT)
    edge = Edge(probe, prefix)
    edge.connect()
    requests = [edge.send("query", f"default/configmap/many-{i}", "edged") for i in range(300)]
    wanted = {r["route"]["resource"] for r in requests}
    sent: set[str] = set()
    deadline = time.monotonic() + 10
    while sent != wanted and time.monotonic() < deadline:
        try:
            got = probe.expect(
                edge.hub,
                lambda r: r.json["route"]["operation"] == "query",
                timeout=max(0.0, deadline - time.monotonic()),
            )
        except AssertionError:
            break
        sent.add(got.json["route"]["resource"])
    assert len(sent) == len(wanted), (
        f"only {len(sent)} of {len(wanted)} remote queries were published within 10 s"
    )


def test_a_late_query_reply_answers_the_requester_but_keeps_the_newer_value(
    make_service: Any, probe: MqttProbe, prefix: str
) -> None:
    make_service(**PATIENT)
    edge = Edge(probe, prefix)
    edge.connect()
    resource = "default/configmap/raced"
    request = edge.send("query", resource, "edged")
    asked = remote_query(edge, request)
    newer = edge.send("update", resource, "edgecontroller", {"v": 2})
    edge.ok(newer, edge.hub)

    reply_to(edge, asked, {"v": 1}, "edgecontroller")

    got = answer_of(edge, request, edge.edged, timeout=5)
    assert got.json["content"] == {"v": 1}, got.json
    assert edge.stored(resource) == '{"v":2}', "a late reply overwrote the newer value"
