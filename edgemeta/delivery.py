"""The delivery protocol: when a message is applied, committed, published and acknowledged.

One batch at a time, on the main loop's thread:

1. **apply** each received message in arrival order (each within a savepoint:
   a handler that fails has its partial writes undone and its requester
   answered with an error);
2. **commit** with one fsync: the store's changes, the msg_ids applied (the
   duplicate window), the calls opened or ended, and the outbox (every
   message the batch will publish);
3. **publish** the outbox, then **acknowledge** (PUBACK) the batch's messages;
4. **confirm**: a batch leaves the outbox when the broker has confirmed each
   of its publishes; what is left is republished after a restart.

Hence: nothing is acknowledged before its effects are durable (a crash
before step 3 gets the message redelivered, and the duplicate window drops
it if step 2 had happened); nothing committed is lost (the outbox); and
nothing overtakes: a batch that cannot be committed is retried, with
back-off, before anything newer is taken. A reply to a call is a received
message like any other, so it too is acknowledged only once its effect is
committed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .backoff import Backoff
from .bus import Inbound, MqttBus
from .calls import END, ENDED, SEND, CallTable, PendingCall, call_record
from .errors import BusError, StoreError
from .handlers import (
    Answer,
    Call,
    CancelCalls,
    Context,
    Effect,
    Forward,
    Report,
    call_ended,
    handle,
    pod_status_sync,
)
from .intake import Intake, Taken
from .message import OP_ERROR, Message, new_error
from .metrics import REPORT, ServiceMetrics
from .mirror import MirrorPolicy
from .outbox import Confirmations, Outgoing, from_record, refill, to_record
from .replies import Destination, answer_destination, report_payload
from .store import MetaStore

log = logging.getLogger(__name__)

#: Messages never answered (SPEC section 3): their failures are reported instead.
_NEVER_ANSWERED = frozenset({"response", "error"})


@dataclass(frozen=True, slots=True)
class SyncTick:
    """The timer's meta-internal-sync, queued behind what has already arrived."""


@dataclass(frozen=True, slots=True)
class CallExpired:
    """A call ended without a reply: no attempt left, or edgemeta is stopping."""

    pending: PendingCall
    why: str


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """The wait for a heartbeat's echo is over: is the cloud link silent?"""


Work = Inbound | SyncTick | CallExpired | LinkCheck


@dataclass(slots=True)
class _Batch:
    """What applying a batch produced, until it is committed."""

    outs: list[Outgoing] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    device_seen: list[str] = field(default_factory=list)
    opened: list[Call] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    acks: list[Inbound] = field(default_factory=list)
    requests: list[tuple[Message | None, bytes]] = field(default_factory=list)
    payload_bytes: int = 0


