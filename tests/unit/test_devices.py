"""Device ingress, the pure part: topic -> device id, payload -> message or refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgemeta.config import DevicesConfig, MetaManagerConfig
from edgemeta.devices import (
    DevicePolicy,
    decode_device,
    device_id_of,
    topic_filter,
    validate_device_id,
)
from edgemeta.errors import MessageError
from edgemeta.handlers import Answer, Context, Forward, Report
from edgemeta.handlers.devices import handle_device
from edgemeta.message import Limits
from edgemeta.store import MetaStore
from edgemeta.topics import Topics

POLICY = DevicePolicy()


def envelope(
    operation: str = "update",
    resource: str = "default/device/dev-1",
    source: str = "dev-1",
    content: Any = None,
    **header: Any,
) -> bytes:
    return json.dumps(
        {
            "header": {"msg_id": "m-1", "parent_msg_id": "", "timestamp": 5, "sync": False}
            | header,
            "route": {
                "source": source,
                "group": "meta",
                "operation": operation,
                "resource": resource,
            },
            "content": {"t": 21.5} if content is None else content,
        }
    ).encode()


def refusal(payload: bytes, device: str = "dev-1", policy: DevicePolicy = POLICY) -> str:
    with pytest.raises(MessageError) as info:
        decode_device(payload, device, policy)
    # Never answered: nothing identifies a request to answer.
    assert (info.value.msg_id, info.value.source) == ("", "")
    return info.value.reason


# -- topics -----------------------------------------------------------------------------


def test_topic_filter_and_device_id() -> None:
    assert topic_filter("beehive") == "beehive/meta/device/+"
    assert topic_filter("beehive/node-a") == "beehive/node-a/meta/device/+"
    assert device_id_of("beehive/meta/device/dev-1", "beehive") == "dev-1"
    assert device_id_of("beehive/node-a/meta/device/x", "beehive/node-a") == "x"
    assert device_id_of("beehive/meta", "beehive") is None
    assert device_id_of("beehive/meta/devices/x", "beehive") is None
    assert device_id_of("other/meta/device/x", "beehive") is None


@pytest.mark.parametrize("device", ["dev-1", "a", "Sensor_17.b", "9" * 64])
def test_valid_device_ids(device: str) -> None:
    assert validate_device_id(device) is None


@pytest.mark.parametrize(
    "device",
    [
        "",
        "a/b",
        "+",
        "#",
        "dev+1",
        "dev#",
        "dev\x00",
        "-dev",
        ".dev",
        "dev 1",
        "dév",
        "x" * 65,
        "edged",
        "edgecontroller",
        "metaManager",
        "edgemeta",
        "observer",
    ],
)
def test_impossible_or_reserved_device_ids_are_refused(device: str) -> None:
    assert validate_device_id(device) is not None
    reason = refusal(b'{"t": 1}', device=device)
    assert reason.startswith(f"device {device!r}: ")


# -- accepted ---------------------------------------------------------------------------


def test_bare_object_is_an_update_of_the_devices_own_resource() -> None:
    msg = decode_device(b'{"temperature": 21.5, "unit": "C"}', "dev-1", POLICY)
    assert (msg.operation, msg.resource, msg.source, msg.group) == (
        "update",
        "default/device/dev-1",
        "dev-1",
        "meta",
    )
    assert msg.content == {"temperature": 21.5, "unit": "C"}
    assert msg.msg_id and msg.timestamp > 0
    assert msg.raw is None


def test_bare_object_goes_to_the_configured_namespace() -> None:
    policy = DevicePolicy.from_config(DevicesConfig(namespace="iot"))
    assert decode_device(b"{}", "dev-1", policy).resource == "iot/device/dev-1"


@pytest.mark.parametrize("operation", ["update", "insert"])
def test_envelope_of_an_allowed_operation_is_accepted(operation: str) -> None:
    msg = decode_device(envelope(operation), "dev-1", POLICY)
    assert (msg.msg_id, msg.operation, msg.resource, msg.source) == (
        "m-1",
        operation,
        "default/device/dev-1",
        "dev-1",
    )
    assert msg.content == {"t": 21.5}


@pytest.mark.parametrize("claimed", ["", "sensor-firmware", "dev-2"])
def test_the_topic_not_the_envelope_says_who_sent_it(claimed: str) -> None:
    msg = decode_device(envelope(source=claimed), "dev-1", POLICY)
    assert msg.source == "dev-1"
    # The received text claimed someone else: it is not forwarded as it was.
    assert msg.raw is None
    assert json.loads(msg.encode())["route"]["source"] == "dev-1"


def test_envelope_fields_filled_in_as_for_any_lenient_ingest() -> None:
    payload = json.dumps(
        {"route": {"source": "dev-1", "operation": "update", "resource": "default/device/dev-1"}}
    ).encode()
    msg = decode_device(payload, "dev-1", POLICY)
    assert msg.msg_id and msg.timestamp > 0 and msg.content is None


def test_configured_types_and_operations() -> None:
    policy = DevicePolicy.from_config(
        DevicesConfig(operations=("insert",), types=("device", "reading"), namespace="iot")
    )
    msg = decode_device(envelope("insert", "iot/reading/dev-1"), "dev-1", policy)
    assert msg.resource == "iot/reading/dev-1"
    assert "may not send 'update'" in refusal(
        envelope("update", "iot/reading/dev-1"), policy=policy
    )
    # A bare object is an update: refused when updates are not allowed.
    assert "may not send 'update'" in refusal(b"{}", policy=policy)


# -- refused ----------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["delete", "query", "response", "publish", "action"])
def test_other_operations_are_refused(operation: str) -> None:
    reason = refusal(envelope(operation))
    assert reason == f"device 'dev-1': may not send {operation!r} (allowed: insert, update)"


@pytest.mark.parametrize(
    "resource",
    ["default/pod/dev-1", "default/secret/dev-1", "default/podstatus/dev-1", "default"],
)
def test_other_types_are_refused(resource: str) -> None:
    assert "may not write type" in refusal(envelope(resource=resource))


@pytest.mark.parametrize(
    "resource",
    [
        "default/device/dev-2",
        "default/device/dev-1/more",
        "default/device",
        "default/device/dev-10",
        "kube-system/device/dev-1",
    ],
)
def test_someone_elses_resource_is_refused(resource: str) -> None:
    reason = refusal(envelope(resource=resource))
    assert "may write only its own resource 'default/device/dev-1'" in reason


@pytest.mark.parametrize(
    "claimed", ["edgecontroller", "edgehub", "websocket", "funcmgr", "edged", "metaManager"]
)
def test_envelope_claiming_to_be_a_module_is_refused(claimed: str) -> None:
    # Even for what the device could send in its own name.
    assert refusal(envelope(source=claimed)) == f"device 'dev-1': claims to be {claimed!r}"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b"null", "not an object"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": 1e999}', "not JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "not JSON"),
        (b'{"route": "x"}', "route must be an object"),
        (b'{"route": {"operation": "update"}}', "route.source is missing"),
        (b'{"header": {"msg_id": 5}, "route": {}}', "header.msg_id must be a string"),
        (envelope(resource="default/device/+"), "must not contain '+'"),
        (envelope(resource="default/device/dev-1\x00"), "must not contain NUL"),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, words: str) -> None:
    reason = refusal(payload)
    assert reason.startswith("device 'dev-1': ")
    assert words in reason


def test_oversize_and_deep_payloads_are_refused_within_the_limits() -> None:
    limits = Limits(max_payload=1024, max_depth=8)
    with pytest.raises(MessageError, match="exceeds 1024"):
        decode_device(b'{"a": "' + b"x" * 2000 + b'"}', "dev-1", POLICY, limits)
    with pytest.raises(MessageError, match="deeper than 8"):
        decode_device(b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}", "dev-1", POLICY, limits)
    # Far deeper than any parser's recursion limit: refused, not a crash.
    hostile = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(MessageError):
        decode_device(hostile, "dev-1", POLICY, Limits(max_payload=1 << 20, max_depth=64))


# -- the handler: store, forward to the cloud, never answer ------------------------------


def test_handler_stores_and_forwards_to_the_cloud_only() -> None:
    store = MetaStore()
    ctx = Context(store, Topics("beehive"), MetaManagerConfig())
    msg = decode_device(b'{"temperature": 21.5, "note": "\xc3\xa9t\xc3\xa9"}', "dev-1", POLICY)

    effects = handle_device(msg, ctx)

    assert store.items() == [
        ("default/device/dev-1", "device", '{"temperature":21.5,"note":"été"}')
    ]
    assert [type(e) for e in effects] == [Forward]
    forward = effects[0]
    assert isinstance(forward, Forward)
    assert forward.topic == "beehive/hub"
    sent = json.loads(forward.message.encode())
    assert sent["route"] == {
        "source": "dev-1",
        "group": "meta",
        "operation": "update",
        "resource": "default/device/dev-1",
    }
    assert not any(isinstance(e, Answer | Report) for e in effects)
