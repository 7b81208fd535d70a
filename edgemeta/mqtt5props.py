"""The MQTT 5 properties of a PUBLISH, packed in one go (MQTT 5.0 §3.3.2.3).

paho builds a ``Properties`` object per message and packs it through name
lookups and validation; with the state mirror's three user properties on
every change that was a quarter of the main thread's time under load. Only
the three properties edgemeta sends are packed here; the bytes are the ones
paho would write (a unit test compares them).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_RESPONSE_TOPIC = 8
_CORRELATION_DATA = 9
_USER_PROPERTY = 38
_MAX_FIELD = 65535
_MAX_LENGTH = 268_435_455
_U16 = struct.Struct("!H")


def _field(data: bytes, what: str) -> bytes:
    if len(data) > _MAX_FIELD:
        raise ValueError(f"{what} is longer than {_MAX_FIELD} bytes")
    return _U16.pack(len(data)) + data


def variable_length(value: int) -> bytes:
    """MQTT's Variable Byte Integer."""
    if not 0 <= value <= _MAX_LENGTH:
        raise ValueError(f"{value} is out of range for a variable byte integer")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def pack_publish_properties(
    correlation: bytes | None = None,
    response_topic: str | None = None,
    user_properties: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The Property Length and the properties, in paho's order (by identifier)."""
    parts: list[bytes] = []
    if response_topic is not None:
        parts.append(bytes((_RESPONSE_TOPIC,)) + _field(response_topic.encode(), "response topic"))
    if correlation is not None:
        parts.append(bytes((_CORRELATION_DATA,)) + _field(bytes(correlation), "correlation data"))
    for name, value in user_properties:
        parts.append(
            bytes((_USER_PROPERTY,))
            + _field(name.encode(), "user property name")
            + _field(value.encode(), "user property value")
        )
    body = b"".join(parts)
    return variable_length(len(body)) + body
