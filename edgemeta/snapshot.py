"""The snapshot: TinyDB's JSON layout, one document per line, with checksums beside it.

SPEC section 4 keeps the database file in TinyDB's layout, so the checksums
live in a sidecar, ``<path>.sums``: for each snapshot generation (named by
the whole file's size and CRC-32) the CRC-32 of every document line. The
sidecar is replaced before the snapshot is renamed into place and keeps the
previous generation too, so whichever snapshot a crash leaves, its sums are
there. A snapshot whose generation the sidecar does not name is damaged:
each document line is checked and a line that fails is dropped and reported.
A database without a sidecar (written before it existed) is read as it is.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StoreError
from .journal import dumps_safe, fsync_dir, loads_safe, set_aside, write_atomic

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Tables = dict[str, dict[str, Doc]]
#: Per table, per doc_id: the CRC-32 of the document's line.
LineSums = dict[str, dict[str, int]]

_TABLE_LINE = re.compile(rb'^"((?:[^"\\]|\\.)*)": \{$')


def sums_path(path: Path) -> Path:
    return path.with_name(path.name + ".sums")


def doc_line(doc_id: str, doc: Doc) -> bytes:
    """A document's line without its separators: what its checksum covers."""
    return dumps_safe(doc_id) + b": " + dumps_safe(doc)


def snapshot_chunks(data: Tables, sums: LineSums | None = None) -> Iterator[bytes]:
    """TinyDB's JSON layout with one document per line, so a damaged file can be salvaged.

    With ``sums``, the checksum of every document line is added to it.
    """
    yield b"{"
    for t_index, (name, table) in enumerate(data.items()):
        yield (b",\n" if t_index else b"\n") + dumps_safe(name) + b": {"
        table_sums = sums.setdefault(name, {}) if sums is not None else None
        first = True
        for doc_id, doc in table.items():
            line = doc_line(doc_id, doc)
            if table_sums is not None:
                table_sums[doc_id] = zlib.crc32(line)
            yield (b"\n" if first else b",\n") + line
            first = False
        yield b"\n}"
    yield b"\n}\n"


