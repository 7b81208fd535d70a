"""Handlers: one small module per operation family; each returns the effects to apply."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import RequestError
from ..message import (
    OP_ACTION,
    OP_ACTION_RESULT,
    OP_DELETE,
    OP_ERROR,
    OP_INSERT,
    OP_KEEPALIVE,
    OP_PUBLISH,
    OP_QUERY,
    OP_RESPONSE,
    OP_SYNC,
    OP_UPDATE,
    VOLUME_OPS,
    Message,
)
from .connection import handle_publish, set_connection
from .context import CloudLink, Context
from .effects import (
    CALL_QUERY,
    CALL_VOLUME,
    Answer,
    Call,
    CancelCalls,
    Effect,
    Forward,
    Report,
    fail,
)
from .query import handle_query, query_reply
from .sync import handle_sync, pod_status_sync
from .volumes import handle_volume, volume_reply
from .writes import (
    handle_action,
    handle_action_result,
    handle_delete,
    handle_insert,
    handle_response,
    handle_update,
)

Handler = Callable[[Message, Context], list[Effect]]

#: Operations edgemeta never answers (SPEC section 3): their failures are reported.
_NEVER_ANSWERED = frozenset({OP_RESPONSE, OP_ERROR})


def _ignore(msg: Message, ctx: Context) -> list[Effect]:
    return []


def _unsolicited_error(msg: Message, ctx: Context) -> list[Effect]:
    reason = f"error message {msg.msg_id!r} answers no pending request ({msg.parent_msg_id!r})"
    return [Report(reason, msg.encode())]


HANDLERS: dict[str, Handler] = {
    OP_INSERT: handle_insert,
    OP_UPDATE: handle_update,
    OP_DELETE: handle_delete,
    OP_QUERY: handle_query,
    OP_RESPONSE: handle_response,
    OP_PUBLISH: handle_publish,
    OP_SYNC: handle_sync,
    OP_ACTION: handle_action,
    OP_ACTION_RESULT: handle_action_result,
    OP_ERROR: _unsolicited_error,
    OP_KEEPALIVE: _ignore,
    **{op: handle_volume for op in VOLUME_OPS},
}


_REPLIES: dict[str, Callable[[Call, Message | None, str, Context], list[Effect]]] = {
    CALL_QUERY: query_reply,
    CALL_VOLUME: volume_reply,
}


def call_ended(call: Call, reply: Message | None, why: str, ctx: Context) -> list[Effect]:
    """The effects of a call's reply (``reply``), or of its end without one (``why``)."""
    return _REPLIES[call.kind](call, reply, why, ctx)


def handle(msg: Message, ctx: Context) -> list[Effect]:
    """Apply one message; a RequestError becomes an ``error`` answer (a report for a response)."""
    handler = HANDLERS.get(msg.operation)
    if handler is None:
        return [fail(msg, f"unknown operation {msg.operation!r}")]
    try:
        return handler(msg, ctx)
    except RequestError as exc:
        if msg.operation in _NEVER_ANSWERED:
            return [Report(str(exc), msg.encode())]
        return [fail(msg, str(exc))]


__all__ = [
    "HANDLERS",
    "Answer",
    "Call",
    "CancelCalls",
    "CloudLink",
    "Context",
    "Effect",
    "Forward",
    "Report",
    "call_ended",
    "handle",
    "pod_status_sync",
    "set_connection",
]
