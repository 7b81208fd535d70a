"""The composition root and the main loop.

``Service`` builds everything from a Config; ``run`` is the main loop: it
takes what the bus handed over (messages and connection events, in order),
and gives the messages to the delivery protocol (``delivery.py``: apply,
commit, publish, acknowledge, confirm) a batch at a time. Timers (the pod
status sync, call deadlines, retries) are deadlines checked by the loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import queue
import threading
import time
from typing import Any

from .bus import (
    Connected,
    Disconnected,
    Failed,
    Inbound,
    MqttBus,
    Published,
    Subscribed,
    SubscribeDone,
    Subscription,
)
from .calls import CallTable, restore_calls
from .cipher import ValueCipher, loosely_readable
from .config import Config
from .delivery import Delivery, LinkCheck, SyncTick, Work
from .devices import DevicePolicy
from .devices import topic_filter as device_topic_filter
from .errors import BusError, StoreError
from .handlers import Context
from .handlers.context import CloudLink
from .heartbeat import ECHO_TOPIC, HEARTBEAT_TOPIC, CloudHeartbeat
from .intake import Intake
from .message import Limits, dumps
from .metrics import MetricsServer, ServiceMetrics, stats_topic
from .mirror import MirrorPolicy, Reconciler
from .store import MetaStore, open_storage
from .topics import Topics

log = logging.getLogger(__name__)

MAX_BATCH = 128
MAX_BATCH_BYTES = 4 << 20
SHUTDOWN_DRAIN = 3.0  # of the 10 s a stop may take (SPEC section 6)
#: After this many payload bytes applied, freed memory is handed back to the system.
TRIM_AFTER_BYTES = 16 << 20
#: Generation 0 collected after 20,000 net allocations instead of 700: a batch
#: allocates thousands of short-lived objects, almost none of them in cycles.
GC_THRESHOLDS = (20_000, 20, 20)

#: Put in the inbox by a signal handler: the loop wakes at once and sees the stop.
WAKE = object()


class Service:
    """edgemeta, built from a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.modules.metaManager
        self.topics = Topics(config.mqtt.topicPrefix, settings.contextSendGroup)
        self.qos = config.mqtt.qos
        self.store = MetaStore(
            open_storage(
                config.database.path,
                sync=config.database.fsync,
                compact_after=config.database.compactAfter,
                compact_bytes=config.database.compactBytes,
                lock=True,
            ),
            dedup_window=config.database.dedupWindow,
            cipher=_load_cipher(config.database.secretKeyFile),
        )
        self._seal_secrets()
        self.context = Context(
            self.store, self.topics, settings, CloudLink(edge_site=settings.edgeSite)
        )
        self.metrics = ServiceMetrics(self.topics)
        self.metrics.set_records(len(self.store))
        self._metrics_server: MetricsServer | None = None
        bridge_topic = (
            self.topics.group(settings.bridgeStateTopic) if settings.bridgeStateTopic else ""
        )
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        subscriptions = [Subscription(self.topics.meta)]
        if bridge_topic:
            # The bridge's state is retained: it is wanted at every (re)subscription.
            subscriptions.append(Subscription(bridge_topic, retained=True))
        #: Cloud liveness through the bridge (edgemeta.heartbeat); None when off.
        self.heartbeat: CloudHeartbeat | None = None
        echo_topic = ""
        if bridge_topic and settings.cloudHeartbeatInterval and not settings.edgeSite:
            self.heartbeat = CloudHeartbeat(
                settings.cloudHeartbeatInterval, settings.cloudHeartbeatTimeout
            )
            echo_topic = self.topics.group(ECHO_TOPIC)
            subscriptions.append(Subscription(echo_topic))
        self._heartbeat_topic = self.topics.group(HEARTBEAT_TOPIC)
        device_policy: DevicePolicy | None = None
        if config.devices.enable:
            device_policy = DevicePolicy.from_config(config.devices)
            subscriptions.append(Subscription(device_topic_filter(self.topics.prefix)))
        self.bus = MqttBus(
            config.mqtt,
            subscriptions=subscriptions,
            status_topic=self.topics.status,
            events=self.inbox.put,
        )
        intake = Intake(
            self.context,
            Limits(config.limits.maxPayloadBytes, config.limits.maxDepth),
            self.metrics,
            bridge_topic=bridge_topic,
            device_policy=device_policy,
            heartbeat=self.heartbeat,
            echo_topic=echo_topic,
        )
        self.calls = CallTable()
        self.mirror = MirrorPolicy.from_config(self.topics.prefix, config.mirror)
        self.reconciler = Reconciler(self.bus, self.store, self.mirror, self.qos)
        self.delivery = Delivery(
            store=self.store,
            bus=self.bus,
            intake=intake,
            context=self.context,
            calls=self.calls,
            metrics=self.metrics,
            qos=self.qos,
            mirror=self.mirror,
        )
        self.delivery.mirrored = self.reconciler.superseded
        now = time.monotonic()
        for call in restore_calls(self.store.calls()):
            # Resumed: its reply may be queued in the session, or it comes after
            # one more attempt's wait; either way the requester is answered.
            self.calls.add(call, now)
        if len(self.calls):
            log.warning("resuming %d call(s) in flight before the last stop", len(self.calls))
        self._trim = _malloc_trim()
        #: Payload bytes applied since memory was last handed back (TRIM_AFTER_BYTES).
        self._untrimmed = 0

    def _seal_secrets(self) -> None:
        """Check the stored secrets against the key; encrypt those stored in plain text."""
        try:
            encrypted = self.store.check_secrets()
            if encrypted:
                self.store.commit()
                # A new snapshot and journal: no plain copy stays in the files.
                self.store.compact()
                log.info("encrypted %d secret value(s) stored in plain text before", encrypted)
        except BaseException:
            self.store.rollback()
            self.store.abandon()
            raise

    @property
    def processed(self) -> int:
        return self.delivery.processed

    def wake(self) -> None:
        """Make the main loop look at its stop event now (safe from a signal handler)."""
        self.inbox.put(WAKE)

    # -- the loop ---------------------------------------------------------
    def _cloud_state(self) -> bool | None:
        link = self.context.link
        return True if link.connected else False if link.known_disconnected else None

    def _publish_stats(self) -> None:
        snapshot = self.metrics.snapshot(self._cloud_state())
        try:
            self.bus.publish(stats_topic(self.topics), dumps(snapshot), self.qos, retain=True)
        except BusError as exc:
            log.error("%s", exc)

    def _serve_metrics(self) -> None:
        settings = self.config.metrics
        if not settings.port:
            return
        try:
            self._metrics_server = self.metrics.serve(settings.address, settings.port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s", settings.address, settings.port, exc)
            return
        log.info("metrics on http://%s:%d/metrics", settings.address, settings.port)

    def _take(self, timeout: float) -> list[Work]:
        """What arrived within ``timeout``: events are handled here, work is returned."""
        work: list[Work] = []
        delivery = self.delivery
        reconciler = self.reconciler
        size = 0
        try:
            item = self.inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return work
        while True:
            if isinstance(item, Inbound) and reconciler.owns(item.topic):
                # The mirror is edgemeta's own output: never a request.
                reconciler.take(item)
            elif isinstance(item, Inbound):
                work.append(item)
                size += len(item.payload)
            elif isinstance(item, Published):
                delivery.published(item.mid, item.refused)
            elif isinstance(item, SyncTick):
                work.append(item)
            elif isinstance(item, Connected):
                delivery.replay_outbox()
            elif isinstance(item, Subscribed):
                delivery.resend_refused(all_now=True)
                reconciler.connected()
                if self.heartbeat is not None:
                    self.heartbeat.connected(time.monotonic())
            elif isinstance(item, SubscribeDone):
                reconciler.subscribe_done(item.mid, item.refused)
            elif isinstance(item, Disconnected):
                reconciler.disconnected()
                if self.heartbeat is not None:
                    self.heartbeat.disconnected()
            elif isinstance(item, Failed):
                pass  # the bus logs; a failure is seen through bus.fatal
            if len(work) >= MAX_BATCH or size >= MAX_BATCH_BYTES:
                break
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
        reconciler.flush()
        return work

    def _beat(self, now: float, batch: list[Work]) -> None:
        """Send a heartbeat when one is due; the end of a wait for its echo is work."""
        heartbeat = self.heartbeat
        if heartbeat is None:
            return
        payload = heartbeat.beat(now)
        if payload is not None:
            try:
                # QoS 0: a beat that cannot cross now is worth nothing later.
                self.bus.publish(self._heartbeat_topic, payload, 0)
            except BusError as exc:
                log.error("%s", exc)
        if heartbeat.due(now):
            # Decided when applied: an echo taken in this batch may have come in time.
            batch.append(LinkCheck())

    def _next_wait(self, now: float, *deadlines: float | None) -> float:
        soonest = min((d for d in deadlines if d is not None), default=now + 1.0)
        return min(max(0.0, soonest - now), 1.0)

    def _step(self, batch: list[Work]) -> None:
        delivery = self.delivery
        if delivery.failed is None and not delivery.held:
            if batch:
                self._apply(batch)
            else:
                delivery.idle()
            return
        # A batch could not be committed: it is retried first, and what came
        # after it waits, in order, so nothing overtakes it.
        delivery.held.extend(batch)
        if delivery.failed is not None:
            if delivery.retry_at is not None and time.monotonic() < delivery.retry_at:
                return
            if not delivery.retry_failed():
                return
        while delivery.held and delivery.failed is None:
            chunk = [delivery.held.popleft() for _ in range(min(MAX_BATCH, len(delivery.held)))]
            self._apply(chunk)

    def _apply(self, batch: list[Work]) -> None:
        if not self.delivery.apply(batch):
            # Kept in order: the batch, then what was taken with it.
            return
        self.metrics.set_records(len(self.store))
        self.metrics.set_cloud(self._cloud_state())
        self._untrimmed += sum(len(x.payload) for x in batch if isinstance(x, Inbound))
        if self._untrimmed >= TRIM_AFTER_BYTES and self._trim is not None:
            self._untrimmed = 0
            self._trim(0)

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set; returns the exit status."""
        interval = self.config.modules.metaManager.podStatusSyncInterval
        log.info(
            "edgemeta: %d records in %s; broker %s:%d; prefix %s",
            len(self.store),
            self.config.database.path,
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.topics.prefix,
        )
        status = 0
        try:
            if stop.is_set():
                return status
            self._serve_metrics()
            # What start-up loaded (the store's records above all) stays: the cyclic
            # collector need not walk it again at every collection of the old generation.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            self.bus.start()
            next_sync = time.monotonic() + interval
            stats_every = self.config.metrics.statsInterval
            next_stats = time.monotonic() + stats_every if stats_every else None
            delivery = self.delivery
            while not stop.is_set():
                if self.bus.fatal is not None:
                    log.error("cannot continue: %s", self.bus.fatal)
                    status = 1
                    break
                now = time.monotonic()
                wait = self._next_wait(
                    now,
                    next_sync,
                    next_stats,
                    self.calls.next_due(),
                    delivery.next_resend(),
                    delivery.retry_at,
                    self.heartbeat.next_due() if self.heartbeat is not None else None,
                )
                if self.reconciler.pumping:
                    self.reconciler.pump()
                    wait = 0.0
                batch = self._take(wait)
                now = time.monotonic()
                batch.extend(delivery.due_calls(now))
                self._beat(now, batch)
                if now >= next_sync:
                    # Handed to the loop directly: on a broker with ACLs edgemeta may not
                    # write <prefix>/meta, and a sync needs no round trip through it.
                    batch.append(SyncTick())
                    next_sync = max(next_sync + interval, now)
                self._step(batch)
                if delivery.next_resend() is not None:
                    delivery.resend_refused()
                if next_stats is not None and now >= next_stats and self.bus.online:
                    self._publish_stats()
                    next_stats = now + stats_every
        finally:
            self._shutdown()
        return status

    def _drain(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            batch = self._take(0.05)
            if not batch and self.delivery.failed is None and not self.delivery.held:
                return
            self._step(batch)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_DRAIN
        try:
            if self.bus.fatal is None:
                self._drain(deadline)
                # Pending calls are answered with an error (SPEC section 6).
                ending = self.delivery.stopping_calls()
                if ending and self.delivery.failed is None:
                    self.delivery.apply(ending)
                confirm_by = time.monotonic() + 0.5
                while len(self.delivery.confirmations) and time.monotonic() < confirm_by:
                    self._take(0.05)
                self.delivery.idle()
        except Exception:
            log.exception("failure while stopping")
        finally:
            try:
                self.store.close()
            except (StoreError, OSError) as exc:
                log.error("cannot close the store cleanly: %s", exc)
            self.bus.stop()
            if self._metrics_server is not None:
                self._metrics_server.close()
            log.info("stopped")


_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 256 * 1024


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None: after a burst of large messages, memory goes back.

    Also fixes glibc's mmap threshold: left dynamic, it rises to the size of
    the largest block freed, so after the first 1 MB message every large
    payload is carved from the heap, which fragments and is never returned.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def _load_cipher(key_file: str) -> ValueCipher | None:
    if not key_file:
        return None
    cipher = ValueCipher.from_file(key_file)
    if loosely_readable(key_file):
        log.warning("key file %s can be read by other users: chmod 600 it", key_file)
    return cipher
