"""Device ingress: who sent a message on a device topic, and what it may say (pure).

A device publishes on ``<prefix>/meta/device/<deviceId>``. With the shipped
broker ACL (``pattern write beehive/meta/device/%u``) only the device whose
username is ``<deviceId>`` can write there, so the topic, not the envelope,
says who sent the message: its ``route.source`` becomes the device id (an
envelope naming a module as its source is refused), and the device may only
write its own resources, ``<namespace>/<type>/<deviceId>``, with the
operations and types the ``devices`` config section allows.

A payload is an envelope (SPEC section 1) when it has a ``route`` key;
otherwise the whole JSON object is the content of an ``update`` of
``<namespace>/device/<deviceId>``. Everything refused raises MessageError,
which the service reports on ``<prefix>/meta/error``: a device is no module,
so it is never answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import DevicesConfig
from .errors import MessageError
from .message import (
    DEFAULT_LIMITS,
    OP_UPDATE,
    Limits,
    Message,
    from_dict,
    load_object,
    new_message,
)
from .topics import META_GROUP, MODULE_GROUPS

#: The level under ``<prefix>/meta`` whose sub-levels are device ids.
DEVICE_LEVEL = "device"
#: Type of the resource a bare (non-envelope) device payload updates.
BARE_TYPE = "device"

# The rule scripts/add-device.sh applies to a new device's username: one topic
# level, nothing the ACL's %u substitution could widen, nothing passwd splits on.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Names a device may not have: the modules (SPEC section 2) and the broker roles.
RESERVED_IDS = frozenset(MODULE_GROUPS) | {"edgemeta", "observer"}


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    """What a device may send: operations, resource types, and the namespace."""

    operations: frozenset[str] = frozenset({"update", "insert"})
    types: frozenset[str] = frozenset({BARE_TYPE})
    namespace: str = "default"

    @classmethod
    def from_config(cls, config: DevicesConfig) -> DevicePolicy:
        return cls(frozenset(config.operations), frozenset(config.types), config.namespace)

    def own_resource(self, device_id: str, restype: str = BARE_TYPE) -> str:
        return f"{self.namespace}/{restype}/{device_id}"


def topic_filter(prefix: str) -> str:
    """The subscription that receives every device's messages."""
    return f"{prefix}/{META_GROUP}/{DEVICE_LEVEL}/+"


def device_id_of(topic: str, prefix: str) -> str | None:
    """The device id of a topic under ``<prefix>/meta/device/``; None for any other topic.

    The id is whatever follows, unchecked: see ``validate_device_id``.
    """
    head = f"{prefix}/{META_GROUP}/{DEVICE_LEVEL}/"
    return topic[len(head) :] if topic.startswith(head) else None


def validate_device_id(device_id: str) -> str | None:
    """Why ``device_id`` cannot be a device's id, or None when it can."""
    if not _DEVICE_ID.fullmatch(device_id):
        return "a device id is 1-64 letters, digits, '.', '_' or '-', first a letter or digit"
    if device_id in RESERVED_IDS:
        return "that is the name of a module, not of a device"
    return None


def decode_device(
    payload: bytes,
    device_id: str,
    policy: DevicePolicy,
    limits: Limits = DEFAULT_LIMITS,
    *,
    reading_id: str | None = None,
) -> Message:
    """The message a device sent on its own topic, sender set from the topic.

    A bare reading (no envelope) gets ``reading_id`` as its msg_id when given,
    so that a redelivered reading is forwarded with the same id.

    Raises MessageError (to be reported, never answered) for a bad device id,
    an unusable payload, or anything the policy does not allow.
    """
    try:
        return _decode(payload, device_id, policy, limits, reading_id)
    except MessageError as exc:
        # Reported with the device's name; never answered, so no ids are kept.
        raise MessageError(f"device {device_id!r}: {exc.reason}") from None


def _decode(
    payload: bytes, device_id: str, policy: DevicePolicy, limits: Limits, reading_id: str | None
) -> Message:
    problem = validate_device_id(device_id)
    if problem:
        raise MessageError(problem)
    data = load_object(payload, limits)
    if "route" not in data:
        msg = new_message(
            OP_UPDATE,
            policy.own_resource(device_id),
            data,
            source=device_id,
            group=META_GROUP,
        )
        if reading_id is not None:
            msg = msg.replace(msg_id=reading_id)
    else:
        msg = from_dict(data)
        if msg.source in RESERVED_IDS:
            # A device claiming to be a module (the cloud, edged, edgemeta...)
            # is not trusted to say anything else either.
            raise MessageError(f"claims to be {msg.source!r}")
        # The topic says who sent it (the broker checked that); the envelope's
        # claim is dropped, and with it the received text.
        msg = msg.replace(source=device_id)
    _check_allowed(msg, device_id, policy)
    return msg


def _check_allowed(msg: Message, device_id: str, policy: DevicePolicy) -> None:
    """Raise MessageError unless ``policy`` lets ``device_id`` send ``msg``."""
    if msg.operation not in policy.operations:
        allowed = ", ".join(sorted(policy.operations)) or "none"
        raise MessageError(f"may not send {msg.operation!r} (allowed: {allowed})")
    restype = msg.restype
    if restype not in policy.types:
        allowed = ", ".join(sorted(policy.types))
        raise MessageError(f"may not write type {restype!r} (allowed: {allowed})")
    if msg.resource != policy.own_resource(device_id, restype):
        own = policy.own_resource(device_id, restype)
        raise MessageError(f"may write only its own resource {own!r}, not {msg.resource!r}")
