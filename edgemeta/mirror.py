"""The state mirror: every stored object retained on ``<prefix>/state/<key>``.

Each committed change becomes a retained message in the batch's outbox
(``MirrorPolicy.outgoing``, pure), so it is published with the batch and
republished after a crash. At start-up ``Reconciler`` makes the retained
messages equal to the store: it subscribes to ``<prefix>/state/#``, collects
the retained messages until its own end marker comes back (Mosquitto sends a
subscription's retained messages before anything published after the
SUBACK), then clears what the store no longer holds, publishes what is
missing or different, and unsubscribes. It runs on the main loop's thread,
a message at a time, so requests are served meanwhile.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from .bus import Inbound, MqttBus, Subscription
from .config import MirrorConfig
from .errors import BusError, StoreError
from .outbox import Outgoing
from .store import SECRET_TYPE, MetaStore

log = logging.getLogger(__name__)

STATE_LEVEL = "state"
#: Under ``<prefix>/state/``: the end marker of a reconcile (never retained, no ``key`` property).
MARKER_LEVEL = "$reconcile"
EVERY_TYPE = "*"
#: Reconcile publishes per main loop turn.
PUMP_CHUNK = 1000

Properties = tuple[tuple[str, str], ...]


def state_root(prefix: str) -> str:
    return f"{prefix}/{STATE_LEVEL}"


def state_topic(prefix: str, key: str) -> str | None:
    """``<prefix>/state/<key>``; None for a key that cannot be one topic (never expected:
    keys are checked when stored, but a wildcard here would publish nowhere or everywhere)."""
    parts = key.split("/")
    if len(parts) < 2 or "" in parts or parts[0] == MARKER_LEVEL:
        return None
    if "+" in key or "#" in key or "\x00" in key:
        return None
    return f"{prefix}/{STATE_LEVEL}/{key}"


def key_of(prefix: str, topic: str) -> str | None:
    """The key a state topic mirrors; None for a topic outside ``<prefix>/state/``."""
    root = state_root(prefix) + "/"
    return topic[len(root) :] if topic.startswith(root) else None


def properties(key: str, restype: str, revision: int) -> Properties:
    return (("key", key), ("type", restype), ("revision", str(revision)))


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """Which types are mirrored, under which prefix, at which QoS."""

    prefix: str
    enable: bool = True
    #: Empty: every type except secret; else exactly these (``*``: every type).
    types: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, prefix: str, config: MirrorConfig) -> MirrorPolicy:
        return cls(prefix, config.enable, frozenset(config.types))

    def mirrors(self, restype: str) -> bool:
        if not self.enable:
            return False
        if not self.types:
            return restype != SECRET_TYPE
        return EVERY_TYPE in self.types or restype in self.types

    def outgoing(self, key: str, restype: str, value: str | None, revision: int) -> Outgoing | None:
        """The retained message of one change (``value`` None: deleted, cleared)."""
        if not self.mirrors(restype):
            return None
        topic = state_topic(self.prefix, key)
        if topic is None:
            log.warning("not mirrored: key %r cannot be a topic", key)
            return None
        payload = b"" if value is None else value.encode("utf-8", "surrogatepass")
        return Outgoing(
            topic,
            payload,
            retain=True,
            properties=properties(key, restype, revision),
            from_store=True,
        )

    def changes(self, revised: Iterable[tuple[str, str, str | None, int]]) -> list[Outgoing]:
        """The mirror messages of a transaction's changes (``MetaStore.revised_changes``)."""
        outs = []
        for key, restype, value, revision in revised:
            out = self.outgoing(key, restype, value, revision)
            if out is not None:
                outs.append(out)
        return outs


@dataclass(slots=True)
class Plan:
    """What a reconcile publishes: topics to clear, objects to (re)publish."""

    clear: list[str] = field(default_factory=list)
    publish: list[tuple[str, str, str]] = field(default_factory=list)


def reconcile_plan(
    policy: MirrorPolicy,
    retained: dict[str, bytes],
    stored: Iterable[tuple[str, str, str]],
) -> Plan:
    """Compare the retained messages (topic -> payload) with the store's (key, type, value)."""
    plan = Plan()
    wanted: set[str] = set()
    for key, restype, value in stored:
        if not policy.mirrors(restype):
            continue
        topic = state_topic(policy.prefix, key)
        if topic is None:
            continue
        wanted.add(topic)
        if retained.get(topic) != value.encode("utf-8", "surrogatepass"):
            plan.publish.append((key, restype, value))
    plan.clear = sorted(t for t, payload in retained.items() if payload and t not in wanted)
    return plan


