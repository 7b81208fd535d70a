"""CallTable: attempts, waits between them, resumption records (SPEC section 3)."""

from __future__ import annotations

import pytest

from edgemeta.calls import END, SEND, WAIT, CallTable, call_from_record, call_record
from edgemeta.handlers.effects import CALL_QUERY, Call
from edgemeta.message import Message, new_message


def make_call(timeout: float = 2.0, attempts: int = 3) -> Call:
    request = new_message("query", "default/configmap/a", None, source="edged", group="meta")
    request.response_topic = "reply/me"
    request.correlation = b"\x01\x02"
    outbound = request.replace(msg_id="out-1", sync=True)
    return Call(CALL_QUERY, request, outbound, "beehive/hub", timeout, attempts, "old")


def test_attempts_wait_then_republish_then_end() -> None:
    table = CallTable()
    pending = table.add(make_call(timeout=2.0, attempts=3), now=100.0)
    assert table.next_due() == 102.0
    assert table.due(101.9) == []
    steps = []
    now = 102.0
    while True:
        due = table.due(now)
        if not due:
            now = table.next_due() or now
            continue
        step = table.advance(due[0], now)
        steps.append((step, round(pending.due - now, 3)))
        if step == END:
            break
    # Waits between attempts: min(0.5 * 2^n, timeout), n = 0 after the first attempt.
    assert steps == [(WAIT, 0.5), (SEND, 2.0), (WAIT, 1.0), (SEND, 2.0), (END, 0.0)]


def test_removed_call_is_never_due() -> None:
    table = CallTable()
    table.add(make_call(), now=0.0)
    table.remove("out-1")
    assert table.next_due() is None
    assert table.due(1e9) == []
    assert "out-1" not in table


@pytest.mark.parametrize("attempts", [1, 4])
def test_record_round_trip_keeps_requester_and_base(attempts: int) -> None:
    call = make_call(attempts=attempts)
    back = call_from_record(call_record(call))
    assert back.request.msg_id == call.request.msg_id
    assert back.request.response_topic == "reply/me"
    assert back.request.correlation == b"\x01\x02"
    assert back.outbound.msg_id == "out-1"
    assert back.outbound.sync is True
    assert (back.kind, back.topic, back.timeout, back.attempts, back.base) == (
        CALL_QUERY,
        "beehive/hub",
        2.0,
        attempts,
        "old",
    )


def test_calls_to_a_topic() -> None:
    table = CallTable()
    table.add(make_call(), now=0.0)
    assert [p.call_id for p in table.to_topic("beehive/hub")] == ["out-1"]
    assert table.to_topic("beehive/edged") == []
    assert isinstance(table.get("out-1").call.request, Message)  # type: ignore[union-attr]
