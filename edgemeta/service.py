"""The composition root and the main loop.

One thread (the caller of ``run``) applies handlers in arrival order. It
takes what has arrived as a batch, applies it, commits the batch with one
fsync (the store changes, the processed msg_ids and the outbox of messages
to send), then publishes and acknowledges. Messages committed but not yet
confirmed by the broker are republished after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

from .bus import Inbound, MqttBus
from .cipher import ValueCipher, loosely_readable
from .cloud import CallDone, RemoteCaller
from .config import Config
from .devices import DevicePolicy, decode_device, device_id_of
from .devices import topic_filter as device_topic_filter
from .errors import BusError, EdgemetaError, MessageError, StoreError
from .handlers import (
    Answer,
    Call,
    CancelCalls,
    Context,
    Effect,
    Forward,
    Report,
    handle,
    pod_status_sync,
    set_connection,
)
from .handlers.context import CloudLink
from .handlers.devices import handle_device
from .message import OP_ERROR, Limits, Message, decode, dumps, new_error
from .metrics import BRIDGE_STATE, INVALID, REPORT, MetricsServer, ServiceMetrics, stats_topic
from .replies import Destination, answer_destination, report_payload
from .store import MetaStore, open_storage
from .topics import Topics, group_of

log = logging.getLogger(__name__)

MAX_BATCH = 128
REDELIVERY_DELAY = 5.0
MAX_REDELIVERY_DELAY = 60.0
SHUTDOWN_DRAIN = 3.0  # of the 10 s a stop may take (SPEC section 6)

#: The timer's meta-internal-sync, queued behind what has already arrived.
SYNC_TICK = object()

# One queued publish: topic, payload, correlation data.
Out = tuple[str, bytes, bytes | None]


class Service:
    """edgemeta, built from a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.modules.metaManager
        self.topics = Topics(config.mqtt.topicPrefix, settings.contextSendGroup)
        self.limits = Limits(config.limits.maxPayloadBytes, config.limits.maxDepth)
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
        self.bridge_topic = (
            self.topics.group(settings.bridgeStateTopic) if settings.bridgeStateTopic else ""
        )
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._confirmed: queue.SimpleQueue[int] = queue.SimpleQueue()
        subscriptions = [self.topics.meta]
        if self.bridge_topic:
            subscriptions.append(self.bridge_topic)
        self.device_policy: DevicePolicy | None = None
        if config.devices.enable:
            self.device_policy = DevicePolicy.from_config(config.devices)
            subscriptions.append(device_topic_filter(self.topics.prefix))
        self.bus = MqttBus(
            config.mqtt,
            subscriptions=subscriptions,
            status_topic=self.topics.status,
            deliver=self.inbox.put,
            on_published=self._confirmed.put,
        )
        self.caller = RemoteCaller(self._publish_call, self.inbox.put)
        self._mid_seq: dict[int, int] = {}
        self._seq_left: dict[int, int] = {}
        self._redeliver_at: float | None = None
        self._redelivery_delay = REDELIVERY_DELAY
        self._last_unsafe_warning = -1e9
        # Batches committed but not confirmed before the last stop: sent before anything new.
        self._to_replay: list[tuple[int, list[Any]]] | None = self.store.outbox()
        self.processed = 0

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
            self.store.abandon()
            raise

    # -- publishing -------------------------------------------------------
    def _publish_call(self, topic: str, message: Message) -> None:
        self.metrics.call_attempt(message.msg_id, message.operation)
        self.metrics.sent(topic, message.operation)
        self.bus.publish(topic, message.encode(), self.qos)

    def _publish(self, outs: list[Out]) -> list[int]:
        mids = []
        for topic, payload, correlation in outs:
            try:
                mids.append(self.bus.publish(topic, payload, self.qos, correlation=correlation))
            except BusError as exc:
                log.error("%s", exc)
        return mids

    def _report(self, reason: str, payload: bytes) -> Out:
        log.warning("reported: %s", reason)
        self.metrics.error(REPORT)
        self.metrics.sent(self.topics.error, REPORT)
        return (self.topics.error, report_payload(reason, payload), None)

    # -- applying effects -------------------------------------------------
    def _apply(self, effects: list[Effect], outs: list[Out], calls: list[Call]) -> None:
        for effect in effects:
            if isinstance(effect, Forward):
                outs.append((effect.topic, effect.message.encode(), None))
                self.metrics.sent(effect.topic, effect.message.operation)
            elif isinstance(effect, Answer):
                if effect.message.operation == OP_ERROR:
                    self.metrics.error("error_answer")
                dest = answer_destination(effect.request, self.topics)
                if isinstance(dest, Destination):
                    outs.append((dest.topic, effect.message.encode(), dest.correlation))
                    self.metrics.sent(dest.topic, effect.message.operation)
                else:
                    outs.append(self._report(dest, effect.request.encode()))
            elif isinstance(effect, Report):
                outs.append(self._report(effect.reason, effect.payload))
            elif isinstance(effect, Call):
                calls.append(effect)
            elif isinstance(effect, CancelCalls):
                ended = self.caller.pending.cancel(effect.topic, effect.reason)
                if ended:
                    log.info("%s: ending %d remote call(s)", effect.reason, ended)

    def _bad_message(self, exc: MessageError, item: Inbound, outs: list[Out]) -> None:
        known = group_of(exc.source, self.topics.cloud_group) is not None
        if exc.msg_id and (known or item.response_topic):
            request = Message(
                msg_id=exc.msg_id,
                operation="",
                resource=exc.resource,
                source=exc.source,
                group=exc.group,
                response_topic=item.response_topic,
                correlation=item.correlation,
            )
            request.raw = item.payload
            self._apply([Answer(request, new_error(request, exc.reason))], outs, [])
        else:
            outs.append(self._report(exc.reason, item.payload))

    def _take_device(self, item: Inbound, device_id: str, outs: list[Out], seen: list[str]) -> None:
        """A message on a device's own topic: never answered, never a reply to a call."""
        assert self.device_policy is not None
        label = self.topics.group("meta/device")
        try:
            msg = decode_device(item.payload, device_id, self.device_policy, self.limits)
        except MessageError as exc:
            self.metrics.received(label, INVALID)
            self.metrics.error("invalid_message")
            outs.append(self._report(exc.reason, item.payload))
            return
        self.metrics.received(label, msg.operation)
        # Kept apart from the modules' msg_ids: a device chooses its own.
        dedup_id = f"device/{device_id}/{msg.msg_id}"
        if item.dup and self.store.seen(dedup_id):
            log.info("dropped redelivered message %s of device %s", msg.msg_id, device_id)
            return
        seen.append(dedup_id)
        self._apply(handle_device(msg, self.context), outs, [])

    def _take_inbound(
        self, item: Inbound, outs: list[Out], calls: list[Call], seen: list[str]
    ) -> Message | None:
        if self.device_policy is not None:
            device_id = device_id_of(item.topic, self.topics.prefix)
            if device_id is not None:
                self._take_device(item, device_id, outs, seen)
                return None
        if item.topic == self.bridge_topic and item.topic != self.topics.meta:
            self.metrics.received(item.topic, BRIDGE_STATE)
            state = item.payload.strip()
            if state in (b"1", b"0"):
                self._apply(set_connection(state == b"1", self.context), outs, calls)
            else:
                outs.append(self._report("bridge state must be 1 or 0", item.payload))
            return None
        try:
            msg = decode(item.payload, self.limits)
        except MessageError as exc:
            self.metrics.received(item.topic, INVALID)
            self.metrics.error("invalid_message")
            self._bad_message(exc, item, outs)
            return None
        self.metrics.received(item.topic, msg.operation)
        msg.response_topic = item.response_topic
        msg.correlation = item.correlation
        if item.dup and self.store.seen(msg.msg_id):
            log.info("dropped redelivered message %s (already applied)", msg.msg_id)
            return None
        if self.caller.pending.deliver(msg):
            return None
        seen.append(msg.msg_id)
        self._apply(handle(msg, self.context), outs, calls)
        return msg

    # -- the batch --------------------------------------------------------
    def _process(self, batch: list[Any]) -> None:
        outs: list[Out] = []
        calls: list[Call] = []
        seen: list[str] = []
        acks: list[Inbound] = []
        requests: list[tuple[Message | None, bytes]] = []
        for item in batch:
            try:
                if isinstance(item, Inbound):
                    acks.append(item)
                    msg = self._take_inbound(item, outs, calls, seen)
                    requests.append((msg, item.payload))
                elif item is SYNC_TICK:
                    self._apply(pod_status_sync(self.context), outs, calls)
                elif isinstance(item, CallDone):
                    self.metrics.call_ended(
                        item.call.outbound.msg_id, item.call.outbound.operation, _outcome(item)
                    )
                    original = _original_request(item)
                    requests.append((original, b""))
                    self._apply(item.call.on_reply(item.reply, item.why), outs, calls)
            except EdgemetaError as exc:
                self.metrics.error("internal")
                log.error("cannot apply a message: %s", exc)
            except Exception:
                self.metrics.error("internal")
                log.exception("unexpected failure while applying a message")
        self.processed += len(acks)
        changed = False
        try:
            self.store.mark_seen(seen)
            seq = self.store.add_outbox(_to_record(outs)) if outs else 0
            changed = self.store.has_uncommitted_changes
            with self.metrics.commit_seconds.time():
                self.store.commit()
        except (StoreError, OSError) as exc:
            self.store.rollback()
            if changed:
                self._storage_failed(exc, requests)
                return
            # Nothing of the store changed (queries, forwards): answer without the
            # crash-safe outbox rather than not at all.
            seq = 0
            self._warn_unsafe(exc)
        else:
            if changed:
                self._redelivery_delay = REDELIVERY_DELAY
        self.metrics.set_records(len(self.store))
        self.metrics.set_cloud(self._cloud_state())
        for call in calls:
            self.caller.start(call)
        with self.bus.gathered():
            mids = self._publish(outs)
            for item in acks:
                self.bus.ack(item.mid, item.qos, item.session)
        if seq:
            self._track(seq, mids)

    def _storage_failed(
        self, exc: BaseException, requests: list[tuple[Message | None, bytes]]
    ) -> None:
        reason = f"storage failure, the message will be retried: {exc}"
        self.metrics.error("storage")
        log.error("%s", reason)
        outs: list[Out] = []
        for msg, payload in requests:
            if msg is not None and msg.operation not in ("response", "error"):
                self._apply([Answer(msg, new_error(msg, reason))], outs, [])
            outs.append(self._report(reason, payload or (msg.encode() if msg else b"")))
        self._publish(outs)
        if self._redeliver_at is None:
            self._redeliver_at = time.monotonic() + self._redelivery_delay
            self._redelivery_delay = min(self._redelivery_delay * 2, MAX_REDELIVERY_DELAY)

    def _warn_unsafe(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_unsafe_warning > 60:
            self._last_unsafe_warning = now
            log.warning("storage failure (%s): answering without the crash-safe outbox", exc)

    def _track(self, seq: int, mids: list[int]) -> None:
        if not mids:
            self.store.outbox_sent([seq])
            return
        self._seq_left[seq] = len(mids)
        for mid in mids:
            self._mid_seq[mid] = seq

    def _confirm(self) -> None:
        done = []
        while True:
            try:
                mid = self._confirmed.get_nowait()
            except queue.Empty:
                break
            seq = self._mid_seq.pop(mid, None)
            if seq is None:
                continue
            left = self._seq_left.get(seq, 0) - 1
            if left > 0:
                self._seq_left[seq] = left
            elif left == 0:
                del self._seq_left[seq]
                done.append(seq)
        if done:
            self.store.outbox_sent(done)

    def _replay_outbox(self) -> None:
        pending = self._to_replay or []
        self._to_replay = None
        if pending:
            log.warning("republishing %d batch(es) committed before the last stop", len(pending))
        for seq, entries in pending:
            self._track(seq, self._publish(_from_record(entries)))
        if self.store.recovered_from_damage:
            lines = self.store.damage() or ["recovered what was intact (see the log)"]
            self._publish([self._report(f"database was damaged: {line}", b"") for line in lines])

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

    def _send_sync(self) -> None:
        # Handed to the main loop directly: on a broker with ACLs edgemeta may not
        # write <prefix>/meta, and a sync needs no round trip through the broker.
        self.inbox.put(SYNC_TICK)

    # -- the loop ---------------------------------------------------------
    def _take(self, timeout: float) -> list[Any]:
        try:
            first = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

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
        self._serve_metrics()
        self.bus.start()
        next_sync = time.monotonic() + interval
        stats_every = self.config.metrics.statsInterval
        next_stats = time.monotonic() + stats_every if stats_every else None
        status = 0
        try:
            while not stop.is_set():
                if self.bus.fatal is not None:
                    log.error("cannot continue: %s", self.bus.fatal)
                    status = 1
                    break
                if self._to_replay is not None:
                    if not self.bus.online:
                        stop.wait(0.05)
                        continue
                    self._replay_outbox()
                now = time.monotonic()
                batch = self._take(max(0.0, min(next_sync - now, 0.2)))
                self._confirm()
                if batch:
                    self._process(batch)
                elif self.store_has_pending():
                    self._commit_quietly()
                now = time.monotonic()
                if now >= next_sync:
                    self._send_sync()
                    next_sync = max(next_sync + interval, now)
                if next_stats is not None and now >= next_stats and self.bus.online:
                    self._publish_stats()
                    next_stats = now + stats_every
                if self._redeliver_at is not None and now >= self._redeliver_at:
                    self._redeliver_at = None
                    self.bus.request_redelivery()
        finally:
            self._shutdown()
        return status

    def store_has_pending(self) -> bool:
        return self.store.has_pending_writes

    def _commit_quietly(self) -> None:
        try:
            self.store.commit()
        except (StoreError, OSError) as exc:
            log.error("cannot record confirmed messages: %s", exc)

    def _drain(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            batch = self._take(0.05)
            self._confirm()
            if not batch:
                return
            self._process(batch)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_DRAIN
        try:
            self._drain(deadline)
            self.caller.shutdown()
            self._drain(deadline + 1.0)
            confirm_by = time.monotonic() + 0.5
            while self._seq_left and time.monotonic() < confirm_by:
                with contextlib.suppress(queue.Empty):
                    self._confirmed.put(self._confirmed.get(timeout=0.05))
                self._confirm()
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


def _load_cipher(key_file: str) -> ValueCipher | None:
    if not key_file:
        return None
    cipher = ValueCipher.from_file(key_file)
    if loosely_readable(key_file):
        log.warning("key file %s can be read by other users: chmod 600 it", key_file)
    return cipher


def _original_request(done: CallDone) -> Message | None:
    on_reply = done.call.on_reply
    closure = getattr(on_reply, "__closure__", None) or ()
    for cell in closure:
        value = cell.cell_contents
        if isinstance(value, Message):
            return value
    return None


def _outcome(done: CallDone) -> str:
    if done.reply is None:
        return "no_reply"
    return "error" if done.reply.operation == OP_ERROR else "response"


def _to_record(outs: list[Out]) -> list[Any]:
    return [
        [topic, payload.decode("utf-8", "replace"), None if corr is None else corr.hex()]
        for topic, payload, corr in outs
    ]


def _from_record(entries: list[Any]) -> list[Out]:
    return [
        (topic, text.encode(), None if corr is None else bytes.fromhex(corr))
        for topic, text, corr in entries
    ]
