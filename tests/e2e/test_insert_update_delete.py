"""SPEC §3 insert, update, delete and response, through the broker."""

from __future__ import annotations

import pytest

from tests.support.helpers import Edge, compact, msg_id, read_db
from tests.support.service import EdgemetaProcess

POD = {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"nodeName": "n1"}}


# -- insert ---------------------------------------------------------------


def test_insert_stores_forwards_to_edged_and_answers_ok(shared: Edge, ns: str) -> None:
    request = shared.send("insert", f"{ns}/pod/nginx", "edgecontroller", POD)

    shared.forwarded(request, shared.edged)
    ok = shared.ok(request, shared.hub)

    header = ok.json["header"]
    assert header["msg_id"] not in ("", msg_id(request))
    assert isinstance(header["timestamp"], int) and header["timestamp"] > 0
    assert header["sync"] is False
    shared.not_forwarded(request, shared.mesh)
    assert shared.stored(f"{ns}/pod/nginx") == compact(POD)


def test_insert_forward_is_the_received_payload_byte_for_byte(shared: Edge, ns: str) -> None:
    # Odd spacing and key order: a forward is the received message, unchanged.
    rid = f"raw-{ns}"
    raw = (
        f'{{"route": {{"resource": "{ns}/pod/p",  "operation": "insert",'
        ' "source": "edgecontroller", "group": "meta"},'
        f' "header": {{"sync": false, "msg_id": "{rid}", "parent_msg_id": "", "timestamp": 17}},'
        ' "content": {"z": 1, "a": [1, 2]}}'
    ).encode()
    shared.send_raw(raw)

    got = shared.probe.expect(shared.edged, lambda r: r.json["header"]["msg_id"] == rid)

    assert got.payload == raw


@pytest.mark.parametrize("restype", ["service", "endpoints", "podlist"])
def test_insert_of_a_mesh_type_goes_to_edgemesh(shared: Edge, ns: str, restype: str) -> None:
    request = shared.send("insert", f"{ns}/{restype}/web", "edgecontroller", {"kind": restype})

    shared.forwarded(request, shared.mesh)
    shared.ok(request, shared.hub)
    shared.not_forwarded(request, shared.edged, within=0.1)


@pytest.mark.parametrize("restype", ["configmap", "node", "widget"])
def test_insert_of_other_types_goes_to_edged(shared: Edge, ns: str, restype: str) -> None:
    request = shared.send("insert", f"{ns}/{restype}/x", "edgecontroller", {"kind": restype})

    shared.forwarded(request, shared.edged)
    shared.ok(request, shared.hub)
    shared.not_forwarded(request, shared.mesh, within=0.1)


