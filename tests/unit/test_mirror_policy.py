"""The state mirror's pure parts: topics, types, messages of changes, the reconcile diff."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from tinydb.storages import MemoryStorage

from edgemeta.bus import Inbound, Subscription
from edgemeta.config import MirrorConfig
from edgemeta.mirror import MirrorPolicy, Reconciler, key_of, reconcile_plan, state_topic
from edgemeta.outbox import Outgoing, from_record, refill, to_record
from edgemeta.store import MetaStore

P = "beehive/node-a"


def test_topic_of_a_key() -> None:
    assert state_topic(P, "default/pod/nginx") == f"{P}/state/default/pod/nginx"
    assert state_topic(P, "default/podstatus") == f"{P}/state/default/podstatus"
    assert key_of(P, f"{P}/state/default/pod/nginx") == "default/pod/nginx"
    assert key_of(P, f"{P}/meta") is None


@pytest.mark.parametrize(
    "key", ["default", "default/pod/+", "default/#", "a//b", "/a/b", "$reconcile/x", "a/b\x00"]
)
def test_a_key_that_cannot_be_a_topic_is_not_mirrored(key: str) -> None:
    assert state_topic(P, key) is None
    assert MirrorPolicy(P).outgoing(key, "pod", "v", 1) is None


def test_which_types_are_mirrored() -> None:
    default = MirrorPolicy.from_config(P, MirrorConfig())
    assert default.mirrors("pod") and default.mirrors("widget")
    assert not default.mirrors("secret")
    listed = MirrorPolicy(P, types=frozenset({"pod", "secret"}))
    assert listed.mirrors("secret") and listed.mirrors("pod") and not listed.mirrors("node")
    every = MirrorPolicy(P, types=frozenset({"*"}))
    assert every.mirrors("secret") and every.mirrors("node")
    off = MirrorPolicy(P, enable=False, types=frozenset({"*"}))
    assert not off.mirrors("pod")


def test_messages_of_changes() -> None:
    policy = MirrorPolicy(P)
    outs = policy.changes(
        [
            ("default/pod/a", "pod", '{"v":1}', 7),
            ("default/secret/s", "secret", "x", 8),
            ("default/pod/b", "pod", None, 9),
        ]
    )
    assert outs == [
        Outgoing(
            f"{P}/state/default/pod/a",
            b'{"v":1}',
            retain=True,
            properties=(("key", "default/pod/a"), ("type", "pod"), ("revision", "7")),
            from_store=True,
        ),
        Outgoing(
            f"{P}/state/default/pod/b",
            b"",
            retain=True,
            properties=(("key", "default/pod/b"), ("type", "pod"), ("revision", "9")),
            from_store=True,
        ),
    ]
    # The outbox keeps the payload in the store: a replay reads it back.
    replayed = from_record(to_record(outs))
    assert [o.payload for o in replayed] == [b"", b""]
    stored = {"default/pod/a": '{"v":2}'}
    assert [refill(o, stored.get) for o in replayed] == [
        replace(outs[0], payload=b'{"v":2}'),
        outs[1],
    ]


def test_old_outbox_records_stay_readable() -> None:
    assert from_record([["a", "x", None], ["b", "y", "00ff", True]]) == [
        Outgoing("a", b"x"),
        Outgoing("b", b"y", b"\x00\xff", True),
    ]


def test_reconcile_diff() -> None:
    policy = MirrorPolicy(P)
    retained = {
        f"{P}/state/default/pod/same": b"1",
        f"{P}/state/default/pod/changed": b"old",
        f"{P}/state/default/pod/gone": b"x",
        f"{P}/state/default/secret/s": b"leaked",
    }
    stored = [
        ("default/pod/same", "pod", "1"),
        ("default/pod/changed", "pod", "new"),
        ("default/pod/missing", "pod", "m"),
        ("default/secret/s", "secret", "leaked"),
    ]
    plan = reconcile_plan(policy, retained, stored)
    assert plan.publish == [
        ("default/pod/changed", "pod", "new"),
        ("default/pod/missing", "pod", "m"),
    ]
    assert plan.clear == [f"{P}/state/default/pod/gone", f"{P}/state/default/secret/s"]


def test_revisions_of_changes_grow_and_survive_rollback() -> None:
    store = MetaStore(MemoryStorage())
    store.put("ns/pod/a", "pod", "1")
    store.commit()
    base = store.revision
    store.put("ns/pod/a", "pod", "2")
    mark = store.savepoint()
    store.put("ns/pod/b", "pod", "x")
    store.rollback_to(mark)
    store.put("ns/pod/c", "pod", "3")
    store.delete("ns/pod/a")
    assert store.revised_changes() == [
        ("ns/pod/c", "pod", "3", base + 2),
        ("ns/pod/a", "pod", None, base + 3),
    ]
    store.commit()
    assert store.advance_revision(5) == base + 4
    assert store.revision == base + 8


class FakeBus:
    """Records what the reconciler asks of the bus (the real one is tested end to end)."""

    def __init__(self) -> None:
        self.subscribed: list[Subscription] = []
        self.unsubscribed: list[str] = []
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.acked: list[int] = []

    def subscribe(self, subscription: Subscription, qos: int = 1) -> int:
        self.subscribed.append(subscription)
        return len(self.subscribed)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)

    def publish(self, topic: str, payload: bytes, qos: int, **kw: Any) -> int:
        self.published.append((topic, payload, dict(kw.get("user_properties", ()))))
        return 1

    def ack(self, mid: int, qos: int, session: int) -> None:
        self.acked.append(mid)

    def taken(self, nbytes: int) -> None:
        pass

    @contextmanager
    def gathered(self) -> Iterator[None]:
        yield


def inbound(topic: str, payload: bytes, mid: int, retain: bool) -> Inbound:
    return Inbound(topic, payload, mid, 1, False, None, None, 1, retain)


def test_reconciler_clears_the_stale_publishes_the_missing_then_unsubscribes() -> None:
    store = MetaStore(MemoryStorage())
    store.put("ns/pod/same", "pod", "1")
    store.put("ns/pod/new", "pod", "2")
    store.commit()
    bus = FakeBus()
    rec = Reconciler(bus, store, MirrorPolicy(P), qos=1)  # type: ignore[arg-type]

    rec.connected()
    state_sub, marker_sub = bus.subscribed
    assert state_sub == Subscription(f"{P}/state/#", retained=True, no_local=True)
    rec.subscribe_done(2, "")
    marker = bus.published.pop()[0]
    assert marker == marker_sub.topic and marker.startswith(f"{P}/state/$reconcile/")
    rec.take(inbound(f"{P}/state/ns/pod/same", b"1", 1, True))
    rec.take(inbound(f"{P}/state/ns/pod/gone", b"x", 2, True))
    rec.take(inbound(marker, b"", 3, False))
    rec.flush()

    assert rec.done and bus.acked == [1, 2, 3]
    assert [(t, p) for t, p, _ in bus.published] == [
        (f"{P}/state/ns/pod/gone", b""),
        (f"{P}/state/ns/pod/new", b"2"),
    ]
    revisions = [int(props["revision"]) for _, _, props in bus.published]
    assert revisions[0] > 2 and revisions[1] == revisions[0] + 1
    assert store.revision == revisions[1]
    assert bus.unsubscribed == [f"{P}/state/#", marker]
