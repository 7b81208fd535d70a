"""The four CSI volume operations: asked of edged, its answer relayed to the cloud."""

from __future__ import annotations

from ..message import Message, new_id, now_ms
from .context import Context
from .effects import Call, Effect, fail, respond


def handle_volume(msg: Message, ctx: Context) -> list[Effect]:
    outbound = msg.replace(msg_id=new_id(), sync=True, timestamp=now_ms())
    timeout = ctx.settings.volumeTimeout

    def on_reply(reply: Message | None, why: str) -> list[Effect]:
        if reply is None:
            return [fail(msg, f"{msg.operation} of {msg.resource} failed: {why}")]
        if reply.operation == "error":
            return [fail(msg, f"edged answered {msg.operation} with an error: {reply.content}")]
        return [respond(msg, reply.content)]

    return [Call(outbound, ctx.topics.edged, timeout, 1, on_reply)]