@dataclass
class Snapshot:
    """The snapshot file at ``path`` and the generations its sidecar names."""

    path: Path
    sync: bool = True
    #: generation -> line sums; the current one and the one before.
    generations: dict[str, LineSums] = field(default_factory=dict)
    #: What loading dropped, one line each.
    damage: list[str] = field(default_factory=list)
    recovered_from_damage: bool = False
    #: The generation of the file in place (None: unknown, e.g. damaged).
    generation: str | None = None
    #: Bytes of the snapshot and its sums on disk (what one more rewrite needs).
    disk_bytes: int = 0

    # -- writing --------------------------------------------------------
    def write(self, tables: Tables) -> None:
        """Replace the snapshot: temp file, sums (both generations), rename, fsync."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        sums: LineSums = {}
        crc = 0
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                for chunk in snapshot_chunks(tables, sums):
                    out.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
                out.flush()
                if self.sync:
                    os.fsync(out.fileno())
            generation = _generation(size, crc)
            kept = {generation: sums}
            current = self._current()
            if current is not None and current != generation:
                kept[current] = self.generations[current]
            write_atomic(sums_path(self.path), [dumps_safe(kept) + b"\n"], sync=self.sync)
            os.replace(tmp, self.path)
            if self.sync:
                fsync_dir(self.path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # The older generation is only needed until the rename above is durable.
        self.generations = {generation: sums}
        self.generation = generation
        self.disk_bytes = size + _size(sums_path(self.path))

    def _current(self) -> str | None:
        if self.generation is not None:
            return self.generation
        return next(iter(self.generations), None)

    # -- reading --------------------------------------------------------
    def load(self) -> Tables:
        """The tables of the snapshot; damage is dropped, set aside and described."""
        self.generations = self._load_sums()
        self.disk_bytes = _size(self.path) + _size(sums_path(self.path))
        try:
            streamed = self._read_lines()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if streamed is not None:
            data, generation = streamed
            if not self.generations or generation in self.generations:
                self.generation = generation
                if generation in self.generations:
                    # Only this generation is needed from now on (memory at start-up).
                    self.generations = {generation: self.generations[generation]}
                return data
            # Well formed but not what was written: check every document.
            return self._checked(data, self.path.read_bytes(), "a changed document")
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
        except ValueError as exc:
            return self._checked(_salvage(raw), raw, f"damage: not valid JSON ({exc})")
        if self.generations:
            # Valid JSON, not in this module's layout: rewritten by another program
            # (plain TinyDB). Damage does not change the layout; the sums do not apply.
            log.warning(
                "%s was rewritten by another program: its checksums do not apply", self.path
            )
        return data

    def _checked(self, data: Tables, raw: bytes, why: str) -> Tables:
        """Keep the documents whose checksums hold; set the file aside; describe the rest."""
        self.recovered_from_damage = True
        aside = set_aside(self.path, raw)
        sums = _best_match(data, self.generations)
        if sums is None:
            count = sum(len(t) for t in data.values())
            self.damage.append(
                f"database snapshot {self.path.name} was damaged ({why}); recovered "
                f"{count} readable documents, unverified"
            )
        else:
            failed: set[tuple[str, str]] = set()
            for name, table in data.items():
                expected = sums.get(name, {})
                for doc_id in list(table):
                    if expected.get(doc_id) != zlib.crc32(doc_line(doc_id, table[doc_id])):
                        doc = table.pop(doc_id)
                        failed.add((name, doc_id))
                        self.damage.append(
                            f"snapshot document {doc_id}{_key_of(doc)} of {self.path.name} "
                            "failed its checksum and was dropped"
                        )
            for name, expected in sums.items():
                table = data.get(name, {})
                for doc_id in expected:
                    if doc_id not in table and (name, doc_id) not in failed:
                        self.damage.append(
                            f"snapshot document {doc_id} of {self.path.name} is unreadable "
                            "and was dropped"
                        )
        log.error(
            "DATABASE DAMAGED: %s has %s; kept %d intact documents, the damaged file is kept as %s",
            self.path,
            why,
            sum(len(t) for t in data.values()),
            aside,
        )
        for line in self.damage:
            log.error("DATABASE DAMAGED: %s", line)
        return data

    def _load_sums(self) -> dict[str, LineSums]:
        path = sums_path(self.path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            sums = loads_safe(raw)
            if not isinstance(sums, dict):
                raise ValueError("not an object")
            return sums
        except ValueError as exc:
            # The snapshot is then checked against nothing: say so, keep going.
            self.damage.append(f"checksum file {path.name} is damaged ({exc}); not used")
            self.recovered_from_damage = True
            return {}

    def _read_lines(self) -> tuple[Tables, str] | None:
        """A snapshot written by ``snapshot_chunks``, read a line at a time, and its generation.

        Nothing but the documents is held in memory (not the file's text too).
        Returns None for any other layout, including a damaged file: the
        caller then reads it whole.
        """
        data: Tables = {}
        current: dict[str, Doc] | None = None
        closed = False
        crc = 0
        size = 0
        with open(self.path, "rb") as src:
            first = src.readline()
            crc = zlib.crc32(first, crc)
            size += len(first)
            if first.strip() != b"{":
                return None
            for line in src:
                crc = zlib.crc32(line, crc)
                size += len(line)
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
        return (data, _generation(size, crc)) if closed else None


def read_lines(path: Path) -> Tables | None:
    """The tables of a snapshot in this module's layout, or None (for tests and tools)."""
    got = Snapshot(path)._read_lines()
    return None if got is None else got[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _generation(size: int, crc: int) -> str:
    return f"{size}:{crc:08x}"


def _best_match(data: Tables, generations: dict[str, LineSums]) -> LineSums | None:
    """The generation whose line sums most documents match (a crash may leave two)."""
    best: LineSums | None = None
    best_score = -1
    for sums in generations.values():
        score = 0
        for name, table in data.items():
            expected = sums.get(name, {})
            for doc_id, doc in table.items():
                if expected.get(doc_id) == zlib.crc32(doc_line(doc_id, doc)):
                    score += 1
        if score > best_score:
            best, best_score = sums, score
    return best


def _key_of(doc: Any) -> str:
    key = doc.get("key") if isinstance(doc, dict) else None
    return f" (key {key})" if isinstance(key, str) else ""


def _salvage(raw: bytes) -> Tables:
    """Every readable document of a damaged snapshot written by ``snapshot_chunks``."""
    data: Tables = {}
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
