"""The metadata store: TinyDB table ``meta`` of ``{key, type, value}`` documents.

The only module besides ``snapshot`` that imports tinydb. ``DurableStorage``
is a TinyDB Storage whose writes are journalled (group commit, one fsync per
batch) and folded into a checksummed snapshot (``snapshot.Snapshot``);
``LiveTable`` lets TinyDB change one document without copying the whole
table, so a write costs the same at 1k or 100k records. ``MetaStore`` owns the
TinyDB instance, its lock, the indexes by key and by (type, namespace), the
encryption of secrets and the session state (``session.Session``), behind one
transaction API: changes apply at once, ``commit`` makes them durable,
``rollback`` and ``rollback_to(savepoint)`` undo them.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage, Storage
from tinydb.table import Document, Table

from .cipher import ValueCipher, is_encrypted
from .errors import StoreError
from .journal import Journal, ensure_private_dir, fsync_dir
from .progress import Progress
from .session import Sealer, Session
from .snapshot import Snapshot

log = logging.getLogger(__name__)

TABLE = "meta"
Doc = dict[str, Any]
#: The type whose values are encrypted at rest when the store has a cipher.
SECRET_TYPE = "secret"
#: Journal bytes after which it is folded into the snapshot (database.compactBytes).
COMPACT_BYTES = 64 * 1024 * 1024
#: Room kept free for one snapshot rewrite, beyond twice the last snapshot's size.
_HEADROOM_MARGIN = 64 * 1024

__all__ = [
    "SECRET_TYPE",
    "DatabaseInUse",
    "DurableStorage",
    "MetaStore",
    "Savepoint",
    "open_storage",
]


class DatabaseInUse(StoreError):
    """Another process (a running edgemeta, a ``db`` command) holds the database's lock."""


