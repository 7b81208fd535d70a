"""The metadata store: TinyDB table ``meta`` of ``{key, type, value}`` documents.

The only module that imports tinydb. ``DurableStorage`` is a TinyDB Storage
whose writes are journalled (group commit, one fsync per batch) and folded
into a TinyDB-layout snapshot; ``LiveTable`` lets TinyDB change one document
without copying the whole table, so a write costs the same at 1k or 100k
records. ``MetaStore`` owns the TinyDB instance, its lock and the indexes by
key and by (type, namespace).
"""

from __future__ import annotations

import copy
import errno
import fcntl
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage, Storage
from tinydb.table import Document, Table

from .cipher import ValueCipher, is_encrypted
from .errors import StoreError
from .journal import (
    Journal,
    dumps_safe,
    ensure_private_dir,
    fsync_dir,
    loads_safe,
    set_aside,
    write_atomic,
)
from .progress import Progress

log = logging.getLogger(__name__)

TABLE = "meta"
Doc = dict[str, Any]
#: The type whose values are encrypted at rest when the store has a cipher.
SECRET_TYPE = "secret"


class DatabaseInUse(StoreError):
    """Another process (a running edgemeta, a ``db`` command) holds the database's lock."""


_TABLE_LINE = re.compile(rb'^"((?:[^"\\]|\\.)*)": \{$')


def _snapshot_chunks(data: dict[str, dict[str, Doc]]) -> Iterator[bytes]:
    """TinyDB's JSON layout with one document per line, so a damaged file can be salvaged."""
    yield b"{"
    for t_index, (name, table) in enumerate(data.items()):
        yield (b",\n" if t_index else b"\n") + dumps_safe(name) + b": {"
        first = True
        for doc_id, doc in table.items():
            yield (b"\n" if first else b",\n") + dumps_safe(doc_id) + b": " + dumps_safe(doc)
            first = False
        yield b"\n}"
    yield b"\n}\n"


def _read_lines(path: Path) -> dict[str, dict[str, Doc]] | None:
    """A snapshot written by ``_snapshot_chunks``, read a line at a time.

    Nothing but the documents is held in memory (not the file's text too).
    Returns None for any other layout, including a damaged file: the caller
    then reads it whole.
    """
    data: dict[str, dict[str, Doc]] = {}
    current: dict[str, Doc] | None = None
    closed = False
    with open(path, "rb") as src:
        if src.readline().strip() != b"{":
            return None
        for line in src:
            text = line.strip()
            if closed:
                if text:
                    return None
                continue
            if current is None:
                header = _TABLE_LINE.match(text)
                if header is not None:
                    current = data.setdefault(loads_safe(b'"' + header.group(1) + b'"'), {})
                elif text == b"}":
                    closed = True
                else:
                    return None
                continue
            if text in (b"}", b"},"):
                current = None
                continue
            try:
                entry = loads_safe(b"{" + text.rstrip(b",") + b"}")
            except ValueError:
                return None
            if not isinstance(entry, dict) or len(entry) != 1:
                return None
            for doc_id, doc in entry.items():
                if not isinstance(doc, dict):
                    return None
                current[doc_id] = doc
    return data if closed else None


