"""MetaStore on both storages; DurableStorage's crash safety (SPEC section 4)."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from edgemeta.errors import StoreError
from edgemeta.journal import encode_record
from edgemeta.store import DurableStorage, MetaStore
from tests.support.faults import enospc_writing, half_then_enospc

StoreFactory = Callable[..., MetaStore]


class Durable:
    """Opens MetaStores on one database path and can 'crash' them (drop without close)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.with_name(path.name + ".journal")
        self._open: list[tuple[MetaStore, DurableStorage]] = []

    def open(self, *, compact_after: int = 100_000, dedup_window: int = 100) -> MetaStore:
        storage = DurableStorage(self.path, sync=True, compact_after=compact_after)
        store = MetaStore(storage, dedup_window=dedup_window)
        self._open.append((store, storage))
        return store

    def crash(self, store: MetaStore) -> None:
        """What kill -9 leaves: nothing more is written; the kernel closes the file."""
        for index, (opened, storage) in enumerate(self._open):
            if opened is store:
                # A killed process writes nothing more; a thread of this one would.
                storage.wait_compaction()
                storage.journal.close()
                del self._open[index]
                return
        raise AssertionError("not a store of this database")

    def storage_of(self, store: MetaStore) -> DurableStorage:
        for opened, storage in self._open:
            if opened is store:
                return storage
        raise AssertionError("not a store of this database")

    def close(self, store: MetaStore) -> None:
        store.close()
        self._open = [(s, st) for s, st in self._open if s is not store]

    def close_all(self) -> None:
        for _store, storage in self._open:
            storage.journal.close()
        self._open.clear()

    def asides(self, name: str) -> list[Path]:
        return sorted(self.path.parent.glob(name + ".corrupt-*"))


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Durable]:
    db = Durable(tmp_path / "data" / "edgemeta.json")
    yield db
    db.close_all()


