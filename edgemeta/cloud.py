"""Requests edgemeta sends and waits for (remote queries, volume calls), with retries.

The only module that imports tenacity. Each call runs on a pool thread so the
main loop never waits; the reply is handed over by the main loop through
``PendingCalls.deliver`` and the outcome goes back to it through ``post``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from .errors import CloudUnavailable
from .handlers.effects import Call
from .message import Message

log = logging.getLogger(__name__)

_SHUTDOWN = object()


@dataclass(frozen=True, slots=True)
class _Cancel:
    reason: str


@dataclass(slots=True)
class CallDone:
    """The outcome of a Call, for the main loop: the reply, or None and why."""

    call: Call
    reply: Message | None
    why: str


class PendingCalls:
    """msg_id of each call in flight -> its mailbox; ended ids are remembered a while."""

    def __init__(self, ended_window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, queue.SimpleQueue[object]] = {}
        self._topics: dict[str, str] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._window = ended_window

    def open(self, msg_id: str, topic: str = "") -> queue.SimpleQueue[object]:
        box: queue.SimpleQueue[object] = queue.SimpleQueue()
        with self._lock:
            self._open[msg_id] = box
            self._topics[msg_id] = topic
        return box

    def close(self, msg_id: str) -> None:
        with self._lock:
            self._open.pop(msg_id, None)
            self._topics.pop(msg_id, None)
            self._ended[msg_id] = None
            while len(self._ended) > self._window:
                self._ended.popitem(last=False)

    def deliver(self, reply: Message) -> bool:
        """True when ``reply`` belongs to a call (then it is consumed, late ones dropped)."""
        parent = reply.parent_msg_id
        if not parent:
            return False
        with self._lock:
            box = self._open.get(parent)
            if box is None:
                return parent in self._ended
        box.put(reply)
        return True

    def cancel(self, topic: str, reason: str) -> int:
        """End the calls sent to ``topic``; returns how many."""
        with self._lock:
            boxes = [self._open[i] for i, t in self._topics.items() if t == topic]
        for box in boxes:
            box.put(_Cancel(reason))
        return len(boxes)

    def interrupt_all(self) -> None:
        with self._lock:
            boxes = list(self._open.values())
        for box in boxes:
            box.put(_SHUTDOWN)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


class _NoReply(CloudUnavailable):
    pass


class _Stopping(CloudUnavailable):
    pass


class _Cancelled(CloudUnavailable):
    pass


class RemoteCaller:
    """Runs Calls: publish, wait, retry with exponential back-off; never blocks the caller."""

    def __init__(
        self,
        publish: Callable[[str, Message], None],
        post: Callable[[CallDone], None],
        *,
        max_workers: int = 256,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.pending = PendingCalls()
        self._publish = publish
        self._post = post
        self._stopping = threading.Event()
        self._sleep: Callable[[float], None] = sleep or self._wait
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="edgemeta-call")

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def start(self, call: Call) -> None:
        box = self.pending.open(call.outbound.msg_id, call.topic)
        if self._stopping.is_set():
            self.pending.close(call.outbound.msg_id)
            self._post(CallDone(call, None, "edgemeta is shutting down"))
            return
        self._pool.submit(self._run, call, box)

    def _run(self, call: Call, box: queue.SimpleQueue[object]) -> None:
        reply: Message | None = None
        why = ""
        try:
            reply = self._attempts(call, box)
        except _Stopping:
            why = "edgemeta is shutting down"
        except _Cancelled as exc:
            why = str(exc)
        except RetryError:
            why = "edgemeta is shutting down"
        except _NoReply:
            why = f"no answer after {call.attempts} attempt(s) of {call.timeout:g} s"
        except Exception as exc:  # the outcome must always reach the main loop
            log.exception("call %s failed", call.outbound.msg_id)
            why = f"internal error: {exc}"
        finally:
            self.pending.close(call.outbound.msg_id)
        self._post(CallDone(call, reply, why))

    def _attempts(self, call: Call, box: queue.SimpleQueue[object]) -> Message:
        retrying = Retrying(
            stop=stop_after_attempt(call.attempts) | stop_when_event_set(self._stopping),
            wait=wait_exponential(multiplier=0.5, exp_base=2, min=0, max=call.timeout),
            retry=retry_if_exception_type(_NoReply),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if self._stopping.is_set():
                    raise _Stopping()
                self._publish(call.topic, call.outbound)
                try:
                    got = box.get(timeout=call.timeout)
                except queue.Empty:
                    raise _NoReply() from None
                if got is _SHUTDOWN:
                    raise _Stopping()
                if isinstance(got, _Cancel):
                    raise _Cancelled(got.reason)
                assert isinstance(got, Message)
                return got
        raise _NoReply()

    def shutdown(self) -> None:
        """End every call now: each is answered with an error by the main loop."""
        self._stopping.set()
        self.pending.interrupt_all()
        self._pool.shutdown(wait=True)
