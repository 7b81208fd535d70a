"""A socket wrapper that cuts system calls: large reads, gathered writes.

paho reads each MQTT packet in several small ``recv`` calls and writes each
packet with its own ``send``. Wrapped in a ``GatheringSocket``, reads come
from one 64 KiB ``recv`` (``pending()`` tells paho more is buffered, so it
does not wait in ``select``), and while the owner holds the socket ``corked``
every write is appended to a buffer sent in one go when it is uncorked:
a batch's forwards, answers and PUBACKs leave in a few system calls.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

log = logging.getLogger(__name__)

READ_SIZE = 65536
FLUSH_TIMEOUT = 10.0


class GatheringSocket:
    """Wraps a connected non-blocking socket (plain or TLS) for paho."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self._sock = sock
        # What one large read brought and paho has not taken yet: _rbuf[_rpos:].
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self._lock = threading.Lock()
        self._corked = 0
        self._closed = False

    # -- what paho calls ----------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> int:
        inner = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._rbuf) - self._rpos + inner

    def recv(self, size: int) -> bytes:
        # Only paho's network thread reads.
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            data = self._sock.recv(READ_SIZE)
            if len(data) <= size:
                return data
            buf, pos = data, 0
            self._rbuf = data
        end = pos + size
        self._rpos = end
        return buf[pos:end]

    def send(self, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            if self._corked:
                self._wbuf += data
                return len(data)
        return self._sock.send(data)

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # -- gathering ------------------------------------------------------------
    @contextmanager
    def corked(self) -> Iterator[None]:
        """Gather every write (from any thread) until the block ends, then send them."""
        with self._lock:
            self._corked += 1
        try:
            yield
        finally:
            with self._lock:
                self._corked -= 1
                if not self._corked:
                    self._flush()

    def _flush(self) -> None:
        # Called with the lock held: writes from other threads wait, so order is kept.
        deadline = time.monotonic() + FLUSH_TIMEOUT
        view = memoryview(self._wbuf)
        sent = 0
        try:
            while sent < len(view):
                try:
                    sent += self._sock.send(view[sent:])
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("the broker does not read") from None
                    select.select([], [self._sock], [], min(left, 0.5))
        except OSError as exc:
            if self._closed:
                return  # paho closed the connection meanwhile (a stop, a reconnect)
            # A stream cut mid-packet cannot go on: drop the connection; paho
            # resends unacknowledged publishes after it reconnects.
            log.warning("cannot send to the broker (%s); dropping the connection", exc)
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        finally:
            view.release()
            self._wbuf.clear()
