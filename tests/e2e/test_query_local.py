"""SPEC §3 query answered from the store."""

from __future__ import annotations

import pytest

from tests.support.helpers import Edge, msg_id
from tests.support.service import EdgemetaProcess


def test_query_by_key_answers_the_stored_value(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/pod/web", {"spec": {"x": "é"}})
    request = shared.send("query", f"{ns}/pod/web", "edged")

    got = shared.answer(request, shared.edged)

    assert got.json["content"] == ['{"spec":{"x":"é"}}']
    assert got.json["header"]["msg_id"] != msg_id(request)
    assert got.json["route"]["source"] == "metaManager"
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["route"]["operation"] == "query", within=0.2
    )


def test_query_of_a_missing_key_answers_an_empty_array(shared: Edge, ns: str) -> None:
    request = shared.send("query", f"{ns}/pod/none", "edged")

    got = shared.answer(request, shared.edged)

    assert got.json["content"] == []


def test_query_without_resid_lists_the_namespace_in_code_point_order(shared: Edge, ns: str) -> None:
    for name, value in [("b", "2"), ("é", "4"), ("B", "0"), ("a", "1"), ("a0", "1.5")]:
        shared.insert(f"{ns}/pod/{name}", value)
    shared.insert(f"{ns}-other/pod/a", "other namespace")
    shared.insert(f"{ns}/configmap/a", "other type")

    assert shared.query(f"{ns}/pod") == ["0", "1", "1.5", "2", "4"]


def test_query_without_resid_of_nothing_answers_an_empty_array(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/pod/a", "1")

    assert shared.query(f"{ns}/service") == []
    assert shared.query(f"{ns}-empty/pod") == []


def test_query_is_answered_to_the_requesters_group(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/service/web", {"v": 1})

    for source, group in [("edgemesh", "mesh"), ("edgefunction", "func"), ("websocket", "hub")]:
        request = shared.send("query", f"{ns}/service/web", source)
        got = shared.answer(request, shared.topic(group))
        assert got.json["content"] == ['{"v":1}']


def test_stored_strings_come_back_as_stored(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/secret/s", "raw text, not JSON")

    assert shared.query(f"{ns}/secret/s") == ["raw text, not JSON"]


@pytest.mark.parametrize(
    "restype",
    [
        "configmap",
        "secret",
        "endpoints",
        "persistentvolume",
        "persistentvolumeclaim",
        "volumeattachment",
        "node",
    ],
)
def test_remote_types_are_answered_locally_while_the_link_state_is_unknown(
    shared: Edge, ns: str, restype: str
) -> None:
    shared.insert(f"{ns}/{restype}/hit", {"t": restype})

    assert shared.query(f"{ns}/{restype}/hit") == [f'{{"t":"{restype}"}}']
    assert shared.query(f"{ns}/{restype}/miss") == []
    assert shared.query(f"{ns}/{restype}") == [f'{{"t":"{restype}"}}']
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["route"]["operation"] == "query", within=0.2
    )


def test_remote_types_are_answered_locally_while_disconnected(
    service: EdgemetaProcess, edge: Edge
) -> None:
    edge.insert("default/node/n1", {"n": 1})
    edge.insert("default/configmap/c", {"c": 1})
    edge.connect("cloud_connected")
    edge.connect("cloud_disconnected")

    assert edge.query("default/node/n1") == ['{"n":1}']
    assert edge.query("default/configmap/miss") == []
    assert edge.query("default/configmap") == ['{"c":1}']
    edge.probe.expect_none(edge.hub, lambda r: r.json["route"]["operation"] == "query", within=0.2)
