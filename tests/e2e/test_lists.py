"""SPEC §3 servicelist, endpointslist and podlist."""

from __future__ import annotations

import json

import pytest

from tests.support.helpers import Edge, compact


def items(ns: str, *names: str, kind: str = "Service") -> list[dict[str, object]]:
    return [
        {"kind": kind, "metadata": {"namespace": ns, "name": n}, "spec": {"port": i}}
        for i, n in enumerate(names)
    ]


@pytest.mark.parametrize("operation", ["update", "insert"])
@pytest.mark.parametrize(
    ("listtype", "itemtype"), [("servicelist", "service"), ("endpointslist", "endpoints")]
)
def test_list_items_are_stored_one_by_one_and_forwarded_to_edgemesh(
    shared: Edge, ns: str, operation: str, listtype: str, itemtype: str
) -> None:
    other = f"{ns}-b"
    content = [*items(ns, "web", "api"), *items(other, "db")]
    request = shared.send(operation, f"{ns}/{listtype}", "edgecontroller", content)

    shared.forwarded(request, shared.mesh)
    shared.ok(request, shared.hub)
    shared.not_forwarded(request, shared.edged, within=0.1)
    assert shared.query(f"{ns}/{itemtype}") == [compact(content[1]), compact(content[0])]
    assert shared.query(f"{other}/{itemtype}/db") == [compact(content[2])]
    # The list itself is not a stored resource.
    assert shared.query(f"{ns}/{listtype}") == []


def test_list_content_may_be_a_string_holding_the_array(shared: Edge, ns: str) -> None:
    content = items(ns, "web")
    request = shared.send("update", f"{ns}/servicelist", "edgecontroller", json.dumps(content))

    shared.forwarded(request, shared.mesh)
    shared.ok(request, shared.hub)
    assert shared.query(f"{ns}/service/web") == [compact(content[0])]


def test_a_list_item_replaces_the_stored_object(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/service/web", {"old": True})
    content = items(ns, "web")
    request = shared.send("update", f"{ns}/servicelist", "edgecontroller", content)

    shared.ok(request, shared.hub)
    assert shared.query(f"{ns}/service") == [compact(content[0])]


def test_an_empty_list_is_fine(shared: Edge, ns: str) -> None:
    request = shared.send("update", f"{ns}/endpointslist", "edgecontroller", [])

    shared.forwarded(request, shared.mesh)
    shared.ok(request, shared.hub)
    assert shared.query(f"{ns}/endpoints") == []


BAD_ITEMS = {
    "no metadata": {"kind": "Service"},
    "empty name": {"metadata": {"namespace": "x", "name": ""}},
    "empty namespace": {"metadata": {"namespace": "", "name": "n"}},
    "name not a string": {"metadata": {"namespace": "x", "name": 7}},
    "metadata not an object": {"metadata": "x/n"},
    "item not an object": "x/n",
    "item null": None,
}


@pytest.mark.parametrize("bad", list(BAD_ITEMS), ids=list(BAD_ITEMS))
def test_any_bad_item_is_an_error_and_nothing_is_stored(shared: Edge, ns: str, bad: str) -> None:
    good = items(ns, "first", "last")
    content = [good[0], BAD_ITEMS[bad], good[1]]
    request = shared.send("update", f"{ns}/servicelist", "edgecontroller", content)

    shared.error(request, shared.hub)
    shared.not_forwarded(request, shared.mesh)
    # Every item is checked first: not even the good first item is stored.
    assert shared.query(f"{ns}/service") == []


@pytest.mark.parametrize(
    "content",
    [{"metadata": {"namespace": "x", "name": "n"}}, "not json [", 5, None, '{"a": 1}'],
    ids=["object", "string-not-json", "number", "null", "string-holding-object"],
)
def test_list_content_that_is_not_an_array_is_an_error(
    shared: Edge, ns: str, content: object
) -> None:
    request = shared.send("insert", f"{ns}/endpointslist", "edgecontroller", content)

    shared.error(request, shared.hub)
    shared.not_forwarded(request, shared.mesh)
    assert shared.query(f"{ns}/endpoints") == []


def test_a_bad_list_keeps_what_was_stored_before(shared: Edge, ns: str) -> None:
    shared.insert(f"{ns}/service/web", {"v": 1})
    bad = [*items(ns, "web"), {"metadata": {"namespace": ns}}]
    request = shared.send("update", f"{ns}/servicelist", "edgecontroller", bad)

    shared.error(request, shared.hub)
    assert shared.query(f"{ns}/service") == ['{"v":1}']


@pytest.mark.parametrize("operation", ["update", "insert"])
def test_podlist_is_stored_whole_and_forwarded_to_edgemesh(
    shared: Edge, ns: str, operation: str
) -> None:
    content = items(ns, "p1", "p2", kind="Pod")
    request = shared.send(operation, f"{ns}/podlist/all", "edged", content)

    shared.forwarded(request, shared.mesh)
    shared.ok(request, shared.edged)
    shared.not_forwarded(request, shared.hub, within=0.1)
    assert shared.query(f"{ns}/podlist/all") == [compact(content)]
    # Its items are not stored as pods.
    assert shared.query(f"{ns}/pod") == []
