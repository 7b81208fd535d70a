"""The session state kept with the table: what a restart must not forget.

Duplicate windows (modules' msg_ids, devices' reading keys), the outbox of
messages committed but not yet confirmed by the broker, pending calls, the
revision counter and which secret values are encrypted. Every change is a
journal record (replayed at start-up) and an undo entry (for rollback and
savepoints); ``records`` gives the whole state as records for a new journal.

Undo entries are data applied to a ``SessionState``, not closures over this
one, so the committed state can be rebuilt on a copy (``committed``) while
a transaction is open: a compaction forced by a full disk needs it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import StoreError
from .journal import dumps_safe, loads_safe

#: Journal record kinds of the session (the table's are "p", "d", "w").
SEEN = "s"
DEVICE_SEEN = "v"
OUTBOX = "o"
OUTBOX_SENT = "x"
CALL = "call"
CALL_END = "call-end"
REVISION = "rev"
SEQ = "seq"
ENCRYPTED = "enc"
ENCRYPTED_ALL = "enc-all"


class Sealer:
    """Seals session values with the store's cipher (or leaves them as they are)."""

    def __init__(
        self, encrypt: Callable[[str], str] | None, decrypt: Callable[[str], str] | None
    ) -> None:
        self._encrypt = encrypt
        self._decrypt = decrypt

    # Whole messages and call records hold secrets' contents: with a cipher they
    # go to disk encrypted as a whole. Without one, a sealed value stays opaque
    # (a str); ``MetaStore.check_secrets`` stops the service from using it.
    def seal(self, value: Any) -> Any:
        if self._encrypt is None or isinstance(value, str):
            return value
        return self._encrypt(dumps_safe(value).decode("utf-8", "surrogatepass"))

    def open(self, sealed: Any, what: str) -> Any:
        if not isinstance(sealed, str) or self._decrypt is None:
            return sealed
        try:
            return loads_safe(self._decrypt(sealed))
        except StoreError as exc:
            raise StoreError(f"journal {what}: {exc}") from None


@dataclass
class SessionState:
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    devices: OrderedDict[str, None] = field(default_factory=OrderedDict)
    outbox: OrderedDict[int, Any] = field(default_factory=OrderedDict)
    calls: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    revision: int = 0
    encrypted: set[str] = field(default_factory=set)
    #: False for a database written before ``encrypted`` was recorded.
    encryption_recorded: bool = False
    outbox_bytes: int = 0

    def copy(self) -> SessionState:
        return SessionState(
            OrderedDict(self.seen),
            OrderedDict(self.devices),
            OrderedDict(self.outbox),
            dict(self.calls),
            self.seq,
            self.revision,
            set(self.encrypted),
            self.encryption_recorded,
            self.outbox_bytes,
        )


def _payload_bytes(entries: Any) -> int:
    if isinstance(entries, str):
        return len(entries)
    total = 0
    for entry in entries:
        if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], str):
            total += len(entry[1])
    return total


def _bounded_add(window: OrderedDict[str, None], ids: Iterable[str], size: int) -> tuple:
    added = []
    for key in ids:
        if key not in window:
            added.append(key)
        window[key] = None
    evicted = []
    while len(window) > size:
        evicted.append(window.popitem(last=False)[0])
    return (added, evicted)


def _bounded_undo(window: OrderedDict[str, None], added: list[str], evicted: list[str]) -> None:
    for key in added:
        window.pop(key, None)
    for key in reversed(evicted):
        window[key] = None
        window.move_to_end(key, last=False)