def _no_space(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


class DurableStorage(Storage):
    """Crash-safe TinyDB storage: snapshot at ``path``, journal at ``path.journal``.

    ``read`` returns the live in-memory data; ``LiveTable`` reports each change
    through ``record``; ``commit`` makes every change since the last commit
    durable with one fsync; ``rollback`` undoes them in memory.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sync: bool = True,
        compact_after: int = 100_000,
        compact_bytes: int = COMPACT_BYTES,
        lock: bool = False,
    ):
        self.path = Path(path)
        self.compact_after = compact_after
        self.compact_bytes = compact_bytes
        ensure_private_dir(self.path.parent)
        self._lock_fd: int | None = self._acquire_lock() if lock else None
        self.snapshot = Snapshot(self.path, sync=sync)
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"), sync=sync)
        # The journal of a compaction whose snapshot is still being written.
        self.old_journal = self.path.with_name(self.path.name + ".journal.old")
        self._compaction: threading.Thread | None = None
        self._undo: list[tuple[str, str, Doc | None]] = []
        self._undo_full: dict[str, dict[str, Doc]] | None = None
        self._size_at_reset = 0
        self._low_space_tried_at = 0
        self.session_records: list[Any] = []
        self.damage: list[str] = []
        self.recovered_from_damage = False
        try:
            self._data = self.snapshot.load()
            self.damage.extend(self.snapshot.damage)
            self.recovered_from_damage = self.snapshot.recovered_from_damage
            self._replay()
            self.journal.open()
            self._size_at_reset = self.journal.size
            interrupted = self.old_journal.exists()
            if (self.recovered_from_damage or interrupted) and self.journal.writable:
                # What was salvaged, or what an interrupted compaction left in two
                # journals, is folded into a new snapshot at once.
                self.compact(self.session_records)
        except BaseException:
            self.unlock()
            raise

    # -- the advisory lock: one process at a time owns the files -----------
    def _acquire_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES) or not lock_path.exists():
                raise
            fd = os.open(lock_path, os.O_RDONLY)  # a read-only disk: flock still works
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"database {self.path} is in use by another process (it holds {lock_path})"
            ) from None
        except OSError:
            os.close(fd)
            raise
        return fd

    def unlock(self) -> None:
        """Release the advisory lock (the file stays: removing it would race)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- start-up -------------------------------------------------------
    def _replay(self) -> None:
        journals = [self.journal]
        if self.old_journal.exists():
            # A compaction was interrupted: its journal comes first. Replaying it
            # onto a snapshot that already holds it is harmless (same final values).
            journals.insert(0, Journal(self.old_journal, sync=self.journal.sync_enabled))
        for journal in journals:
            self._replay_one(journal)
            self.damage.extend(journal.damage)
            self.recovered_from_damage = self.recovered_from_damage or journal.damaged

    def _replay_one(self, journal: Journal) -> None:
        data = self._data
        try:
            size = journal.path.stat().st_size
        except OSError:
            size = 0
        progress = Progress("replaying the journal", size, unit="bytes")
        for count, record in enumerate(journal.replay()):
            if count & 0x3FF == 0:
                progress.update(journal.replayed_bytes)
            kind = record[0]
            if kind == "p":
                data.setdefault(record[1], {})[record[2]] = record[3]
            elif kind == "d":
                data.get(record[1], {}).pop(record[2], None)
            elif kind == "w":
                data.clear()
                data.update(record[1])
            else:
                self.session_records.append(record)
        progress.update(journal.replayed_bytes)
        progress.finish()

    # -- TinyDB Storage API ---------------------------------------------
    def read(self) -> dict[str, dict[str, Any]] | None:
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self._undo_full is None:
            self._undo_full = copy.deepcopy(self._data)
            self._undo.clear()
        if data is not self._data:
            self._data.clear()
            self._data.update(data)
        self.journal.append(["w", self._data])

    def close(self) -> None:
        try:
            self.commit()
            self.compact([])
        finally:
            self.release()

    def release(self) -> None:
        """Close the journal and drop the lock; nothing more is written."""
        self.wait_compaction()
        self.journal.close()
        self.unlock()

    # -- the fast path --------------------------------------------------
    def live_table(self, name: str) -> dict[str, Doc]:
        table = self._data.get(name)
        if table is None:
            table = self._data[name] = {}
        return table

    def record(self, table: str, doc_id: str, doc: Doc | None, before: Doc | None) -> None:
        if self._undo_full is None:
            self._undo.append((table, doc_id, before))
        if doc is None:
            self.journal.append(["d", table, doc_id])
        else:
            self.journal.append(["p", table, doc_id, doc])

    def append_session(self, record: list[Any]) -> None:
        self.journal.append(record)

    def commit(self) -> None:
        self.journal.commit()
        self._undo.clear()
        self._undo_full = None

    def rollback(self) -> None:
        self.journal.discard()
        if self._undo_full is not None:
            self._data.clear()
            self._data.update(self._undo_full)
        else:
            self._undo_back_to(0)
        self._undo.clear()
        self._undo_full = None

    def savepoint(self) -> tuple[int, int]:
        return (len(self._undo), self.journal.pending_count)

    def rollback_to(self, point: tuple[int, int]) -> None:
        if self._undo_full is not None:
            raise StoreError("a whole-table write cannot be rolled back to a savepoint")
        self._undo_back_to(point[0])
        self.journal.discard_after(point[1])

    def _undo_back_to(self, position: int) -> None:
        while len(self._undo) > position:
            table, doc_id, before = self._undo.pop()
            live = self.live_table(table)
            if before is None:
                live.pop(doc_id, None)
            else:
                live[doc_id] = before

    def committed_tables(self) -> dict[str, dict[str, Doc]]:
        """The tables as of the last commit, as shallow copies (the open changes stay)."""
        if self._undo_full is not None:
            return self._undo_full
        tables = {name: dict(table) for name, table in self._data.items()}
        for table, doc_id, before in reversed(self._undo):
            if before is None:
                tables.setdefault(table, {}).pop(doc_id, None)
            else:
                tables.setdefault(table, {})[doc_id] = before
        return tables

    @property
    def needs_compaction(self) -> bool:
        running = self._compaction is not None and self._compaction.is_alive()
        if running:
            return False
        if self.journal.records_since_reset >= self.compact_after:
            return True
        grown = self.journal.size - self._size_at_reset
        return grown >= self.compact_bytes or self._low_on_space(grown)

    def _low_on_space(self, grown: int) -> bool:
        """True when the disk could soon not hold one more snapshot, and compaction helps."""
        headroom = 2 * self.snapshot.disk_bytes + _HEADROOM_MARGIN
        # Not again before the journal grew by as much since the last try: a
        # compaction that failed for lack of space is not retried at every commit.
        since_try = self.journal.size - self._low_space_tried_at
        if grown < headroom // 2 or since_try < headroom // 2:
            return False  # a compaction would give back too little to be worth it
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False
        if stats.f_bavail * stats.f_frsize >= headroom:
            return False
        self._low_space_tried_at = self.journal.size
        return True

    @property
    def has_uncommitted_changes(self) -> bool:
        """True when the table changed since the last commit (session records aside)."""
        return bool(self._undo) or self._undo_full is not None

    def compact(self, session: list[Any], tables: dict[str, dict[str, Doc]] | None = None) -> None:
        """Fold the journal into a new snapshot now; ``session`` records start the new journal.

        With ``tables`` (the committed state), the open transaction's records
        stay buffered: a commit that failed for lack of space is retried after.
        """
        self.wait_compaction()
        if tables is None:
            self.journal.commit()
            tables = self._data
        self.snapshot.write(tables)
        self.journal.reset(session)
        self._size_at_reset = self.journal.size
        self._low_space_tried_at = 0
        self._drop_old_journal()

    def start_compaction(self, session: list[Any]) -> None:
        """Fold the journal into a new snapshot without holding up the caller.

        The journal is set aside as ``<path>.journal.old`` and a new one starts
        with ``session``; a thread writes the snapshot of the data as it is now
        and then deletes the old journal. Documents are replaced, never changed
        in place (``_Recorder``), so a shallow copy of each table is a
        consistent picture. A crash in between leaves both journals, and both
        are replayed at the next start.
        """
        self.wait_compaction()
        if self.old_journal.exists():
            self.compact(session)  # the last snapshot failed: no second old journal
            return
        self.journal.commit()
        self.journal.close()
        os.replace(self.journal.path, self.old_journal)
        fsync_dir(self.path.parent)
        self.journal.reset(session)
        self._size_at_reset = self.journal.size
        self._low_space_tried_at = 0
        tables = {name: dict(table) for name, table in self._data.items()}
        self._compaction = threading.Thread(
            target=self._write_snapshot, args=(tables,), name="edgemeta-compaction", daemon=True
        )
        self._compaction.start()

    def _write_snapshot(self, tables: dict[str, dict[str, Doc]]) -> None:
        try:
            self.snapshot.write(tables)
            self._drop_old_journal()
        except OSError as exc:
            log.error("writing the snapshot %s failed, its journal is kept: %s", self.path, exc)

    def wait_compaction(self) -> None:
        if self._compaction is not None:
            self._compaction.join()
            self._compaction = None

    def _drop_old_journal(self) -> None:
        if self.old_journal.exists():
            self.old_journal.unlink()
            fsync_dir(self.path.parent)


class _Recorder(MutableMapping[int, Doc]):
    """TinyDB's view of a live table during one update: records touched documents."""

    def __init__(self, raw: dict[str, Doc]) -> None:
        self.raw = raw
        self.before: dict[str, Doc | None] = {}

    def _touch(self, key: str) -> None:
        if key not in self.before:
            self.before[key] = self.raw.get(key)

    def __getitem__(self, doc_id: int) -> Doc:
        # Copy on write: the document TinyDB changes is a new object, so the old
        # one is the before-image and a snapshot being written never sees a change.
        key = str(doc_id)
        self._touch(key)
        doc = self.raw[key] = dict(self.raw[key])
        return doc

    def __setitem__(self, doc_id: int, doc: Doc) -> None:
        key = str(doc_id)
        self._touch(key)
        self.raw[key] = doc

    def __delitem__(self, doc_id: int) -> None:
        key = str(doc_id)
        self._touch(key)
        del self.raw[key]

    def __contains__(self, doc_id: object) -> bool:
        return str(doc_id) in self.raw

    def __iter__(self) -> Iterator[int]:
        return iter([int(k) for k in self.raw])

    def __len__(self) -> int:
        return len(self.raw)


class LiveTable(Table):
    """A TinyDB Table that works on DurableStorage's live data instead of copies."""

    def _read_table(self) -> dict[str, Any]:
        storage = self._storage
        if isinstance(storage, DurableStorage):
            return storage.live_table(self.name)
        return super()._read_table()

    def _update_table(self, updater: Callable[[dict[int, Any]], None]) -> None:
        storage = self._storage
        if not isinstance(storage, DurableStorage):
            super()._update_table(updater)
            return
        recorder = _Recorder(storage.live_table(self.name))
        updater(recorder)  # type: ignore[arg-type]
        for key, before in recorder.before.items():
            doc = recorder.raw.get(key)
            if doc != before:
                storage.record(self.name, key, doc, before)
        self.clear_cache()


class _MetaDB(TinyDB):
    table_class = LiveTable


def open_storage(
    path: str | Path,
    *,
    sync: bool = True,
    compact_after: int = 100_000,
    compact_bytes: int = COMPACT_BYTES,
    lock: bool = False,
) -> Storage:
    """The durable storage at ``path``; ``lock`` takes ``<path>.lock`` or raises DatabaseInUse."""
    try:
        return DurableStorage(
            path, sync=sync, compact_after=compact_after, compact_bytes=compact_bytes, lock=lock
        )
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Savepoint:
    """A position inside the open transaction (``MetaStore.savepoint``)."""

    table: Any
    index: int
    session: int
    changes: int


# A key's document before a change on a non-durable storage: (key, type, value, doc_id).
_Before = tuple[str, str, str, int] | None


class MetaStore:
    """Keyed metadata with indexes by key and by (type, namespace); thread-safe.

    Changes are applied in memory at once and become durable at ``commit``;
    ``rollback`` drops every change since the last commit, ``rollback_to`` those
    since a ``savepoint``. Besides the table, the store keeps the session state
    (``session.Session``): duplicate windows, outbox, pending calls, revision.

    With a ``cipher``, the values of type ``secret`` are stored encrypted and
    read decrypted. Whether a stored value is encrypted is recorded with the
    session (never guessed from the value's text, which the cloud chooses);
    a database written before that record existed is read by the prefix once.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        dedup_window: int = 20_000,
        device_window: int = 2_000,
        cipher: ValueCipher | None = None,
    ) -> None:
        self._cipher = cipher
        self._storage: Storage = storage if storage is not None else MemoryStorage()
        self._durable = self._storage if isinstance(self._storage, DurableStorage) else None
        given = self._storage
        self._db = _MetaDB(storage=lambda: given)
        self._table = self._db.table(TABLE, cache_size=0)
        self._lock = threading.RLock()
        self._ids: dict[str, int] = {}
        self._types: dict[str, str] = {}
        self._by_type_ns: dict[tuple[str, str], set[str]] = {}
        self._index_undo: list[Callable[[], None]] = []
        self._table_undo: list[tuple[int | None, _Before]] = []
        #: (key, type, value or None, revision reached by the change), in order.
        self._changes: list[tuple[str, str, str | None, int]] = []
        sealer = Sealer(cipher.encrypt if cipher else None, cipher.decrypt if cipher else None)
        self._session = Session(
            self._append, sealer, window=dedup_window, device_window=device_window
        )
        for doc in self._table.all():
            key = doc.get("key")
            if isinstance(key, str):
                self._index(key, str(doc.get("type", "")), doc.doc_id)
        if self._durable is not None:
            self._session.load(self._durable.session_records)
            self._durable.session_records = []
        state = self._session.state
        if not state.encryption_recorded:
            # Written before the record existed: the prefix was the only sign.
            state.encrypted = {
                k for k, t in self._types.items() if t == SECRET_TYPE and is_encrypted(self._raw(k))
            }

    def _append(self, record: list[Any]) -> None:
        if self._durable is not None:
            self._durable.append_session(record)

    @property
    def recovered_from_damage(self) -> bool:
        return bool(self._durable and self._durable.recovered_from_damage)

    def damage(self) -> list[str]:
        """What start-up recovery dropped, one human-readable line each."""
        return list(self._durable.damage) if self._durable is not None else []

    # -- indexes --------------------------------------------------------
    def _index(self, key: str, restype: str, doc_id: int) -> None:
        self._ids[key] = doc_id
        self._types[key] = restype
        self._by_type_ns.setdefault((restype, key.split("/", 1)[0]), set()).add(key)

    def _unindex(self, key: str) -> None:
        self._ids.pop(key, None)
        restype = self._types.pop(key, None)
        if restype is not None:
            bucket = self._by_type_ns.get((restype, key.split("/", 1)[0]))
            if bucket is not None:
                bucket.discard(key)

    def _reindex(self, key: str, restype: str, doc_id: int) -> None:
        self._unindex(key)
        self._index(key, restype, doc_id)

    # -- reads ----------------------------------------------------------
    def _raw(self, key: str) -> str:
        doc = self._table.get(doc_id=self._ids[key])
        assert isinstance(doc, dict)
        return str(doc["value"])

    def _reveal(self, key: str, value: str) -> str:
        if self._cipher is None or key not in self._session.state.encrypted:
            return value
        try:
            return self._cipher.decrypt(value)
        except StoreError as exc:
            raise StoreError(f"secret {key}: {exc}") from None

    def get(self, key: str) -> str | None:
        with self._lock:
            doc_id = self._ids.get(key)
            if doc_id is None:
                return None
            doc = self._table.get(doc_id=doc_id)
            return None if doc is None else self._reveal(key, doc["value"])

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._ids

    def values(self, restype: str, namespace: str) -> list[str]:
        """Values of a type in a namespace, ordered by key (code point order)."""
        with self._lock:
            keys = sorted(self._by_type_ns.get((restype, namespace), ()))
            return [self._reveal(k, self._raw(k)) for k in keys]

    def items_of_type(self, restype: str) -> list[tuple[str, str]]:
        """Every (key, value) of a type, ordered by key."""
        with self._lock:
            keys = sorted(
                k for (t, _ns), bucket in self._by_type_ns.items() if t == restype for k in bucket
            )
            return [(k, self._reveal(k, self._raw(k))) for k in keys]

    def items(self) -> list[tuple[str, str, str]]:
        """Every (key, type, value), ordered by key (code point order)."""
        with self._lock:
            return [(k, self._types[k], self._reveal(k, self._raw(k))) for k in sorted(self._ids)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    # -- writes ---------------------------------------------------------
    def put(self, key: str, restype: str, value: str, *, encrypted: bool = False) -> None:
        """Insert or replace the document of ``key``.

        ``encrypted``: ``value`` is already a value encrypted by this store's
        cipher (an import of an export), kept as it is.
        """
        seal = restype == SECRET_TYPE and self._cipher is not None and not encrypted
        stored = self._cipher.encrypt(value) if seal and self._cipher is not None else value
        with self._lock:
            before = self._before(key)
            doc_id = self._ids.get(key)
            if doc_id is None:
                doc_id = self._table.insert({"key": key, "type": restype, "value": stored})
                self._index(key, restype, doc_id)
                self._index_undo.append(lambda: self._unindex(key))
            else:
                old_type = self._types[key]
                self._table.update({"type": restype, "value": stored}, doc_ids=[doc_id])
                if old_type != restype:
                    self._reindex(key, restype, doc_id)
                    old_id = doc_id
                    self._index_undo.append(lambda: self._reindex(key, old_type, old_id))
            self._note(doc_id, before)
            self._session.set_encrypted(key, seal or (encrypted and restype == SECRET_TYPE))
            self._session.bump_revision()
            self._changes.append((key, restype, value, self._session.state.revision))

    def put_many(self, items: Iterable[tuple[str, str, str]]) -> None:
        with self._lock:
            for key, restype, value in items:
                self.put(key, restype, value)

    def delete(self, key: str) -> bool:
        """Remove ``key``; False when it was not there."""
        with self._lock:
            doc_id = self._ids.get(key)
            if doc_id is None:
                return False
            before = self._before(key)
            restype = self._types[key]
            self._table.remove(doc_ids=[doc_id])
            self._unindex(key)
            self._index_undo.append(lambda: self._index(key, restype, doc_id))
            self._note(None, before)
            self._session.set_encrypted(key, False)
            self._session.bump_revision()
            self._changes.append((key, restype, None, self._session.state.revision))
            return True

    # Storages other than DurableStorage keep no undo of their own: each change
    # notes the key's document before it, so rollback can put it back.
    def _before(self, key: str) -> _Before:
        if self._durable is not None:
            return None
        doc_id = self._ids.get(key)
        if doc_id is None:
            return None
        doc = self._table.get(doc_id=doc_id)
        assert isinstance(doc, dict)
        return (key, doc["type"], doc["value"], doc_id)

    def _note(self, doc_id: int | None, before: _Before) -> None:
        if self._durable is None:
            self._table_undo.append((doc_id, before))

    def _undo_table_to(self, position: int) -> None:
        while len(self._table_undo) > position:
            doc_id, before = self._table_undo.pop()
            if doc_id is not None and self._table.contains(doc_id=doc_id):
                self._table.remove(doc_ids=[doc_id])
            if before is not None:
                key, restype, value, old_id = before
                if self._table.contains(doc_id=old_id):
                    self._table.remove(doc_ids=[old_id])
                self._table.insert(Document({"key": key, "type": restype, "value": value}, old_id))

    def check_secrets(self) -> int:
        """Make the stored secrets match the cipher; returns how many were encrypted now.

        With a cipher: every encrypted secret must decrypt (else StoreError),
        and secrets stored in plain text before are encrypted (commit and
        compact afterwards, so that no plain copy stays in the files).
        Without: StoreError when a secret is stored encrypted, since it could
        only be served as ciphertext.
        """
        with self._lock:
            marked = self._session.state.encrypted
            stored = {k: self._raw(k) for k, t in self._types.items() if t == SECRET_TYPE}
            encrypted = [k for k in stored if k in marked]
            if self._cipher is None:
                if encrypted:
                    raise StoreError(
                        f"{len(encrypted)} secret value(s) are stored encrypted (e.g. "
                        f"{min(encrypted)}) but no database.secretKeyFile is set"
                    )
                state = self._session.state
                sealed = [*state.outbox.values(), *state.calls.values()]
                if any(isinstance(entries, str) for entries in sealed):
                    raise StoreError(
                        "the journal holds encrypted messages not yet sent, but no "
                        "database.secretKeyFile is set"
                    )
                return 0
            unreadable = []
            for key in encrypted:
                try:
                    self._cipher.decrypt(stored[key])
                except StoreError:
                    unreadable.append(key)
            if unreadable:
                raise StoreError(
                    f"database.secretKeyFile does not decrypt {len(unreadable)} of "
                    f"{len(encrypted)} encrypted secret value(s) (e.g. {min(unreadable)}): "
                    "another key?"
                )
            plain = [(k, v) for k, v in stored.items() if k not in marked]
            for key, value in plain:
                self.put(key, SECRET_TYPE, value)
            return len(plain)

    # -- session -----------------------------------------------------------
    def seen(self, msg_id: str) -> bool:
        with self._lock:
            return self._session.seen(msg_id)

    def mark_seen(self, ids: list[str]) -> None:
        with self._lock:
            self._session.mark_seen(ids)

    def device_seen(self, key: str) -> bool:
        """True when a device reading with this key was applied (its own window)."""
        with self._lock:
            return self._session.device_seen(key)

    def mark_device_seen(self, keys: list[str]) -> None:
        with self._lock:
            self._session.mark_device_seen(keys)

    def add_outbox(self, entries: list[Any]) -> int:
        """Keep messages to publish with the next commit; returns their batch number."""
        with self._lock:
            return self._session.add_outbox(entries)

    def outbox_sent(self, seqs: list[int]) -> None:
        """Forget batches the broker has confirmed (durable with the next commit)."""
        with self._lock:
            self._session.outbox_sent(seqs)

    def outbox(self) -> list[tuple[int, list[Any]]]:
        with self._lock:
            return list(self._session.state.outbox.items())

    @property
    def outbox_bytes(self) -> int:
        """Bytes of payload text held in the outbox (for back-pressure)."""
        with self._lock:
            return self._session.state.outbox_bytes

    def open_call(self, call_id: str, record: dict[str, Any]) -> None:
        """Keep a pending call (a JSON-able record) until ``end_call``."""
        with self._lock:
            self._session.open_call(call_id, record)

    def end_call(self, call_id: str) -> None:
        with self._lock:
            self._session.end_call(call_id)

    def calls(self) -> dict[str, dict[str, Any]]:
        """The pending calls in the order they were opened."""
        with self._lock:
            return copy.deepcopy(self._session.state.calls)

    @property
    def revision(self) -> int:
        """Grows by one with every change of a stored document (put or delete)."""
        with self._lock:
            return self._session.state.revision

    def changes_since_commit(self) -> list[tuple[str, str, str | None]]:
        """(key, type, value) of every key changed in the open transaction; None: deleted."""
        with self._lock:
            last: dict[str, tuple[str, str | None]] = {}
            for key, restype, value, _revision in self._changes:
                last[key] = (restype, value)
            return [(key, restype, value) for key, (restype, value) in last.items()]

    def revised_changes(self) -> list[tuple[str, str, str | None, int]]:
        """The last change of each key in the open transaction, with the revision it
        reached, in revision order: (key, type, value or None when deleted, revision)."""
        with self._lock:
            last: dict[str, tuple[str, str, str | None, int]] = {}
            for change in self._changes:
                last.pop(change[0], None)
                last[change[0]] = change
            return list(last.values())

    def advance_revision(self, count: int) -> int:
        """Reserve ``count`` revisions (durable with the next commit); returns the first."""
        with self._lock:
            first = self._session.state.revision + 1
            if count > 0:
                self._session.bump_revision(count)
            return first

    # -- transactions -----------------------------------------------------
    @property
    def has_uncommitted_changes(self) -> bool:
        """True when the table changed since the last commit."""
        with self._lock:
            if self._durable is not None:
                return self._durable.has_uncommitted_changes
            return bool(self._table_undo)

    @property
    def has_pending_writes(self) -> bool:
        """True when the next commit has something to write (session records included)."""
        with self._lock:
            return self._durable is not None and self._durable.journal.has_pending

    def savepoint(self) -> Savepoint:
        """A point of the open transaction that ``rollback_to`` can go back to."""
        with self._lock:
            table = self._durable.savepoint() if self._durable else len(self._table_undo)
            return Savepoint(table, len(self._index_undo), self._session.mark(), len(self._changes))

    def rollback_to(self, point: Savepoint) -> None:
        """Undo every change made after ``point``; earlier changes stay uncommitted."""
        with self._lock:
            if self._durable is not None:
                self._durable.rollback_to(point.table)
            else:
                self._undo_table_to(point.table)
            while len(self._index_undo) > point.index:
                self._index_undo.pop()()
            self._session.undo_to(point.session)
            del self._changes[point.changes :]
            self._table.clear_cache()

    def commit(self) -> None:
        """Make every change since the last commit durable (one fsync).

        When the disk is full, the journal is folded into a new snapshot (which
        drops superseded records) and the commit is tried once more.
        """
        with self._lock:
            durable = self._durable
            if durable is not None:
                for record in self._session.commit_records():
                    durable.append_session(record)
                try:
                    durable.commit()
                except StoreError as exc:
                    if not _no_space(exc):
                        raise
                    log.warning("%s: compacting the journal and trying again", exc)
                    self._compact_committed()
                    durable.commit()
            self._session.committed_now()
            self._index_undo.clear()
            self._table_undo.clear()
            self._changes.clear()
            if durable is not None and durable.needs_compaction:
                self.compact(background=True)

    def _compact_committed(self) -> None:
        durable = self._durable
        assert durable is not None
        durable.wait_compaction()
        session = self._session.records(self._session.committed())
        try:
            durable.compact(session, durable.committed_tables())
        except OSError as exc:
            raise StoreError(f"cannot compact {durable.path}: {exc.strerror or exc}") from exc

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        with self._lock:
            if self._durable is not None:
                self._durable.rollback()
            else:
                self._undo_table_to(0)
            for undo in reversed(self._index_undo):
                undo()
            self._index_undo.clear()
            self._session.undo_to(0)
            self._changes.clear()
            self._table.clear_cache()

    def compact(self, *, background: bool = False) -> None:
        """Fold the journal into a new snapshot; a failure is logged, the journal kept.

        ``background``: the snapshot is written by a thread of its own (the
        journal is switched at once); otherwise this returns when it is done.
        """
        with self._lock:
            if self._durable is None:
                return
            try:
                if background:
                    self._durable.start_compaction(self._session.records())
                else:
                    self._durable.compact(self._session.records())
                self._session.note_recorded()
            except (OSError, StoreError) as exc:
                log.error(
                    "compaction of %s failed, the journal is kept: %s", self._durable.path, exc
                )

    def wait_compaction(self) -> None:
        """Return when a snapshot being written in the background is done."""
        if self._durable is not None:
            self._durable.wait_compaction()

    def abandon(self) -> None:
        """Drop the open transaction, close the journal and release the lock; write nothing.

        For a start-up that fails after opening the store.
        """
        with self._lock:
            self.rollback()
            if self._durable is not None:
                self._durable.release()

    def close(self) -> None:
        with self._lock:
            if self._durable is not None:
                try:
                    self.commit()
                    self._durable.compact(self._session.records())
                finally:
                    self._durable.release()
            else:
                self._db.close()
