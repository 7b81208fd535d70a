"""Outbox records and publish confirmations; the back-off policy."""

from __future__ import annotations

from edgemeta.backoff import Backoff
from edgemeta.outbox import MAX_TRIES, Confirmations, Outgoing, from_record, to_record


def test_record_round_trip() -> None:
    outs = [
        Outgoing("a/b", b'{"x":1}'),
        Outgoing("reply/me", b"ok", b"\x00\xff"),
        Outgoing("s/t", b"v", None, True),
    ]
    assert from_record(to_record(outs)) == outs


def test_batch_done_when_every_publish_confirmed() -> None:
    c = Confirmations()
    c.expect(7, 2)
    c.sent(7, Outgoing("a", b"1"), mid=1)
    c.sent(7, Outgoing("b", b"2"), mid=2)
    assert c.published(1, "", now=0.0) == []
    assert c.published(99, "", now=0.0) == []  # not ours
    assert c.published(2, "", now=0.0) == [7]
    assert len(c) == 0


def test_refused_publish_is_retried_not_counted_as_delivered() -> None:
    c = Confirmations()
    c.expect(1, 1)
    out = Outgoing("a", b"1")
    c.sent(1, out, mid=5)
    assert c.published(5, "Not authorized", now=10.0) == []
    assert len(c) == 1
    assert c.due_retries(10.0) == []
    retry_at = c.next_retry()
    assert retry_at is not None and retry_at > 10.0
    assert c.due_retries(retry_at) == [(1, out, 2)]


def test_refused_publish_given_up_after_max_tries() -> None:
    c = Confirmations()
    c.expect(3, 1)
    assert c.failed(3, Outgoing("a", b"1"), MAX_TRIES, "quota", now=0.0) == [3]
    assert c.next_retry() is None


def test_qos0_publishes_need_no_confirmation() -> None:
    c = Confirmations()
    c.expect(4, 2)
    assert c.confirmed_at_once(4) == []
    assert c.confirmed_at_once(4) == [4]


def test_backoff_exact_without_jitter_and_bounded_with_it() -> None:
    exact = Backoff(initial=0.5, cap=3.0, jitter=False)
    assert [exact.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Backoff(initial=0.5, cap=30.0)
    for n in range(1, 12):
        full = min(30.0, 0.5 * 2 ** (n - 1))
        assert full / 2 <= jittered.delay(n) <= full


def test_record_round_trip_with_user_properties() -> None:
    outs = [Outgoing("s/t", b"v", None, True, (("key", "a/b/c"), ("revision", "3")))]
    assert from_record(to_record(outs)) == outs
