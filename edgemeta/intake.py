"""What one received MQTT message means: a request, a device reading, a call's reply, a link state.

``Intake.take`` decodes and classifies; it changes nothing itself except
through the handlers it runs (which write to the store's open transaction).
The delivery protocol (``delivery.py``) decides when that is committed and
acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .bus import Inbound
from .calls import ENDED
from .devices import DevicePolicy, decode_device, device_id_of
from .errors import MessageError
from .handlers import Answer, Context, Effect, Report, set_connection
from .handlers.devices import handle_device
from .heartbeat import CloudHeartbeat
from .message import Limits, Message, decode, new_error
from .metrics import BRIDGE_STATE, HEARTBEAT, INVALID, ServiceMetrics
from .topics import Topics, group_of

log = logging.getLogger(__name__)

_READING_IDS = uuid.UUID("6d1f0c52-8d1b-4d63-9a53-2d0e6f0f5e11")


@dataclass(slots=True)
class Taken:
    """What a received message asks for.

    ``effects`` to apply; ``seen`` / ``device_seen``: ids to remember in the
    duplicate windows; ``reply``: the message is the reply to the call whose
    id is its parent_msg_id (the caller ends that call); ``request``: a
    request for the handlers (``handlers.handle``), run by the caller so that
    a failure can be answered to it.
    """

    effects: list[Effect] = field(default_factory=list)
    seen: str | None = None
    device_seen: str | None = None
    reply: Message | None = None
    request: Message | None = None


def reading_id(device_id: str, item: Inbound) -> str:
    """The same id for a reading and its redelivery (same packet id, same bytes)."""
    digest = hashlib.sha256(item.payload).hexdigest()
    return str(uuid.uuid5(_READING_IDS, f"{device_id}/{item.mid}/{digest}"))


class Intake:
    def __init__(
        self,
        context: Context,
        limits: Limits,
        metrics: ServiceMetrics,
        *,
        bridge_topic: str = "",
        device_policy: DevicePolicy | None = None,
        heartbeat: CloudHeartbeat | None = None,
        echo_topic: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.topics: Topics = context.topics
        self.limits = limits
        self.metrics = metrics
        self.bridge_topic = bridge_topic
        self.device_policy = device_policy
        self.heartbeat = heartbeat
        self.echo_topic = echo_topic if heartbeat is not None else ""
        self.clock = clock

    def is_request_topic(self, topic: str) -> bool:
        return topic == self.topics.meta or (
            self.device_policy is not None and device_id_of(topic, self.topics.prefix) is not None
        )

    def take(self, item: Inbound, owns_call: Callable[[str], bool]) -> Taken:
        """Classify and apply ``item``; ``owns_call(id)`` tells whether a call ``id`` is open."""
        if item.topic == self.bridge_topic and item.topic != self.topics.meta:
            return self._bridge_state(item)
        if item.topic == self.echo_topic:
            return self._echo(item)
        if item.retain:
            # Retained messages on a request topic are state, not requests: applying
            # them again at every reconnect would undo later changes.
            log.warning("ignored a retained message on %s", item.topic)
            return Taken()
        if self.device_policy is not None:
            device_id = device_id_of(item.topic, self.topics.prefix)
            if device_id is not None:
                return self._device(item, device_id)
        try:
            msg = decode(item.payload, self.limits)
        except MessageError as exc:
            self.metrics.received(item.topic, INVALID)
            self.metrics.error("invalid_message")
            return Taken([self._bad_message(exc, item)])
        self.metrics.received(item.topic, msg.operation)
        msg.response_topic = item.response_topic
        msg.correlation = item.correlation
        if item.dup and self.context.store.seen(msg.msg_id):
            log.info("dropped redelivered message %s (already applied)", msg.msg_id)
            return Taken()
        parent = msg.parent_msg_id
        if parent and owns_call(parent):
            return Taken(reply=msg)
        if parent and self.context.store.seen(ENDED + parent):
            log.info("dropped a reply to call %s, which has ended", parent)
            return Taken()
        return Taken(seen=msg.msg_id, request=msg)

    def _bridge_state(self, item: Inbound) -> Taken:
        self.metrics.received(item.topic, BRIDGE_STATE)
        state = item.payload.strip()
        if state not in (b"1", b"0"):
            return Taken([Report("bridge state must be 1 or 0", item.payload)])
        up = state == b"1"
        heartbeat = self.heartbeat
        if heartbeat is not None:
            # The retained "1" sent again at each subscription is no news: a link the
            # heartbeat found silent stays down until an echo or a fresh "1".
            if not (up and item.retain and heartbeat.bridge_up):
                heartbeat.bridge_state(up, self.clock())
            if up and not heartbeat.alive:
                return Taken()
        return Taken(set_connection(up, self.context))

    def _echo(self, item: Inbound) -> Taken:
        """A heartbeat came back through the bridge (edgemeta.heartbeat)."""
        assert self.heartbeat is not None
        self.metrics.received(item.topic, HEARTBEAT)
        back = self.heartbeat.echo(item.payload, self.clock())
        if back is None:
            log.debug("ignored a heartbeat echo that is not this run's: %r", item.payload[:64])
            return Taken()
        self.metrics.set_heartbeat_rtt(self.heartbeat.rtt)
        if back and self.heartbeat.bridge_up:
            log.info("heartbeats come back through the bridge again: cloud connected")
            return Taken(set_connection(True, self.context))
        return Taken()

    def link_check(self) -> list[Effect]:
        """The wait for an echo is over (edgemeta.heartbeat): none came, the cloud is gone."""
        if self.heartbeat is None or not self.heartbeat.expired(self.clock()):
            return []
        log.warning(
            "no heartbeat came back through the bridge for %.0f s while the bridge says "
            "connected: the cloud link is silent, treated as disconnected",
            self.heartbeat.timeout,
        )
        return set_connection(False, self.context)

    def _device(self, item: Inbound, device_id: str) -> Taken:
        """A message on a device's own topic: never answered, never a reply to a call."""
        assert self.device_policy is not None
        label = self.topics.group("meta/device")
        own_id = reading_id(device_id, item)
        try:
            msg = decode_device(
                item.payload, device_id, self.device_policy, self.limits, reading_id=own_id
            )
        except MessageError as exc:
            self.metrics.received(label, INVALID)
            self.metrics.error("invalid_message")
            return Taken([Report(exc.reason, item.payload)])
        self.metrics.received(label, msg.operation)
        # Kept apart from the modules' msg_ids: a device chooses its own.
        key = f"{device_id}/{msg.msg_id}"
        if item.dup and self.context.store.device_seen(key):
            log.info("dropped redelivered message %s of device %s", msg.msg_id, device_id)
            return Taken()
        return Taken(handle_device(msg, self.context), device_seen=key)

    def _bad_message(self, exc: MessageError, item: Inbound) -> Effect:
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
            return Answer(request, new_error(request, exc.reason))
        return Report(exc.reason, item.payload)