def test_insert_replaces_an_existing_key(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/configmap/cfg", {"v": 1})
    edge.insert("default/configmap/cfg", {"v": 2})

    assert edge.query("default/configmap/cfg") == ['{"v":2}']
    assert edge.query("default/configmap") == ['{"v":2}']
    assert service.stop() == 0
    assert read_db(service.db_path) == {
        "default/configmap/cfg": {
            "key": "default/configmap/cfg",
            "type": "configmap",
            "value": '{"v":2}',
        }
    }


def test_stored_value_is_compact_json_in_received_order_with_non_ascii(
    service: EdgemetaProcess, edge: Edge
) -> None:
    content = {"zeta": 1, "alpha": "héllo ✓", "list": [1, {"b": None, "a": True}], "f": 1.5}
    edge.insert("default/pod/order", content)
    edge.insert("default/pod/text", "not { json, kept as is")
    edge.insert("default/pod/jsontext", '{"a": 1}')

    expected = '{"zeta":1,"alpha":"héllo ✓","list":[1,{"b":null,"a":true}],"f":1.5}'
    assert edge.stored("default/pod/order") == expected
    assert edge.stored("default/pod/text") == "not { json, kept as is"
    # A JSON string is stored as its own text, not re-serialised.
    assert edge.stored("default/pod/jsontext") == '{"a": 1}'
    assert service.stop() == 0
    docs = read_db(service.db_path)
    assert docs["default/pod/order"] == {
        "key": "default/pod/order",
        "type": "pod",
        "value": expected,
    }
    assert docs["default/pod/text"]["value"] == "not { json, kept as is"
    assert docs["default/pod/jsontext"]["value"] == '{"a": 1}'


def test_insert_from_edged_is_answered_on_edgeds_topic(shared: Edge, ns: str) -> None:
    request = shared.send("insert", f"{ns}/pod/mine", "edged", {"a": 1})

    shared.forwarded(request, shared.edged)
    shared.ok(request, shared.edged)
    shared.probe.expect_none(
        shared.hub, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.2
    )


# -- update ---------------------------------------------------------------


def test_update_from_edged_stores_forwards_to_the_cloud_and_answers_edged(
    shared: Edge, ns: str
) -> None:
    request = shared.send("update", f"{ns}/podstatus/nginx", "edged", {"phase": "Running"})

    shared.forwarded(request, shared.hub)
    shared.ok(request, shared.edged)
    assert shared.stored(f"{ns}/podstatus/nginx") == '{"phase":"Running"}'


def test_update_from_edged_replaces_what_the_cloud_inserted(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/nodestatus/n1", {"ready": False})
    request = shared.send("update", f"{ns}/nodestatus/n1", "edged", {"ready": True})

    shared.forwarded(request, shared.hub)
    shared.ok(request, shared.edged)
    assert shared.query(f"{ns}/nodestatus") == ['{"ready":true}']


def test_update_of_an_equal_podstatus_is_only_answered(shared: Edge, ns: str) -> None:
    status = {"phase": "Running", "ip": "10.0.0.1"}
    first = shared.send("update", f"{ns}/podstatus/p", "edged", status)
    shared.forwarded(first, shared.hub)
    shared.ok(first, shared.edged)

    again = shared.send("update", f"{ns}/podstatus/p", "edged", status)

    shared.ok(again, shared.edged)
    shared.not_forwarded(again, shared.hub)


def test_podstatus_equality_compares_the_stored_texts(shared: Edge, ns: str) -> None:
    first = shared.send("update", f"{ns}/podstatus/p", "edged", {"a": 1, "b": 2})
    shared.ok(first, shared.edged)

    # The same object with its keys in another order is another text: a change.
    reordered = shared.send("update", f"{ns}/podstatus/p", "edged", {"b": 2, "a": 1})

    shared.forwarded(reordered, shared.hub)
    shared.ok(reordered, shared.edged)
    assert shared.stored(f"{ns}/podstatus/p") == '{"b":2,"a":1}'


def test_an_equal_update_of_another_type_is_still_forwarded(shared: Edge, ns: str) -> None:
    first = shared.send("update", f"{ns}/nodestatus/n", "edged", {"ready": True})
    shared.ok(first, shared.edged)
    again = shared.send("update", f"{ns}/nodestatus/n", "edged", {"ready": True})

    shared.forwarded(again, shared.hub)
    shared.ok(again, shared.edged)


@pytest.mark.parametrize(
    ("source", "restype", "target"),
    [
        ("edgecontroller", "pod", "edged"),
        ("websocket", "configmap", "edged"),
        ("edgehub", "service", "mesh"),
        ("controller", "endpoints", "mesh"),
    ],
)
def test_update_from_the_cloud_goes_to_edged_or_edgemesh(
    shared: Edge, ns: str, source: str, restype: str, target: str
) -> None:
    resource = f"{ns}/{restype}/obj"
    request = shared.send("update", resource, source, {"v": source})

    shared.forwarded(request, shared.topic(target))
    shared.ok(request, shared.hub)
    other = shared.mesh if target == "edged" else shared.edged
    shared.not_forwarded(request, other, within=0.1)
    assert shared.stored(resource) == compact({"v": source})


def test_update_from_edgemesh_is_an_error_and_stores_nothing(shared: Edge, ns: str) -> None:
    request = shared.send("update", f"{ns}/pod/x", "edgemesh", {"v": 1})

    shared.error(request, shared.mesh)
    shared.not_forwarded(request, shared.hub, within=0.1)
    shared.not_forwarded(request, shared.edged, within=0.05)
    assert shared.stored(f"{ns}/pod/x") is None


@pytest.mark.parametrize("source", ["device-7", "metaManager"])
def test_update_error_that_cannot_be_answered_is_reported(
    shared: Edge, ns: str, source: str
) -> None:
    # device-7 has no group; metaManager's answer would go to <prefix>/meta.
    request = shared.send("update", f"{ns}/pod/x", source, {"v": 1})

    report = shared.report()

    assert msg_id(request) in report["payload"]
    assert report["truncated"] is False
    shared.not_forwarded(request, shared.hub, within=0.1)
    shared.probe.expect_none(
        shared.meta, lambda r: r.json["header"]["parent_msg_id"] == msg_id(request), within=0.05
    )
    assert shared.stored(f"{ns}/pod/x") is None


# -- delete ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("restype", "target"),
    [("pod", "edged"), ("configmap", "edged"), ("service", "mesh"), ("endpoints", "mesh")],
)
def test_delete_removes_forwards_and_answers(
    shared: Edge, ns: str, restype: str, target: str
) -> None:
    resource = f"{ns}/{restype}/gone"
    shared.insert(resource, {"v": 1})
    shared.insert(f"{ns}/{restype}/kept", {"v": 2})

    request = shared.send("delete", resource, "edgecontroller")

    shared.forwarded(request, shared.topic(target))
    shared.ok(request, shared.hub)
    assert shared.stored(resource) is None
    assert shared.query(f"{ns}/{restype}") == ['{"v":2}']


def test_delete_of_a_missing_key_is_fine(shared: Edge, ns: str) -> None:
    request = shared.send("delete", f"{ns}/pod/never", "edgecontroller")

    shared.forwarded(request, shared.edged)
    shared.ok(request, shared.hub)
    shared.no_report(within=0.1)


def test_delete_reaches_the_database_file(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/secret/s1", {"k": "v"})
    edge.insert("default/secret/s2", {"k": "w"})
    request = edge.send("delete", "default/secret/s1", "edgecontroller")
    edge.ok(request, edge.hub)

    assert service.stop() == 0
    assert set(read_db(service.db_path)) == {"default/secret/s2"}


# -- response -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "restype", "target"),
    [("edgecontroller", "configmap", "edged"), ("websocket", "endpoints", "mesh")],
)
def test_response_from_the_cloud_is_stored_and_forwarded_never_answered(
    shared: Edge, ns: str, source: str, restype: str, target: str
) -> None:
    resource = f"{ns}/{restype}/r"
    request = shared.send("response", resource, source, {"from": "cloud"})

    shared.forwarded(request, shared.topic(target))
    shared.no_answer(request, within=0.2)
    assert shared.stored(resource) == '{"from":"cloud"}'


@pytest.mark.parametrize("source", ["edged", "edgefunction", "device-7"])
def test_response_from_anyone_else_goes_to_the_cloud_unstored(
    shared: Edge, ns: str, source: str
) -> None:
    request = shared.send("response", f"{ns}/pod/r", source, {"from": source})

    shared.forwarded(request, shared.hub)
    shared.no_answer(request, within=0.2)
    shared.no_report(within=0.05)
    assert shared.stored(f"{ns}/pod/r") is None


def test_namespaces_and_types_stay_apart(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("a/pod/x", 1)
    edge.insert("b/pod/x", 2)
    edge.insert("a/configmap/x", 3)

    assert edge.query("a/pod") == ["1"]
    assert edge.query("b/pod") == ["2"]
    assert edge.query("a/configmap") == ["3"]
    assert service.stop() == 0
    assert {k: (d["type"], d["value"]) for k, d in read_db(service.db_path).items()} == {
        "a/pod/x": ("pod", "1"),
        "b/pod/x": ("pod", "2"),
        "a/configmap/x": ("configmap", "3"),
    }