def _salvage(raw: bytes) -> dict[str, dict[str, Doc]]:
    """Every intact document of a damaged snapshot written by ``_snapshot_chunks``."""
    data: dict[str, dict[str, Doc]] = {}
    current: dict[str, Doc] | None = None
    for line in raw.splitlines():
        m = _TABLE_LINE.match(line.lstrip(b"{,").strip())
        if m:
            current = data.setdefault(loads_safe(b'"' + m.group(1) + b'"'), {})
            continue
        if current is None:
            continue
        try:
            entry = loads_safe(b"{" + line.rstrip().rstrip(b",") + b"}")
        except ValueError:
            continue
        for doc_id, doc in entry.items():
            if isinstance(doc, dict):
                current[doc_id] = doc
    return data


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
        lock: bool = False,
    ):
        self.path = Path(path)
        self.compact_after = compact_after
        ensure_private_dir(self.path.parent)
        self._lock_fd: int | None = self._acquire_lock() if lock else None
        self.journal = Journal(self.path.with_name(self.path.name + ".journal"), sync=sync)
        # The journal of a compaction whose snapshot is still being written.
        self.old_journal = self.path.with_name(self.path.name + ".journal.old")
        self._compaction: threading.Thread | None = None
        self._undo: list[tuple[str, str, Doc | None]] = []
        self._undo_full: dict[str, dict[str, Doc]] | None = None
        self.session_records: list[Any] = []
        self.recovered_from_damage = False
        try:
            self._data = self._load_snapshot()
            self._replay()
            self.journal.open()
            if self.journal.damaged:
                self.recovered_from_damage = True
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
    def _load_snapshot(self) -> dict[str, dict[str, Doc]]:
        try:
            streamed = _read_lines(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if streamed is not None:
            return streamed
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if not raw.strip():
            return {}
        try:
            data = loads_safe(raw)
            if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
                raise ValueError("not a TinyDB document layout")
            return data
        except ValueError as exc:
            aside = set_aside(self.path)
            data = _salvage(raw)
            count = sum(len(t) for t in data.values())
            self.recovered_from_damage = True
            log.error(
                "DATABASE DAMAGED: %s is not valid JSON (%s); recovered %d intact documents, "
                "the damaged file is kept as %s",
                self.path,
                exc,
                count,
                aside,
            )
            return data

    def _replay(self) -> None:
        journals = [self.journal]
        if self.old_journal.exists():
            # A compaction was interrupted: its journal comes first. Replaying it
            # onto a snapshot that already holds it is harmless (same final values).
            journals.insert(0, Journal(self.old_journal, sync=self.journal.sync_enabled))
        for journal in journals:
            self._replay_one(journal)
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
            for table, doc_id, before in reversed(self._undo):
                live = self.live_table(table)
                if before is None:
                    live.pop(doc_id, None)
                else:
                    live[doc_id] = before
        self._undo.clear()
        self._undo_full = None

    @property
    def needs_compaction(self) -> bool:
        running = self._compaction is not None and self._compaction.is_alive()
        return not running and self.journal.records_since_reset >= self.compact_after

    @property
    def has_uncommitted_changes(self) -> bool:
        """True when the table changed since the last commit (session records aside)."""
        return bool(self._undo) or self._undo_full is not None

    def compact(self, session: list[Any]) -> None:
        """Fold the journal into a new snapshot now; ``session`` records start the new journal."""
        self.wait_compaction()
        self.journal.commit()
        write_atomic(self.path, _snapshot_chunks(self._data), sync=self.journal.sync_enabled)
        self.journal.reset(session)
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
        tables = {name: dict(table) for name, table in self._data.items()}
        self._compaction = threading.Thread(
            target=self._write_snapshot, args=(tables,), name="edgemeta-compaction", daemon=True
        )
        self._compaction.start()

    def _write_snapshot(self, tables: dict[str, dict[str, Doc]]) -> None:
        try:
            write_atomic(self.path, _snapshot_chunks(tables), sync=self.journal.sync_enabled)
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
    path: str | Path, *, sync: bool = True, compact_after: int = 100_000, lock: bool = False
) -> Storage:
    """The durable storage at ``path``; ``lock`` takes ``<path>.lock`` or raises DatabaseInUse."""
    try:
        return DurableStorage(path, sync=sync, compact_after=compact_after, lock=lock)
    except OSError as exc:
        raise StoreError(f"cannot open database {path}: {exc.strerror or exc}") from exc


