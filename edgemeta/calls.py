"""Calls in flight (remote queries, volume requests), kept as data and driven by the main loop.

No thread per call: each call is a record with a deadline. The main loop
asks for the calls that are due and advances them (wait for the next attempt,
republish, or end without a reply). A call is opened in the store within the
transaction of the message that asked for it, and ended within the
transaction of its reply, so a reply is acknowledged only once its effect is
durable, and a restart resumes the calls that were in flight.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from .backoff import Backoff
from .errors import EdgemetaError
from .handlers.effects import Call
from .message import decode

log = logging.getLogger(__name__)

#: Prefix of the ids of ended calls in the store's duplicate window: a late reply is dropped.
ENDED = "call:"

SEND = "send"
WAIT = "wait"
END = "end"


@dataclass(slots=True)
class PendingCall:
    """A call with its progress: ``attempt`` made so far, what happens at ``due``."""

    call: Call
    attempt: int
    due: float
    waiting: bool  # True: an attempt waits for its reply; False: the next attempt is due

    @property
    def call_id(self) -> str:
        return self.call.outbound.msg_id


def call_record(call: Call) -> dict[str, Any]:
    """The JSON-able form of a call, as the store keeps it."""
    request = call.request
    return {
        "kind": call.kind,
        "request": request.encode().decode("utf-8", "surrogateescape"),
        "response_topic": request.response_topic,
        "correlation": None if request.correlation is None else request.correlation.hex(),
        "outbound": call.outbound.encode().decode("utf-8", "surrogateescape"),
        "topic": call.topic,
        "timeout": call.timeout,
        "attempts": call.attempts,
        "base": call.base,
    }


def call_from_record(record: dict[str, Any]) -> Call:
    request = decode(record["request"].encode("utf-8", "surrogateescape"))
    request.response_topic = record.get("response_topic")
    correlation = record.get("correlation")
    request.correlation = None if correlation is None else bytes.fromhex(correlation)
    return Call(
        record["kind"],
        request,
        decode(record["outbound"].encode("utf-8", "surrogateescape")),
        record["topic"],
        float(record["timeout"]),
        int(record["attempts"]),
        record.get("base"),
    )


class CallTable:
    """The calls in flight, by outbound msg_id, with a heap of their deadlines.

    Attempts wait ``timeout`` seconds each; between attempts the waits are
    ``min(0.5·2^n, timeout)`` (SPEC section 3), from the shared back-off policy.
    """

    def __init__(self) -> None:
        self._calls: dict[str, PendingCall] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def get(self, call_id: str) -> PendingCall | None:
        return self._calls.get(call_id)

    def _schedule(self, pending: PendingCall) -> None:
        heapq.heappush(self._heap, (pending.due, next(self._order), pending.call_id))

    def add(self, call: Call, now: float) -> PendingCall:
        """Track a call whose first attempt has just been sent (or resumed)."""
        pending = PendingCall(call, 1, now + call.timeout, True)
        self._calls[pending.call_id] = pending
        self._schedule(pending)
        return pending

    def remove(self, call_id: str) -> None:
        self._calls.pop(call_id, None)  # its heap entry is skipped when it comes up

    def next_due(self) -> float | None:
        while self._heap:
            due, _, call_id = self._heap[0]
            pending = self._calls.get(call_id)
            if pending is not None and pending.due == due:
                return due
            heapq.heappop(self._heap)
        return None

    def due(self, now: float) -> list[PendingCall]:
        """Pop the calls whose deadline has come (each then must be advanced)."""
        ready = []
        while self._heap and self._heap[0][0] <= now:
            due, _, call_id = heapq.heappop(self._heap)
            pending = self._calls.get(call_id)
            if pending is not None and pending.due == due:
                ready.append(pending)
        return ready

    def advance(self, pending: PendingCall, now: float) -> str:
        """Move a due call on: ``SEND`` (republish it now), ``WAIT`` or ``END``.

        An attempt that timed out waits for the next one (when one is left); a
        call whose wait is over is republished. A call with no attempt left
        ends: the caller removes it and answers.
        """
        call = pending.call
        if pending.waiting:
            if pending.attempt >= call.attempts:
                return END
            pending.waiting = False
            pending.due = now + Backoff(cap=call.timeout, jitter=False).delay(pending.attempt)
            self._schedule(pending)
            return WAIT
        pending.attempt += 1
        pending.waiting = True
        pending.due = now + call.timeout
        self._schedule(pending)
        return SEND

    def to_topic(self, topic: str) -> list[PendingCall]:
        return [p for p in self._calls.values() if p.call.topic == topic]

    def all(self) -> list[PendingCall]:
        return list(self._calls.values())


def restore_calls(records: dict[str, dict[str, Any]]) -> list[Call]:
    """The calls a store kept across a restart; unreadable ones are logged and skipped."""
    calls = []
    for call_id, record in records.items():
        try:
            calls.append(call_from_record(record))
        except (KeyError, TypeError, ValueError, EdgemetaError) as exc:
            log.error("a call kept in the store cannot be read (%s): %s", call_id, exc)
    return calls
