"""SPEC §1/§2 bad input: reported or answered with an error, and edgemeta keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.helpers import Edge, msg_id
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess

MAX_PAYLOAD = 4096
SHARED_CONFIG = {"limits": {"maxPayloadBytes": MAX_PAYLOAD}}


def good(ns: str, source: str = "edged") -> dict[str, Any]:
    return envelope("insert", f"{ns}/pod/p", source, {"a": 1})


def encode(message: Any) -> bytes:
    return json.dumps(message).encode()


def nothing_stored(edge: Edge, ns: str) -> None:
    assert edge.query(f"{ns}/pod") == []


# -- reported: nothing usable to answer --------------------------------------

REPORTED: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda ns: b'{"header": {"msg_id": "x"}, not json',
    "empty payload": lambda ns: b"",
    "JSON array": lambda ns: encode([good(ns)]),
    "JSON string": lambda ns: encode(json.dumps(good(ns))),
    "JSON number": lambda ns: b"42",
    "JSON null": lambda ns: b"null",
    "no route": lambda ns: encode({"header": good(ns)["header"], "content": 1}),
    "route not an object": lambda ns: encode({**good(ns), "route": "edged/meta/insert"}),
    "source not a string": lambda ns: encode(
        {**good(ns), "route": {**good(ns)["route"], "source": 5}}
    ),
    "no source": lambda ns: encode(
        {**good(ns), "route": {k: v for k, v in good(ns)["route"].items() if k != "source"}}
    ),
    "msg_id 5": lambda ns: encode({**good(ns), "header": {**good(ns)["header"], "msg_id": 5}}),
    'header "x"': lambda ns: encode({**good(ns), "header": "x"}),
    "header a list": lambda ns: encode({**good(ns), "header": [1]}),
    "unknown source with a bad field": lambda ns: encode(
        {**good(ns, "device-7"), "header": {**good(ns)["header"], "sync": "yes"}}
    ),
    "invalid UTF-8": lambda ns: encode(good(ns)).replace(b'"a"', b'"\xff\xfe"'),
    "NaN": lambda ns: encode(good(ns)).replace(b'{"a": 1}', b'{"a": NaN}'),
    "trailing garbage": lambda ns: encode(good(ns)) + b" }",
}


@pytest.mark.parametrize("case", list(REPORTED), ids=list(REPORTED))
def test_unanswerable_input_is_reported(shared: Edge, ns: str, case: str) -> None:
    payload = REPORTED[case](ns)
    shared.send_raw(payload)

    report = shared.report()

    assert report["payload"] == payload[:1024].decode("utf-8", errors="replace")
    assert report["truncated"] is (len(payload) > 1024)
    shared.probe.expect_none(
        f"{shared.prefix}/#",
        lambda r: (
            r.topic not in (shared.meta, shared.error_topic, f"{shared.meta}/status")
            and not r.topic.startswith(f"{shared.prefix}/state/")  # the state mirror
        ),
        within=0.1,
    )
    nothing_stored(shared, ns)


def test_report_of_invalid_utf8_uses_replacement_characters(shared: Edge, ns: str) -> None:
    shared.send_raw(b"\xff\xfe not text \xc3")

    report = shared.report()

    assert report["payload"] == "\ufffd\ufffd not text \ufffd"
    shared.served()


# -- answered with an error: msg_id and a known source are usable ----------------


def with_header(ns: str, **changes: Any) -> dict[str, Any]:
    message = good(ns)
    message["header"].update(changes)
    return message


def with_route(ns: str, **changes: Any) -> dict[str, Any]:
    message = good(ns)
    message["route"].update(changes)
    return message


def without(ns: str, field: str) -> dict[str, Any]:
    message = good(ns)
    del message["route"][field]
    return message


ANSWERED: dict[str, Callable[[str], dict[str, Any]]] = {
    'sync "yes"': lambda ns: with_header(ns, sync="yes"),
    "sync 1": lambda ns: with_header(ns, sync=1),
    'timestamp "now"': lambda ns: with_header(ns, timestamp="now"),
    "timestamp 1.5": lambda ns: with_header(ns, timestamp=1.5),
    "parent_msg_id 5": lambda ns: with_header(ns, parent_msg_id=5),
    "operation 7": lambda ns: with_route(ns, operation=7),
    "no operation": lambda ns: without(ns, "operation"),
    "resource 5": lambda ns: with_route(ns, resource=5),
    "no resource": lambda ns: without(ns, "resource"),
    "group 5": lambda ns: with_route(ns, group=5),
    "wildcard + in resource": lambda ns: with_route(ns, resource=f"{ns}/pod/+"),
    "wildcard # in resource": lambda ns: with_route(ns, resource=f"{ns}/pod/#"),
    "NUL in resource": lambda ns: with_route(ns, resource=f"{ns}/pod/a\u0000b"),
    "empty segment in resource": lambda ns: with_route(ns, resource=f"{ns}//p"),
    "empty resid": lambda ns: with_route(ns, resource=f"{ns}/pod/"),
    "leading slash": lambda ns: with_route(ns, resource=f"/{ns}/pod/p"),
    "no restype": lambda ns: with_route(ns, resource=ns),
}


@pytest.mark.parametrize("case", list(ANSWERED), ids=list(ANSWERED))
def test_bad_message_from_a_known_source_gets_an_error(shared: Edge, ns: str, case: str) -> None:
    message = ANSWERED[case](ns)
    shared.send_raw(encode(message))

    error = shared.probe.expect(
        shared.edged, lambda r: r.json["header"]["parent_msg_id"] == msg_id(message)
    )

    assert error.json["route"]["operation"] == "error"
    assert error.json["route"]["source"] == "metaManager"
    assert isinstance(error.json["content"], str) and error.json["content"]
    shared.not_forwarded(message, shared.edged, within=0.05)
    shared.not_forwarded(message, shared.hub, within=0.05)
    shared.no_report(within=0.05)
    nothing_stored(shared, ns)


def test_bad_message_with_a_response_topic_is_answered_there(shared: Edge, ns: str) -> None:
    message = with_header(ns, sync="yes")
    message["route"]["source"] = "device-7"
    reply_topic = f"{shared.prefix}/replies/{ns}"

    shared.send_raw(encode(message), response_topic=reply_topic, correlation_data=b"c")

    error = shared.probe.expect(
        reply_topic, lambda r: r.json["header"]["parent_msg_id"] == msg_id(message)
    )
    assert error.json["route"]["operation"] == "error"
    assert error.properties.correlation_data == b"c"
    shared.no_report(within=0.1)


# -- limits ---------------------------------------------------------------


def refused(edge: Edge, message: dict[str, Any], payload: bytes) -> None:
    """Reported, or answered with an error: never stored, never forwarded."""
    got = edge.probe.expect(
        predicate=lambda r: (
            r.topic == edge.error_topic or r.json["header"]["parent_msg_id"] == msg_id(message)
        )
    )
    if got.topic == edge.error_topic:
        assert got.json["truncated"] is (len(payload) > 1024)
        assert got.json["payload"] == payload[:1024].decode("utf-8", errors="replace")
    else:
        assert got.json["route"]["operation"] == "error", got.json
    edge.not_forwarded(message, edge.edged, within=0.1)


def test_payload_over_the_limit_is_refused(shared: Edge, ns: str) -> None:
    message = with_route(ns)
    message["content"] = {"blob": "x" * MAX_PAYLOAD}
    payload = encode(message)

    shared.send_raw(payload)

    refused(shared, message, payload)
    nothing_stored(shared, ns)


def test_payload_at_the_limit_is_accepted(shared: Edge, ns: str) -> None:
    message = with_route(ns)
    message["content"] = {"blob": ""}
    message["content"]["blob"] = "x" * (MAX_PAYLOAD - len(encode(message)))
    payload = encode(message)
    assert len(payload) == MAX_PAYLOAD

    shared.send_raw(payload)

    shared.ok(message, shared.edged)
    assert len(shared.query(f"{ns}/pod")) == 1


@pytest.mark.parametrize("depth", [100, 200_000])
def test_deep_nesting_is_refused(
    shared_service: EdgemetaProcess, broker: Broker, ns: str, depth: int
) -> None:
    message = with_route(ns)
    message["content"] = "HOLE"
    payload = encode(message).replace(b'"HOLE"', b"[" * depth + b"]" * depth)
    # Not listening on <prefix>/meta: the probe itself cannot decode the echo.
    with MqttProbe(broker.host, broker.port) as probe:
        edge = Edge(probe, shared_service.prefix, listen=("hub", "edged", "meta/error"))

        edge.send_raw(payload)

        refused(edge, message, payload)
        nothing_stored(edge, ns)


def test_moderate_nesting_is_accepted(shared: Edge, ns: str) -> None:
    message = with_route(ns)
    message["content"] = "HOLE"
    payload = encode(message).replace(b'"HOLE"', b"[" * 30 + b"]" * 30)

    shared.send_raw(payload)

    shared.ok(message, shared.edged)
    assert shared.query(f"{ns}/pod/p") == ["[" * 30 + "]" * 30]


# -- lenient ingest: blanks are filled in -------------------------------------


LENIENT: dict[str, Callable[[dict[str, Any]], None]] = {
    "no header": lambda m: m.pop("header"),
    "null header": lambda m: m.update(header=None),
    'msg_id ""': lambda m: m["header"].update(msg_id=""),
    "msg_id 0": lambda m: m["header"].update(msg_id=0),
    "msg_id null": lambda m: m["header"].update(msg_id=None),
    "no msg_id": lambda m: m["header"].pop("msg_id"),
    "timestamp 0": lambda m: m["header"].update(timestamp=0),
    'timestamp ""': lambda m: m["header"].update(timestamp=""),
    "no timestamp": lambda m: m["header"].pop("timestamp"),
}


@pytest.mark.parametrize("case", list(LENIENT), ids=list(LENIENT))
def test_blank_header_fields_are_filled_in(shared: Edge, ns: str, case: str) -> None:
    message = envelope("insert", f"{ns}/pod/p", "edgecontroller", {"a": 1})
    LENIENT[case](message)
    had_id = isinstance(message.get("header"), dict) and message["header"].get("msg_id") not in (
        None,
        "",
        0,
    )

    shared.send_raw(encode(message))

    forward = shared.probe.expect(
        shared.edged, lambda r: r.json["route"]["resource"] == f"{ns}/pod/p"
    )
    header = forward.json["header"]
    assert isinstance(header["msg_id"], str) and header["msg_id"]
    if had_id:
        assert header["msg_id"] == message["header"]["msg_id"]
    assert isinstance(header["timestamp"], int) and header["timestamp"] > 0
    ok = shared.probe.expect(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == header["msg_id"]
    )
    assert ok.json["content"] == "OK"
    assert shared.query(f"{ns}/pod/p") == ['{"a":1}']


def test_meta_topic_keeps_serving_after_all_of_it(shared: Edge, ns: str) -> None:
    for make in REPORTED.values():
        shared.send_raw(make(ns))
    for make_message in ANSWERED.values():
        shared.send_raw(encode(make_message(ns)))

    shared.insert(f"{ns}/pod/after", {"still": "serving"})
    assert shared.query(f"{ns}/pod") == ['{"still":"serving"}']
