"""Reading the state mirror from a tool: the retained ``<prefix>/state/<key>`` messages.

A snapshot ends with an end marker of the tool's own: after subscribing to
the state filter, the tool subscribes to ``<prefix>/tool/<user>/<uuid>`` on
the same connection and publishes an empty message there. Mosquitto sends a
subscription's retained messages before it handles the packets that follow
the SUBSCRIBE, so the marker comes back after the last retained message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BusError
from ..message import text_value
from ..mirror import MARKER_LEVEL, key_of, state_root
from .client import TOOL_LEVEL, BrokerClient, Received, tool_topic
from .common import EXIT_FAIL, EXIT_USAGE, CommandError

#: Under ``<prefix>/``: topics each user may both write and read (mosquitto/acl).


class MirrorUnavailable(CommandError):
    """The mirror cannot be read here (the broker refused the end marker)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAIL)


@dataclass(frozen=True, slots=True)
class StateObject:
    """One message of the mirror: an object's value, or its deletion (empty payload)."""

    key: str
    restype: str
    #: None on MQTT 3.1.1, which carries no user properties.
    revision: int | None
    payload: bytes
    retained: bool = False

    @property
    def deleted(self) -> bool:
        return not self.payload

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def value(self) -> Any:
        """The stored value as JSON when it is JSON text, else the text; None when deleted."""
        return None if self.deleted else text_value(self.text)


def state_filter(prefix: str, namespace: str | None, restype: str | None) -> str:
    """The filter of a type (None: every type) in a namespace (None: every namespace).

    ``#`` also matches its parent level: ``<ns>/<type>/#`` covers the key ``<ns>/<type>``.
    """
    root = state_root(prefix)
    if restype is None:
        return f"{root}/{namespace}/#" if namespace else f"{root}/#"
    return f"{root}/{namespace or '+'}/{restype}/#"


def state_object(prefix: str, got: Received) -> StateObject | None:
    """The mirror message in ``got``; None outside ``<prefix>/state/`` and for the markers
    of edgemeta's start-up reconcile (``$reconcile``)."""
    from_topic = key_of(prefix, got.topic)
    if from_topic is None or from_topic.split("/", 1)[0] == MARKER_LEVEL:
        return None
    props = dict(got.properties)
    key = props.get("key") or from_topic
    parts = key.split("/")
    restype = props.get("type") or (parts[1] if len(parts) > 1 else "")
    try:
        revision: int | None = int(props["revision"])
    except (KeyError, ValueError):
        revision = None
    return StateObject(key, restype, revision, got.payload, got.retain)


@dataclass(slots=True)
class Snapshot:
    """The retained objects by key, and the changes that came in while they were read."""

    objects: dict[str, StateObject] = field(default_factory=dict)
    live: list[StateObject] = field(default_factory=list)

    def ordered(self) -> list[StateObject]:
        return [self.objects[k] for k in sorted(self.objects)]


def read_snapshot(client: BrokerClient, prefix: str, topic_filter: str, timeout: float) -> Snapshot:
    """Subscribe to ``topic_filter`` and collect its retained objects up to the end marker.

    ``timeout`` bounds the wait for each next message, so a big mirror takes
    the time it needs. The subscription stays: what is published later comes
    to ``client.receive``.
    """
    marker = tool_topic(client.config, prefix)
    client.subscribe(topic_filter)
    client.subscribe(marker, retained=False)
    try:
        client.publish(marker, b"", qos=1)
    except BusError as exc:
        raise MirrorUnavailable(
            f"cannot read the mirror: {exc} (the end marker needs the ACL line "
            f"`pattern readwrite {prefix}/{TOOL_LEVEL}/%u/#`, docs/security.md)"
        ) from exc
    snapshot = Snapshot()
    while (got := client.receive(timeout)) is not None:
        if got.topic == marker:
            return snapshot
        obj = state_object(prefix, got)
        if obj is None:
            continue
        if not obj.retained:
            snapshot.live.append(obj)
        elif obj.deleted:
            snapshot.objects.pop(obj.key, None)
        else:
            snapshot.objects[obj.key] = obj
    raise BusError(f"the mirror's snapshot stopped coming: nothing for {timeout:g} s")


def check_type(restype: str) -> str:
    """A TYPE argument: one topic level, no wildcard."""
    if not restype or any(c in restype for c in "/#+") or restype.startswith("$"):
        raise CommandError(f"{restype!r} is not a resource type", EXIT_USAGE)
    return restype


def check_namespace(namespace: str) -> str:
    if not namespace or any(c in namespace for c in "/#+") or namespace.startswith("$"):
        raise CommandError(f"{namespace!r} is not a namespace", EXIT_USAGE)
    return namespace