class MetaStore:
    """Keyed metadata with indexes by key and by (type, namespace); thread-safe.

    Changes are applied in memory at once and become durable at ``commit``;
    ``rollback`` drops every change since the last commit. Besides the table,
    the store keeps the session: a bounded window of processed msg_ids and an
    outbox of messages committed but not yet confirmed by the broker.

    With a ``cipher``, the values of type ``secret`` are stored encrypted and
    read decrypted (a value stored before, without the cipher's prefix, reads
    as it is). Without one, every value is read and written as stored.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        dedup_window: int = 20_000,
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
        self._window = dedup_window
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._outbox: OrderedDict[int, list[Any]] = OrderedDict()
        self._seq = 0
        self._calls: dict[str, dict[str, Any]] = {}
        self._journal_undo: list[Callable[[], None]] = []
        self._key_undo: dict[str, tuple[str, str, int] | None] = {}
        for doc in self._table.all():
            key = doc.get("key")
            if isinstance(key, str):
                self._index(key, str(doc.get("type", "")), doc.doc_id)
        if self._durable is not None:
            self._load_session(self._durable.session_records)

    @property
    def recovered_from_damage(self) -> bool:
        return bool(self._durable and self._durable.recovered_from_damage)

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

    # -- reads ----------------------------------------------------------
    def _reveal(self, key: str, restype: str, value: str) -> str:
        if self._cipher is None or restype != SECRET_TYPE:
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
            return None if doc is None else self._reveal(key, self._types[key], doc["value"])

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._ids

    def values(self, restype: str, namespace: str) -> list[str]:
        """Values of a type in a namespace, ordered by key (code point order)."""
        with self._lock:
            keys = sorted(self._by_type_ns.get((restype, namespace), ()))
            return [
                self._reveal(k, restype, self._table.get(doc_id=self._ids[k])["value"])  # type: ignore[index]
                for k in keys
            ]

    def items_of_type(self, restype: str) -> list[tuple[str, str]]:
        """Every (key, value) of a type, ordered by key."""
        with self._lock:
            keys = sorted(
                k for (t, _ns), bucket in self._by_type_ns.items() if t == restype for k in bucket
            )
            return [
                (k, self._reveal(k, restype, self._table.get(doc_id=self._ids[k])["value"]))  # type: ignore[index]
                for k in keys
            ]

    def items(self) -> list[tuple[str, str, str]]:
        """Every (key, type, value), ordered by key (code point order)."""
        with self._lock:
            return [
                (
                    k,
                    self._types[k],
                    self._reveal(k, self._types[k], self._table.get(doc_id=self._ids[k])["value"]),  # type: ignore[index]
                )
                for k in sorted(self._ids)
            ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    # -- writes ---------------------------------------------------------
    def put(self, key: str, restype: str, value: str) -> None:
        """Insert or replace the document of ``key``."""
        if restype == SECRET_TYPE and self._cipher is not None:
            value = self._cipher.encrypt(value)
        with self._lock:
            self._note_before(key)
            doc_id = self._ids.get(key)
            if doc_id is None:
                doc_id = self._table.insert({"key": key, "type": restype, "value": value})
                self._index(key, restype, doc_id)
                self._journal_undo.append(lambda: self._unindex(key))
                return
            old_type = self._types[key]
            self._table.update({"type": restype, "value": value}, doc_ids=[doc_id])
            if old_type != restype:
                self._unindex(key)
                self._index(key, restype, doc_id)
                self._journal_undo.append(lambda: self._reindex(key, old_type, doc_id))

    def _reindex(self, key: str, restype: str, doc_id: int) -> None:
        self._unindex(key)
        self._index(key, restype, doc_id)

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
            self._note_before(key)
            restype = self._types[key]
            self._table.remove(doc_ids=[doc_id])
            self._unindex(key)
            self._journal_undo.append(lambda: self._index(key, restype, doc_id))
            return True

    def check_secrets(self) -> int:
        """Make the stored secrets match the cipher; returns how many were encrypted now.

        With a cipher: every encrypted secret must decrypt (else StoreError),
        and secrets stored in plain text before are encrypted (commit and
        compact afterwards, so that no plain copy stays in the files).
        Without: StoreError when a secret is stored encrypted, since it could
        only be served as ciphertext.
        """
        with self._lock:
            stored = {
                k: self._table.get(doc_id=self._ids[k])["value"]  # type: ignore[index]
                for k, t in self._types.items()
                if t == SECRET_TYPE
            }
            encrypted = [k for k, v in stored.items() if is_encrypted(v)]
            if self._cipher is None:
                if encrypted:
                    raise StoreError(
                        f"{len(encrypted)} secret value(s) are stored encrypted (e.g. "
                        f"{min(encrypted)}) but no database.secretKeyFile is set"
                    )
                if any(isinstance(entries, str) for entries in self._outbox.values()):
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
            plain = [(k, v) for k, v in stored.items() if not is_encrypted(v)]
            for key, value in plain:
                self.put(key, SECRET_TYPE, value)
            return len(plain)

    # -- session: duplicate window and outbox ----------------------------
    def _load_session(self, records: list[Any]) -> None:
        for record in records:
            kind = record[0]
            if kind == "s":
                self._remember(record[1])
            elif kind == "o":
                self._outbox[record[1]] = self._open_outbox(record[2])
                self._seq = max(self._seq, record[1])
            elif kind == "x":
                for seq in record[1]:
                    self._outbox.pop(seq, None)
            elif kind == "co":
                self._calls[record[1]] = record[2]
            elif kind == "ce":
                self._calls.pop(record[1], None)

    def _remember(self, ids: Iterable[str]) -> None:
        seen = self._seen
        for msg_id in ids:
            seen[msg_id] = None
        while len(seen) > self._window:
            seen.popitem(last=False)

    def _forget(self, ids: list[str]) -> None:
        for msg_id in ids:
            self._seen.pop(msg_id, None)

    def seen(self, msg_id: str) -> bool:
        with self._lock:
            return msg_id in self._seen

    def mark_seen(self, ids: list[str]) -> None:
        if not ids or self._window == 0:
            return
        with self._lock:
            self._remember(ids)
            if self._durable is not None:
                self._durable.append_session(["s", ids])
            self._journal_undo.append(lambda: self._forget(ids))

    def add_outbox(self, entries: list[Any]) -> int:
        """Keep messages to publish with the next commit; returns their batch number."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._outbox[seq] = entries
            if self._durable is not None:
                self._durable.append_session(["o", seq, self._seal_outbox(entries)])
            self._journal_undo.append(lambda: self._drop_outbox(seq))
            return seq

    # The outbox holds whole messages, secrets' contents included (forwards,
    # answers, reports): with a cipher it goes to disk encrypted as a whole.
    # Without a cipher, an encrypted batch stays as it is, opaque (the ``db``
    # tools keep it); ``check_secrets`` stops the service from using it.
    def _seal_outbox(self, entries: Any) -> Any:
        if self._cipher is None or isinstance(entries, str):
            return entries
        return self._cipher.encrypt(dumps_safe(entries).decode("utf-8", "surrogatepass"))

    def _open_outbox(self, sealed: Any) -> Any:
        if not isinstance(sealed, str) or self._cipher is None:
            return sealed
        try:
            return loads_safe(self._cipher.decrypt(sealed))
        except StoreError as exc:
            raise StoreError(f"journal outbox: {exc}") from None

    def _drop_outbox(self, seq: int) -> None:
        self._outbox.pop(seq, None)

    def outbox_sent(self, seqs: list[int]) -> None:
        """Forget batches the broker has confirmed (durable with the next commit)."""
        with self._lock:
            for seq in seqs:
                self._outbox.pop(seq, None)
            if self._durable is not None and seqs:
                self._durable.append_session(["x", seqs])

    # -- interim session API (savepoints, device window, calls) ------------
    def savepoint(self) -> Any:
        return None

    def rollback_to(self, mark: Any) -> None:
        return None

    def device_seen(self, key: str) -> bool:
        return self.seen("device/" + key)

    def mark_device_seen(self, keys: list[str]) -> None:
        self.mark_seen(["device/" + k for k in keys])

    def open_call(self, call_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._calls[call_id] = record
            if self._durable is not None:
                self._durable.append_session(["co", call_id, record])
            self._journal_undo.append(lambda: self._drop_call(call_id))

    def _drop_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def end_call(self, call_id: str) -> None:
        with self._lock:
            record = self._calls.pop(call_id, None)
            if self._durable is not None:
                self._durable.append_session(["ce", call_id])
            if record is not None:
                self._journal_undo.append(lambda: self._calls.__setitem__(call_id, record))

    def calls(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._calls)

    def damage(self) -> list[str]:
        if self.recovered_from_damage:
            return ["database was damaged; recovered what was intact (see the log)"]
        return []

    def abandon(self) -> None:
        """Release the journal and the lock without writing (a start-up that failed)."""
        if self._durable is not None:
            self._durable.journal.close()
            self._durable.unlock()

    @property
    def has_pending_writes(self) -> bool:
        return self._durable is not None and self._durable.journal.has_pending

    def outbox(self) -> list[tuple[int, list[Any]]]:
        with self._lock:
            return list(self._outbox.items())

    def _session_snapshot(self) -> list[Any]:
        records: list[Any] = []
        if self._seen:
            records.append(["s", list(self._seen)])
        records.extend(
            ["o", seq, self._seal_outbox(entries)] for seq, entries in self._outbox.items()
        )
        records.extend(["co", call_id, record] for call_id, record in self._calls.items())
        return records

    # -- durability -----------------------------------------------------
    @property
    def has_uncommitted_changes(self) -> bool:
        """True when the table changed since the last commit."""
        with self._lock:
            if self._durable is not None:
                return self._durable.has_uncommitted_changes
            return bool(self._key_undo)

    def commit(self) -> None:
        """Make every change since the last commit durable (one fsync)."""
        with self._lock:
            if self._durable is not None:
                self._durable.commit()
            self._journal_undo.clear()
            self._key_undo.clear()
            if self._durable is not None and self._durable.needs_compaction:
                self.compact(background=True)

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        with self._lock:
            if self._durable is not None:
                self._durable.rollback()
            else:
                self._undo_keys()
            for undo in reversed(self._journal_undo):
                undo()
            self._journal_undo.clear()
            self._table.clear_cache()

    def _undo_keys(self) -> None:
        # Storages other than DurableStorage: put back each key's first before-image.
        undo, self._key_undo = self._key_undo, {}
        for key, before in undo.items():
            doc_id = self._ids.get(key)
            if doc_id is not None:
                self._table.remove(doc_ids=[doc_id])
            if before is not None:
                self._table.insert(
                    Document({"key": key, "type": before[0], "value": before[1]}, before[2])
                )

    def _note_before(self, key: str) -> None:
        if self._durable is None and key not in self._key_undo:
            doc_id = self._ids.get(key)
            if doc_id is None:
                self._key_undo[key] = None
            else:
                doc = self._table.get(doc_id=doc_id)
                assert doc is not None
                self._key_undo[key] = (doc["type"], doc["value"], doc_id)

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
                    self._durable.start_compaction(self._session_snapshot())
                else:
                    self._durable.compact(self._session_snapshot())
            except (OSError, StoreError) as exc:
                log.error(
                    "compaction of %s failed, the journal is kept: %s", self._durable.path, exc
                )

    def wait_compaction(self) -> None:
        """Return when a snapshot being written in the background is done."""
        if self._durable is not None:
            self._durable.wait_compaction()

    def close(self) -> None:
        with self._lock:
            if self._durable is not None:
                self._durable.commit()
                self._durable.compact(self._session_snapshot())
                self._durable.journal.close()
                self._durable.unlock()
            else:
                self._db.close()
