"""What a batch publishes, how it is kept in the store, and which publishes the broker confirmed.

A batch's messages are committed with it (the outbox) before any is
published; a batch leaves the outbox once the broker confirmed every one of
its QoS 1/2 publishes. ``Confirmations`` follows the publishes of each batch
by MQTT packet id: a refused publish (a PUBACK with a failure reason, or one
paho could not send) is tried again with back-off, and given up, logged,
after ``MAX_TRIES``, so the bookkeeping never grows without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .backoff import Backoff

log = logging.getLogger(__name__)

MAX_TRIES = 5


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: topic, payload, MQTT 5 correlation data, retain flag,
    MQTT 5 user properties."""

    topic: str
    payload: bytes
    correlation: bytes | None = None
    retain: bool = False
    properties: tuple[tuple[str, str], ...] = ()
    #: The payload is the stored value of the ``key`` property: the store keeps it,
    #: so the outbox records it without (``refill`` reads it back for a replay).
    from_store: bool = False


def _record(o: Outgoing) -> list[Any]:
    entry: list[Any] = [
        o.topic,
        o.payload.decode("utf-8", "replace"),
        None if o.correlation is None else o.correlation.hex(),
    ]
    if o.from_store:
        entry[1] = ""
        entry += [o.retain, o.properties, True]  # pairs: JSON arrays
    elif o.properties:
        entry += [o.retain, o.properties]
    elif o.retain:
        entry.append(True)
    return entry


def to_record(outs: list[Outgoing]) -> list[Any]:
    """The JSON-able form of a batch's messages, as the store keeps it:
    ``[topic, payload, correlation hex or None]``, then ``retain`` when set or
    when user properties follow (``[[name, value], ...]``)."""
    return [_record(o) for o in outs]


def from_record(entries: list[Any]) -> list[Outgoing]:
    return [
        Outgoing(
            entry[0],
            entry[1].encode(),
            None if entry[2] is None else bytes.fromhex(entry[2]),
            bool(entry[3]) if len(entry) > 3 else False,
            tuple((str(p[0]), str(p[1])) for p in entry[4]) if len(entry) > 4 else (),
            bool(entry[5]) if len(entry) > 5 else False,
        )
        for entry in entries
    ]


def refill(out: Outgoing, value_of: Callable[[str], str | None]) -> Outgoing:
    """A replayed message whose payload the store keeps: with the value stored now
    (empty when the key is gone: the mirror's clear)."""
    if not out.from_store:
        return out
    value = value_of(dict(out.properties).get("key", ""))
    payload = b"" if value is None else value.encode("utf-8", "surrogatepass")
    return replace(out, payload=payload)


def payload_bytes(outs: list[Outgoing]) -> int:
    return sum(len(o.payload) for o in outs)


@dataclass(slots=True)
class _Sent:
    seq: int
    out: Outgoing
    tries: int


class Confirmations:
    """Which publishes of which committed batch the broker has still to confirm."""

    def __init__(self) -> None:
        self._by_mid: dict[int, _Sent] = {}
        self._left: dict[int, int] = {}
        self._retry: list[tuple[float, _Sent]] = []
        self._backoff = Backoff(initial=1.0, cap=30.0)

    def __len__(self) -> int:
        """Batches not yet fully confirmed."""
        return len(self._left)

    def expect(self, seq: int, count: int) -> None:
        """Batch ``seq`` has ``count`` publishes to be confirmed (0: done at once)."""
        if count:
            self._left[seq] = self._left.get(seq, 0) + count

    def sent(self, seq: int, out: Outgoing, mid: int, tries: int = 1) -> None:
        self._by_mid[mid] = _Sent(seq, out, tries)

    def confirmed_at_once(self, seq: int) -> list[int]:
        """One publish of ``seq`` needs no confirmation (QoS 0); returns batches now done."""
        return self._one_done(seq)

    def _one_done(self, seq: int) -> list[int]:
        left = self._left.get(seq)
        if left is None:
            return []
        if left > 1:
            self._left[seq] = left - 1
            return []
        del self._left[seq]
        return [seq]

    def published(self, mid: int, refused: str, now: float) -> list[int]:
        """The broker answered publish ``mid``; returns the batches now fully confirmed."""
        sent = self._by_mid.pop(mid, None)
        if sent is None:
            return []
        if not refused:
            return self._one_done(sent.seq)
        return self.failed(sent.seq, sent.out, sent.tries, refused, now)

    def failed(self, seq: int, out: Outgoing, tries: int, why: str, now: float) -> list[int]:
        """A publish was refused or could not be sent: try it again later, or give it up."""
        if tries >= MAX_TRIES:
            log.error(
                "giving up a message to %s after %d refused publishes: %s", out.topic, tries, why
            )
            return self._one_done(seq)
        delay = self._backoff.delay(tries)
        log.warning("publish to %s refused (%s); trying again in %.1f s", out.topic, why, delay)
        self._retry.append((now + delay, _Sent(seq, out, tries + 1)))
        return []

    def next_retry(self) -> float | None:
        return min((at for at, _ in self._retry), default=None)

    def due_retries(self, now: float, *, all_now: bool = False) -> list[tuple[int, Outgoing, int]]:
        """Publishes to try again now: (batch, message, how many tries it will be)."""
        due = [s for at, s in self._retry if all_now or at <= now]
        self._retry = [(at, s) for at, s in self._retry if not (all_now or at <= now)]
        return [(s.seq, s.out, s.tries) for s in due]
