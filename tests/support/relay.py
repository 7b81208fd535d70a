"""A TCP relay on loopback between an edge broker's bridge and the cloud: delay, stalls, black hole.

The kernel here has no netem and there is no iptables, so a bad WAN is made
in user space. Each direction of each connection has a reader thread and a
writer thread: the reader stamps every chunk with the time it may leave
(`delay` later), the writer sends the chunks in order when due, and now and
then stalls for up to `stall_max` seconds first. In `blackhole` mode nothing
is forwarded and nothing is closed: the connection just goes silent, like a
cut cable. When either end closes, both sides close and what is still held
is dropped, as on a real link that went down.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time

from tests.support.broker import LOOPBACK, free_port

_CHUNK = 65536


class Relay:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 0.0,
        stall_max: float = 0.0,
        stall_chance: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = LOOPBACK
        self.port = free_port()
        self.delay = delay
        self.stall_max = stall_max
        self.stall_chance = stall_chance
        self.stalls = 0
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._open = threading.Event()  # set = forwarding, clear = black hole
        self._open.set()
        self._refusing = threading.Event()  # set = link down: reset everything
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((self.host, self.port))
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def blackhole(self, on: bool) -> None:
        """Stop forwarding (True) without closing anything, or resume (False)."""
        if on:
            self._open.clear()
        else:
            self._open.set()

    def down(self) -> None:
        """A link that fails loudly: every connection closed, new ones closed at once."""
        self._refusing.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def up(self) -> None:
        self._refusing.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                self._sockets.update(pair)
            ended = threading.Event()
            for src, dst in ((client, upstream), (upstream, client)):
                chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
                self._spawn(self._read, src, chunks, ended)
                self._spawn(self._write, dst, chunks, pair, ended)

    def _read(
        self,
        src: socket.socket,
        chunks: queue.Queue[tuple[float, bytes] | None],
        ended: threading.Event,
    ) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                chunks.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        chunks.put(None)
        ended.set()

    def _stall(self) -> float:
        with self._random_lock:
            if self.stall_max <= 0 or self._random.random() >= self.stall_chance:
                return 0.0
            self.stalls += 1
            return self._random.uniform(0, self.stall_max)

    def _write(
        self,
        dst: socket.socket,
        chunks: queue.Queue[tuple[float, bytes] | None],
        pair: tuple[socket.socket, socket.socket],
        ended: threading.Event,
    ) -> None:
        try:
            while not self._closed.is_set():
                item = chunks.get()
                if item is None:
                    break
                due, data = item
                wait = due - time.monotonic() + self._stall()
                if wait > 0:
                    time.sleep(wait)
                while not self._open.is_set():
                    # An end closed while the link was black: what is held is lost.
                    if self._closed.is_set() or ended.is_set():
                        return
                    self._open.wait(0.1)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One end is gone: the link is down for both, held data is lost.
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets.difference_update(pair)

    def close(self) -> None:
        self._closed.set()
        self._open.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
