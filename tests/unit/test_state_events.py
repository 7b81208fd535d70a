"""The pure parts of reading the state mirror: events, formats, the watch argument."""

from __future__ import annotations

import json

import pytest
import yaml

from edgemeta.commands.client import Received
from edgemeta.commands.common import CommandError
from edgemeta.commands.listing import render, render_value
from edgemeta.commands.mirror_reader import StateObject, state_filter, state_object
from edgemeta.commands.state_events import EventColumns, EventStream, event_json
from edgemeta.commands.watch import WatchTarget, watch_target


def obj(
    key: str, revision: int | None, payload: bytes = b"{}", retained: bool = False
) -> StateObject:
    return StateObject(key, key.split("/")[1], revision, payload, retained)


def kinds(stream: EventStream, *objects: StateObject) -> list[str | None]:
    out = []
    for o in objects:
        event = stream.classify(o)
        out.append(None if event is None else event.kind)
    return out


def test_snapshot_is_added_then_modified_and_deleted() -> None:
    stream = EventStream()
    assert kinds(
        stream,
        obj("d/pod/a", 3, retained=True),
        obj("d/pod/a", 5, b'{"v":2}'),
        obj("d/pod/b", 6),
        obj("d/pod/a", 7, b""),
        obj("d/pod/a", 8),
    ) == ["ADDED", "MODIFIED", "ADDED", "DELETED", "ADDED"]


def test_a_resent_snapshot_and_older_news_are_no_events() -> None:
    stream = EventStream()
    stream.classify(obj("d/pod/a", 5, retained=True))
    assert kinds(stream, obj("d/pod/a", 5, retained=True), obj("d/pod/a", 4)) == [None, None]
    assert kinds(stream, obj("d/pod/a", 6, b'{"x":1}', retained=True)) == ["MODIFIED"]


def test_without_revisions_a_resent_copy_is_no_event() -> None:
    stream = EventStream()
    stream.classify(obj("d/pod/a", None, b"1", retained=True))
    assert kinds(
        stream,
        obj("d/pod/a", None, b"1", retained=True),
        obj("d/pod/a", None, b"1"),
        obj("d/pod/a", None, b""),
    ) == [None, "MODIFIED", "DELETED"]


def test_since_hides_old_events_but_remembers_their_keys() -> None:
    stream = EventStream(since=10)
    assert kinds(
        stream,
        obj("d/pod/a", 9, retained=True),
        obj("d/pod/b", 10, retained=True),
        obj("d/pod/a", 11),
        obj("d/pod/c", 12),
        obj("d/pod/b", 13, b""),
    ) == [None, None, "MODIFIED", "ADDED", "DELETED"]


def test_event_lines_are_aligned_and_json_lines_complete() -> None:
    columns = EventColumns()
    stream = EventStream()
    added = stream.classify(obj("default/configmap/app-cfg", 7, b'{"data":{"mode":"edge"}}'))
    deleted = stream.classify(obj("default/configmap/app-cfg", 12, b""))
    assert added is not None and deleted is not None
    one, two = columns.line(added), columns.line(deleted)
    assert one.split() == ["7", "ADDED", "default/configmap/app-cfg", '{"data":{"mode":"edge"}}']
    assert two.split() == ["12", "DELETED", "default/configmap/app-cfg"]
    assert one.index("ADDED") == two.index("DELETED")
    assert json.loads(event_json(added)) == {
        "type": "ADDED",
        "revision": 7,
        "key": "default/configmap/app-cfg",
        "restype": "configmap",
        "value": {"data": {"mode": "edge"}},
    }
    assert json.loads(event_json(deleted))["value"] is None


@pytest.mark.parametrize(
    ("argument", "state", "expected"),
    [
        (None, False, WatchTarget(False, None)),
        ("beehive/#", False, WatchTarget(False, "beehive/#")),
        ("#", False, WatchTarget(False, "#")),
        ("+/status", False, WatchTarget(False, "+/status")),
        ("pod", False, WatchTarget(True, "pod")),
        ("all", False, WatchTarget(True, None)),
        (None, True, WatchTarget(True, None)),
        ("configmap", True, WatchTarget(True, "configmap")),
    ],
)
def test_watch_argument_is_a_filter_or_a_type(
    argument: str | None, state: bool, expected: WatchTarget
) -> None:
    assert watch_target(argument, state) == expected


@pytest.mark.parametrize(("argument", "state"), [("beehive/#", True), ("$SYS", False)])
def test_watch_argument_refused(argument: str, state: bool) -> None:
    with pytest.raises(CommandError) as info:
        watch_target(argument, state)
    assert info.value.status == 2


def test_state_filters() -> None:
    assert state_filter("b", "default", "pod") == "b/state/default/pod/#"
    assert state_filter("b", None, "pod") == "b/state/+/pod/#"
    assert state_filter("b", "default", None) == "b/state/default/#"
    assert state_filter("b", None, None) == "b/state/#"


def received(topic: str, payload: bytes, props: tuple[tuple[str, str], ...] = ()) -> Received:
    return Received(topic, payload, True, None, None, 0.0, props)


def test_state_object_from_properties_or_from_the_topic() -> None:
    props = (("key", "default/pod/a"), ("type", "pod"), ("revision", "42"))
    assert state_object("b", received("b/state/default/pod/a", b"x", props)) == StateObject(
        "default/pod/a", "pod", 42, b"x", True
    )
    # MQTT 3.1.1: no properties; a cleared topic of a reconcile has an empty type.
    assert state_object("b", received("b/state/ns/node", b"y")) == StateObject(
        "ns/node", "node", None, b"y", True
    )
    cleared = (("key", "ns/cm/x"), ("type", ""), ("revision", "7"))
    assert state_object("b", received("b/state/ns/cm/x", b"", cleared)) == StateObject(
        "ns/cm/x", "cm", 7, b"", True
    )
    assert state_object("b", received("b/state/$reconcile/u-1", b"")) is None
    assert state_object("b", received("b/meta/status", b"online")) is None


def test_list_formats() -> None:
    objects = [
        StateObject("default/pod/db", "pod", 3, b'{"a":1}'),
        StateObject("default/pod/web", "pod", None, b"plain text"),
    ]
    table = render(objects, "table").splitlines()
    assert [line.split() for line in table] == [
        ["NAME", "VALUE"],
        ["default/pod/db", '{"a":1}'],
        ["default/pod/web", "plain", "text"],
    ]
    wide = render(objects, "wide").splitlines()
    assert wide[0].split() == ["NAME", "TYPE", "REVISION", "SIZE", "VALUE"]
    assert wide[2].split()[:4] == ["default/pod/web", "pod", "-", "10"]
    assert render(objects, "name") == "default/pod/db\ndefault/pod/web"
    records = [
        {"key": "default/pod/db", "type": "pod", "revision": 3, "value": {"a": 1}},
        {"key": "default/pod/web", "type": "pod", "revision": None, "value": "plain text"},
    ]
    assert json.loads(render(objects, "json")) == records
    assert yaml.safe_load(render(objects, "yaml")) == records
    assert json.loads(render_value(objects[0], "json")) == {"a": 1}
    long = StateObject("d/pod/x", "pod", 1, b"x" * 200)
    assert render([long], "table", width=40).splitlines()[1] == ("d/pod/x   " + "x" * 29 + "…")
