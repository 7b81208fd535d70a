"""publish on node/connection: the cloud link's state."""

from __future__ import annotations

from ..message import Message
from .context import Context
from .effects import CancelCalls, Effect, fail
from .sync import pod_status_sync

CONNECTION_RESOURCE = "node/connection"
CONNECTED = "cloud_connected"
DISCONNECTED = "cloud_disconnected"


def set_connection(connected: bool, ctx: Context) -> list[Effect]:
    """Record the link state.

    A change to connected runs a pod status sync at once; a known disconnection
    ends the remote queries in flight with an error instead of letting them
    wait out their attempts.
    """
    if ctx.link.set(connected):
        return pod_status_sync(ctx)
    if not connected and ctx.link.known_disconnected:
        return [CancelCalls(ctx.topics.cloud, "the cloud is disconnected")]
    return []


def handle_publish(msg: Message, ctx: Context) -> list[Effect]:
    if msg.resource != CONNECTION_RESOURCE:
        return [fail(msg, f"publish is only accepted on {CONNECTION_RESOURCE}")]
    if msg.content == CONNECTED:
        return set_connection(True, ctx)
    if msg.content == DISCONNECTED:
        return set_connection(False, ctx)
    return [fail(msg, f"connection state must be {CONNECTED!r} or {DISCONNECTED!r}")]