class Session:
    """The session state of a MetaStore. Not thread-safe: the store's lock serialises calls."""

    def __init__(
        self,
        append: Callable[[list[Any]], None],
        sealer: Sealer,
        *,
        window: int = 20_000,
        device_window: int = 2_000,
    ) -> None:
        self._append = append
        self._sealer = sealer
        self.window = window
        self.device_window = device_window
        self.state = SessionState()
        self._undo: list[tuple[Any, ...]] = []
        self._committed_revision = 0

    # -- replay -----------------------------------------------------------
    def load(self, records: Iterable[list[Any]]) -> None:
        """Apply the session records of the journal (start-up)."""
        st = self.state
        for record in records:
            kind = record[0]
            if kind == SEEN:
                _bounded_add(st.seen, record[1], self.window)
            elif kind == DEVICE_SEEN:
                _bounded_add(st.devices, record[1], self.device_window)
            elif kind == OUTBOX:
                entries = self._sealer.open(record[2], "outbox")
                self._outbox_put(st, record[1], entries)
                st.seq = max(st.seq, record[1])
            elif kind == OUTBOX_SENT:
                for seq in record[1]:
                    self._outbox_pop(st, seq)
            elif kind == CALL:
                st.calls[record[1]] = self._sealer.open(record[2], "call")
            elif kind == CALL_END:
                st.calls.pop(record[1], None)
            elif kind == REVISION:
                st.revision = max(st.revision, record[1])
            elif kind == SEQ:
                st.seq = max(st.seq, record[1])
            elif kind == ENCRYPTED:
                (st.encrypted.add if record[2] else st.encrypted.discard)(record[1])
            elif kind == ENCRYPTED_ALL:
                st.encrypted = set(record[1])
                st.encryption_recorded = True
        if self.window == 0:
            st.seen.clear()
        self._committed_revision = st.revision

    def records(self, state: SessionState | None = None) -> list[list[Any]]:
        """The whole state as records: what a new journal starts with."""
        st = state or self.state
        out: list[list[Any]] = []
        if st.seen:
            out.append([SEEN, list(st.seen)])
        if st.devices:
            out.append([DEVICE_SEEN, list(st.devices)])
        out.extend([OUTBOX, seq, self._sealer.seal(entries)] for seq, entries in st.outbox.items())
        out.extend([CALL, call_id, self._sealer.seal(rec)] for call_id, rec in st.calls.items())
        out.append([SEQ, st.seq])
        out.append([REVISION, st.revision])
        out.append([ENCRYPTED_ALL, sorted(st.encrypted)])
        return out

    # -- transactions -------------------------------------------------------
    def mark(self) -> int:
        return len(self._undo)

    def undo_to(self, mark: int) -> None:
        while len(self._undo) > mark:
            _undo(self.state, self._undo.pop())

    def committed(self) -> SessionState:
        """The state as of the last commit, on a copy (the open transaction stays)."""
        state = self.state.copy()
        for entry in reversed(self._undo):
            _undo(state, entry)
        return state

    def note_recorded(self) -> None:
        """The encrypted set went to the journal whole (a commit or a new journal)."""
        self.state.encryption_recorded = True

    def commit_records(self) -> list[list[Any]]:
        """Records due with the next commit: the revision reached, the encrypted set once."""
        out: list[list[Any]] = []
        if self.state.revision != self._committed_revision:
            out.append([REVISION, self.state.revision])
        if not self.state.encryption_recorded:
            # A database written before the set was recorded: from now on it is.
            out.append([ENCRYPTED_ALL, sorted(self.state.encrypted)])
        return out

    def committed_now(self) -> None:
        """The open transaction is durable: nothing of it can be undone any more."""
        self._undo.clear()
        self._committed_revision = self.state.revision
        self.state.encryption_recorded = True

    # -- duplicate windows ----------------------------------------------------
    def seen(self, msg_id: str) -> bool:
        return msg_id in self.state.seen

    def mark_seen(self, ids: list[str]) -> None:
        if not ids or self.window == 0:
            return
        added, evicted = _bounded_add(self.state.seen, ids, self.window)
        self._append([SEEN, ids])
        self._undo.append(("seen", added, evicted))

    def device_seen(self, key: str) -> bool:
        return key in self.state.devices

    def mark_device_seen(self, keys: list[str]) -> None:
        if not keys or self.device_window == 0:
            return
        added, evicted = _bounded_add(self.state.devices, keys, self.device_window)
        self._append([DEVICE_SEEN, keys])
        self._undo.append(("devices", added, evicted))

    # -- outbox -----------------------------------------------------------------
    @staticmethod
    def _outbox_put(st: SessionState, seq: int, entries: Any) -> None:
        st.outbox[seq] = entries
        st.outbox_bytes += _payload_bytes(entries)

    @staticmethod
    def _outbox_pop(st: SessionState, seq: int) -> Any:
        entries = st.outbox.pop(seq, None)
        if entries is not None:
            st.outbox_bytes -= _payload_bytes(entries)
        return entries

    def add_outbox(self, entries: list[Any]) -> int:
        st = self.state
        before = st.seq
        st.seq += 1
        self._outbox_put(st, st.seq, entries)
        self._append([OUTBOX, st.seq, self._sealer.seal(entries)])
        self._undo.append(("outbox-add", st.seq, before))
        return st.seq

    def outbox_sent(self, seqs: list[int]) -> None:
        removed = []
        for seq in seqs:
            entries = self._outbox_pop(self.state, seq)
            if entries is not None:
                removed.append((seq, entries))
        if seqs:
            self._append([OUTBOX_SENT, seqs])
        if removed:
            self._undo.append(("outbox-sent", removed))

    # -- calls ------------------------------------------------------------------
    def open_call(self, call_id: str, record: dict[str, Any]) -> None:
        before = list(self.state.calls.items())
        self.state.calls.pop(call_id, None)
        self.state.calls[call_id] = copy.deepcopy(record)
        self._append([CALL, call_id, self._sealer.seal(record)])
        self._undo.append(("calls", before))

    def end_call(self, call_id: str) -> None:
        if call_id not in self.state.calls:
            return
        before = list(self.state.calls.items())
        del self.state.calls[call_id]
        self._append([CALL_END, call_id])
        self._undo.append(("calls", before))

    # -- revision and encryption ---------------------------------------------------
    def bump_revision(self, count: int = 1) -> None:
        self._undo.append(("revision", self.state.revision))
        self.state.revision += count

    def set_encrypted(self, key: str, encrypted: bool) -> None:
        st = self.state
        if (key in st.encrypted) == encrypted:
            return
        (st.encrypted.add if encrypted else st.encrypted.discard)(key)
        self._append([ENCRYPTED, key, encrypted])
        self._undo.append(("encrypted", key, not encrypted))


def _undo(st: SessionState, entry: tuple[Any, ...]) -> None:
    kind = entry[0]
    if kind == "seen":
        _bounded_undo(st.seen, entry[1], entry[2])
    elif kind == "devices":
        _bounded_undo(st.devices, entry[1], entry[2])
    elif kind == "outbox-add":
        Session._outbox_pop(st, entry[1])
        st.seq = entry[2]
    elif kind == "outbox-sent":
        for seq, entries in entry[1]:
            Session._outbox_put(st, seq, entries)
        st.outbox = OrderedDict(sorted(st.outbox.items()))
    elif kind == "calls":
        st.calls = dict(entry[1])
    elif kind == "revision":
        st.revision = entry[1]
    elif kind == "encrypted":
        (st.encrypted.add if entry[2] else st.encrypted.discard)(entry[1])