class Reconciler:
    """Makes the retained mirror equal to the store once, after the first connection.

    Every message on ``<prefix>/state/...`` that reaches edgemeta comes here
    (``take``), never to the request handlers.
    """

    def __init__(self, bus: MqttBus, store: MetaStore, policy: MirrorPolicy, qos: int) -> None:
        self.bus = bus
        self.store = store
        self.policy = policy
        self.qos = qos
        self.filter = state_root(policy.prefix) + "/#"
        self._retained: dict[str, bytes] = {}
        self._acks: list[Inbound] = []
        self._marker = ""
        self._sub_mid: int | None = None
        self._subscribed = False
        self._started_at = 0.0
        self.done = not policy.enable
        self.seconds: float | None = None
        self._outs: list[Outgoing] = []
        self._counts = (0, 0, 0)
        #: Topics a committed change published while reconcile messages wait.
        self._superseded: set[str] = set()

    def owns(self, topic: str) -> bool:
        return topic.startswith(state_root(self.policy.prefix) + "/")

    # -- events ------------------------------------------------------------
    def connected(self) -> None:
        """The bus's subscriptions were confirmed (``Subscribed``)."""
        if self.done:
            return
        self._retained.clear()
        if self._subscribed:
            # A reconnect: the bus subscribed to the filter again with the rest,
            # so its retained messages come again; a new marker ends them.
            self._send_marker()
            return
        self._started_at = time.monotonic()
        self._marker = f"{state_root(self.policy.prefix)}/{MARKER_LEVEL}/{uuid.uuid4()}"
        try:
            # Not its own publishes (no_local): what it writes meanwhile would come
            # back, and stay queued in its session should it stop before unsubscribing.
            self.bus.subscribe(Subscription(self.filter, retained=True, no_local=True))
            self._subscribed = True
            # The broker answers in order: this SUBACK follows the one above.
            self._sub_mid = self.bus.subscribe(Subscription(self._marker))
        except BusError as exc:
            log.error("mirror: cannot reconcile: %s", exc)
            self.done = True

    def subscribe_done(self, mid: int, refused: str) -> None:
        if mid != self._sub_mid or self.done:
            return
        if refused:
            log.error("mirror: the broker refused %s (%s): not reconciled", self.filter, refused)
            self._end()
            return
        self._send_marker()

    def disconnected(self) -> None:
        self._retained.clear()

    def _send_marker(self) -> None:
        try:
            self.bus.publish(self._marker, b"", 1)
        except BusError as exc:
            log.error("mirror: cannot reconcile: %s", exc)
            self._end()

    def take(self, item: Inbound) -> None:
        """A message under ``<prefix>/state/``: a retained object, the marker, or an echo."""
        self._acks.append(item)
        if len(self._acks) >= 256:
            self.flush()  # the broker sends at most ReceiveMaximum unacknowledged
        if self.done or not self._marker:
            return
        if item.retain:
            if item.payload:
                self._retained[item.topic] = item.payload
            else:
                self._retained.pop(item.topic, None)
        elif item.topic == self._marker:
            self._finish()

    def flush(self) -> None:
        """Acknowledge what was taken (after a batch of events: one wake-up)."""
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        with self.bus.gathered():
            for item in acks:
                self.bus.ack(item.mid, item.qos, item.session)
        self.bus.taken(sum(len(item.payload) for item in acks))

    # -- the diff ------------------------------------------------------------
    def _finish(self) -> None:
        plan = reconcile_plan(self.policy, self._retained, self.store.items())
        retained = len(self._retained)
        self._retained = {}
        count = len(plan.clear) + len(plan.publish)
        revision = self.store.revision + 1
        if count:
            try:
                # Revisions of their own, so a watcher never sees one go back.
                revision = self.store.advance_revision(count)
                self.store.commit()
            except (StoreError, OSError) as exc:
                self.store.rollback()
                log.error("mirror: cannot record revisions (%s): reconciling with the current", exc)
                revision = self.store.revision
        outs: list[Outgoing] = []
        for topic in plan.clear:
            key = key_of(self.policy.prefix, topic) or ""
            outs.append(Outgoing(topic, b"", retain=True, properties=properties(key, "", revision)))
            revision += 1
        for key, restype, value in plan.publish:
            out = self.policy.outgoing(key, restype, value, revision)
            revision += 1
            if out is not None:
                outs.append(out)
        self._outs = outs
        self._counts = (retained, len(plan.clear), len(plan.publish))
        self.pump()

    @property
    def pumping(self) -> bool:
        """Reconcile messages are still to be published (a chunk per loop turn)."""
        return bool(self._outs)

    def superseded(self, outs: list[Outgoing]) -> None:
        """A batch published these mirror messages: newer than what waits for the same topics."""
        if self._outs:
            self._superseded.update(out.topic for out in outs)

    def pump(self) -> None:
        """Publish the next chunk: the main loop serves requests between chunks."""
        chunk, self._outs = self._outs[:PUMP_CHUNK], self._outs[PUMP_CHUNK:]
        with self.bus.gathered():
            for out in chunk:
                if out.topic in self._superseded:
                    continue
                try:
                    self.bus.publish(
                        out.topic,
                        out.payload,
                        self.qos,
                        retain=True,
                        user_properties=out.properties,
                    )
                except BusError as exc:
                    log.error("mirror: %s", exc)
        if self._outs:
            return
        self._superseded.clear()
        self.seconds = time.monotonic() - self._started_at
        retained, cleared, published = self._counts
        log.info(
            "mirror reconciled in %.2f s: %d retained, %d cleared, %d published",
            self.seconds,
            retained,
            cleared,
            published,
        )
        self._end()

    def _end(self) -> None:
        self.done = True
        self._retained = {}
        if self._subscribed:
            self._subscribed = False
            try:
                self.bus.unsubscribe(self.filter)
                if self._marker:
                    self.bus.unsubscribe(self._marker)
            except BusError as exc:
                log.error("mirror: %s", exc)
        self._marker = ""
