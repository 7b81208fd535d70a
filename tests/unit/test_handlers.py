"""The handlers called directly: what each operation stores and returns (SPEC section 3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tinydb.storages import MemoryStorage

from edgemeta.config import MetaManagerConfig
from edgemeta.handlers import (
    Answer,
    Call,
    CancelCalls,
    CloudLink,
    Context,
    Forward,
    Report,
    call_ended,
    handle,
)
from edgemeta.message import Message, decode, value_text
from edgemeta.store import MetaStore
from edgemeta.topics import Topics

CLOUD = "beehive/hub"
EDGED = "beehive/edged"
MESH = "beehive/mesh"
FUNC = "beehive/func"
CLOUD_MODULES = ["websocket", "edgehub", "edgecontroller", "controller"]
ALL_TYPES = [
    "pod",
    "podstatus",
    "podlist",
    "configmap",
    "secret",
    "node",
    "nodestatus",
    "service",
    "servicelist",
    "endpoints",
    "endpointslist",
    "persistentvolume",
    "persistentvolumeclaim",
    "volumeattachment",
    "widget",
]
SETTINGS = MetaManagerConfig(remoteQueryTimeout=0.05, remoteQueryAttempts=4, volumeTimeout=0.07)


def make_context(*, topics: Topics | None = None, edge_site: bool = False) -> Context:
    return Context(
        MetaStore(MemoryStorage()),
        topics or Topics("beehive"),
        SETTINGS,
        CloudLink(edge_site=edge_site),
    )


@pytest.fixture
def ctx() -> Context:
    return make_context()


_ids = iter(range(1, 1_000_000))


def message(
    operation: str,
    resource: str | None,
    content: Any = None,
    *,
    source: str = "edged",
    group: str = "meta",
    parent: str = "",
) -> Message:
    """A received message, decoded from its JSON as the service does."""
    route: dict[str, Any] = {"source": source, "group": group, "operation": operation}
    if resource is not None:
        route["resource"] = resource
    data = {
        "header": {"msg_id": f"m-{next(_ids)}", "parent_msg_id": parent, "timestamp": 1},
        "route": route,
        "content": content,
    }
    return decode(json.dumps(data, ensure_ascii=False).encode())


def run(msg: Message, ctx: Context) -> list[Any]:
    return handle(msg, ctx)


def assert_ok(effect: Any, request: Message) -> None:
    assert isinstance(effect, Answer), effect
    assert effect.request is request
    answer = effect.message
    assert answer.operation == "response"
    assert answer.content == "OK"
    assert answer.parent_msg_id == request.msg_id
    assert answer.source == "metaManager"
    assert answer.resource == request.resource
    assert answer.group == request.group


def assert_error(effects: list[Any], request: Message, *words: str) -> None:
    assert len(effects) == 1, effects
    effect = effects[0]
    assert isinstance(effect, Answer), effect
    assert effect.request is request
    answer = effect.message
    assert answer.operation == "error"
    assert answer.parent_msg_id == request.msg_id
    assert answer.source == "metaManager"
    assert answer.resource == request.resource
    assert isinstance(answer.content, str)
    assert answer.content
    for word in words:
        assert word in answer.content


def assert_forward_and_ok(effects: list[Any], topic: str, request: Message) -> None:
    assert len(effects) == 2, effects
    assert effects[0] == Forward(topic, request)
    assert effects[0].message is request
    assert_ok(effects[1], request)


def stored(ctx: Context) -> dict[str, str]:
    """Every key -> value in the store."""
    out = {}
    for restype in ALL_TYPES:
        out.update(ctx.store.items_of_type(restype))
    return out


# -- insert ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restype", "topic"),
    [
        ("service", MESH),
        ("endpoints", MESH),
        ("podlist", MESH),
        ("pod", EDGED),
        ("podstatus", EDGED),
        ("configmap", EDGED),
        ("secret", EDGED),
        ("node", EDGED),
        ("nodestatus", EDGED),
        ("persistentvolume", EDGED),
        ("persistentvolumeclaim", EDGED),
        ("volumeattachment", EDGED),
        ("widget", EDGED),
    ],
)
def test_insert_stores_forwards_by_type_and_answers_ok(
    ctx: Context, restype: str, topic: str
) -> None:
    content = {"metadata": {"name": "a"}, "spec": {"é": [1, 2]}}
    msg = message("insert", f"default/{restype}/a", content, source="edgecontroller")
    effects = run(msg, ctx)
    assert_forward_and_ok(effects, topic, msg)
    assert ctx.store.get(f"default/{restype}/a") == '{"metadata":{"name":"a"},"spec":{"é":[1,2]}}'
    assert ctx.store.items_of_type(restype) == [(f"default/{restype}/a", value_text(content))]


def test_insert_replaces_an_existing_key(ctx: Context) -> None:
    run(message("insert", "default/configmap/c", {"v": 1}, source="edgecontroller"), ctx)
    run(message("insert", "default/configmap/c", {"v": 2}, source="edgecontroller"), ctx)
    assert ctx.store.get("default/configmap/c") == '{"v":2}'
    assert len(ctx.store) == 1


def test_insert_of_a_string_content_stores_the_string_itself(ctx: Context) -> None:
    run(message("insert", "default/secret/s", "raw text"), ctx)
    assert ctx.store.get("default/secret/s") == "raw text"


def test_insert_without_a_restype_is_an_error_and_stores_nothing(ctx: Context) -> None:
    msg = message("insert", "default", {"a": 1})
    assert_error(run(msg, ctx), msg)
    assert len(ctx.store) == 0


# -- lists ------------------------------------------------------------------------


def items(*names: tuple[str, str]) -> list[dict[str, Any]]:
    return [
        {"metadata": {"namespace": ns, "name": name}, "spec": {"n": name}} for ns, name in names
    ]


@pytest.mark.parametrize("operation", ["insert", "update"])
@pytest.mark.parametrize(
    ("listtype", "itemtype"), [("servicelist", "service"), ("endpointslist", "endpoints")]
)
def test_list_items_are_stored_one_per_key(
    ctx: Context, operation: str, listtype: str, itemtype: str
) -> None:
    content = items(("ns1", "a"), ("ns2", "b"))
    msg = message(operation, f"ns1/{listtype}", content, source="edgecontroller")
    effects = run(msg, ctx)
    assert_forward_and_ok(effects, MESH, msg)
    assert ctx.store.get(f"ns1/{itemtype}/a") == value_text(content[0])
    assert ctx.store.get(f"ns2/{itemtype}/b") == value_text(content[1])
    assert ctx.store.get(f"ns1/{listtype}") is None
    assert ctx.store.items_of_type(itemtype) == [
        (f"ns1/{itemtype}/a", value_text(content[0])),
        (f"ns2/{itemtype}/b", value_text(content[1])),
    ]
    assert ctx.store.items_of_type(listtype) == []


def test_list_given_as_a_string_holding_an_array(ctx: Context) -> None:
    content = items(("ns1", "a"))
    msg = message("update", "ns1/endpointslist", json.dumps(content), source="edgecontroller")
    effects = run(msg, ctx)
    assert_forward_and_ok(effects, MESH, msg)
    assert ctx.store.get("ns1/endpoints/a") == value_text(content[0])


def test_list_replaces_existing_items(ctx: Context) -> None:
    ctx.store.put("ns1/service/a", "service", "old")
    msg = message("update", "ns1/servicelist", items(("ns1", "a")), source="edgecontroller")
    run(msg, ctx)
    assert ctx.store.get("ns1/service/a") == value_text(items(("ns1", "a"))[0])
    assert len(ctx.store) == 1


def test_empty_list_stores_nothing_and_answers_ok(ctx: Context) -> None:
    msg = message("update", "ns1/servicelist", [], source="edgecontroller")
    assert_forward_and_ok(run(msg, ctx), MESH, msg)
    assert len(ctx.store) == 0


BAD_ITEMS: list[Any] = [
    {"metadata": {"namespace": "ns1"}},
    {"metadata": {"name": "x"}},
    {"metadata": {"namespace": "", "name": "x"}},
    {"metadata": {"namespace": "ns1", "name": ""}},
    {"metadata": {"namespace": 5, "name": "x"}},
    {"metadata": {"namespace": "ns1", "name": None}},
    {"metadata": "ns1/x"},
    {"name": "x"},
    "ns1/x",
    5,
    None,
    {"metadata": {"namespace": "a/b", "name": "x"}},
    {"metadata": {"namespace": "ns1", "name": "x+y"}},
    {"metadata": {"namespace": "ns#", "name": "x"}},
]


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=repr)
def test_any_bad_list_item_is_an_error_and_nothing_is_stored(ctx: Context, bad: Any) -> None:
    ctx.store.put("ns1/service/a", "service", "old")
    content = [*items(("ns1", "a"), ("ns1", "b")), bad, *items(("ns1", "c"))]
    msg = message("update", "ns1/servicelist", content, source="edgecontroller")
    effects = run(msg, ctx)
    assert_error(effects, msg, "item 2")
    assert stored(ctx) == {"ns1/service/a": "old"}


@pytest.mark.parametrize("content", [{"items": []}, "not json [", '{"a": 1}', 5, None])
def test_list_content_that_is_not_an_array_is_an_error(ctx: Context, content: Any) -> None:
    msg = message("insert", "ns1/endpointslist", content, source="edgecontroller")
    assert_error(run(msg, ctx), msg)
    assert len(ctx.store) == 0


@pytest.mark.parametrize("source", ["edgecontroller", "edged", "nobody"])
def test_podlist_update_is_stored_whole_and_forwarded_to_mesh(ctx: Context, source: str) -> None:
    content = [{"metadata": {"name": "p1"}}, {"metadata": {"name": "p2"}}]
    msg = message("update", "ns1/podlist", content, source=source)
    assert_forward_and_ok(run(msg, ctx), MESH, msg)
    assert ctx.store.get("ns1/podlist") == value_text(content)
    assert len(ctx.store) == 1


# -- update -------------------------------------------------------------------------


def test_unchanged_podstatus_stores_and_forwards_nothing(ctx: Context) -> None:
    ctx.store.put("ns1/podstatus/p", "podstatus", '{"phase":"Running","ip":"10.0.0.1"}')
    msg = message("update", "ns1/podstatus/p", {"phase": "Running", "ip": "10.0.0.1"})
    effects = run(msg, ctx)
    assert len(effects) == 1
    assert_ok(effects[0], msg)
    assert ctx.store.get("ns1/podstatus/p") == '{"phase":"Running","ip":"10.0.0.1"}'


def test_podstatus_with_other_key_order_is_not_equal(ctx: Context) -> None:
    ctx.store.put("ns1/podstatus/p", "podstatus", '{"phase":"Running","ip":"10.0.0.1"}')
    msg = message("update", "ns1/podstatus/p", {"ip": "10.0.0.1", "phase": "Running"})
    assert_forward_and_ok(run(msg, ctx), CLOUD, msg)
    assert ctx.store.get("ns1/podstatus/p") == '{"ip":"10.0.0.1","phase":"Running"}'


def test_unchanged_podstatus_is_ok_whatever_the_source(ctx: Context) -> None:
    # The "equal content" row comes before the rows by source (SPEC section 3).
    ctx.store.put("ns1/podstatus/p", "podstatus", "Running")
    msg = message("update", "ns1/podstatus/p", "Running", source="nobody")
    effects = run(msg, ctx)
    assert len(effects) == 1
    assert_ok(effects[0], msg)


@pytest.mark.parametrize("restype", ["pod", "podstatus", "service", "configmap", "nodestatus"])
def test_update_from_edged_is_stored_and_forwarded_to_the_cloud(ctx: Context, restype: str) -> None:
    msg = message("update", f"ns1/{restype}/x", {"v": 1})
    assert_forward_and_ok(run(msg, ctx), CLOUD, msg)
    assert ctx.store.get(f"ns1/{restype}/x") == '{"v":1}'


def test_update_from_edged_goes_to_the_custom_cloud_group() -> None:
    ctx = make_context(topics=Topics("beehive/node-a", "cloudside"))
    msg = message("update", "ns1/pod/x", {"v": 1})
    assert_forward_and_ok(run(msg, ctx), "beehive/node-a/cloudside", msg)


@pytest.mark.parametrize("state", [None, True])
def test_podstatus_is_forwarded_unless_known_disconnected(ctx: Context, state: bool | None) -> None:
    ctx.link.state = state
    msg = message("update", "ns1/podstatus/p", {"phase": "Running"})
    assert_forward_and_ok(run(msg, ctx), CLOUD, msg)


def test_podstatus_is_stored_but_not_forwarded_while_disconnected(ctx: Context) -> None:
    ctx.link.state = False
    msg = message("update", "ns1/podstatus/p", {"phase": "Running"})
    effects = run(msg, ctx)
    assert len(effects) == 1
    assert_ok(effects[0], msg)
    assert ctx.store.get("ns1/podstatus/p") == '{"phase":"Running"}'


def test_other_updates_from_edged_are_forwarded_while_disconnected(ctx: Context) -> None:
    ctx.link.state = False
    msg = message("update", "ns1/nodestatus/n", {"ready": True})
    assert_forward_and_ok(run(msg, ctx), CLOUD, msg)


def test_podstatus_is_forwarded_on_an_edge_site() -> None:
    ctx = make_context(edge_site=True)
    ctx.link.state = False
    msg = message("update", "ns1/podstatus/p", {"phase": "Running"})
    assert_forward_and_ok(run(msg, ctx), CLOUD, msg)


@pytest.mark.parametrize("source", CLOUD_MODULES)
@pytest.mark.parametrize(
    ("restype", "topic"),
    [
        ("service", MESH),
        ("endpoints", MESH),
        ("pod", EDGED),
        ("configmap", EDGED),
        ("podstatus", EDGED),
    ],
)
def test_update_from_the_cloud_is_stored_and_forwarded_by_type(
    ctx: Context, source: str, restype: str, topic: str
) -> None:
    msg = message("update", f"ns1/{restype}/x", {"v": 1}, source=source)
    assert_forward_and_ok(run(msg, ctx), topic, msg)
    assert ctx.store.get(f"ns1/{restype}/x") == '{"v":1}'


@pytest.mark.parametrize("restype", ["service", "pod"])
def test_update_from_funcmgr_goes_to_edgefunction_unanswered(ctx: Context, restype: str) -> None:
    msg = message("update", f"ns1/{restype}/f", {"v": 1}, source="funcmgr")
    assert run(msg, ctx) == [Forward(FUNC, msg)]
    assert ctx.store.get(f"ns1/{restype}/f") == '{"v":1}'


def test_update_from_edgefunction_goes_to_the_cloud_unanswered(ctx: Context) -> None:
    msg = message("update", "ns1/function/f", {"v": 1}, source="edgefunction")
    assert run(msg, ctx) == [Forward(CLOUD, msg)]
    assert ctx.store.get("ns1/function/f") == '{"v":1}'


@pytest.mark.parametrize("source", ["edgemesh", "metaManager", "nobody", ""])
def test_update_from_any_other_source_is_an_error_and_stores_nothing(
    ctx: Context, source: str
) -> None:
    ctx.store.put("ns1/pod/x", "pod", "old")
    msg = message("update", "ns1/pod/x", {"v": 1}, source=source)
    assert_error(run(msg, ctx), msg)
    assert ctx.store.get("ns1/pod/x") == "old"


def test_update_without_a_restype_is_an_error(ctx: Context) -> None:
    msg = message("update", "ns1", {"v": 1})
    assert_error(run(msg, ctx), msg)
    assert len(ctx.store) == 0


# -- delete ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restype", "topic"),
    [
        ("service", MESH),
        ("endpoints", MESH),
        ("pod", EDGED),
        ("servicelist", EDGED),
        ("podlist", EDGED),
    ],
)
def test_delete_removes_the_key_and_forwards_by_type(
    ctx: Context, restype: str, topic: str
) -> None:
    ctx.store.put(f"ns1/{restype}/x", restype, "v")
    ctx.store.put(f"ns1/{restype}/y", restype, "w")
    msg = message("delete", f"ns1/{restype}/x", None, source="edgecontroller")
    assert_forward_and_ok(run(msg, ctx), topic, msg)
    assert ctx.store.get(f"ns1/{restype}/x") is None
    assert ctx.store.get(f"ns1/{restype}/y") == "w"


def test_delete_of_a_missing_key_is_fine(ctx: Context) -> None:
    msg = message("delete", "ns1/pod/none", None, source="edgecontroller")
    assert_forward_and_ok(run(msg, ctx), EDGED, msg)


# -- query: local -----------------------------------------------------------------------


def content_of(effects: list[Any], request: Message) -> Any:
    assert len(effects) == 1, effects
    answer = effects[0]
    assert isinstance(answer, Answer)
    assert answer.request is request
    assert answer.message.operation == "response"
    assert answer.message.parent_msg_id == request.msg_id
    assert answer.message.resource == request.resource
    return answer.message.content


def test_query_by_key(ctx: Context) -> None:
    ctx.store.put("ns1/pod/a", "pod", '{"a":1}')
    msg = message("query", "ns1/pod/a")
    assert content_of(run(msg, ctx), msg) == ['{"a":1}']


def test_query_of_a_missing_key_answers_an_empty_array(ctx: Context) -> None:
    msg = message("query", "ns1/pod/none")
    assert content_of(run(msg, ctx), msg) == []


def test_query_by_type_is_ordered_by_code_point(ctx: Context) -> None:
    for name in ["b", "é", "B", "a", "Z", "a0", "10", "9"]:
        ctx.store.put(f"ns1/pod/{name}", "pod", f"v-{name}")
    ctx.store.put("ns2/pod/a", "pod", "other namespace")
    ctx.store.put("ns1/podstatus/a", "podstatus", "other type")
    ctx.store.put("ns10/pod/a", "pod", "namespace with the same start")
    msg = message("query", "ns1/pod")
    expected = [f"v-{name}" for name in ["10", "9", "B", "Z", "a", "a0", "b", "é"]]
    assert content_of(run(msg, ctx), msg) == expected


def test_query_by_type_with_nothing_answers_an_empty_array(ctx: Context) -> None:
    msg = message("query", "ns1/pod")
    answer = content_of(run(msg, ctx), msg)
    assert answer == []
    assert answer is not None


def test_query_answer_carries_the_stored_value_strings(ctx: Context) -> None:
    run(message("insert", "ns1/pod/a", {"x": [1, "é"]}, source="edgecontroller"), ctx)
    run(message("insert", "ns1/pod/b", "plain", source="edgecontroller"), ctx)
    msg = message("query", "ns1/pod")
    effects = run(msg, ctx)
    assert content_of(effects, msg) == ['{"x":[1,"é"]}', "plain"]
    assert json.loads(effects[0].message.encode())["content"] == ['{"x":[1,"é"]}', "plain"]


REMOTE = [
    "configmap",
    "secret",
    "endpoints",
    "persistentvolume",
    "persistentvolumeclaim",
    "volumeattachment",
    "node",
]


@pytest.mark.parametrize("state", [None, False])
@pytest.mark.parametrize("restype", REMOTE)
def test_remote_types_are_answered_locally_unless_connected(
    ctx: Context, restype: str, state: bool | None
) -> None:
    ctx.link.state = state
    ctx.store.put(f"ns1/{restype}/a", restype, "v")
    msg = message("query", f"ns1/{restype}/a")
    assert content_of(run(msg, ctx), msg) == ["v"]
    miss = message("query", f"ns1/{restype}/b")
    assert content_of(run(miss, ctx), miss) == []
    all_of_type = message("query", f"ns1/{restype}")
    assert content_of(run(all_of_type, ctx), all_of_type) == ["v"]


# -- query: remote ------------------------------------------------------------------------


def single_call(effects: list[Any]) -> Call:
    assert len(effects) == 1, effects
    assert isinstance(effects[0], Call), effects
    return effects[0]


@pytest.mark.parametrize(
    "restype", ["configmap", "secret", "endpoints", "persistentvolume", "persistentvolumeclaim"]
)
def test_connected_query_hit_is_answered_from_the_store(ctx: Context, restype: str) -> None:
    ctx.link.state = True
    ctx.store.put(f"ns1/{restype}/a", restype, "v")
    msg = message("query", f"ns1/{restype}/a")
    assert content_of(run(msg, ctx), msg) == ["v"]


@pytest.mark.parametrize("restype", REMOTE)
def test_connected_query_miss_goes_to_the_cloud(ctx: Context, restype: str) -> None:
    ctx.link.state = True
    msg = message("query", f"ns1/{restype}/a", None, source="edged", group="meta")
    call = single_call(run(msg, ctx))
    assert call.topic == CLOUD
    assert call.timeout == 0.05
    assert call.attempts == 4
    out = call.outbound
    assert out.msg_id != msg.msg_id
    assert out.msg_id
    assert out.sync is True
    assert (out.operation, out.resource, out.source, out.group) == (
        "query",
        f"ns1/{restype}/a",
        "edged",
        "meta",
    )
    sent = json.loads(out.encode())
    assert sent["header"]["msg_id"] == out.msg_id
    assert sent["header"]["sync"] is True


@pytest.mark.parametrize("restype", ["node", "volumeattachment"])
def test_node_and_volumeattachment_always_go_to_the_cloud_when_connected(
    ctx: Context, restype: str
) -> None:
    ctx.link.state = True
    ctx.store.put(f"ns1/{restype}/a", restype, "v")
    msg = message("query", f"ns1/{restype}/a")
    assert single_call(run(msg, ctx)).outbound.resource == f"ns1/{restype}/a"


@pytest.mark.parametrize("restype", REMOTE)
def test_connected_query_without_resid_goes_to_the_cloud(ctx: Context, restype: str) -> None:
    ctx.link.state = True
    ctx.store.put(f"ns1/{restype}/a", restype, "v")
    msg = message("query", f"ns1/{restype}")
    single_call(run(msg, ctx))


def test_edge_site_counts_as_connected() -> None:
    ctx = make_context(edge_site=True)
    msg = message("query", "ns1/configmap/a")
    single_call(run(msg, ctx))


def test_connected_query_of_a_local_type_is_answered_from_the_store(ctx: Context) -> None:
    ctx.link.state = True
    msg = message("query", "ns1/pod/a")
    assert content_of(run(msg, ctx), msg) == []


def test_remote_query_uses_the_custom_cloud_group() -> None:
    ctx = make_context(topics=Topics("beehive/node-a", "cloudside"))
    ctx.link.state = True
    call = single_call(run(message("query", "ns1/secret/s"), ctx))
    assert call.topic == "beehive/node-a/cloudside"


def cloud_reply(call: Call, operation: str, content: Any) -> Message:
    return message(
        operation,
        call.outbound.resource,
        content,
        source="edgecontroller",
        group="resource",
        parent=call.outbound.msg_id,
    )


def test_remote_reply_is_stored_and_forwarded_to_the_requester(ctx: Context) -> None:
    ctx.link.state = True
    msg = message("query", "ns1/configmap/c")
    call = single_call(run(msg, ctx))
    reply = cloud_reply(call, "response", {"data": {"k": "é"}})
    effects = call_ended(call, reply, "", ctx)
    assert len(effects) == 1
    answer = effects[0]
    assert isinstance(answer, Answer)
    assert answer.request is msg
    forwarded = answer.message
    assert forwarded.parent_msg_id == msg.msg_id
    assert forwarded.msg_id == reply.msg_id
    assert (forwarded.operation, forwarded.source, forwarded.resource) == (
        "response",
        "edgecontroller",
        "ns1/configmap/c",
    )
    assert forwarded.content == {"data": {"k": "é"}}
    assert json.loads(forwarded.encode())["header"]["parent_msg_id"] == msg.msg_id
    assert ctx.store.get("ns1/configmap/c") == '{"data":{"k":"é"}}'
    assert ctx.store.items_of_type("configmap") == [("ns1/configmap/c", '{"data":{"k":"é"}}')]


def test_remote_reply_to_a_query_without_resid_is_forwarded_only(ctx: Context) -> None:
    ctx.link.state = True
    msg = message("query", "ns1/configmap")
    call = single_call(run(msg, ctx))
    effects = call_ended(call, cloud_reply(call, "response", ["a", "b"]), "", ctx)
    assert len(effects) == 1
    assert isinstance(effects[0], Answer)
    assert effects[0].message.content == ["a", "b"]
    assert effects[0].message.parent_msg_id == msg.msg_id
    assert len(ctx.store) == 0


def test_remote_error_reply_is_an_error_and_stores_nothing(ctx: Context) -> None:
    ctx.link.state = True
    msg = message("query", "ns1/secret/s")
    call = single_call(run(msg, ctx))
    effects = call_ended(call, cloud_reply(call, "error", "no such secret"), "", ctx)
    assert_error(effects, msg, "no such secret")
    assert len(ctx.store) == 0


def test_remote_query_without_reply_is_an_error_naming_why(ctx: Context) -> None:
    ctx.link.state = True
    msg = message("query", "ns1/node/n1")
    call = single_call(run(msg, ctx))
    effects = call_ended(call, None, "no answer after 4 attempt(s)", ctx)
    assert_error(effects, msg, "no answer after 4 attempt(s)")
    assert len(ctx.store) == 0


def test_each_remote_query_has_its_own_msg_id(ctx: Context) -> None:
    ctx.link.state = True
    first = single_call(run(message("query", "ns1/secret/s"), ctx))
    second = single_call(run(message("query", "ns1/secret/s"), ctx))
    assert first.outbound.msg_id != second.outbound.msg_id


# -- response -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [*CLOUD_MODULES, "funcmgr"])
@pytest.mark.parametrize(
    ("restype", "topic"), [("service", MESH), ("endpoints", MESH), ("pod", EDGED)]
)
def test_response_from_the_cloud_is_stored_and_forwarded_unanswered(
    ctx: Context, source: str, restype: str, topic: str
) -> None:
    msg = message("response", f"ns1/{restype}/a", {"v": 1}, source=source, parent="x")
    assert run(msg, ctx) == [Forward(topic, msg)]
    assert ctx.store.get(f"ns1/{restype}/a") == '{"v":1}'


@pytest.mark.parametrize("source", ["edged", "edgemesh", "edgefunction", "nobody"])
def test_response_from_anyone_else_goes_to_the_cloud_unstored(ctx: Context, source: str) -> None:
    msg = message("response", "ns1/pod/a", {"v": 1}, source=source, parent="x")
    assert run(msg, ctx) == [Forward(CLOUD, msg)]
    assert len(ctx.store) == 0


@pytest.mark.parametrize("resource", ["ns1", ""])
def test_unusable_response_is_reported_never_answered(ctx: Context, resource: str) -> None:
    msg = message("response", resource, {"v": 1}, source="edgecontroller", parent="x")
    effects = run(msg, ctx)
    assert not any(isinstance(e, Answer) for e in effects), effects
    assert len(ctx.store) == 0
    reports = [e for e in effects if isinstance(e, Report)]
    assert len(reports) == 1
    assert reports[0].payload == msg.encode()


# -- publish: the connection ------------------------------------------------------------------


def put_pod_with_status(ctx: Context, ns: str, name: str, status: str) -> None:
    ctx.store.put(f"{ns}/pod/{name}", "pod", "{}")
    ctx.store.put(f"{ns}/podstatus/{name}", "podstatus", status)


def test_connection_messages_set_the_state_unanswered(ctx: Context) -> None:
    assert ctx.link.state is None
    assert run(message("publish", "node/connection", "cloud_disconnected"), ctx) == [
        CancelCalls(CLOUD, "the cloud is disconnected")
    ]
    assert ctx.link.state is False
    assert run(message("publish", "node/connection", "cloud_connected"), ctx) == []
    assert ctx.link.state is True
    assert ctx.link.connected


def test_becoming_connected_runs_a_sync_once(ctx: Context) -> None:
    put_pod_with_status(ctx, "ns1", "p", '{"phase":"Running"}')
    effects = run(message("publish", "node/connection", "cloud_connected"), ctx)
    assert len(effects) == 1
    assert isinstance(effects[0], Forward)
    assert effects[0].topic == CLOUD
    assert effects[0].message.resource == "ns1/podstatus"
    assert run(message("publish", "node/connection", "cloud_connected"), ctx) == []
    assert run(message("publish", "node/connection", "cloud_disconnected"), ctx) == [
        CancelCalls(CLOUD, "the cloud is disconnected")
    ]
    again = run(message("publish", "node/connection", "cloud_connected"), ctx)
    assert [e.message.resource for e in again] == ["ns1/podstatus"]


def test_edge_site_does_not_sync_on_connect() -> None:
    ctx = make_context(edge_site=True)
    put_pod_with_status(ctx, "ns1", "p", "Running")
    assert run(message("publish", "node/connection", "cloud_connected"), ctx) == []


@pytest.mark.parametrize(
    ("resource", "content"),
    [
        ("node/connection", "connected"),
        ("node/connection", None),
        ("node/connection", {"state": "cloud_connected"}),
        ("node/other", "cloud_connected"),
        ("ns1/pod/a", "cloud_disconnected"),
    ],
)
def test_any_other_publish_is_an_error_and_keeps_the_state(
    ctx: Context, resource: str, content: Any
) -> None:
    ctx.link.state = False
    msg = message("publish", resource, content)
    assert_error(run(msg, ctx), msg)
    assert ctx.link.state is False


# -- meta-internal-sync -------------------------------------------------------------------------


def test_sync_sends_one_update_per_namespace_and_drops_orphans(ctx: Context) -> None:
    put_pod_with_status(ctx, "ns1", "b", '{"phase":"Running","n":2}')
    put_pod_with_status(ctx, "ns1", "a", '{"phase":"Pending"}')
    ctx.store.put("ns1/podstatus/gone", "podstatus", '{"phase":"Failed"}')
    put_pod_with_status(ctx, "ns2", "c", "not json text")
    ctx.store.put("ns3/podstatus/orphan", "podstatus", "{}")
    ctx.store.put("ns3/pod/other", "pod", "{}")
    msg = message("meta-internal-sync", None, None, source="metaManager")
    effects = run(msg, ctx)
    assert all(isinstance(e, Forward) and e.topic == CLOUD for e in effects), effects
    sent = {e.message.resource: e.message for e in effects}
    assert sorted(sent) == ["ns1/podstatus", "ns2/podstatus"]
    for out in sent.values():
        assert out.operation == "update"
        assert out.source == "metaManager"
        assert out.group == "resource"
        assert out.msg_id and out.msg_id != msg.msg_id
    assert sent["ns1/podstatus"].content == [{"phase": "Pending"}, {"phase": "Running", "n": 2}]
    assert sent["ns2/podstatus"].content == ["not json text"]
    assert json.loads(sent["ns1/podstatus"].encode())["content"] == [
        {"phase": "Pending"},
        {"phase": "Running", "n": 2},
    ]
    assert ctx.store.get("ns1/podstatus/gone") is None
    assert ctx.store.get("ns3/podstatus/orphan") is None
    assert ctx.store.get("ns3/pod/other") == "{}"
    assert ctx.store.get("ns1/podstatus/a") == '{"phase":"Pending"}'


def test_sync_keeps_big_integers_and_strings_of_statuses(ctx: Context) -> None:
    put_pod_with_status(ctx, "ns1", "a", '{"n":123456789012345678901234567890}')
    put_pod_with_status(ctx, "ns1", "b", '"quoted"')
    (out,) = run(message("meta-internal-sync", None, None, source="shell"), ctx)
    assert out.message.content == [{"n": 123456789012345678901234567890}, "quoted"]
    assert b"123456789012345678901234567890" in out.message.encode()


def test_sync_with_nothing_sends_nothing(ctx: Context) -> None:
    ctx.store.put("ns1/pod/a", "pod", "{}")
    assert run(message("meta-internal-sync", None, None, source="metaManager"), ctx) == []


def test_sync_with_only_orphans_deletes_them_and_sends_nothing(ctx: Context) -> None:
    ctx.store.put("ns1/podstatus/a", "podstatus", "{}")
    assert run(message("meta-internal-sync", None, None, source="metaManager"), ctx) == []
    assert len(ctx.store) == 0


# -- action, volumes, the rest ------------------------------------------------------------


def test_action_is_stored_and_forwarded_to_edgefunction(ctx: Context) -> None:
    msg = message("action", "ns1/function/f", {"arg": 1}, source="funcmgr")
    assert run(msg, ctx) == [Forward(FUNC, msg)]
    assert ctx.store.get("ns1/function/f") == '{"arg":1}'


def test_action_result_is_stored_and_forwarded_to_the_cloud(ctx: Context) -> None:
    msg = message("action_result", "ns1/function/f", {"out": 2}, source="edgefunction")
    assert run(msg, ctx) == [Forward(CLOUD, msg)]
    assert ctx.store.get("ns1/function/f") == '{"out":2}'


VOLUME_OPS = [
    "createvolume",
    "deletevolume",
    "controllerpublishvolume",
    "controllerunpublishvolume",
]


@pytest.mark.parametrize("operation", VOLUME_OPS)
def test_volume_operation_is_asked_of_edged(ctx: Context, operation: str) -> None:
    msg = message(operation, "ns1/volume/v", {"size": 1}, source="edgecontroller")
    call = single_call(run(msg, ctx))
    assert call.topic == EDGED
    assert call.attempts == 1
    assert call.timeout == 0.07
    assert call.outbound.msg_id != msg.msg_id
    assert call.outbound.sync is True
    assert (call.outbound.operation, call.outbound.resource, call.outbound.content) == (
        operation,
        "ns1/volume/v",
        {"size": 1},
    )
    assert len(ctx.store) == 0


def edged_reply(call: Call, operation: str, content: Any) -> Message:
    return message(
        operation, call.outbound.resource, content, source="edged", parent=call.outbound.msg_id
    )


def test_volume_reply_is_answered_to_the_requester(ctx: Context) -> None:
    msg = message("createvolume", "ns1/volume/v", {"size": 1}, source="edgecontroller")
    call = single_call(run(msg, ctx))
    effects = call_ended(call, edged_reply(call, "response", {"volume_id": "vol-1"}), "", ctx)
    assert content_of(effects, msg) == {"volume_id": "vol-1"}
    assert effects[0].message.source == "metaManager"
    assert len(ctx.store) == 0


def test_volume_error_reply_is_an_error(ctx: Context) -> None:
    msg = message("deletevolume", "ns1/volume/v", None, source="edgecontroller")
    call = single_call(run(msg, ctx))
    assert_error(call_ended(call, edged_reply(call, "error", "busy"), "", ctx), msg, "busy")


def test_volume_without_reply_is_an_error(ctx: Context) -> None:
    msg = message("controllerpublishvolume", "ns1/volume/v", None, source="edgecontroller")
    call = single_call(run(msg, ctx))
    assert_error(call_ended(call, None, "timed out", ctx), msg, "timed out")


def test_unsolicited_error_is_reported(ctx: Context) -> None:
    msg = message("error", "ns1/pod/a", "boom", source="edgecontroller", parent="unknown")
    effects = run(msg, ctx)
    assert len(effects) == 1
    assert isinstance(effects[0], Report)
    assert effects[0].payload == msg.encode()
    assert len(ctx.store) == 0


def test_keepalive_is_ignored(ctx: Context) -> None:
    assert run(message("keepalive", "ns1/pod/a", None), ctx) == []
    assert len(ctx.store) == 0


@pytest.mark.parametrize("operation", ["upsert", "", "Query", "INSERT"])
def test_unknown_operation_is_an_error(ctx: Context, operation: str) -> None:
    msg = message(operation, "ns1/pod/a", {"v": 1})
    assert_error(run(msg, ctx), msg, "unknown operation")
    assert len(ctx.store) == 0
