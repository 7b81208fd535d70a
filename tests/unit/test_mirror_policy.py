"""The state mirror's pure parts: topics, types, messages of changes, the reconcile diff."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tinydb.storages import MemoryStorage

from edgemeta.config import MirrorConfig
from edgemeta.mirror import MirrorPolicy, key_of, reconcile_plan, state_topic
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
