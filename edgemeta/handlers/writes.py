"""insert, update, delete and response: the operations that change the store."""

from __future__ import annotations

from ..errors import RequestError
from ..message import Message
from ..topics import is_cloud_source
from .context import Context
from .effects import Effect, Forward, fail, ok
from .lists import LIST_ITEM_TYPES, handle_list
from .routing import insert_target, object_target


def _require_restype(msg: Message) -> None:
    if not msg.restype:
        raise RequestError(f"resource {msg.resource!r} must be <namespace>/<restype>[/<resid>]")


def store_content(msg: Message, ctx: Context) -> None:
    """Store the message's content under its resource (key = resource, type = restype)."""
    _require_restype(msg)
    ctx.store.put(msg.resource, msg.restype, msg.value())


def handle_insert(msg: Message, ctx: Context) -> list[Effect]:
    if msg.restype in LIST_ITEM_TYPES:
        return handle_list(msg, ctx)
    store_content(msg, ctx)
    return [Forward(insert_target(msg.restype, ctx.topics), msg), ok(msg)]


def handle_update(msg: Message, ctx: Context) -> list[Effect]:
    restype = msg.restype
    if restype in LIST_ITEM_TYPES:
        return handle_list(msg, ctx)
    if restype == "podlist":
        store_content(msg, ctx)
        return [Forward(ctx.topics.mesh, msg), ok(msg)]
    if restype == "podstatus" and ctx.store.get(msg.resource) == msg.value():
        return [ok(msg)]
    source = msg.source
    if source == "edged":
        store_content(msg, ctx)
        if restype == "podstatus" and ctx.link.known_disconnected:
            return [ok(msg)]
        return [Forward(ctx.topics.cloud, msg), ok(msg)]
    if source == "funcmgr":
        store_content(msg, ctx)
        return [Forward(ctx.topics.func, msg)]
    if is_cloud_source(source):
        store_content(msg, ctx)
        return [Forward(object_target(restype, ctx.topics), msg), ok(msg)]
    if source == "edgefunction":
        store_content(msg, ctx)
        return [Forward(ctx.topics.cloud, msg)]
    return [fail(msg, f"update from source {source!r} is not accepted")]


def handle_delete(msg: Message, ctx: Context) -> list[Effect]:
    ctx.store.delete(msg.resource)
    return [Forward(object_target(msg.restype, ctx.topics), msg), ok(msg)]


def handle_response(msg: Message, ctx: Context) -> list[Effect]:
    if is_cloud_source(msg.source):
        store_content(msg, ctx)
        return [Forward(object_target(msg.restype, ctx.topics), msg)]
    return [Forward(ctx.topics.cloud, msg)]


def handle_action(msg: Message, ctx: Context) -> list[Effect]:
    store_content(msg, ctx)
    return [Forward(ctx.topics.func, msg)]


def handle_action_result(msg: Message, ctx: Context) -> list[Effect]:
    store_content(msg, ctx)
    return [Forward(ctx.topics.cloud, msg)]
