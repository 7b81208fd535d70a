"""The packed PUBLISH properties are byte for byte what paho's Properties packs."""

from __future__ import annotations

import pytest

from edgemeta.mqtt5props import pack_publish_properties, variable_length
from tests.support.client import publish_properties


def paho_pack(
    correlation: bytes | None, response_topic: str | None, user: list[tuple[str, str]]
) -> bytes:
    props = publish_properties(response_topic, correlation, user)
    return b"\x00" if props is None else bytes(props.pack())


@pytest.mark.parametrize(
    ("correlation", "response_topic", "user"),
    [
        (None, None, [("key", "default/configmap/a"), ("type", "configmap"), ("revision", "7")]),
        (b"\x00\x01corr", None, []),
        (b"", "reply/me", []),
        (b"c", "r/t", [("k", "v")]),
        (None, None, [("ключ", "значение ✓"), ("k", "")]),
        (None, None, [("key", "x" * 200)] * 3),  # a length past 127: two length bytes
    ],
)
def test_the_bytes_are_the_ones_paho_packs(
    correlation: bytes | None, response_topic: str | None, user: list[tuple[str, str]]
) -> None:
    assert pack_publish_properties(correlation, response_topic, user) == paho_pack(
        correlation, response_topic, user
    )


def test_no_properties_is_a_zero_length() -> None:
    assert pack_publish_properties() == b"\x00"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ],
)
def test_variable_length(value: int, encoded: bytes) -> None:
    assert variable_length(value) == encoded


def test_a_field_longer_than_mqtt_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 65535"):
        pack_publish_properties(user_properties=[("key", "x" * 65536)])
    with pytest.raises(ValueError, match="out of range"):
        variable_length(268_435_456)
