"""decode(), value_text(), encode() and the answers of edgemeta.message (SPEC section 1)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from edgemeta.errors import MessageError
from edgemeta.message import (
    MAX_RESOURCE_LENGTH,
    Limits,
    Message,
    decode,
    new_error,
    new_response,
    value_text,
)

ROUTE = {
    "source": "edged",
    "group": "meta",
    "operation": "update",
    "resource": "default/podstatus/nginx-1",
}
HEADER = {"msg_id": "m-1", "parent_msg_id": "", "timestamp": 1732700000000, "sync": False}


def envelope(
    header: Any = HEADER, route: Any = ROUTE, content: Any = "x", **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if header is not _ABSENT:
        data["header"] = dict(header) if isinstance(header, dict) else header
    if route is not _ABSENT:
        data["route"] = dict(route) if isinstance(route, dict) else route
    data["content"] = content
    data.update(extra)
    return data


_ABSENT: Any = object()


def payload(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def with_header(**fields: Any) -> bytes:
    header = {**HEADER, **fields}
    for name, value in fields.items():
        if value is _ABSENT:
            del header[name]
    return payload(envelope(header=header))


def with_route(**fields: Any) -> bytes:
    route = {**ROUTE, **fields}
    for name, value in fields.items():
        if value is _ABSENT:
            del route[name]
    return payload(envelope(route=route))


def rejected(data: bytes, limits: Limits | None = None) -> MessageError:
    with pytest.raises(MessageError) as info:
        if limits is None:
            decode(data)
        else:
            decode(data, limits)
    return info.value


def is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4
    except ValueError:
        return False


# -- a complete message -------------------------------------------------------


def test_decode_reads_every_field() -> None:
    data = payload(
        envelope(
            header={"msg_id": "m-1", "parent_msg_id": "p-0", "timestamp": 17, "sync": True},
            content={"phase": "Running"},
        )
    )
    msg = decode(data)
    assert msg.msg_id == "m-1"
    assert msg.parent_msg_id == "p-0"
    assert msg.timestamp == 17
    assert msg.sync is True
    assert msg.source == "edged"
    assert msg.group == "meta"
    assert msg.operation == "update"
    assert msg.resource == "default/podstatus/nginx-1"
    assert msg.content == {"phase": "Running"}
    assert (msg.namespace, msg.restype, msg.resid) == ("default", "podstatus", "nginx-1")


def test_resource_parts_without_resid_and_with_slashes_in_resid() -> None:
    msg = decode(with_route(resource="default/pod"))
    assert (msg.namespace, msg.restype, msg.resid) == ("default", "pod", "")
    msg = decode(with_route(resource="default/pod/a/b"))
    assert (msg.namespace, msg.restype, msg.resid) == ("default", "pod", "a/b")


def test_encode_returns_the_received_bytes_when_nothing_was_filled_in() -> None:
    # Odd spacing and key order: only the received text itself matches.
    data = (
        b'{ "route": {"resource": "default/pod/a", "operation": "insert", "source": "edged"},'
        b' "header": {"timestamp": 5, "msg_id": "keep-me"},  "content": {"b": 1, "a": 2} }'
    )
    msg = decode(data)
    assert msg.encode() == data


def test_encode_of_a_filled_in_message_carries_the_filled_fields() -> None:
    msg = decode(payload(envelope(header=_ABSENT)))
    again = json.loads(msg.encode())
    assert again["header"]["msg_id"] == msg.msg_id
    assert again["header"]["timestamp"] == msg.timestamp
    assert again["route"] == ROUTE
    assert again["content"] == "x"


def test_replace_drops_the_received_bytes() -> None:
    data = payload(envelope())
    msg = decode(data)
    changed = msg.replace(parent_msg_id="other")
    assert changed.encode() != data
    assert json.loads(changed.encode())["header"]["parent_msg_id"] == "other"
    assert msg.encode() == data


# -- lenient ingest -------------------------------------------------------------


@pytest.mark.parametrize("header", [_ABSENT, None], ids=["missing", "null"])
def test_missing_or_null_header_is_filled_in(header: Any) -> None:
    data = payload(envelope(header=header))
    msg = decode(data)
    assert is_uuid4(msg.msg_id)
    assert msg.timestamp > 1_600_000_000_000
    assert msg.parent_msg_id == ""
    assert msg.sync is False
    assert msg.encode() != data


@pytest.mark.parametrize("value", [_ABSENT, None, "", 0], ids=["missing", "null", "empty", "0"])
def test_blank_msg_id_is_filled_in(value: Any) -> None:
    data = with_header(msg_id=value)
    msg = decode(data)
    assert is_uuid4(msg.msg_id)
    assert msg.timestamp == HEADER["timestamp"]
    assert json.loads(msg.encode())["header"]["msg_id"] == msg.msg_id


def test_each_filled_msg_id_is_new() -> None:
    data = with_header(msg_id="")
    assert decode(data).msg_id != decode(data).msg_id


@pytest.mark.parametrize("value", [_ABSENT, None, "", 0], ids=["missing", "null", "empty", "0"])
def test_blank_timestamp_is_filled_in(value: Any) -> None:
    msg = decode(with_header(timestamp=value))
    assert msg.msg_id == "m-1"
    assert msg.timestamp > 1_600_000_000_000
    assert json.loads(msg.encode())["header"]["timestamp"] == msg.timestamp


def test_null_parent_msg_id_and_sync_take_their_defaults() -> None:
    msg = decode(with_header(parent_msg_id=None, sync=None))
    assert msg.parent_msg_id == ""
    assert msg.sync is False


def test_missing_content_and_group() -> None:
    data = payload({"header": HEADER, "route": {**ROUTE, "group": None}})
    msg = decode(data)
    assert msg.content is None
    assert msg.group == ""
    msg = decode(with_route(group=_ABSENT))
    assert msg.group == ""


# -- rejected: wrong types name the field and keep what was readable ------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("msg_id", 5),
        ("msg_id", True),
        ("msg_id", ["m"]),
        ("parent_msg_id", 5),
        ("timestamp", "1732700000000"),
        ("timestamp", 1.5),
        ("timestamp", True),
        ("sync", "yes"),
        ("sync", 1),
    ],
)
def test_wrong_header_field_type_is_rejected(field: str, value: Any) -> None:
    exc = rejected(with_header(**{field: value}))
    assert f"header.{field}" in exc.reason
    assert exc.msg_id == ("" if field == "msg_id" else "m-1")
    assert (exc.source, exc.group, exc.resource) == (
        "edged",
        "meta",
        "default/podstatus/nginx-1",
    )


@pytest.mark.parametrize("header", ["x", 5, ["m-1"], True])
def test_header_that_is_not_an_object_is_rejected(header: Any) -> None:
    exc = rejected(payload(envelope(header=header)))
    assert "header" in exc.reason
    assert exc.msg_id == ""
    assert (exc.source, exc.group, exc.resource) == (
        "edged",
        "meta",
        "default/podstatus/nginx-1",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", 5),
        ("source", None),
        ("source", _ABSENT),
        ("operation", 5),
        ("operation", None),
        ("operation", _ABSENT),
        ("group", 5),
        ("group", ["meta"]),
        ("resource", 5),
        ("resource", {"a": 1}),
        ("resource", None),
        ("resource", _ABSENT),
    ],
)
def test_wrong_or_missing_route_field_is_rejected(field: str, value: Any) -> None:
    exc = rejected(with_route(**{field: value}))
    assert f"route.{field}" in exc.reason
    assert exc.msg_id == "m-1"
    readable = {"source": "edged", "group": "meta", "resource": "default/podstatus/nginx-1"}
    if field in readable:
        readable[field] = ""
    assert (exc.source, exc.group, exc.resource) == (
        readable["source"],
        readable["group"],
        readable["resource"],
    )


@pytest.mark.parametrize("route", [_ABSENT, None, "x", ["edged"]])
def test_route_missing_or_not_an_object_is_rejected(route: Any) -> None:
    exc = rejected(payload(envelope(route=route)))
    assert "route" in exc.reason
    assert exc.msg_id == "m-1"
    assert (exc.source, exc.group, exc.resource) == ("", "", "")


def test_resource_may_be_missing_for_meta_internal_sync_only() -> None:
    msg = decode(with_route(operation="meta-internal-sync", resource=_ABSENT))
    assert msg.resource == ""
    msg = decode(with_route(operation="meta-internal-sync", resource=None))
    assert msg.resource == ""
    exc = rejected(with_route(operation="meta-internal-sync", resource=5))
    assert "route.resource" in exc.reason
    exc = rejected(with_route(operation="query", resource=_ABSENT))
    assert "route.resource" in exc.reason


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b'{"header": ', b"\xff\xfe{}", b'{"content": NaN}', b'{"a": Infinity}'],
    ids=["empty", "text", "cut", "bad-utf8", "nan", "infinity"],
)
def test_payload_that_is_not_json_is_rejected(data: bytes) -> None:
    exc = rejected(data)
    assert "not JSON" in exc.reason
    assert (exc.msg_id, exc.source, exc.group, exc.resource) == ("", "", "", "")


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"5", b"null", b"true"])
def test_payload_that_is_not_an_object_is_rejected(data: bytes) -> None:
    exc = rejected(data)
    assert "not an object" in exc.reason


def test_number_too_large_for_a_double_is_rejected() -> None:
    # Python would read 1e400 as inf and store the non-JSON text "Infinity".
    exc = rejected(payload(envelope()).replace(b'"content": "x"', b'"content": {"x": 1e400}'))
    assert "not JSON" in exc.reason


# -- resource validation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "why"),
    [
        ("default/pod/+", "'+'"),
        ("default/#", "'#'"),
        ("def+ault/pod", "'+'"),
        ("default/pod/a\x00b", "NUL"),
        ("default//a", "empty segment"),
        ("/pod/a", "empty segment"),
        ("default/pod/", "empty segment"),
        ("a" * (MAX_RESOURCE_LENGTH + 1), "longer than"),
    ],
)
def test_unusable_resource_is_rejected(resource: str, why: str) -> None:
    exc = rejected(with_route(resource=resource))
    assert "route.resource" in exc.reason
    assert why in exc.reason
    assert (exc.msg_id, exc.source) == ("m-1", "edged")


def test_resource_at_the_length_limit_is_accepted() -> None:
    resource = "ns/pod/" + "a" * (MAX_RESOURCE_LENGTH - len("ns/pod/"))
    assert decode(with_route(resource=resource)).resource == resource


# -- size and depth limits ----------------------------------------------------------


def test_payload_size_limit() -> None:
    base = payload(envelope(content=""))
    limit = len(base) + 10
    fits = payload(envelope(content="a" * 10))
    assert len(fits) == limit
    assert decode(fits, Limits(max_payload=limit)).content == "a" * 10
    too_big = payload(envelope(content="a" * 11))
    exc = rejected(too_big, Limits(max_payload=limit))
    assert "exceeds" in exc.reason


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_content_nesting_up_to_the_depth_limit_is_accepted() -> None:
    msg = decode(payload(envelope(content=nested(8))), Limits(max_depth=8))
    assert msg.content == nested(8)


def test_content_nesting_beyond_the_depth_limit_is_rejected() -> None:
    exc = rejected(payload(envelope(content=nested(9))), Limits(max_depth=8))
    assert "deeper than 8" in exc.reason
    deep_object = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}
    exc = rejected(payload(envelope(content=deep_object)), Limits(max_depth=8))
    assert "deeper" in exc.reason


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    msg = decode(payload(envelope(content="[[[[[[[[[[{{{{{{{{{{")), Limits(max_depth=2))
    assert msg.content == "[[[[[[[[[[{{{{{{{{{{"


def test_pathological_nesting_is_a_message_error_not_a_crash() -> None:
    depth = 200_000
    data = b'{"content": ' + b"[" * depth + b"]" * depth + b"}"
    exc = rejected(data)
    assert "deep" in exc.reason


# -- big integers, non-ASCII and the stored value text ---------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "123456789012345678901234567890",
        "-123456789012345678901234567890",
        "18446744073709551616",
        "-9223372036854775809",
        "100000000000000000000000",
    ],
)
def test_big_integers_keep_every_digit(number: str) -> None:
    data = payload(envelope()).replace(b'"content": "x"', b'"content": {"n": %s}' % number.encode())
    msg = decode(data)
    assert msg.content == {"n": int(number)}
    assert value_text(msg.content) == f'{{"n":{number}}}'
    assert msg.encode() == data


def test_big_integer_in_the_timestamp_is_an_integer() -> None:
    msg = decode(with_header(timestamp=10**30))
    assert msg.timestamp == 10**30


def test_non_ascii_content_is_kept_unescaped() -> None:
    content = {"name": "nœud-été", "emoji": "🚀", "cjk": "节点"}
    msg = decode(payload(envelope(content=content)))
    assert msg.content == content
    assert value_text(msg.content) == '{"name":"nœud-été","emoji":"🚀","cjk":"节点"}'


def test_non_ascii_given_as_escapes_is_stored_unescaped() -> None:
    data = payload(envelope()).replace(
        b'"content": "x"', b'"content": {"a": "\\u00e9\\ud83d\\ude80"}'
    )
    assert value_text(decode(data).content) == '{"a":"é🚀"}'


def test_value_text_of_an_object_keeps_the_received_key_order() -> None:
    data = payload(envelope()).replace(
        b'"content": "x"', b'"content": {"z": 1, "a": {"y": [1, 2.5, null, true], "b": "s"}}'
    )
    msg = decode(data)
    assert list(msg.content) == ["z", "a"]
    text = value_text(msg.content)
    assert text == '{"z":1,"a":{"y":[1,2.5,null,true],"b":"s"}}'
    assert text == json.dumps(msg.content, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("content", [[1, "a", {"b": None}], 5, 2.5, True, None, {}, []], ids=repr)
def test_value_text_of_other_json_values_is_compact_json(content: Any) -> None:
    msg = decode(payload(envelope(content=content)))
    assert value_text(msg.content) == json.dumps(content, separators=(",", ":"))


@pytest.mark.parametrize("text", ["Running", '{"a": 1}', "", "é 🚀", "[1, 2]"])
def test_value_text_of_a_json_string_is_the_string_itself(text: str) -> None:
    msg = decode(payload(envelope(content=text)))
    assert value_text(msg.content) == text


def test_duplicate_keys_keep_the_last_value() -> None:
    data = payload(envelope()).replace(b'"content": "x"', b'"content": {"a": 1, "a": 2}')
    assert value_text(decode(data).content) == '{"a":2}'


# -- answers -------------------------------------------------------------------------


def request(**changes: Any) -> Message:
    return decode(payload(envelope(header={**HEADER, "parent_msg_id": "grand-parent"}))).replace(
        **changes
    )


def test_new_response_fields() -> None:
    req = request()
    answer = new_response(req)
    assert answer.parent_msg_id == "m-1"
    assert answer.operation == "response"
    assert answer.source == "metaManager"
    assert answer.group == "meta"
    assert answer.resource == "default/podstatus/nginx-1"
    assert answer.content == "OK"
    assert is_uuid4(answer.msg_id)
    assert answer.msg_id != req.msg_id
    assert answer.sync is False
    assert answer.timestamp > 1_600_000_000_000


def test_new_response_with_content_encodes_as_a_full_message() -> None:
    answer = new_response(request(), ["a", "b"])
    data = json.loads(answer.encode())
    assert data["header"]["parent_msg_id"] == "m-1"
    assert data["header"]["msg_id"] == answer.msg_id
    assert data["route"] == {
        "source": "metaManager",
        "group": "meta",
        "operation": "response",
        "resource": "default/podstatus/nginx-1",
    }
    assert data["content"] == ["a", "b"]


def test_new_error_fields() -> None:
    req = request()
    answer = new_error(req, "bad list")
    assert answer.parent_msg_id == "m-1"
    assert answer.operation == "error"
    assert answer.source == "metaManager"
    assert answer.group == "meta"
    assert answer.resource == "default/podstatus/nginx-1"
    assert answer.content == "bad list"
    assert json.loads(answer.encode())["route"]["operation"] == "error"


def test_new_error_content_is_never_empty() -> None:
    answer = new_error(request(), "")
    assert isinstance(answer.content, str)
    assert answer.content


def test_answers_to_a_request_without_group_or_resource_carry_empty_strings() -> None:
    req = request(group="", resource="")
    for answer in (new_response(req), new_error(req, "why")):
        route = json.loads(answer.encode())["route"]
        assert route["group"] == ""
        assert route["resource"] == ""
