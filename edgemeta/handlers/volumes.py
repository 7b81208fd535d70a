"""The four CSI volume operations: asked of edged, its answer relayed to the cloud."""

from __future__ import annotations

from ..message import Message, new_id, now_ms
from .context import Context
from .effects import CALL_VOLUME, Call, Effect, fail, respond


def handle_volume(msg: Message, ctx: Context) -> list[Effect]:
    outbound = msg.replace(msg_id=new_id(), sync=True, timestamp=now_ms())
    return [Call(CALL_VOLUME, msg, outbound, ctx.topics.edged, ctx.settings.volumeTimeout, 1)]


def volume_reply(call: Call, reply: Message | None, why: str, ctx: Context) -> list[Effect]:
    """edged's answer relayed to the requester, or an error."""
    msg = call.request
    if reply is None:
        return [fail(msg, f"{msg.operation} of {msg.resource} failed: {why}")]
    if reply.operation == "error":
        return [fail(msg, f"edged answered {msg.operation} with an error: {reply.content}")]
    return [respond(msg, reply.content)]