@pytest.fixture(params=["memory", "durable"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Factory of an empty MetaStore on each storage: ``make_store(dedup_window=...)``."""
    db = Durable(tmp_path / "db" / "edgemeta.json")

    def factory(*, dedup_window: int = 100) -> MetaStore:
        if request.param == "memory":
            return MetaStore(MemoryStorage(), dedup_window=dedup_window)
        return db.open(dedup_window=dedup_window)

    yield factory
    db.close_all()


@pytest.fixture
def store(make_store: StoreFactory) -> MetaStore:
    return make_store()


def contents(store: MetaStore, *restypes: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for restype in restypes or ("pod", "podstatus", "service", "configmap"):
        out.update(store.items_of_type(restype))
    return out


# -- the MetaStore API on both storages ----------------------------------------------


def test_put_and_get(store: MetaStore) -> None:
    assert store.get("ns/pod/a") is None
    assert not store.contains("ns/pod/a")
    store.put("ns/pod/a", "pod", '{"a":1}')
    assert store.get("ns/pod/a") == '{"a":1}'
    assert store.contains("ns/pod/a")
    assert len(store) == 1


def test_put_replaces_the_value_of_a_key(store: MetaStore) -> None:
    store.put("ns/pod/a", "pod", "v1")
    store.put("ns/pod/a", "pod", "v2")
    assert store.get("ns/pod/a") == "v2"
    assert len(store) == 1
    assert store.items_of_type("pod") == [("ns/pod/a", "v2")]


def test_delete(store: MetaStore) -> None:
    store.put("ns/pod/a", "pod", "v")
    store.put("ns/pod/b", "pod", "w")
    assert store.delete("ns/pod/a") is True
    assert store.delete("ns/pod/a") is False
    assert store.delete("ns/pod/never") is False
    assert store.get("ns/pod/a") is None
    assert store.values("pod", "ns") == ["w"]
    assert len(store) == 1


def test_put_after_delete(store: MetaStore) -> None:
    store.put("ns/pod/a", "pod", "v1")
    store.delete("ns/pod/a")
    store.put("ns/pod/a", "pod", "v2")
    assert store.get("ns/pod/a") == "v2"
    assert store.values("pod", "ns") == ["v2"]
    assert len(store) == 1


def test_values_are_ordered_by_key_in_code_point_order(store: MetaStore) -> None:
    names = ["b", "é", "B", "a", "Z", "a0", "10", "9", "~", "ä"]
    for name in names:
        store.put(f"ns/pod/{name}", "pod", f"v-{name}")
    store.put("ns2/pod/a", "pod", "other namespace")
    store.put("ns/service/a", "service", "other type")
    expected = [f"v-{name}" for name in sorted(names)]
    assert expected[:4] == ["v-10", "v-9", "v-B", "v-Z"]
    assert store.values("pod", "ns") == expected
    assert store.values("pod", "ns2") == ["other namespace"]
    assert store.values("pod", "nothing") == []
    assert store.values("widget", "ns") == []


def test_items_of_type_spans_namespaces_ordered_by_key(store: MetaStore) -> None:
    store.put("ns2/podstatus/a", "podstatus", "2a")
    store.put("ns1/podstatus/b", "podstatus", "1b")
    store.put("ns1/podstatus/a", "podstatus", "1a")
    store.put("ns1/pod/a", "pod", "pod")
    assert store.items_of_type("podstatus") == [
        ("ns1/podstatus/a", "1a"),
        ("ns1/podstatus/b", "1b"),
        ("ns2/podstatus/a", "2a"),
    ]
    assert store.items_of_type("nothing") == []


def test_type_change_reindexes(store: MetaStore) -> None:
    store.put("ns/x/a", "pod", "as pod")
    store.put("ns/x/a", "service", "as service")
    assert store.values("pod", "ns") == []
    assert store.items_of_type("pod") == []
    assert store.values("service", "ns") == ["as service"]
    assert store.items_of_type("service") == [("ns/x/a", "as service")]
    assert len(store) == 1


def test_put_many(store: MetaStore) -> None:
    store.put_many([("ns/service/a", "service", "1"), ("ns/service/b", "service", "2")])
    assert store.values("service", "ns") == ["1", "2"]


def test_values_keep_any_text(store: MetaStore) -> None:
    texts = {
        "ns/pod/json": '{"a":[1,2,{"b":null}]}',
        "ns/pod/unicode": "nœud 节点 🚀",
        "ns/pod/empty": "",
        "ns/pod/quotes": '"\\\n\t',
        "ns/pod/big": "x" * 200_000,
    }
    for key, value in texts.items():
        store.put(key, "pod", value)
    for key, value in texts.items():
        assert store.get(key) == value


def test_commit_keeps_changes(store: MetaStore) -> None:
    store.put("ns/pod/a", "pod", "v")
    store.commit()
    store.rollback()
    assert store.get("ns/pod/a") == "v"
    assert store.values("pod", "ns") == ["v"]


# -- rollback ----------------------------------------------------------------------------
#
# Only DurableStorage undoes table data: on MemoryStorage a rollback undoes the
# indexes and the session only, so the rollback tests run on DurableStorage.


def test_rollback_drops_every_change_since_the_last_commit(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/keep", "pod", "v1")
    store.put("ns/pod/replaced", "pod", "old")
    store.put("ns/pod/deleted", "pod", "here")
    store.put("ns/x/retyped", "pod", "as pod")
    store.commit()

    store.put("ns/pod/new", "pod", "new")
    store.put("ns/pod/replaced", "pod", "new value")
    store.delete("ns/pod/deleted")
    store.put("ns/x/retyped", "service", "as service")
    store.put("ns/pod/short", "pod", "x")
    store.delete("ns/pod/short")
    store.rollback()

    expected = {
        "ns/pod/keep": "v1",
        "ns/pod/replaced": "old",
        "ns/pod/deleted": "here",
        "ns/x/retyped": "as pod",
    }
    assert contents(store) == expected
    assert len(store) == 4
    assert store.values("pod", "ns") == ["here", "v1", "old", "as pod"]
    assert store.values("service", "ns") == []
    assert store.get("ns/pod/new") is None
    assert not store.contains("ns/pod/short")


def test_rollback_then_new_changes_commit_cleanly(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "v1")
    store.commit()
    store.delete("ns/pod/a")
    store.put("ns/pod/a", "pod", "v2")
    store.put("ns/pod/b", "pod", "b")
    store.rollback()
    store.put("ns/pod/c", "pod", "c")
    store.commit()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {"ns/pod/a": "v1", "ns/pod/c": "c"}


def test_rollback_of_a_delete_then_reinsert(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "v1")
    store.commit()
    store.delete("ns/pod/a")
    store.put("ns/pod/a", "podstatus", "v2")
    store.rollback()
    assert store.get("ns/pod/a") == "v1"
    assert store.items_of_type("pod") == [("ns/pod/a", "v1")]
    assert store.items_of_type("podstatus") == []
    assert len(store) == 1


# -- session: seen window and outbox, on both storages --------------------------------------


def test_seen_after_mark_seen(store: MetaStore) -> None:
    assert not store.seen("m-1")
    store.mark_seen(["m-1", "m-2"])
    assert store.seen("m-1")
    assert store.seen("m-2")
    assert not store.seen("m-3")


def test_seen_window_is_bounded(make_store: StoreFactory) -> None:
    store = make_store(dedup_window=3)
    store.mark_seen(["m-1", "m-2"])
    store.mark_seen(["m-3", "m-4"])
    assert [store.seen(f"m-{i}") for i in range(1, 5)] == [False, True, True, True]
    store.mark_seen(["m-5", "m-6", "m-7", "m-8"])
    assert [store.seen(f"m-{i}") for i in range(1, 9)] == [False] * 5 + [True] * 3


def test_seen_window_of_zero_remembers_nothing(make_store: StoreFactory) -> None:
    store = make_store(dedup_window=0)
    store.mark_seen(["m-1"])
    assert not store.seen("m-1")


def test_rollback_forgets_uncommitted_seen_ids(store: MetaStore) -> None:
    store.mark_seen(["m-1"])
    store.commit()
    store.mark_seen(["m-2"])
    store.rollback()
    assert store.seen("m-1")
    assert not store.seen("m-2")


def test_outbox(store: MetaStore) -> None:
    assert store.outbox() == []
    first = store.add_outbox([["beehive/hub", "a", None]])
    second = store.add_outbox([["beehive/edged", "b", "00ff"], ["beehive/mesh", "c", None]])
    assert second > first
    assert store.outbox() == [
        (first, [["beehive/hub", "a", None]]),
        (second, [["beehive/edged", "b", "00ff"], ["beehive/mesh", "c", None]]),
    ]
    store.outbox_sent([first])
    assert store.outbox() == [
        (second, [["beehive/edged", "b", "00ff"], ["beehive/mesh", "c", None]])
    ]
    store.outbox_sent([second, 999])
    assert store.outbox() == []


def test_rollback_drops_an_uncommitted_outbox_batch(store: MetaStore) -> None:
    kept = store.add_outbox([["t", "kept", None]])
    store.commit()
    store.add_outbox([["t", "dropped", None]])
    store.rollback()
    assert store.outbox() == [(kept, [["t", "kept", None]])]


# -- DurableStorage: reopening -------------------------------------------------------------


def fill(store: MetaStore) -> dict[str, str]:
    data = {
        "ns1/pod/a": '{"a":1}',
        "ns1/pod/b": "nœud 🚀",
        "ns1/podstatus/a": '{"phase":"Running"}',
        "ns2/service/s": "",
    }
    for key, value in data.items():
        store.put(key, key.split("/")[1], value)
    return data


def test_reopen_after_close_keeps_everything(durable: Durable) -> None:
    store = durable.open(dedup_window=5)
    data = fill(store)
    store.put("ns1/pod/gone", "pod", "x")
    store.commit()
    store.delete("ns1/pod/gone")
    store.mark_seen(["m-1", "m-2"])
    first = store.add_outbox([["beehive/hub", "one", None]])
    second = store.add_outbox([["beehive/edged", "two", "0a0b"]])
    store.commit()
    store.outbox_sent([first])
    store.commit()
    durable.close(store)

    again = durable.open(dedup_window=5)
    assert contents(again) == data
    assert len(again) == len(data)
    assert again.values("pod", "ns1") == ['{"a":1}', "nœud 🚀"]
    assert again.seen("m-1")
    assert again.seen("m-2")
    assert again.outbox() == [(second, [["beehive/edged", "two", "0a0b"]])]
    assert again.add_outbox([["t", "x", None]]) > second
    assert not again.recovered_from_damage


def test_file_after_close_is_tinydb_layout(durable: Durable) -> None:
    store = durable.open()
    data = fill(store)
    store.commit()
    durable.close(store)
    with TinyDB(durable.path, access_mode="r") as db:
        assert db.tables() == {"meta"}
        docs = db.table("meta").all()
    assert sorted((d["key"], d["type"], d["value"]) for d in docs) == sorted(
        (k, k.split("/")[1], v) for k, v in data.items()
    )
    assert all(set(d) == {"key", "type", "value"} for d in docs)
    raw = json.loads(durable.path.read_bytes())
    assert list(raw) == ["meta"]
    assert all(doc_id.isdigit() for doc_id in raw["meta"])


def test_empty_store_after_close_is_valid_tinydb(durable: Durable) -> None:
    durable.close(durable.open())
    with TinyDB(durable.path, access_mode="r") as db:
        assert db.table("meta").all() == []


def test_reopen_after_a_crash_recovers_from_the_journal(durable: Durable) -> None:
    store = durable.open()
    data = fill(store)
    store.commit()
    store.put("ns1/pod/a", "pod", "replaced")
    store.delete("ns2/service/s")
    store.mark_seen(["m-1"])
    seq = store.add_outbox([["beehive/hub", "x", None]])
    store.commit()
    durable.crash(store)

    again = durable.open()
    data["ns1/pod/a"] = "replaced"
    del data["ns2/service/s"]
    assert contents(again) == data
    assert again.values("service", "ns2") == []
    assert again.seen("m-1")
    assert again.outbox() == [(seq, [["beehive/hub", "x", None]])]


def test_crash_after_a_clean_close_and_more_commits(durable: Durable) -> None:
    store = durable.open()
    fill(store)
    durable.close(store)
    store = durable.open()
    store.put("ns3/pod/new", "pod", "new")
    store.commit()
    durable.crash(store)
    again = durable.open()
    assert again.get("ns3/pod/new") == "new"
    assert again.get("ns1/pod/a") == '{"a":1}'
    assert len(again) == 5


def test_uncommitted_changes_are_lost_after_a_crash(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "committed")
    store.commit()
    store.put("ns/pod/a", "pod", "uncommitted")
    store.put("ns/pod/b", "pod", "uncommitted")
    store.mark_seen(["m-1"])
    store.add_outbox([["t", "x", None]])
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {"ns/pod/a": "committed"}
    assert not again.seen("m-1")
    assert again.outbox() == []


def test_seen_window_stays_bounded_after_reopen(durable: Durable) -> None:
    store = durable.open(dedup_window=3)
    for i in range(1, 7):
        store.mark_seen([f"m-{i}"])
        store.commit()
    durable.crash(store)
    again = durable.open(dedup_window=3)
    assert [again.seen(f"m-{i}") for i in range(1, 7)] == [False] * 3 + [True] * 3


def test_text_with_lone_surrogates_survives_close_and_reopen(durable: Durable) -> None:
    # decode() accepts "\ud800" escapes (the standard parser reads them), so such
    # text reaches the store.
    store = durable.open()
    store.put("ns/pod/odd", "pod", "a\ud800b")
    store.put("ns/pod/plain", "pod", "plain")
    store.commit()
    durable.crash(store)
    store = durable.open()
    assert store.get("ns/pod/odd") == "a\ud800b"
    durable.close(store)
    again = durable.open()
    assert again.get("ns/pod/odd") == "a\ud800b"
    assert again.get("ns/pod/plain") == "plain"
    assert not again.recovered_from_damage


# -- DurableStorage: damage -----------------------------------------------------------------


def committed_batches(durable: Durable, count: int) -> tuple[MetaStore, list[int]]:
    """``count`` commits of one put each; returns the journal size after each."""
    store = durable.open()
    sizes = []
    for i in range(count):
        store.put(f"ns/pod/{i}", "pod", f"v{i}")
        store.commit()
        sizes.append(durable.journal.stat().st_size)
    return store, sizes


def test_torn_journal_tail_is_cut_and_earlier_records_kept(durable: Durable) -> None:
    store, sizes = committed_batches(durable, 3)
    durable.crash(store)
    half = encode_record(["p", "meta", "99", {"key": "ns/pod/x", "type": "pod", "value": "x"}])
    with open(durable.journal, "ab") as f:
        f.write(half[: len(half) // 2])

    again = durable.open()
    assert again.values("pod", "ns") == ["v0", "v1", "v2"]
    assert durable.journal.stat().st_size == sizes[-1]
    assert durable.asides(durable.journal.name) == []
    again.put("ns/pod/3", "pod", "v3")
    again.commit()
    durable.crash(again)
    assert durable.open().values("pod", "ns") == ["v0", "v1", "v2", "v3"]


def test_torn_batch_is_not_applied_in_part(durable: Durable) -> None:
    # One commit = one batch of records; a crash that tears the batch must not
    # leave half of it (here the data without its seen id and its outbox).
    store = durable.open()
    store.put("ns/pod/0", "pod", "v0")
    store.commit()
    before = durable.journal.stat().st_size
    store.put("ns/pod/1", "pod", "v1")
    store.put("ns/pod/2", "pod", "v2")
    store.mark_seen(["m-1"])
    store.add_outbox([["beehive/hub", "forward of m-1", None]])
    store.commit()
    durable.crash(store)
    data = durable.journal.read_bytes()
    first_record_end = data.index(b"\n", before) + 1
    durable.journal.write_bytes(data[: first_record_end + 10])

    again = durable.open()
    assert contents(again) == {"ns/pod/0": "v0"}
    assert not again.seen("m-1")
    assert again.outbox() == []


def test_corrupt_journal_record_is_skipped_and_the_records_after_it_kept(
    durable: Durable,
) -> None:
    store, sizes = committed_batches(durable, 4)
    durable.crash(store)
    damaged = bytearray(durable.journal.read_bytes())
    damaged[sizes[1] + 12] ^= 0x01  # inside the third batch's record
    durable.journal.write_bytes(bytes(damaged))

    again = durable.open()
    assert again.values("pod", "ns") == ["v0", "v1", "v3"]
    (line,) = again.damage()
    assert "journal record" in line and "ns/pod/2" in line and "dropped" in line, line
    (aside,) = durable.asides(durable.journal.name)
    assert aside.read_bytes() == bytes(damaged)
    again.close()
    reopened = durable.open()
    assert reopened.values("pod", "ns") == ["v0", "v1", "v3"]
    assert reopened.damage() == []
    assert len(durable.asides(durable.journal.name)) == 1


def test_corrupt_journal_record_is_flagged_as_damage(durable: Durable) -> None:
    # Committed (acknowledged) records after the corrupt one are lost: that must be
    # reported like a damaged snapshot, not only logged.
    store, sizes = committed_batches(durable, 4)
    durable.crash(store)
    damaged = bytearray(durable.journal.read_bytes())
    damaged[sizes[1] + 12] ^= 0x01
    durable.journal.write_bytes(bytes(damaged))
    assert durable.open().recovered_from_damage


def damaged_snapshot(durable: Durable, damage: Callable[[bytes], bytes]) -> dict[str, str]:
    store = durable.open()
    data = {f"ns/pod/{i:02d}": f"value {i} é" for i in range(10)}
    for key, value in data.items():
        store.put(key, "pod", value)
    store.mark_seen(["m-1"])
    store.commit()
    durable.close(store)
    raw = durable.path.read_bytes()
    durable.path.write_bytes(damage(raw))
    return data


def test_truncated_snapshot_is_salvaged_and_moved_aside(durable: Durable) -> None:
    cut: list[bytes] = []

    def truncate(raw: bytes) -> bytes:
        cut.append(raw[: len(raw) * 2 // 3])
        return cut[0]

    data = damaged_snapshot(durable, truncate)
    store = durable.open()
    assert store.recovered_from_damage
    recovered = contents(store)
    assert recovered
    assert all(data[key] == value for key, value in recovered.items())
    complete_lines = cut[0].count(b"\n") - 1
    assert len(recovered) >= complete_lines - 1
    assert "ns/pod/00" in recovered
    assert store.seen("m-1")
    (aside,) = durable.asides(durable.path.name)
    assert aside.read_bytes() == cut[0]

    durable.close(store)
    with TinyDB(durable.path, access_mode="r") as db:
        assert len(db.table("meta")) == len(recovered)
    assert not durable.open().recovered_from_damage


def test_corrupt_document_in_the_snapshot_loses_only_that_document(durable: Durable) -> None:
    def corrupt_one(raw: bytes) -> bytes:
        return raw.replace(b'"value 3 \xc3\xa9"', b'"value 3 \xc3\xa9', 1)

    data = damaged_snapshot(durable, corrupt_one)
    store = durable.open()
    assert store.recovered_from_damage
    del data["ns/pod/03"]
    assert contents(store) == data


def test_garbage_snapshot_is_moved_aside(durable: Durable) -> None:
    damaged_snapshot(durable, lambda raw: b"\x00\x01 not json at all")
    store = durable.open()
    assert store.recovered_from_damage
    assert len(store) == 0
    assert len(durable.asides(durable.path.name)) == 1


def test_salvaged_documents_survive_a_crash_before_the_next_compaction(
    durable: Durable,
) -> None:
    data = damaged_snapshot(durable, lambda raw: raw.replace(b'"value 3', b'"val\x00', 1))
    store = durable.open()
    assert store.recovered_from_damage
    salvaged = contents(store)
    assert len(salvaged) == len(data) - 1
    store.put("ns/pod/new", "pod", "new")
    store.commit()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {**salvaged, "ns/pod/new": "new"}


DATA_KINDS = (b'["p",', b'["d",', b'["w",')


# -- compaction ---------------------------------------------------------------------------------


def test_compaction_keeps_data_and_session(durable: Durable) -> None:
    store = durable.open(compact_after=5, dedup_window=1000)
    expected: dict[str, str] = {}
    pending = []
    for i in range(40):
        key = f"ns/pod/{i % 7}"
        store.put(key, "pod", f"v{i}")
        expected[key] = f"v{i}"
        if i % 5 == 4:
            store.delete(key)
            del expected[key]
        store.mark_seen([f"m-{i}"])
        pending.append(store.add_outbox([["t", f"out {i}", None]]))
        if i % 2:
            store.outbox_sent([pending.pop(0)])
        store.commit()
        store.wait_compaction()
        data_records = [
            line for line in durable.journal.read_bytes().splitlines() if line[9:14] in DATA_KINDS
        ]
        assert len(data_records) < 5 + 2, "the journal was not compacted"
    assert durable.path.exists()
    durable.crash(store)

    again = durable.open(compact_after=5, dedup_window=1000)
    assert contents(again) == expected
    assert all(again.seen(f"m-{i}") for i in range(40))
    assert [seq for seq, _ in again.outbox()] == pending
    with TinyDB(durable.path, access_mode="r") as db:
        assert {d["key"] for d in db.table("meta").all()} <= set(expected) | {
            f"ns/pod/{i}" for i in range(7)
        }


def test_explicit_compact_then_crash(durable: Durable) -> None:
    store = durable.open()
    data = fill(store)
    store.mark_seen(["m-1"])
    store.commit()
    store.compact()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == data
    assert again.seen("m-1")


# -- files ----------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_database_directory_and_files_are_private(durable: Durable) -> None:
    store = durable.open()
    fill(store)
    store.commit()
    assert mode(durable.path.parent) == 0o700
    assert mode(durable.journal) == 0o600
    durable.close(store)
    assert mode(durable.path) == 0o600
    assert mode(durable.journal) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_files_set_aside_are_private(durable: Durable) -> None:
    store, sizes = committed_batches(durable, 3)
    durable.crash(store)
    damaged = bytearray(durable.journal.read_bytes())
    damaged[sizes[0] + 12] ^= 0x01
    durable.journal.write_bytes(bytes(damaged))
    durable.journal.chmod(0o600)
    durable.close(durable.open())
    durable.path.write_bytes(durable.path.read_bytes()[:-20])
    durable.path.chmod(0o600)
    durable.open()
    asides = durable.asides(durable.journal.name) + durable.asides(durable.path.name)
    assert len(asides) == 2
    for aside in asides:
        assert mode(aside) == 0o600, aside


# -- write failures ---------------------------------------------------------------------------


def enospc(*args: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fault", ["write", "partial-write", "fdatasync"])
def test_failed_commit_is_a_store_error_and_rolls_back_cleanly(
    durable: Durable, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "v1")
    store.put("ns/pod/b", "pod", "b")
    store.mark_seen(["m-1"])
    store.commit()

    store.put("ns/pod/a", "pod", "v2")
    store.delete("ns/pod/b")
    store.put("ns/pod/c", "pod", "c")
    store.mark_seen(["m-2"])
    store.add_outbox([["t", "x", None]])
    with monkeypatch.context() as patch:
        # os.write fails for the journal only: the compaction tried on ENOSPC works.
        if fault == "write":
            patch.setattr(os, "write", enospc)
        elif fault == "partial-write":
            patch.setattr(os, "write", half_then_enospc())
        else:
            patch.setattr(os, "fdatasync", enospc)
        with pytest.raises(StoreError, match="No space left"):
            store.commit()
    store.rollback()

    # The failed batch left nothing; the journal may have been compacted meanwhile.
    assert b"m-2" not in durable.journal.read_bytes()
    assert b"ns/pod/c" not in durable.journal.read_bytes()
    assert contents(store) == {"ns/pod/a": "v1", "ns/pod/b": "b"}
    assert store.values("pod", "ns") == ["v1", "b"]
    assert store.seen("m-1")
    assert not store.seen("m-2")
    assert store.outbox() == []

    store.put("ns/pod/d", "pod", "d")
    store.commit()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {"ns/pod/a": "v1", "ns/pod/b": "b", "ns/pod/d": "d"}
    assert again.seen("m-1")
    assert not again.seen("m-2")
    assert again.outbox() == []


def fsync_fails_at(call: int) -> Callable[[int], None]:
    """An os.fsync that fails with ENOSPC at its ``call``-th use."""
    real_fsync = os.fsync
    calls: list[int] = []

    def fake(fd: int) -> None:
        calls.append(fd)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    return fake


@pytest.mark.parametrize("failing_fsync", [1, 3], ids=["snapshot", "journal-reset"])
def test_failed_compaction_leaves_a_consistent_working_store(
    durable: Durable, monkeypatch: pytest.MonkeyPatch, failing_fsync: int
) -> None:
    # The journal commit succeeds (os.fdatasync); the compaction after it fails
    # (os.fsync of the new snapshot, or of the new journal).
    store = durable.open(compact_after=3)
    store.put("ns/pod/a", "pod", "a")
    store.commit()
    store.put("ns/pod/b", "pod", "b")
    store.put("ns/pod/c", "pod", "c")
    raised: Exception | None = None
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync_fails_at(failing_fsync))
        try:
            store.commit()
        except (StoreError, OSError) as exc:  # what the service catches
            raised = exc
            store.rollback()
    shown = contents(store)
    durable.crash(store)
    store = durable.open(compact_after=3)
    assert contents(store) == shown, "what the store showed is not what it stored"

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync_fails_at(failing_fsync))
        try:
            store.put("ns/pod/b", "pod", "b")
            store.put("ns/pod/c", "pod", "c")
            store.commit()
        except (StoreError, OSError):
            store.rollback()
    store.put("ns/pod/d", "pod", "d")
    store.commit()  # the fault is gone: the store works again
    shown = contents(store)
    durable.crash(store)
    assert contents(durable.open(compact_after=3)) == shown
    assert raised is None or isinstance(raised, StoreError), repr(raised)


# -- compaction in the background ------------------------------------------------


def _snapshot_values(path: Path) -> dict[str, str]:
    with TinyDB(path, access_mode="r") as db:
        return {d["key"]: d["value"] for d in db.table("meta").all()}


def test_background_compaction_writes_the_data_as_it_was_when_it_started(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "old")
    store.commit()
    storage = durable.storage_of(store)
    assert storage is not None
    release = threading.Event()
    real_write = DurableStorage._write_snapshot

    def held_write(self: DurableStorage, tables: dict[str, Any]) -> None:
        assert release.wait(10)
        real_write(self, tables)

    monkeypatch.setattr(DurableStorage, "_write_snapshot", held_write)
    store.compact(background=True)
    store.put("ns/pod/a", "pod", "new")  # changed while the snapshot is being written
    store.put("ns/pod/b", "pod", "added")
    store.commit()
    release.set()
    store.wait_compaction()
    assert _snapshot_values(durable.path) == {"ns/pod/a": "old"}
    assert not storage.old_journal.exists()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {"ns/pod/a": "new", "ns/pod/b": "added"}


def test_crash_before_the_background_snapshot_replays_both_journals(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "1")
    store.mark_seen(["m-1"])
    store.commit()
    monkeypatch.setattr(DurableStorage, "_write_snapshot", lambda self, tables: None)
    store.compact(background=True)  # the journal is set aside; the snapshot never comes
    store.put("ns/pod/b", "pod", "2")
    store.commit()
    storage = durable.storage_of(store)
    assert storage is not None and storage.old_journal.exists()
    durable.crash(store)
    monkeypatch.undo()

    again = durable.open()
    assert contents(again) == {"ns/pod/a": "1", "ns/pod/b": "2"}
    assert again.seen("m-1")
    assert not durable.path.with_name(durable.path.name + ".journal.old").exists()
    assert _snapshot_values(durable.path) == {"ns/pod/a": "1", "ns/pod/b": "2"}


def test_crash_after_the_snapshot_before_the_old_journal_is_gone(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    for i in range(5):
        store.put(f"ns/pod/{i}", "pod", f"v{i}")
        store.commit()
    store.delete("ns/pod/0")
    store.commit()
    monkeypatch.setattr(DurableStorage, "_drop_old_journal", lambda self: None)
    store.compact(background=True)
    store.wait_compaction()
    store.put("ns/pod/1", "pod", "later")
    store.commit()
    durable.crash(store)
    monkeypatch.undo()

    again = durable.open()
    assert contents(again) == {
        "ns/pod/1": "later",
        "ns/pod/2": "v2",
        "ns/pod/3": "v3",
        "ns/pod/4": "v4",
    }


def test_a_failed_background_snapshot_is_redone_at_the_next_compaction(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "1")
    store.commit()

    def failing(self: Any, tables: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("edgemeta.snapshot.Snapshot.write", failing)
    store.compact(background=True)
    store.wait_compaction()
    storage = durable.storage_of(store)
    assert storage is not None and storage.old_journal.exists()
    monkeypatch.undo()
    store.put("ns/pod/b", "pod", "2")
    store.commit()
    store.compact(background=True)
    store.wait_compaction()
    assert not storage.old_journal.exists()
    assert _snapshot_values(durable.path) == {"ns/pod/a": "1", "ns/pod/b": "2"}


def test_snapshot_is_read_a_line_at_a_time_and_equals_the_whole_file(tmp_path: Path) -> None:
    from edgemeta.snapshot import read_lines, snapshot_chunks

    data = {
        "empty": {},
        "meta": {
            "1": {"key": "ns/pod/a", "type": "pod", "value": '{"a":"x,\\n}"}'},
            "2": {"key": "ns/pod/b", "type": "pod", "value": "ünï \ud800 \u2028"},
        },
        "other": {"7": {"n": 123456789012345678901234567890}},
    }
    path = tmp_path / "snap.json"
    path.write_bytes(b"".join(snapshot_chunks(data)))
    assert read_lines(path) == data
    assert json.loads(path.read_text()) == data


def test_a_snapshot_in_another_layout_is_read_whole(tmp_path: Path) -> None:
    from edgemeta.snapshot import read_lines

    path = tmp_path / "db.json"
    with TinyDB(path) as db:
        db.table("meta").insert({"key": "ns/pod/a", "type": "pod", "value": "1"})
    assert read_lines(path) is None
    store = MetaStore(DurableStorage(path))
    assert store.get("ns/pod/a") == "1"
    store.close()


# -- savepoints, on both storages ----------------------------------------------------


def test_rollback_to_a_savepoint_undoes_only_what_came_after(store: MetaStore) -> None:
    store.put("ns/pod/kept", "pod", "v1")
    store.put("ns/pod/changed", "pod", "old")
    store.put("ns/pod/removed", "pod", "here")
    store.mark_seen(["m-1"])
    store.commit()

    store.put("ns/pod/before", "pod", "before the savepoint")
    store.mark_seen(["m-2"])
    first = store.add_outbox([["t", "first", None]])
    store.open_call("c-1", {"n": 1})
    revision = store.revision
    point = store.savepoint()

    store.put("ns/pod/changed", "pod", "new")
    store.delete("ns/pod/removed")
    store.put("ns/x/retyped", "service", "after")
    store.put("ns/pod/kept", "podstatus", "retyped after")
    store.mark_seen(["m-3"])
    store.mark_device_seen(["device/d/1"])
    store.add_outbox([["t", "second", None]])
    store.outbox_sent([first])
    store.open_call("c-2", {"n": 2})
    store.end_call("c-1")
    store.rollback_to(point)

    assert contents(store) == {
        "ns/pod/kept": "v1",
        "ns/pod/changed": "old",
        "ns/pod/removed": "here",
        "ns/pod/before": "before the savepoint",
    }
    assert store.values("pod", "ns") == ["before the savepoint", "old", "v1", "here"]
    assert store.items_of_type("service") == []
    assert store.items_of_type("podstatus") == []
    assert len(store) == 4
    assert store.seen("m-1") and store.seen("m-2") and not store.seen("m-3")
    assert not store.device_seen("device/d/1")
    assert store.outbox() == [(first, [["t", "first", None]])]
    assert store.calls() == {"c-1": {"n": 1}}
    assert store.revision == revision
    assert store.changes_since_commit() == [("ns/pod/before", "pod", "before the savepoint")]

    # What was before the savepoint is still the open transaction's.
    store.rollback()
    assert contents(store) == {
        "ns/pod/kept": "v1",
        "ns/pod/changed": "old",
        "ns/pod/removed": "here",
    }
    assert not store.seen("m-2")
    assert store.outbox() == []
    assert store.calls() == {}


def test_changes_after_a_rollback_to_a_savepoint_commit_cleanly(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "a1")
    point = store.savepoint()
    store.put("ns/pod/a", "pod", "a2")
    store.put("ns/pod/b", "pod", "b")
    store.mark_seen(["m-dropped"])
    store.rollback_to(point)
    store.put("ns/pod/c", "pod", "c")
    store.mark_seen(["m-kept"])
    store.commit()
    durable.crash(store)
    again = durable.open()
    assert contents(again) == {"ns/pod/a": "a1", "ns/pod/c": "c"}
    assert again.seen("m-kept") and not again.seen("m-dropped")


def test_nested_savepoints(store: MetaStore) -> None:
    outer = store.savepoint()
    store.put("ns/pod/a", "pod", "1")
    inner = store.savepoint()
    store.put("ns/pod/a", "pod", "2")
    store.rollback_to(inner)
    assert store.get("ns/pod/a") == "1"
    store.rollback_to(outer)
    assert store.get("ns/pod/a") is None
    assert len(store) == 0


# -- session state: device window, calls, revision, changes ---------------------------


def test_device_window_is_its_own_and_bounded(make_store: StoreFactory) -> None:
    store = make_store(dedup_window=3)
    store.mark_seen(["m-1", "m-2", "m-3"])
    store.mark_device_seen([f"device/d/{i}" for i in range(2500)])
    assert all(store.seen(f"m-{i}") for i in (1, 2, 3)), "device readings evicted module ids"
    assert not store.device_seen("device/d/0")
    assert not store.device_seen("device/d/499")
    assert store.device_seen("device/d/500")
    assert store.device_seen("device/d/2499")
    assert not store.seen("device/d/2499")


def test_calls_keep_their_order_and_records(store: MetaStore) -> None:
    assert store.calls() == {}
    store.open_call("q-2", {"kind": "query", "deadline": 12.5, "request": {"a": [1]}})
    store.open_call("q-1", {"kind": "volume"})
    store.open_call("q-3", {"kind": "query"})
    store.end_call("q-1")
    store.end_call("never-opened")
    calls = store.calls()
    assert list(calls) == ["q-2", "q-3"]
    assert calls["q-2"] == {"kind": "query", "deadline": 12.5, "request": {"a": [1]}}
    calls["q-2"]["kind"] = "changed by the caller"
    assert store.calls()["q-2"]["kind"] == "query"


def test_revision_counts_committed_changes(store: MetaStore) -> None:
    start = store.revision
    store.put("ns/pod/a", "pod", "1")
    store.put("ns/pod/a", "pod", "2")
    store.delete("ns/pod/a")
    store.delete("ns/pod/a")  # nothing to delete: no change
    store.mark_seen(["m-1"])  # session only: no change of a document
    assert store.revision == start + 3
    store.commit()
    store.put("ns/pod/b", "pod", "1")
    store.rollback()
    assert store.revision == start + 3


def test_changes_since_commit_lists_the_last_value_of_each_key(store: MetaStore) -> None:
    store.put("ns/pod/gone", "pod", "x")
    store.commit()
    assert store.changes_since_commit() == []
    store.put("ns/pod/a", "pod", "1")
    store.put("ns/svc/b", "service", "b")
    store.put("ns/pod/a", "pod", "2")
    store.delete("ns/pod/gone")
    assert sorted(store.changes_since_commit()) == [
        ("ns/pod/a", "pod", "2"),
        ("ns/pod/gone", "pod", None),
        ("ns/svc/b", "service", "b"),
    ]
    store.commit()
    assert store.changes_since_commit() == []
    store.put("ns/pod/c", "pod", "c")
    store.rollback()
    assert store.changes_since_commit() == []


def test_outbox_bytes_follow_the_outbox(store: MetaStore) -> None:
    assert store.outbox_bytes == 0
    first = store.add_outbox([["t", "x" * 100, None], ["u", "y" * 20, "00"]])
    second = store.add_outbox([["t", "z" * 5, None]])
    assert store.outbox_bytes == 125
    store.outbox_sent([first])
    assert store.outbox_bytes == 5
    store.commit()
    store.outbox_sent([second])
    store.rollback()
    assert store.outbox_bytes == 5


def test_session_state_survives_a_crash_and_a_compaction(durable: Durable) -> None:
    store = durable.open(dedup_window=10)
    store.put("ns/pod/a", "pod", "1")
    store.put("ns/pod/b", "pod", "1")
    store.delete("ns/pod/b")
    store.mark_device_seen(["device/d/1"])
    store.open_call("c-1", {"kind": "query", "n": 1})
    store.open_call("c-2", {"kind": "volume"})
    store.commit()
    store.end_call("c-2")
    store.commit()
    revision = store.revision
    assert revision == 3
    durable.crash(store)

    again = durable.open(dedup_window=10)
    assert again.revision == revision
    assert again.device_seen("device/d/1")
    assert again.calls() == {"c-1": {"kind": "query", "n": 1}}
    again.compact()
    durable.crash(again)

    third = durable.open(dedup_window=10)
    assert third.revision == revision
    assert third.device_seen("device/d/1")
    assert third.calls() == {"c-1": {"kind": "query", "n": 1}}
    third.put("ns/pod/a", "pod", "2")
    third.commit()
    durable.close(third)
    assert durable.open(dedup_window=10).revision == revision + 1


def test_has_pending_writes_and_abandon(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "1")
    store.commit()
    assert not store.has_pending_writes
    store.outbox_sent([1])
    assert store.has_pending_writes
    store.put("ns/pod/a", "pod", "uncommitted")
    store.abandon()
    again = durable.open()  # the lock and the journal were released, nothing written
    assert again.get("ns/pod/a") == "1"


# -- snapshot checksums ----------------------------------------------------------------


def sums_of(durable: Durable) -> Path:
    return durable.path.with_name(durable.path.name + ".sums")


def test_a_changed_digit_in_the_snapshot_drops_that_document_and_says_so(
    durable: Durable,
) -> None:
    store = durable.open()
    for i in range(10):
        store.put(f"ns/configmap/cm-{i}", "configmap", f'{{"n":{i}0}}')
    durable.close(store)
    raw = durable.path.read_bytes()
    assert raw.count(b'\\"n\\":30}') == 1
    durable.path.write_bytes(raw.replace(b'\\"n\\":30}', b'\\"n\\":31}'))

    again = durable.open()
    assert again.recovered_from_damage
    assert again.get("ns/configmap/cm-3") is None
    assert len(again) == 9
    (line,) = again.damage()
    assert "ns/configmap/cm-3" in line and "checksum" in line and "dropped" in line, line
    assert len(durable.asides(durable.path.name)) == 1
    durable.close(again)
    clean = durable.open()
    assert not clean.recovered_from_damage and clean.damage() == []
    assert len(clean) == 9


def test_snapshot_and_sums_of_two_generations_after_a_crash_between_renames(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sums are replaced before the snapshot is renamed into place: a crash in
    # between pairs the old snapshot with sums that still name it.
    store = durable.open()
    store.put("ns/pod/a", "pod", "old")
    durable.close(store)
    store = durable.open()
    store.put("ns/pod/a", "pod", "new")
    store.put("ns/pod/b", "pod", "b")
    store.commit()
    real_replace = os.replace

    def crash_before_the_snapshot_rename(src: Any, dst: Any) -> None:
        if str(dst) == str(durable.path):
            raise OSError(errno.EIO, "crash")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash_before_the_snapshot_rename)
        store.compact()  # logged, the journal kept
    durable.crash(store)
    again = durable.open()
    assert not again.recovered_from_damage, again.damage()
    assert contents(again) == {"ns/pod/a": "new", "ns/pod/b": "b"}


def test_a_snapshot_without_sums_is_read_as_it_is(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "1")
    durable.close(store)
    sums_of(durable).unlink()
    again = durable.open()
    assert not again.recovered_from_damage
    assert again.get("ns/pod/a") == "1"


# -- compaction by size and on a full disk ------------------------------------------------


def test_the_journal_is_compacted_by_size(durable: Durable) -> None:
    storage = DurableStorage(durable.path, sync=False, compact_bytes=50_000)
    store = MetaStore(storage)
    value = "x" * 10_000
    for i in range(30):
        store.put("ns/configmap/big", "configmap", f"{i} {value}")
        store.commit()
        store.wait_compaction()
        assert durable.journal.stat().st_size < 50_000 + 11_000
    store.close()
    assert MetaStore(DurableStorage(durable.path)).get("ns/configmap/big") == f"29 {value}"


def test_a_commit_that_finds_the_disk_full_compacts_and_is_retried(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    for i in range(20):
        store.put("ns/configmap/a", "configmap", f"v{i}")
        store.mark_seen([f"m-{i}"])
        store.commit()
    superseded = durable.journal.read_bytes().count(b'["p",')
    assert superseded == 20
    store.put("ns/configmap/a", "configmap", "last")
    store.put("ns/configmap/b", "configmap", "b")
    store.mark_seen(["m-last"])
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", enospc_writing(durable.journal, 1))
        store.commit()  # no StoreError: compacted, then written
    assert durable.journal.read_bytes().count(b'["p",') == 2
    durable.crash(store)
    again = durable.open()
    assert contents(again, "configmap") == {"ns/configmap/a": "last", "ns/configmap/b": "b"}
    assert again.seen("m-0") and again.seen("m-last")


def test_a_disk_that_stays_full_fails_the_commit_once_retried(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    store.put("ns/configmap/a", "configmap", "v1")
    store.commit()
    store.put("ns/configmap/a", "configmap", "v2")
    store.mark_seen(["m-2"])
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", enospc_writing(durable.journal, 2))
        with pytest.raises(StoreError, match="No space left"):
            store.commit()
    store.rollback()
    assert store.get("ns/configmap/a") == "v1"
    durable.crash(store)
    again = durable.open()
    assert again.get("ns/configmap/a") == "v1"
    assert not again.seen("m-2")


def test_a_snapshot_rewritten_by_plain_tinydb_is_read_as_it_is(durable: Durable) -> None:
    store = durable.open()
    store.put("ns/pod/a", "pod", "1")
    durable.close(store)
    with TinyDB(durable.path) as db:
        db.table("meta").insert({"key": "ns/pod/b", "type": "pod", "value": "2"})
    again = durable.open()
    assert not again.recovered_from_damage
    assert contents(again) == {"ns/pod/a": "1", "ns/pod/b": "2"}


class _Statvfs:
    def __init__(self, free: int) -> None:
        self.f_bavail = free
        self.f_frsize = 1


def test_the_journal_is_compacted_when_the_disk_runs_low(
    durable: Durable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = durable.open()
    value = "x" * 10_000
    free = [10**12]
    monkeypatch.setattr(os, "statvfs", lambda path: _Statvfs(free[0]))
    for i in range(20):
        store.put("ns/configmap/big", "configmap", f"{i} {value}")
        store.commit()
    store.wait_compaction()
    grown = durable.journal.stat().st_size
    assert grown > 200_000, "compacted while the disk had room"
    free[0] = 50_000  # less than two snapshots and the margin
    store.put("ns/configmap/big", "configmap", f"last {value}")
    store.commit()
    store.wait_compaction()
    assert durable.journal.stat().st_size < 20_000
    durable.crash(store)
    assert durable.open().get("ns/configmap/big") == f"last {value}"
