"""Module -> group -> topic mapping, where answers go, and reports (SPEC section 2)."""

from __future__ import annotations

import json

import pytest

from edgemeta.message import Message
from edgemeta.replies import REPORT_PAYLOAD_LIMIT, Destination, answer_destination, report_payload
from edgemeta.topics import CLOUD_SOURCES, Topics, group_of, is_cloud_source

CLOUD_MODULES = ["websocket", "edgehub", "edgecontroller", "funcmgr", "controller"]


def request(source: str = "edged", **fields: object) -> Message:
    msg = Message(msg_id="m-1", operation="query", resource="default/pod/a", source=source)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


# -- topics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "group"),
    [
        ("metaManager", "meta"),
        ("edged", "edged"),
        ("edgemesh", "mesh"),
        ("edgefunction", "func"),
        *[(m, "hub") for m in CLOUD_MODULES],
    ],
)
def test_module_groups(module: str, group: str) -> None:
    assert group_of(module) == group


@pytest.mark.parametrize("module", ["", "nobody", "Edged", "meta", "hub", "mesh"])
def test_unknown_modules_have_no_group(module: str) -> None:
    assert group_of(module) is None
    assert Topics("beehive").module(module) is None


def test_cloud_sources_are_the_hub_modules() -> None:
    assert set(CLOUD_MODULES) == CLOUD_SOURCES
    for module in CLOUD_MODULES:
        assert is_cloud_source(module)
    for module in ("edged", "edgemesh", "edgefunction", "metaManager", "nobody"):
        assert not is_cloud_source(module)


def test_topics_of_the_default_prefix() -> None:
    topics = Topics("beehive")
    assert topics.meta == "beehive/meta"
    assert topics.status == "beehive/meta/status"
    assert topics.error == "beehive/meta/error"
    assert topics.edged == "beehive/edged"
    assert topics.mesh == "beehive/mesh"
    assert topics.func == "beehive/func"
    assert topics.cloud == "beehive/hub"
    assert topics.group("anything") == "beehive/anything"


@pytest.mark.parametrize(
    ("module", "topic"),
    [
        ("metaManager", "beehive/node-a/meta"),
        ("edged", "beehive/node-a/edged"),
        ("edgemesh", "beehive/node-a/mesh"),
        ("edgefunction", "beehive/node-a/func"),
        *[(m, "beehive/node-a/cloudside") for m in CLOUD_MODULES],
    ],
)
def test_module_topics_with_a_prefix_and_a_custom_context_send_group(
    module: str, topic: str
) -> None:
    topics = Topics("beehive/node-a", "cloudside")
    assert topics.module(module) == topic


def test_custom_context_send_group_moves_only_the_cloud() -> None:
    topics = Topics("beehive/node-a", "cloudside")
    assert topics.cloud == "beehive/node-a/cloudside"
    assert group_of("websocket", "cloudside") == "cloudside"
    assert group_of("edged", "cloudside") == "edged"
    assert topics.meta == "beehive/node-a/meta"
    assert topics.edged == "beehive/node-a/edged"


# -- answer destination --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "topic"),
    [
        ("edged", "beehive/edged"),
        ("edgemesh", "beehive/mesh"),
        ("edgefunction", "beehive/func"),
        *[(m, "beehive/hub") for m in CLOUD_MODULES],
    ],
)
def test_answer_goes_to_the_requesters_group(source: str, topic: str) -> None:
    assert answer_destination(request(source), Topics("beehive")) == Destination(topic, None)


def test_answer_to_the_cloud_follows_the_context_send_group() -> None:
    dest = answer_destination(request("edgecontroller"), Topics("p/q", "cloudside"))
    assert dest == Destination("p/q/cloudside", None)


def test_answer_goes_to_the_response_topic_with_the_correlation_data() -> None:
    req = request("edged", response_topic="client/7/replies", correlation=b"\x00corr")
    dest = answer_destination(req, Topics("beehive"))
    assert dest == Destination("client/7/replies", b"\x00corr")


def test_response_topic_without_correlation_data() -> None:
    req = request("edged", response_topic="client/7/replies")
    assert answer_destination(req, Topics("beehive")) == Destination("client/7/replies", None)


def test_response_topic_wins_even_for_an_unknown_source() -> None:
    req = request("shell-client", response_topic="shell/replies", correlation=b"1")
    assert answer_destination(req, Topics("beehive")) == Destination("shell/replies", b"1")


@pytest.mark.parametrize("topic", ["client/+/replies", "client/#", "a\x00b"])
def test_wildcard_response_topic_gives_a_reason(topic: str) -> None:
    reason = answer_destination(request("edged", response_topic=topic), Topics("beehive"))
    assert isinstance(reason, str)
    assert "wildcard" in reason


def test_response_topic_that_is_the_meta_topic_gives_a_reason() -> None:
    req = request("edged", response_topic="beehive/meta", correlation=b"1")
    reason = answer_destination(req, Topics("beehive"))
    assert isinstance(reason, str)
    assert "beehive/meta" in reason


def test_unknown_source_without_response_topic_gives_a_reason() -> None:
    reason = answer_destination(request("nobody"), Topics("beehive"))
    assert isinstance(reason, str)
    assert "nobody" in reason


def test_empty_source_gives_a_reason() -> None:
    assert isinstance(answer_destination(request(""), Topics("beehive")), str)


def test_answer_to_meta_manager_would_go_to_meta_and_gives_a_reason() -> None:
    reason = answer_destination(request("metaManager"), Topics("beehive/node-a"))
    assert isinstance(reason, str)
    assert "beehive/node-a/meta" in reason


def test_answer_to_the_meta_topic_of_another_prefix_is_allowed() -> None:
    req = request("edged", response_topic="beehive/node-b/meta")
    dest = answer_destination(req, Topics("beehive/node-a"))
    assert dest == Destination("beehive/node-b/meta", None)


# -- reports ---------------------------------------------------------------------------


def test_report_of_a_short_payload() -> None:
    report = json.loads(report_payload("route.source is missing", b'{"route": {}}'))
    assert set(report) == {"reason", "payload", "truncated", "timestamp"}
    assert report["reason"] == "route.source is missing"
    assert report["payload"] == '{"route": {}}'
    assert report["truncated"] is False
    assert isinstance(report["timestamp"], int)
    assert report["timestamp"] > 1_600_000_000_000


def test_report_of_a_payload_of_exactly_the_limit_is_not_truncated() -> None:
    data = b"a" * REPORT_PAYLOAD_LIMIT
    report = json.loads(report_payload("r", data))
    assert report["payload"] == data.decode()
    assert report["truncated"] is False


def test_report_of_a_longer_payload_keeps_the_first_1024_bytes() -> None:
    assert REPORT_PAYLOAD_LIMIT == 1024
    data = bytes(range(48, 58)) * 200
    report = json.loads(report_payload("r", data))
    assert report["payload"] == data[:1024].decode()
    assert report["truncated"] is True


def test_report_replaces_invalid_utf8() -> None:
    report = json.loads(report_payload("not JSON", b"ab\xff\xfecd"))
    assert report["payload"] == "ab\ufffd\ufffdcd"
    assert report["truncated"] is False


def test_report_cut_inside_a_multibyte_character() -> None:
    data = b"a" * 1023 + "é".encode() + b"tail"
    report = json.loads(report_payload("r", data))
    assert report["payload"] == "a" * 1023 + "\ufffd"
    assert report["truncated"] is True


def test_report_of_an_empty_payload() -> None:
    report = json.loads(report_payload("database was damaged", b""))
    assert report["payload"] == ""
    assert report["truncated"] is False
