"""SPEC §3 createvolume, deletevolume, controllerpublishvolume, controllerunpublishvolume."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.helpers import Edge, msg_id
from tests.support.mqtt import Received, envelope

VOLUME_TIMEOUT = 0.5
SHARED_CONFIG = {"modules": {"metaManager": {"volumeTimeout": VOLUME_TIMEOUT}}}
OPERATIONS = [
    "createvolume",
    "deletevolume",
    "controllerpublishvolume",
    "controllerunpublishvolume",
]


def asked_of_edged(edge: Edge, request: dict[str, Any]) -> Received:
    """The request edgemeta sends edged for `request`."""
    got = edge.probe.expect(
        edge.edged,
        lambda r: (
            r.json["route"]["operation"] == request["route"]["operation"]
            and r.json["route"]["resource"] == request["route"]["resource"]
        ),
    )
    assert got.json["header"]["msg_id"] not in ("", msg_id(request)), got.json
    assert got.json["header"]["sync"] is True, got.json
    assert got.json["content"] == request["content"], got.json
    return got


def edged_answers(
    edge: Edge, asked: Received, content: Any, operation: str = "response"
) -> dict[str, Any]:
    message = envelope(
        operation,
        asked.json["route"]["resource"],
        "edged",
        content,
        group="meta",
        parent_msg_id=msg_id(asked),
    )
    edge.send_raw(message)
    return message


@pytest.mark.parametrize("operation", OPERATIONS)
def test_volume_request_is_relayed_to_edged_and_its_answer_to_the_cloud(
    shared: Edge, ns: str, operation: str
) -> None:
    request = shared.send(
        operation, f"{ns}/volume/v1", "edgecontroller", {"volumeId": "v1", "size": 1}
    )
    asked = asked_of_edged(shared, request)

    edged_answers(shared, asked, {"volumeId": "v1", "ok": True})

    got = shared.answer(request, shared.hub)
    assert got.json["content"] == {"volumeId": "v1", "ok": True}
    # edged's reply was consumed: not relayed as a response of its own.
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(asked), within=0.2
    )
    assert shared.query(f"{ns}/volume/v1") == []
    assert shared.query(f"{ns}/volume") == []


def test_error_reply_from_edged_is_an_error_to_the_cloud(shared: Edge, ns: str) -> None:
    request = shared.send("createvolume", f"{ns}/volume/v1", "edgecontroller", {"size": 1})
    asked = asked_of_edged(shared, request)

    edged_answers(shared, asked, "disk full", operation="error")

    shared.error(request, shared.hub)
    shared.no_report(within=0.1)
    assert shared.query(f"{ns}/volume/v1") == []


def test_no_reply_times_out_while_other_messages_keep_flowing(shared: Edge, ns: str) -> None:
    request = shared.send("deletevolume", f"{ns}/volume/v1", "edgecontroller", {"id": "v1"})
    asked_of_edged(shared, request)
    started = time.monotonic()

    shared.insert(f"{ns}/pod/meanwhile", {"a": 1})
    assert shared.query(f"{ns}/pod/meanwhile") == ['{"a":1}']
    assert time.monotonic() - started < VOLUME_TIMEOUT

    shared.error(request, shared.hub, timeout=3)
    assert time.monotonic() - started >= VOLUME_TIMEOUT - 0.1
    # Asked once only.
    shared.probe.expect_none(
        shared.edged, lambda r: r.json["route"]["operation"] == "deletevolume", within=0.2
    )


def test_reply_after_the_timeout_is_dropped(shared: Edge, ns: str) -> None:
    request = shared.send("createvolume", f"{ns}/volume/late", "edgecontroller", {"id": 1})
    asked = asked_of_edged(shared, request)
    shared.error(request, shared.hub, timeout=3)

    late = edged_answers(shared, asked, {"too": "late"})

    shared.probe.expect_none(
        f"{shared.prefix}/#",
        lambda r: (
            r.topic != shared.meta
            and msg_id(late) in (r.json["header"]["msg_id"], r.json["header"]["parent_msg_id"])
        ),
        within=0.3,
    )
    shared.no_report(within=0.05)


def test_volume_answer_follows_the_response_topic(shared: Edge, ns: str) -> None:
    reply_topic = f"{shared.prefix}/replies/{ns}"
    request = shared.send(
        "controllerpublishvolume",
        f"{ns}/volume/v1",
        "edgecontroller",
        {"node": "n1"},
        response_topic=reply_topic,
        correlation_data=b"vol-1",
    )
    asked = asked_of_edged(shared, request)

    edged_answers(shared, asked, {"published": True})

    got = shared.answer(request, reply_topic)
    assert got.json["content"] == {"published": True}
    assert got.properties.correlation_data == b"vol-1"
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.1
    )
