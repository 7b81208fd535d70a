"""RemoteCaller: attempts, back-off, replies, late replies, shutdown (SPEC section 3)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgemeta.cloud import CallDone, RemoteCaller
from edgemeta.handlers import Call
from edgemeta.message import Message, new_message

WAIT = 10.0  # safety net for queue waits; never reached when the code works


class Recorder:
    """Fake publish and sleep, and the post box of finished calls."""

    def __init__(self) -> None:
        self.published: queue.Queue[tuple[str, Message]] = queue.Queue()
        self.done: queue.Queue[CallDone] = queue.Queue()
        self.waits: list[float] = []
        self.on_publish: Callable[[int, Message], None] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def publish(self, topic: str, message: Message) -> None:
        with self._lock:
            self._count += 1
            count = self._count
        self.published.put((topic, message))
        if self.on_publish is not None:
            self.on_publish(count, message)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def all_published(self) -> list[tuple[str, Message]]:
        out = []
        while True:
            try:
                out.append(self.published.get_nowait())
            except queue.Empty:
                return out

    def next_done(self) -> CallDone:
        return self.done.get(timeout=WAIT)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def caller(rec: Recorder) -> Iterator[RemoteCaller]:
    remote = RemoteCaller(rec.publish, rec.done.put, max_workers=4, sleep=rec.sleep)
    yield remote
    remote.shutdown()


def make_call(
    timeout: float = 0.05, attempts: int = 3, on_reply: Callable[..., list[Any]] | None = None
) -> Call:
    outbound = new_message("query", "ns1/configmap/c", None, source="edged", sync=True)
    return Call(outbound, "beehive/hub", timeout, attempts, on_reply or (lambda r, w: []))


def reply_to(call: Call, operation: str = "response", content: Any = "value") -> Message:
    return new_message(
        operation,
        call.outbound.resource,
        content,
        source="edgecontroller",
        parent_msg_id=call.outbound.msg_id,
    )


def answering(
    caller: RemoteCaller, reply_for: Callable[[Message], Message]
) -> Callable[[int, Message], None]:
    """An on_publish hook that delivers a reply to every published attempt."""

    def hook(count: int, message: Message) -> None:
        assert caller.pending.deliver(reply_for(message))

    return hook


# -- no reply -----------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_without_reply_every_attempt_is_made_then_the_call_ends(
    caller: RemoteCaller, rec: Recorder, attempts: int
) -> None:
    call = make_call(attempts=attempts)
    caller.start(call)
    done = rec.next_done()
    assert done.call is call
    assert done.reply is None
    assert f"{attempts} attempt" in done.why
    published = rec.all_published()
    assert len(published) == attempts
    assert all(topic == "beehive/hub" for topic, _ in published)
    assert {message.msg_id for _, message in published} == {call.outbound.msg_id}
    assert all(message.sync for _, message in published)
    assert len(caller.pending) == 0


def test_waits_are_capped_by_the_timeout(caller: RemoteCaller, rec: Recorder) -> None:
    caller.start(make_call(timeout=0.05, attempts=4))
    rec.next_done()
    assert rec.waits == [0.05, 0.05, 0.05]


def test_waits_double_from_half_a_second(caller: RemoteCaller, rec: Recorder) -> None:
    # min(0.5 * 2**n, timeout): 0.5 then 1.0 while below the timeout. Each attempt
    # really waits `timeout` for a reply, so the third publish answers at once.
    call = make_call(timeout=1.1, attempts=3)

    def answer_third(count: int, message: Message) -> None:
        if count == 3:
            assert caller.pending.deliver(reply_to(call))

    rec.on_publish = answer_third
    caller.start(call)
    done = rec.next_done()
    assert done.reply is not None
    assert rec.waits == [0.5, 1.0]


def test_one_attempt_never_waits(caller: RemoteCaller, rec: Recorder) -> None:
    caller.start(make_call(attempts=1))
    rec.next_done()
    assert rec.waits == []


# -- replies --------------------------------------------------------------------------


@pytest.mark.parametrize("answered_at", [1, 2, 3])
def test_reply_ends_the_call(caller: RemoteCaller, rec: Recorder, answered_at: int) -> None:
    call = make_call(attempts=3)
    reply = reply_to(call, content={"data": 1})
    delivered: list[bool] = []

    def answer(count: int, message: Message) -> None:
        if count == answered_at:
            delivered.append(caller.pending.deliver(reply))

    rec.on_publish = answer
    caller.start(call)
    done = rec.next_done()
    assert done.call is call
    assert done.reply is reply
    assert done.why == ""
    assert delivered == [True]
    assert len(rec.all_published()) == answered_at
    assert len(rec.waits) == answered_at - 1


def test_error_reply_is_handed_over_too(caller: RemoteCaller, rec: Recorder) -> None:
    call = make_call()
    reply = reply_to(call, "error", "no such configmap")
    rec.on_publish = answering(caller, lambda message: reply)
    caller.start(call)
    done = rec.next_done()
    assert done.reply is reply
    assert len(rec.all_published()) == 1


def test_late_reply_is_consumed(caller: RemoteCaller, rec: Recorder) -> None:
    call = make_call(attempts=1)
    caller.start(call)
    assert rec.next_done().reply is None
    assert caller.pending.deliver(reply_to(call)) is True
    assert rec.done.empty()


def test_second_reply_after_the_end_is_consumed(caller: RemoteCaller, rec: Recorder) -> None:
    call = make_call()
    rec.on_publish = answering(caller, lambda message: reply_to(call))
    caller.start(call)
    rec.next_done()
    assert caller.pending.deliver(reply_to(call)) is True
    assert rec.done.empty()


def test_message_answering_no_call_is_not_consumed(caller: RemoteCaller, rec: Recorder) -> None:
    call = make_call()
    unrelated = new_message("response", "ns1/pod/a", "x", source="edged", parent_msg_id="other")
    no_parent = new_message("update", "ns1/pod/a", "x", source="edged")
    assert caller.pending.deliver(unrelated) is False
    assert caller.pending.deliver(no_parent) is False
    assert caller.pending.deliver(reply_to(call)) is False  # never started


def test_concurrent_calls_get_their_own_replies(caller: RemoteCaller, rec: Recorder) -> None:
    calls = [make_call(attempts=2) for _ in range(3)]
    replies = {c.outbound.msg_id: reply_to(c, content=i) for i, c in enumerate(calls)}
    rec.on_publish = answering(caller, lambda message: replies[message.msg_id])
    for c in calls:
        caller.start(c)
    done = [rec.next_done() for _ in calls]
    assert {d.call.outbound.msg_id: d.reply for d in done} == replies


def test_on_reply_is_not_run_by_the_caller(caller: RemoteCaller, rec: Recorder) -> None:
    # The outcome goes back to the main loop, which runs on_reply itself.
    ran: list[Any] = []
    call = make_call(attempts=1, on_reply=lambda reply, why: ran.append(why) or [])
    caller.start(call)
    done = rec.next_done()
    assert ran == []
    assert done.call.on_reply(done.reply, done.why) == []
    assert ran == [done.why]


# -- shutdown -------------------------------------------------------------------------


def test_shutdown_ends_a_waiting_call_with_a_reason(rec: Recorder) -> None:
    caller = RemoteCaller(rec.publish, rec.done.put, max_workers=2, sleep=rec.sleep)
    call = make_call(timeout=60, attempts=3)
    caller.start(call)
    rec.published.get(timeout=WAIT)  # the first attempt is waiting for its reply
    caller.shutdown()
    done = rec.done.get_nowait()  # shutdown returns once every call has ended
    assert done.call is call
    assert done.reply is None
    assert "shutting down" in done.why
    assert len(caller.pending) == 0
    assert caller.pending.deliver(reply_to(call)) is True


def test_call_started_after_shutdown_ends_at_once(rec: Recorder) -> None:
    caller = RemoteCaller(rec.publish, rec.done.put, max_workers=2, sleep=rec.sleep)
    caller.shutdown()
    call = make_call()
    caller.start(call)
    done = rec.done.get_nowait()
    assert done.call is call
    assert done.reply is None
    assert "shutting down" in done.why
    assert rec.all_published() == []


def test_shutdown_ends_every_pending_call(rec: Recorder) -> None:
    caller = RemoteCaller(rec.publish, rec.done.put, max_workers=4, sleep=rec.sleep)
    calls = [make_call(timeout=60, attempts=2) for _ in range(3)]
    for c in calls:
        caller.start(c)
    for _ in calls:
        rec.published.get(timeout=WAIT)
    caller.shutdown()
    done = [rec.done.get_nowait() for _ in calls]
    assert {d.call.outbound.msg_id for d in done} == {c.outbound.msg_id for c in calls}
    assert all(d.reply is None and "shutting down" in d.why for d in done)
