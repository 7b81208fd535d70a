"""query: answered from the store, or from the cloud with retries."""

from __future__ import annotations

from ..message import Message, new_id, now_ms, value_text
from .context import Context
from .effects import CALL_QUERY, Answer, Call, Effect, fail, respond

#: Types that need a remote query when the cloud is connected.
REMOTE_TYPES = frozenset(
    {
        "configmap",
        "secret",
        "endpoints",
        "persistentvolume",
        "persistentvolumeclaim",
        "volumeattachment",
        "node",
    }
)
#: Remote types never answered from the store while connected.
ALWAYS_REMOTE = frozenset({"node", "volumeattachment"})


def handle_query(msg: Message, ctx: Context) -> list[Effect]:
    restype, resid = msg.restype, msg.resid
    if restype in REMOTE_TYPES and ctx.link.connected:
        if resid and restype not in ALWAYS_REMOTE:
            value = ctx.store.get(msg.resource)
            if value is not None:
                return [respond(msg, [value])]
        return [remote_query(msg, ctx)]
    if resid:
        value = ctx.store.get(msg.resource)
        return [respond(msg, [] if value is None else [value])]
    return [respond(msg, ctx.store.values(restype, msg.namespace))]


def remote_query(msg: Message, ctx: Context) -> Call:
    outbound = msg.replace(msg_id=new_id(), sync=True, timestamp=now_ms())
    settings = ctx.settings
    # The value when the query started: a reply older than a later write must not
    # overwrite it (the cloud may have sent the newer value meanwhile).
    base = ctx.store.get(msg.resource) if msg.resid and msg.restype else None
    return Call(
        CALL_QUERY,
        msg,
        outbound,
        ctx.topics.cloud,
        settings.remoteQueryTimeout,
        settings.remoteQueryAttempts,
        base,
    )


def query_reply(call: Call, reply: Message | None, why: str, ctx: Context) -> list[Effect]:
    """The effects of a remote query's reply, or of its end without one."""
    msg = call.request
    if reply is None:
        return [fail(msg, f"remote query of {msg.resource} failed: {why}")]
    if reply.operation == "error":
        return [fail(msg, f"the cloud answered the query with an error: {reply.content}")]
    if reply.operation != "response":
        return [fail(msg, f"the cloud answered with operation {reply.operation!r}")]
    if msg.resid and msg.restype and ctx.store.get(msg.resource) == call.base:
        ctx.store.put(msg.resource, msg.restype, value_text(reply.content))
    return [Answer(msg, reply.replace(parent_msg_id=msg.msg_id))]
