"""A lean MQTT 3.1.1 client on a raw socket: just enough for a QoS 1 load generator.

paho spends tens of microseconds per message in Python; the load generator
must not be the bottleneck, so it speaks the few packets it needs itself:
CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH (QoS 0/1) and PUBACK.
"""

from __future__ import annotations

import select
import socket
import struct
import time

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
DISCONNECT = 0xE0

_PID = struct.Struct(">H")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return _PID.pack(len(raw)) + raw


def connect_packet(client_id: str, *, clean: bool = True, keepalive: int = 0) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02 if clean else 0]) + _PID.pack(keepalive)
    body += _utf8(client_id)
    return bytes([CONNECT]) + _varint(len(body)) + body


def subscribe_packet(pid: int, topics: list[str], qos: int = 1) -> bytes:
    body = _PID.pack(pid) + b"".join(_utf8(t) + bytes([qos]) for t in topics)
    return bytes([SUBSCRIBE]) + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, pid: int, *, retain: bool = False) -> bytes:
    """A QoS 1 PUBLISH (``topic`` already length-prefixed with ``topic_field``)."""
    body_len = len(topic) + 2 + len(payload)
    flags = PUBLISH | 0x02 | (0x01 if retain else 0)
    return b"".join((bytes([flags]), _varint(body_len), topic, _PID.pack(pid), payload))


def topic_field(topic: str) -> bytes:
    return _utf8(topic)


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + _PID.pack(pid)


def parse(buf: bytearray) -> list[tuple[int, bytes]]:
    """(first byte, body) of every complete packet in ``buf``; they are dropped from it."""
    packets = []
    pos = 0
    end = len(buf)
    while pos + 2 <= end:
        mult = 1
        length = 0
        i = pos + 1
        complete = False
        while i < end and i < pos + 5:
            byte = buf[i]
            length += (byte & 0x7F) * mult
            i += 1
            if not byte & 0x80:
                complete = True
                break
            mult <<= 7
        if not complete or i + length > end:
            break
        packets.append((buf[pos], bytes(buf[i : i + length])))
        pos = i + length
    if pos:
        del buf[:pos]
    return packets


def split_publish(first: int, body: bytes) -> tuple[bytes, int, bytes]:
    """Topic, packet id (0 for QoS 0) and payload of a PUBLISH body."""
    tlen = (body[0] << 8) | body[1]
    topic = bytes(body[2 : 2 + tlen])
    pos = 2 + tlen
    pid = 0
    if first & 0x06:
        pid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    return topic, pid, body[pos:]


class RawClient:
    """One blocking-at-setup, non-blocking-afterwards MQTT 3.1.1 connection."""

    def __init__(self, host: str, port: int, client_id: str, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.sock.sendall(connect_packet(client_id))
        _first, body = self._wait_for(CONNACK, timeout)
        if body[1] != 0:
            raise ConnectionError(f"broker refused {client_id}: CONNACK code {body[1]}")
        self.sock.setblocking(False)

    def _wait_for(self, kind: int, timeout: float) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for first, body in parse(self.inbuf):
                if first & 0xF0 == kind & 0xF0:
                    return first, bytes(body)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.inbuf.extend(chunk)
        raise TimeoutError(f"no packet 0x{kind:02x} within {timeout} s")

    def subscribe(self, topics: list[str], timeout: float = 10.0) -> None:
        self.sock.setblocking(True)
        self.sock.settimeout(timeout)
        self.sock.sendall(subscribe_packet(1, topics))
        _first, body = self._wait_for(SUBACK, timeout)
        if any(code == 0x80 for code in body[2:]):
            raise ConnectionError(f"broker refused the subscription to {topics}")
        self.sock.setblocking(False)

    def flush(self) -> None:
        """Send as much of ``outbuf`` as the socket takes now."""
        if not self.outbuf:
            return
        try:
            sent = self.sock.send(self.outbuf)
        except BlockingIOError:
            return
        del self.outbuf[:sent]

    def receive(self) -> bool:
        """Read what is there into ``inbuf``; False when the broker closed the connection."""
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return False
                self.inbuf.extend(chunk)
                if len(chunk) < (1 << 20):
                    return True
        except BlockingIOError:
            return True

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self.sock.sendall(self.outbuf + bytes([DISCONNECT, 0]))
        except OSError:
            pass
        self.sock.close()


def wait_for_payload(
    host: str, port: int, topic: str, payload: bytes, timeout: float, client_id: str
) -> bool:
    """True once ``topic`` carries ``payload`` (retained or published) within ``timeout``."""
    client = RawClient(host, port, client_id)
    try:
        client.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([client.sock], [], [], 0.1)
            if not client.receive():
                return False
            for first, body in parse(client.inbuf):
                if first & 0xF0 == PUBLISH:
                    _t, pid, data = split_publish(first, body)
                    if pid:
                        client.outbuf += puback_packet(pid)
                    if bytes(data) == payload:
                        return True
            client.flush()
        return False
    finally:
        client.close()
