"""Seeing delivery from outside: every answer and forward, counted by msg_id.

"Applied twice" is two answers to one request with different msg_ids (a
republished answer keeps its msg_id: that is a replay, and allowed). "Stale"
is a key whose stored value is older than the last value answered OK.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from tests.support.burst import BurstPublisher, SessionObserver


@dataclass(frozen=True)
class Seen:
    """One message edgemeta published, in the order the observer got it."""

    index: int
    topic: str
    data: dict[str, Any]

    @property
    def msg_id(self) -> str:
        return str(self.data["header"]["msg_id"])

    @property
    def parent(self) -> str:
        return str(self.data["header"].get("parent_msg_id") or "")

    @property
    def operation(self) -> str:
        return str(self.data["route"]["operation"])

    @property
    def is_answer(self) -> bool:
        return self.data["route"].get("source") == "metaManager" and self.operation in (
            "response",
            "error",
        )

    @property
    def is_ok(self) -> bool:
        return self.is_answer and self.operation == "response" and self.data["content"] == "OK"


@dataclass
class Ledger:
    """What an observer saw, kept in arrival order, with the counts the tests assert on."""

    seen: list[Seen] = field(default_factory=list)

    def add(self, messages: Iterable[mqtt.MQTTMessage]) -> None:
        for message in messages:
            try:
                data = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("header"), dict):
                self.seen.append(Seen(len(self.seen), message.topic, data))

    def answers(self) -> Iterator[Seen]:
        return (s for s in self.seen if s.is_answer)

    def answer_ids(self) -> dict[str, set[str]]:
        """parent_msg_id -> the distinct msg_ids of its answers (OK or error)."""
        found: dict[str, set[str]] = defaultdict(set)
        for answer in self.answers():
            found[answer.parent].add(answer.msg_id)
        return found

    def ok_parents(self) -> set[str]:
        return {s.parent for s in self.seen if s.is_ok}

    def first_ok(self) -> dict[str, int]:
        """parent_msg_id -> arrival index of its first OK answer."""
        first: dict[str, int] = {}
        for s in self.seen:
            if s.is_ok:
                first.setdefault(s.parent, s.index)
        return first

    def applied_twice(self, ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Requests answered by more than one distinct answer msg_id."""
        by_parent = self.answer_ids()
        wanted = set(by_parent) if ids is None else set(ids)
        return {p: a for p, a in by_parent.items() if p in wanted and len(a) > 1}

    def replays(self) -> int:
        """Answers seen again with the same msg_id (allowed, counted)."""
        count: dict[str, int] = defaultdict(int)
        for answer in self.answers():
            count[answer.msg_id] += 1
        return sum(n - 1 for n in count.values())

    def forwards(self, topic: str) -> dict[str, list[int]]:
        """msg_id -> arrival indexes of the non-answer messages on `topic`."""
        found: dict[str, list[int]] = defaultdict(list)
        for s in self.seen:
            if s.topic == topic and not s.is_answer:
                found[s.msg_id].append(s.index)
        return found


class Recorder(SessionObserver):
    """A persistent-session subscriber feeding a Ledger; it misses nothing over restarts."""

    def __init__(self, host: str, port: int, topics: list[str], *, timeout: float = 10.0) -> None:
        super().__init__(host, port, topics, timeout=timeout)
        self.ledger = Ledger()

    def take(self) -> Ledger:
        """Add what arrived so far to the ledger."""
        self.ledger.add(self._take_all())
        return self.ledger

    def wait_ok(self, ids: set[str], timeout: float) -> Ledger:
        """Wait until every request in `ids` has an OK answer."""
        deadline = time.monotonic() + timeout
        while True:
            missing = ids - self.take().ok_parents()
            if not missing:
                return self.ledger
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(missing)} of {len(ids)} requests not answered OK within {timeout} s"
                )
            time.sleep(0.05)

    def quiet(self, seconds: float, timeout: float) -> Ledger:
        """Take messages until none arrives for `seconds` (at most `timeout`)."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        count = len(self.take().seen)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now_count = len(self.take().seen)
            if now_count != count:
                count, last = now_count, time.monotonic()
            elif time.monotonic() - last >= seconds:
                break
        return self.ledger


class PacedPublisher(BurstPublisher):
    """A QoS-1 publisher at a steady rate; while the broker is down paho keeps the messages."""

    def publish_paced(
        self, topic: str, payloads: Iterable[bytes], rate: float, timeout: float = 120.0
    ) -> int:
        return self.publish_all(topic, _paced(payloads, rate), timeout=timeout)


def _paced(payloads: Iterable[bytes], rate: float) -> Iterator[bytes]:
    start = time.monotonic()
    for n, payload in enumerate(payloads):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield payload
