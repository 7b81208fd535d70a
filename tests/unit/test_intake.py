"""Device readings keep their id across a redelivery; other readings do not share it."""

from __future__ import annotations

from edgemeta.bus import Inbound
from edgemeta.intake import reading_id


def inbound(payload: bytes, mid: int, dup: bool = False) -> Inbound:
    return Inbound("beehive/meta/device/d1", payload, mid, 1, dup, None, None, 1)


def test_redelivered_reading_has_the_same_id() -> None:
    first = reading_id("d1", inbound(b'{"t": 21.5}', mid=7))
    again = reading_id("d1", inbound(b'{"t": 21.5}', mid=7, dup=True))
    assert first == again


def test_other_readings_have_other_ids() -> None:
    base = reading_id("d1", inbound(b'{"t": 21.5}', mid=7))
    assert reading_id("d1", inbound(b'{"t": 21.6}', mid=7)) != base
    assert reading_id("d1", inbound(b'{"t": 21.5}', mid=8)) != base
    assert reading_id("d2", inbound(b'{"t": 21.5}', mid=7)) != base
