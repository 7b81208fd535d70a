"""Append-only journal with group commit, and atomic file replacement.

Each record is one line: eight hex digits of CRC-32, a space, compact JSON.
A torn or corrupt tail (power cut mid-write) is cut off at recovery; nothing
before it is lost.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import StoreError

log = logging.getLogger(__name__)


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


def dumps_safe(value: Any) -> bytes:
    """Compact JSON; big integers and lone surrogates take the standard encoder (ASCII)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def encode_record(record: Any) -> bytes:
    body = dumps_safe(record)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line: bytes) -> Any:
    """The record of one full line, or raises ValueError."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        raise ValueError("malformed journal line")
    body = line[9:-1]
    if int(line[:8], 16) != zlib.crc32(body):
        raise ValueError("journal checksum mismatch")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class Journal:
    """An append-only record file. Not thread-safe: its owner serialises calls."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.sync_enabled = sync
        self._pending: list[bytes] = []
        self._fd: int | None = None
        self._good_size = 0
        self.records_written = 0

    def replay(self) -> Iterator[Any]:
        """Yield every intact record; cut a torn tail, set a corrupt file aside."""
        self._good_size = 0
        if not self.path.exists():
            return
        with open(self.path, "rb") as src:
            data = src.read()
        offset = 0
        count = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            line = data[offset:] if end < 0 else data[offset : end + 1]
            try:
                record = decode_record(line)
            except ValueError:
                self._cut(data, offset, end)
                break
            offset += len(line)
            self._good_size = offset
            count += 1
            yield record
        self.records_written = count

    def _cut(self, data: bytes, offset: int, end: int) -> None:
        rest = data[offset:]
        torn_tail = end < 0 or end == len(data) - 1
        if torn_tail:
            log.warning(
                "journal %s: torn last record (%d bytes) dropped; it was never acknowledged",
                self.path,
                len(rest),
            )
        else:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{os.getpid()}")
            aside.write_bytes(data)
            log.error(
                "journal %s: corrupt record at byte %d; kept %d intact bytes, "
                "the whole damaged file is saved as %s",
                self.path,
                offset,
                offset,
                aside,
            )
        with open(self.path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())

    def open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self.path, flags, 0o600)
        self._good_size = os.fstat(self._fd).st_size

    def append(self, record: Any) -> None:
        """Buffer a record; it becomes durable at the next ``commit``."""
        self._pending.append(encode_record(record))

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def discard(self) -> None:
        self._pending.clear()

    def commit(self) -> None:
        """Write every buffered record and fsync once (group commit).

        On failure the file is cut back to its last durable size and the
        buffered records are kept for the caller to discard or retry.
        """
        if not self._pending:
            return
        if self._fd is None:
            raise StoreError(f"journal {self.path} is not open")
        data = b"".join(self._pending)
        try:
            written = 0
            view = memoryview(data)
            while written < len(data):
                written += os.write(self._fd, view[written:])
            if self.sync_enabled:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._truncate_back()
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._good_size += len(data)
        self.records_written += len(self._pending)
        self._pending.clear()

    def _truncate_back(self) -> None:
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, self._good_size)
        except OSError as exc:
            log.error("journal %s: cannot cut back a failed write: %s", self.path, exc)

    def reset(self, records: list[Any]) -> None:
        """Atomically replace the journal with ``records`` (after a snapshot)."""
        self.close()
        write_atomic(self.path, [encode_record(r) for r in records], sync=self.sync_enabled)
        self.records_written = len(records)
        self.open()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