class Delivery:
    def __init__(
        self,
        *,
        store: MetaStore,
        bus: MqttBus,
        intake: Intake,
        context: Context,
        calls: CallTable,
        metrics: ServiceMetrics,
        qos: int,
        mirror: MirrorPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.bus = bus
        self.intake = intake
        self.context = context
        self.topics = context.topics
        self.calls = calls
        self.metrics = metrics
        self.qos = qos
        self.mirror = mirror
        #: Told the mirror messages of each committed batch (the start-up reconcile).
        self.mirrored: Callable[[list[Outgoing]], None] | None = None
        self.clock = clock
        self.confirmations = Confirmations()
        self._backoff = Backoff(initial=1.0, cap=30.0)
        #: A batch that could not be committed, retried at ``retry_at`` before anything newer.
        self.failed: list[Work] | None = None
        self.retry_at: float | None = None
        self._failures = 0
        #: Work that arrived while ``failed`` waits, in order.
        self.held: deque[Work] = deque()
        self._replayed = False
        self._last_unsafe_warning = -1e9
        self.processed = 0
        self._seq = 0

    # -- the batch --------------------------------------------------------
    def apply(self, batch: list[Work]) -> bool:
        """Apply, commit, publish, acknowledge; False when the batch could not be committed."""
        state = _Batch()
        for item in batch:
            self._apply_one(item, state)
        if not self._commit(state, batch):
            return False
        now = self.clock()
        for call in state.opened:
            self.calls.add(call, now)
        for call_id in state.closed:
            self.calls.remove(call_id)
        self._send_batch(state)
        self.processed += len(state.acks)
        self.bus.taken(state.payload_bytes)
        return True

    def _apply_one(self, item: Work, state: _Batch) -> None:
        mark = self.store.savepoint()
        sizes = (len(state.outs), len(state.seen), len(state.opened), len(state.closed))
        request: Message | None = None
        payload = b""
        try:
            if isinstance(item, Inbound):
                state.acks.append(item)
                state.payload_bytes += len(item.payload)
                payload = item.payload
                taken = self.intake.take(item, self._owns_call(state))
                request = taken.request
                state.requests.append((request, payload))
                self._take(taken, state)
            elif isinstance(item, SyncTick):
                self._render(pod_status_sync(self.context), state)
            elif isinstance(item, LinkCheck):
                self._render(self.intake.link_check(), state)
            elif (
                isinstance(item, CallExpired)
                and item.pending.call_id in self.calls
                and item.pending.call_id not in state.closed
            ):
                request = item.pending.call.request
                self._end_call(item.pending.call, None, item.why, state)
        except Exception as exc:
            # Whatever the failure, the message's partial effects go and its
            # requester hears of it: it is answered (or reported), then acknowledged.
            self.store.rollback_to(mark)
            del state.outs[sizes[0] :], state.seen[sizes[1] :]
            del state.opened[sizes[2] :], state.closed[sizes[3] :]
            self.metrics.error("internal")
            log.exception("failure while applying a message")
            reason = f"internal error while applying the message: {type(exc).__name__}: {exc}"
            if request is not None and request.operation not in _NEVER_ANSWERED:
                self._render([Answer(request, new_error(request, reason))], state)
            else:
                text = payload or (request.encode() if request else b"")
                self._render([Report(reason, text)], state)

    def _owns_call(self, state: _Batch) -> Callable[[str], bool]:
        opened = {c.outbound.msg_id for c in state.opened}

        def owns(call_id: str) -> bool:
            if call_id in state.closed:
                return False
            return call_id in self.calls or call_id in opened

        return owns

    def _take(self, taken: Taken, state: _Batch) -> None:
        if taken.reply is not None:
            call_id = taken.reply.parent_msg_id
            call = self._open_call(call_id, state)
            if call is not None:
                self._end_call(call, taken.reply, "", state)
            return
        if taken.seen:
            state.seen.append(taken.seen)
        if taken.device_seen:
            state.device_seen.append(taken.device_seen)
        self._render(taken.effects, state)
        if taken.request is not None:
            self._render(handle(taken.request, self.context), state)

    def _open_call(self, call_id: str, state: _Batch) -> Call | None:
        pending = self.calls.get(call_id)
        if pending is not None:
            return pending.call
        return next((c for c in state.opened if c.outbound.msg_id == call_id), None)

    def _end_call(self, call: Call, reply: Message | None, why: str, state: _Batch) -> None:
        call_id = call.outbound.msg_id
        state.closed.append(call_id)
        self.store.end_call(call_id)
        state.seen.append(ENDED + call_id)
        outcome = "no_reply" if reply is None else reply.operation
        self.metrics.call_ended(call_id, call.outbound.operation, outcome)
        self._render(call_ended(call, reply, why, self.context), state)

    # -- effects into messages ---------------------------------------------
    def _render(self, effects: list[Effect], state: _Batch) -> None:
        outs = state.outs
        for effect in effects:
            if isinstance(effect, Forward):
                outs.append(Outgoing(effect.topic, effect.message.encode()))
                self.metrics.sent(effect.topic, effect.message.operation)
            elif isinstance(effect, Answer):
                if effect.message.operation == OP_ERROR:
                    self.metrics.error("error_answer")
                dest = answer_destination(effect.request, self.topics)
                if isinstance(dest, Destination):
                    outs.append(Outgoing(dest.topic, effect.message.encode(), dest.correlation))
                    self.metrics.sent(dest.topic, effect.message.operation)
                else:
                    outs.append(self.report(dest, effect.request.encode()))
            elif isinstance(effect, Report):
                outs.append(self.report(effect.reason, effect.payload))
            elif isinstance(effect, Call):
                self.store.open_call(effect.outbound.msg_id, call_record(effect))
                state.opened.append(effect)
                outs.append(Outgoing(effect.topic, effect.outbound.encode()))
                self.metrics.call_attempt(effect.outbound.msg_id, effect.outbound.operation)
                self.metrics.sent(effect.topic, effect.outbound.operation)
            elif isinstance(effect, CancelCalls):
                ending = [
                    p.call
                    for p in self.calls.to_topic(effect.topic)
                    if p.call_id not in state.closed
                ] + [
                    c
                    for c in state.opened
                    if c.topic == effect.topic and c.outbound.msg_id not in state.closed
                ]
                if ending:
                    log.info("%s: ending %d remote call(s)", effect.reason, len(ending))
                for call in ending:
                    self._end_call(call, None, effect.reason, state)

    def report(self, reason: str, payload: bytes) -> Outgoing:
        log.warning("reported: %s", reason)
        self.metrics.error(REPORT)
        self.metrics.sent(self.topics.error, REPORT)
        return Outgoing(self.topics.error, report_payload(reason, payload))

    # -- commit -------------------------------------------------------------
    def _commit(self, state: _Batch, batch: list[Work]) -> bool:
        store = self.store
        changed = False
        try:
            store.mark_seen(state.seen)
            store.mark_device_seen(state.device_seen)
            if self.mirror is not None and self.mirror.enable:
                # In the outbox with the rest: a crash before they are confirmed
                # republishes them at the next start. Before the answers: the broker
                # handles one connection's packets in order, so whoever got an answer
                # reads the mirror with that change in it.
                mirrored = self.mirror.changes(store.revised_changes())
                state.outs[:0] = mirrored
                if mirrored and self.mirrored is not None:
                    self.mirrored(mirrored)
            state_seq = store.add_outbox(to_record(state.outs)) if state.outs else 0
            changed = store.has_uncommitted_changes
            with self.metrics.commit_seconds.time():
                store.commit()
        except (StoreError, OSError) as exc:
            store.rollback()
            if changed:
                self._storage_failed(exc, state, batch)
                return False
            # Nothing of the table changed (queries, forwards): answer without the
            # crash-safe outbox rather than not at all.
            state_seq = 0
            self._warn_unsafe(exc)
        self._seq = state_seq
        if self.failed is not None:
            log.info("the batch that could not be committed is committed now")
        self.failed = None
        self.retry_at = None
        self._failures = 0
        return True

    def _storage_failed(self, exc: BaseException, state: _Batch, batch: list[Work]) -> None:
        self.metrics.error("storage")
        reason = f"storage failure, the message will be retried: {exc}"
        log.error("%s", reason)
        if self._failures == 0:
            # Told once; the batch is then retried until it is committed, and
            # nothing newer is taken meanwhile, so nothing overtakes it.
            outs: list[Outgoing] = []
            errors = _Batch(outs=outs)
            for msg, payload in state.requests:
                if msg is not None and msg.operation not in _NEVER_ANSWERED:
                    self._render([Answer(msg, new_error(msg, reason))], errors)
                outs.append(self.report(reason, payload or (msg.encode() if msg else b"")))
            self._publish_untracked(outs)
        self._failures += 1
        self.failed = batch
        self.retry_at = self.clock() + self._backoff.delay(self._failures)

    def _warn_unsafe(self, exc: BaseException) -> None:
        now = self.clock()
        if now - self._last_unsafe_warning > 60:
            self._last_unsafe_warning = now
            log.warning("storage failure (%s): answering without the crash-safe outbox", exc)

    def retry_failed(self) -> bool:
        """Apply the batch that could not be committed again; True once it is."""
        batch = self.failed
        if batch is None:
            return True
        return self.apply(batch)

    # -- publishing and confirmations --------------------------------------
    def _send_batch(self, state: _Batch) -> None:
        seq = self._seq
        with self.bus.gathered():
            if seq:
                self.confirmations.expect(seq, len(state.outs))
                for out in state.outs:
                    self._send(seq, out, 1)
            else:
                self._publish_untracked(state.outs)
            for item in state.acks:
                self.bus.ack(item.mid, item.qos, item.session)

    def _publish(self, out: Outgoing) -> int:
        """Hand ``out`` to the bus; its mid. Raises ``BusError`` when refused."""
        return self.bus.publish(
            out.topic,
            out.payload,
            self.qos,
            retain=out.retain,
            correlation=out.correlation,
            user_properties=out.properties,
        )

    def _send(self, seq: int, out: Outgoing, tries: int) -> None:
        try:
            mid = self._publish(out)
        except BusError as exc:
            self._sent_done(self.confirmations.failed(seq, out, tries, str(exc), self.clock()))
            return
        if self.qos == 0:
            self._sent_done(self.confirmations.confirmed_at_once(seq))
        else:
            self.confirmations.sent(seq, out, mid, tries)

    def _publish_untracked(self, outs: list[Outgoing]) -> None:
        for out in outs:
            try:
                self._publish(out)
            except BusError as exc:
                log.error("%s", exc)

    def _sent_done(self, seqs: list[int]) -> None:
        if seqs:
            self.store.outbox_sent(seqs)

    def published(self, mid: int, refused: str) -> None:
        """The broker confirmed (or refused) publish ``mid``."""
        self._sent_done(self.confirmations.published(mid, refused, self.clock()))

    def resend_refused(self, *, all_now: bool = False) -> None:
        """Publish again what was refused and whose back-off is over."""
        due = self.confirmations.due_retries(self.clock(), all_now=all_now)
        if due:
            with self.bus.gathered():
                for seq, out, tries in due:
                    self._send(seq, out, tries)

    def next_resend(self) -> float | None:
        return self.confirmations.next_retry()

    def replay_outbox(self) -> None:
        """Once connected after start-up: republish what was committed and never confirmed."""
        if self._replayed:
            return
        self._replayed = True
        pending = self.store.outbox()
        if pending:
            log.warning("republishing %d batch(es) committed before the last stop", len(pending))
        with self.bus.gathered():
            for seq, entries in pending:
                outs = [refill(out, self.store.get) for out in from_record(entries)]
                self.confirmations.expect(seq, len(outs))
                for out in outs:
                    self._send(seq, out, 1)
                if not outs:
                    self._sent_done([seq])
            if self.store.recovered_from_damage:
                lines = self.store.damage() or ["recovered what was intact (see the log)"]
                reports = [self.report(f"database was damaged: {line}", b"") for line in lines]
                self._publish_untracked(reports)

    def idle(self) -> None:
        """Nothing arrived: make the confirmations recorded meanwhile durable."""
        if self.store.has_pending_writes:
            try:
                self.store.commit()
            except (StoreError, OSError) as exc:
                log.error("cannot record confirmed messages: %s", exc)

    # -- calls ----------------------------------------------------------------
    def due_calls(self, now: float) -> list[Work]:
        """Advance the calls whose deadline has come; those that end become work."""
        expired: list[Work] = []
        resend: list[PendingCall] = []
        for pending in self.calls.due(now):
            step = self.calls.advance(pending, now)
            if step == SEND:
                resend.append(pending)
            elif step == END:
                call = pending.call
                why = f"no answer after {call.attempts} attempt(s) of {call.timeout:g} s"
                expired.append(CallExpired(pending, why))
        if resend:
            outs = []
            for pending in resend:
                outbound = pending.call.outbound
                self.metrics.call_attempt(outbound.msg_id, outbound.operation)
                self.metrics.sent(pending.call.topic, outbound.operation)
                outs.append(Outgoing(pending.call.topic, outbound.encode()))
            with self.bus.gathered():
                self._publish_untracked(outs)
        return expired

    def stopping_calls(self) -> list[Work]:
        """Every call in flight, to be ended with an error: edgemeta is stopping."""
        return [CallExpired(p, "edgemeta is shutting down") for p in self.calls.all()]
