"""Cloud liveness through the bridge: a heartbeat that must come back.

A bridge that loses its link silently (no FIN, no reset) drops it after
about 2 x its keepalive, but Mosquitto 2.0.11 does not publish the state
``0`` then: the retained bridge state stays ``1``. So edgemeta checks the
link itself: while the bridge says ``1``, it publishes a heartbeat on
``<prefix>/meta/bridge/heartbeat`` every ``interval`` seconds; the bridge
carries it to the cloud broker and brings the broker's copy back on
``<prefix>/meta/bridge/echo/heartbeat`` (two bridge ``topic`` lines, one
each way, with different local topics: no loop). No echo for ``timeout``
seconds: the cloud is treated as disconnected; the next echo: connected.

The check arms itself at the first echo of this process: a bridge that does
not carry heartbeats (rendered from an older template, or a bridge state
written by hand) keeps its plain ``1`` / ``0`` meaning.

``CloudHeartbeat`` is the state machine only (times are passed in); the
service publishes the beats and turns its answers into link changes.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "meta/bridge/heartbeat"
ECHO_TOPIC = "meta/bridge/echo/heartbeat"


class CloudHeartbeat:
    def __init__(self, interval: float, timeout: float, *, run_id: str | None = None) -> None:
        if interval <= 0 or timeout <= interval:
            raise ValueError("a heartbeat needs interval > 0 and timeout > interval")
        self.interval = interval
        self.timeout = timeout
        #: Tells this process's beats from any other's (an older run, another node).
        self.run_id = run_id or uuid.uuid4().hex[:16]
        #: The bridge says "1": beats are sent, and (once armed) echoes are expected.
        self.bridge_up = False
        #: edgemeta's own connection to the edge broker is up (echoes can arrive).
        self.online = False
        #: An echo came back once: the bridge carries heartbeats.
        self.armed = False
        #: The last echo came back within ``timeout``.
        self.alive = True
        #: The last round trip, seconds (None before the first echo).
        self.rtt: float | None = None
        self._seq = 0
        self._sent: deque[tuple[int, float]] = deque()
        self._next_beat: float | None = None
        self._last_ok = 0.0
        self._warned = False
        #: ``due`` said the wait is over; ``expired`` has not decided yet.
        self._checking = False

    # -- what the service tells it ------------------------------------------
    def bridge_state(self, up: bool, now: float) -> None:
        """The bridge (re)connected or went down: a fresh grace period either way."""
        self.bridge_up = up
        self.alive = True
        self._last_ok = now
        self._sent.clear()
        self._next_beat = now if up else None

    def connected(self, now: float) -> None:
        """edgemeta's connection to the edge broker is back: echoes can arrive again."""
        self.online = True
        self._last_ok = max(self._last_ok, now)
        if self.bridge_up:
            self._next_beat = now

    def disconnected(self) -> None:
        """edgemeta lost the edge broker: a missing echo says nothing about the cloud."""
        self.online = False

    # -- the timer ----------------------------------------------------------
    def next_due(self) -> float | None:
        """When ``tick`` has something to do next (a beat or the end of the wait)."""
        if not (self.bridge_up and self.online) or self._next_beat is None:
            return None
        deadline = self._deadline()
        return self._next_beat if deadline is None else min(self._next_beat, deadline)

    def _deadline(self) -> float | None:
        if not (self.bridge_up and self.online and self.alive) or self._checking:
            return None
        return self._last_ok + self.timeout

    def due(self, now: float) -> bool:
        """True once when the wait for an echo is over: ``expired`` is to decide,
        after the echoes already received are taken (they may have come in time)."""
        deadline = self._deadline()
        if deadline is None or now < deadline:
            return False
        self._checking = True
        return True

    def beat(self, now: float) -> bytes | None:
        """The payload to publish now, or None when no beat is due."""
        if not (self.bridge_up and self.online) or self._next_beat is None:
            return None
        if now < self._next_beat:
            return None
        self._seq += 1
        self._sent.append((self._seq, now))
        while self._sent and self._sent[0][1] < now - self.timeout:
            self._sent.popleft()
        self._next_beat = now + self.interval
        return f"{self.run_id} {self._seq}".encode()

    def expired(self, now: float) -> bool:
        """True once when no echo came back within ``timeout``: the cloud is gone."""
        self._checking = False
        deadline = self._deadline()
        if deadline is None or now < deadline:
            return False
        if not self.armed:
            # The bridge carries no heartbeats (yet): nothing can be concluded.
            if not self._warned:
                self._warned = True
                log.warning(
                    "no heartbeat echo through the bridge after %.0f s: a silent loss of the "
                    "cloud link will not be noticed (render the bridge from the current "
                    "template, or set modules.metaManager.cloudHeartbeatInterval to 0)",
                    self.timeout,
                )
            self._last_ok = now
            return False
        self.alive = False
        return True

    def echo(self, payload: bytes, now: float) -> bool | None:
        """An echo arrived: None when it is not one of ours (or too old), else
        True when it brings the link back, False when the link was alive."""
        try:
            run_id, _, seq_text = payload.decode("ascii").strip().partition(" ")
            seq = int(seq_text)
        except (UnicodeDecodeError, ValueError):
            return None
        if run_id != self.run_id:
            return None
        sent_at = next((at for s, at in self._sent if s == seq), None)
        if sent_at is None or now - sent_at > self.timeout:
            return None  # sent before the last reset, or it came back too late to count
        self.rtt = now - sent_at
        if not self.armed:
            self.armed = True
            log.info(
                "the bridge carries heartbeats (round trip %.0f ms): a silent loss of the "
                "cloud link is noticed after %.0f s",
                self.rtt * 1000,
                self.timeout,
            )
        self._last_ok = max(self._last_ok, now)
        if self.alive:
            return False
        self.alive = True
        return True
