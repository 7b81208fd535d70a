"""SPEC §2 answers and reports: where they go, what they carry, what is never answered."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ServiceFactory
from tests.support.helpers import Edge, msg_id
from tests.support.mqtt import MqttProbe, envelope


def test_answer_carries_the_request_identity(shared: Edge, ns: str) -> None:
    request = shared.send(
        "insert", f"{ns}/pod/p", "edgecontroller", {"a": 1}, group="resource", parent_msg_id="p-0"
    )

    got = shared.ok(request, shared.hub)

    header, route = got.json["header"], got.json["route"]
    assert header["parent_msg_id"] == msg_id(request)
    assert header["msg_id"] != msg_id(request)
    assert route == {
        "source": "metaManager",
        "group": "resource",
        "operation": "response",
        "resource": f"{ns}/pod/p",
    }
    assert got.payload.count(b'"OK"') == 1


def test_answer_to_a_request_without_group_has_an_empty_group(shared: Edge, ns: str) -> None:
    message = envelope("insert", f"{ns}/pod/p", "edgecontroller", {"a": 1})
    del message["route"]["group"]
    shared.send_raw(message)

    got = shared.probe.expect(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(message)
    )

    assert got.json["route"]["group"] == ""
    assert got.json["content"] == "OK"


def test_error_answer_takes_the_request_id_not_its_parent(shared: Edge, ns: str) -> None:
    request = shared.send("frobnicate", f"{ns}/pod/p", "edged", {"a": 1}, parent_msg_id="upstream")

    error = shared.error(request, shared.edged)

    assert error.json["header"]["parent_msg_id"] == msg_id(request)
    shared.probe.expect_none(
        f"{shared.prefix}/#",
        lambda r: r.json["header"]["parent_msg_id"] == "upstream" and r.topic != shared.meta,
        within=0.2,
    )
    assert shared.query(f"{ns}/pod/p") == []


@pytest.mark.parametrize(("source", "group"), [("edgecontroller", "hub"), ("edgemesh", "mesh")])
def test_unknown_operation_is_an_error_to_the_requester(
    shared: Edge, ns: str, source: str, group: str
) -> None:
    request = shared.send("patch", f"{ns}/pod/p", source, {"a": 1})

    shared.error(request, shared.topic(group))
    shared.not_forwarded(request, shared.edged, within=0.1)


# -- MQTT 5 response topic -------------------------------------------------


def test_ok_goes_to_the_response_topic_with_the_correlation_data(shared: Edge, ns: str) -> None:
    reply_topic = f"{shared.prefix}/replies/{ns}"
    request = shared.send(
        "insert",
        f"{ns}/pod/p",
        "edgecontroller",
        {"a": 1},
        response_topic=reply_topic,
        correlation_data=b"\x00corr\xff",
    )

    got = shared.ok(request, reply_topic)

    assert got.properties.correlation_data == b"\x00corr\xff"
    shared.forwarded(request, shared.edged)
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.2
    )


def test_query_and_error_answers_follow_the_response_topic(shared: Edge, ns: str) -> None:
    reply_topic = f"{shared.prefix}/replies/{ns}"
    shared.insert(f"{ns}/pod/p", {"a": 1})
    query = shared.send(
        "query", f"{ns}/pod/p", "edged", response_topic=reply_topic, correlation_data=b"q"
    )
    bad = shared.send(
        "nope", f"{ns}/pod/p", "edged", response_topic=reply_topic, correlation_data=b"e"
    )

    answer = shared.answer(query, reply_topic)
    error = shared.error(bad, reply_topic)

    assert answer.json["content"] == ['{"a":1}']
    assert answer.properties.correlation_data == b"q"
    assert error.properties.correlation_data == b"e"
    shared.probe.expect_none(
        shared.edged,
        lambda r: r.json["header"]["parent_msg_id"] in (msg_id(query), msg_id(bad)),
        within=0.2,
    )


def test_response_topic_without_correlation_data(shared: Edge, ns: str) -> None:
    reply_topic = f"{shared.prefix}/replies/{ns}"
    request = shared.send("delete", f"{ns}/pod/p", "edgecontroller", response_topic=reply_topic)

    got = shared.ok(request, reply_topic)

    assert got.properties.correlation_data is None


def test_unknown_source_is_answered_on_its_response_topic(shared: Edge, ns: str) -> None:
    reply_topic = f"{shared.prefix}/replies/{ns}"
    request = shared.send("insert", f"{ns}/pod/p", "device-7", {"a": 1}, response_topic=reply_topic)

    shared.ok(request, reply_topic)
    shared.no_report(within=0.1)


def test_remote_query_reply_follows_the_response_topic(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    make_service(modules={"metaManager": {"remoteQueryTimeout": 5, "remoteQueryAttempts": 1}})
    edge = Edge(probe, prefix)
    edge.connect("cloud_connected")
    reply_topic = f"{prefix}/replies/q"
    request = edge.send(
        "query", "default/secret/s", "edged", response_topic=reply_topic, correlation_data=b"rq"
    )
    asked = edge.probe.expect(edge.hub, lambda r: r.json["route"]["operation"] == "query")

    edge.send_raw(
        envelope("response", "default/secret/s", "edgecontroller", "v", parent_msg_id=msg_id(asked))
    )

    got = edge.probe.expect(
        reply_topic, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request)
    )
    assert got.properties.correlation_data == b"rq"
    assert got.json["content"] == "v"
    edge.probe.expect_none(
        edge.edged, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.2
    )


# -- what cannot be answered is reported ------------------------------------


def test_unknown_source_is_processed_and_its_answer_reported(shared: Edge, ns: str) -> None:
    request = shared.send("insert", f"{ns}/pod/p", "device-7", {"a": 1})

    report = shared.report()

    assert msg_id(request) in report["payload"]
    assert report["truncated"] is False
    # Otherwise processed as its row says.
    shared.forwarded(request, shared.edged)
    assert shared.query(f"{ns}/pod/p") == ['{"a":1}']


def test_answers_never_go_into_the_meta_topic(shared: Edge, ns: str) -> None:
    as_meta = shared.send("insert", f"{ns}/pod/a", "metaManager", {"a": 1})
    to_meta = shared.send(
        "insert", f"{ns}/pod/b", "edgecontroller", {"b": 1}, response_topic=shared.meta
    )

    first = shared.report()
    second = shared.report()

    payloads = first["payload"] + second["payload"]
    assert msg_id(as_meta) in payloads and msg_id(to_meta) in payloads
    shared.probe.expect_none(
        shared.meta,
        lambda r: r.json["header"]["parent_msg_id"] in (msg_id(as_meta), msg_id(to_meta)),
        within=0.2,
    )
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(to_meta), within=0.05
    )
    # Both were processed all the same.
    assert shared.query(f"{ns}/pod") == ['{"a":1}', '{"b":1}']


def test_report_payload_is_the_first_1024_bytes(shared: Edge, ns: str) -> None:
    request = shared.send("insert", f"{ns}/pod/big", "device-7", {"blob": "é" * 2000})

    report = shared.report()

    # The payload is the received request (the answer "OK" would not need truncating).
    sent = json.dumps(request, ensure_ascii=False).encode()
    assert report["truncated"] is True
    assert report["payload"] == sent[:1024].decode("utf-8", errors="replace")


# -- never answered --------------------------------------------------------


def test_keepalive_is_ignored(shared: Edge, ns: str) -> None:
    request = shared.send("keepalive", f"{ns}/pod/p", "edgehub", "ping")

    shared.no_answer(request)
    shared.no_report(within=0.05)
    shared.probe.expect_none(
        f"{shared.prefix}/#",
        lambda r: r.topic != shared.meta and r.json["header"]["msg_id"] == msg_id(request),
        within=0.05,
    )
    assert shared.query(f"{ns}/pod/p") == []


def test_unsolicited_error_is_reported_not_answered(shared: Edge, ns: str) -> None:
    request = shared.send(
        "error", f"{ns}/pod/p", "edgecontroller", "boom", parent_msg_id="nobody-asked"
    )

    report = shared.report()

    assert msg_id(request) in report["payload"]
    shared.no_answer(request, within=0.1)
    shared.not_forwarded(request, shared.edged, within=0.05)
    assert shared.query(f"{ns}/pod/p") == []


@pytest.mark.parametrize("operation", ["response", "error"])
def test_a_bad_response_or_error_is_reported_never_answered(
    shared: Edge, ns: str, operation: str
) -> None:
    message = envelope(operation, f"{ns}/pod/p", "edged", "x")
    message["header"]["sync"] = "yes"
    shared.send_raw(message)

    report = shared.report()

    assert msg_id(message) in report["payload"]
    shared.no_answer(message, within=0.2)
