"""Append-only journal with group commit, and atomic file replacement.

Each record is one line: eight hex digits of CRC-32, a space, compact JSON.
Every commit ends with a commit marker, so a batch is replayed whole or not
at all: a torn tail (power cut mid-write) is cut off at recovery and nothing
committed before it is lost. A damaged record inside the committed part is
skipped and described; the intact records after it are kept.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StoreError
from .jsontext import dumps as dumps_safe
from .jsontext import loads as loads_safe

log = logging.getLogger(__name__)

COMMIT = ["c"]

__all__ = [
    "Journal",
    "decode_record",
    "dumps_safe",
    "encode_record",
    "ensure_private_dir",
    "fsync_dir",
    "loads_safe",
    "set_aside",
    "write_atomic",
]


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create the database directory 0700 when missing."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_atomic(path: Path, chunks: Iterator[bytes] | list[bytes], *, sync: bool = True) -> None:
    """Replace ``path`` with new content: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if sync:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def set_aside(path: Path, data: bytes | None = None) -> Path:
    """Keep a damaged file as ``<name>.corrupt-<time>-<n>`` (0600); returns its path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        if not aside.exists():
            break
    if data is None:
        os.replace(path, aside)
    else:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return aside


def encode_record(record: Any) -> bytes:
    body = dumps_safe(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


_COMMIT_LINE = encode_record(COMMIT)
# The key of a damaged document record, for the report (best effort: the damage may hit it).
_KEY = re.compile(rb'"key":"((?:[^"\\\n]|\\.){1,300})"')


def decode_record(line: bytes) -> Any:
    """The record of one full line, or raises ValueError."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        raise ValueError("malformed journal line")
    body = line[9:-1]
    if int(line[:8], 16) != zlib.crc32(body):
        raise ValueError("journal checksum mismatch")
    return loads_safe(body)


class Journal:
    """An append-only record file. Not thread-safe: its owner serialises calls."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.sync_enabled = sync
        self._pending: list[bytes] = []
        self._fd: int | None = None
        self._open_error: OSError | None = None
        self._good_size = 0
        self.records_written = 0
        self.records_at_reset = 0
        self.damaged = False
        #: What replay dropped, one line each.
        self.damage: list[str] = []

    @property
    def replayed_bytes(self) -> int:
        """Bytes of intact records ``replay`` has read so far (its progress)."""
        return self._good_size

    def replay(self) -> Iterator[Any]:
        """Yield the records of every committed batch, skipping damaged records.

        A damaged line inside the committed part is dropped and described in
        ``damage``; every intact record after it is kept. What follows the last
        commit marker was never committed (never acknowledged) and is cut: a
        torn write can only leave that tail, and at most its last line broken.
        """
        self._good_size = 0
        self.damage = []
        if not self.path.exists():
            return
        with open(self.path, "rb") as src:
            data = src.read()
        offset = 0
        count = 0
        number = 0
        batch: list[Any] = []
        # Damaged lines of the batch being read: (line number, line).
        bad: list[tuple[int, bytes]] = []
        while offset < len(data):
            end = data.find(b"\n", offset)
            line = data[offset:] if end < 0 else data[offset : end + 1]
            offset += len(line)
            number += 1
            try:
                record = decode_record(line)
            except ValueError:
                bad.append((number, line))
                if not (len(line) == len(_COMMIT_LINE) and line.endswith(b"\n") and batch):
                    continue
                # A whole commit line with a changed bit: the batch before it was
                # written whole and synced, so it counts as committed.
                record = COMMIT
            if record == COMMIT:
                count += len(batch)
                yield from batch
                self._describe(bad)
                batch = []
                bad = []
                self._good_size = offset
            else:
                batch.append(record)
        self.records_written = count
        if offset > self._good_size:
            torn = not bad or (len(bad) == 1 and bad[0][0] == number)
            if not torn:
                self._describe(bad, uncommitted=True)
            self._cut(data, torn)
        elif self.damage:
            self._keep_aside(data)

    def _describe(self, bad: list[tuple[int, bytes]], *, uncommitted: bool = False) -> None:
        for number, line in bad:
            key = _KEY.search(line)
            what = f" (key {key.group(1).decode('utf-8', 'replace')})" if key else ""
            if uncommitted:
                fate = "in a batch never committed"
            elif len(line) == len(_COMMIT_LINE):
                fate = "(a commit marker); its batch was kept"
            else:
                fate = "and was dropped"
            self.damage.append(
                f"journal record {number}{what} of {self.path.name} failed its checksum {fate}"
            )

    def _keep_aside(self, data: bytes) -> None:
        self.damaged = True
        aside = set_aside(self.path, data)
        for line in self.damage:
            log.error("JOURNAL DAMAGED: %s", line)
        log.error("the damaged journal %s is saved as %s", self.path, aside)

    def _cut(self, data: bytes, torn: bool) -> None:
        good = self._good_size
        if not torn or self.damage:
            self._keep_aside(data)
        else:
            log.warning(
                "journal %s: torn last record dropped (%d bytes of a batch that was never "
                "committed, so never acknowledged)",
                self.path,
                len(data) - good,
            )
        with open(self.path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())

    def open(self) -> None:
        """Open for appending; a read-only file is noted and retried at each commit."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
                raise
            self._open_error = exc
            log.error("journal %s cannot be written (%s): serving read-only", self.path, exc)
            return
        self._open_error = None
        self._good_size = os.fstat(self._fd).st_size

    @property
    def writable(self) -> bool:
        return self._fd is not None

    def append(self, record: Any) -> None:
        """Buffer a record; it becomes durable at the next ``commit``."""
        self._pending.append(encode_record(record))

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def discard(self) -> None:
        self._pending.clear()

    @property
    def pending_count(self) -> int:
        """Records buffered since the last commit (a savepoint's position)."""
        return len(self._pending)

    def discard_after(self, count: int) -> None:
        """Drop the records buffered after the first ``count``."""
        del self._pending[count:]

    @property
    def size(self) -> int:
        """Bytes of the journal file that are committed."""
        return self._good_size

    def commit(self) -> None:
        """Write every buffered record and a commit marker, then fsync once (group commit).

        On failure the file is cut back to its last durable size and the
        buffered records are kept for the caller to discard or retry.
        """
        if not self._pending:
            return
        if self._fd is None:
            try:
                self.open()
            except OSError as exc:
                raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
            if self._fd is None:
                why = self._open_error
                reason = why.strerror if why is not None else "not open"
                raise StoreError(f"cannot write {self.path}: {reason}")
        self._pending.append(_COMMIT_LINE)
        data = b"".join(self._pending)
        try:
            written = 0
            view = memoryview(data)
            while written < len(data):
                written += os.write(self._fd, view[written:])
            if self.sync_enabled:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._pending.pop()
            self._truncate_back()
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._good_size += len(data)
        self.records_written += len(self._pending) - 1
        self._pending.clear()

    def _truncate_back(self) -> None:
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, self._good_size)
        except OSError as exc:
            log.error("journal %s: cannot cut back a failed write: %s", self.path, exc)

    @property
    def records_since_reset(self) -> int:
        return self.records_written - self.records_at_reset

    def reset(self, records: list[Any]) -> None:
        """Atomically replace the journal with ``records`` (after a snapshot)."""
        lines = [encode_record(r) for r in records]
        if lines:
            lines.append(_COMMIT_LINE)
        self.close()
        try:
            write_atomic(self.path, lines, sync=self.sync_enabled)
        finally:
            self.open()
        self.records_written = self.records_at_reset = len(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
