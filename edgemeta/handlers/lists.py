"""servicelist / endpointslist: one stored document per item."""

from __future__ import annotations

from typing import Any

from ..errors import RequestError
from ..message import Message, loads, value_text
from .context import Context
from .effects import Effect, Forward, ok

LIST_ITEM_TYPES = {"servicelist": "service", "endpointslist": "endpoints"}


def list_items(content: Any, item_type: str) -> list[tuple[str, str, str]]:
    """(key, type, value) of every item; raises RequestError on the first bad one."""
    if isinstance(content, str):
        try:
            content = loads(content)
        except ValueError as exc:
            raise RequestError(f"list content is a string that is not JSON: {exc}") from exc
    if not isinstance(content, list):
        raise RequestError(f"list content must be a JSON array, not {type(content).__name__}")
    items = []
    for index, item in enumerate(content):
        meta = item.get("metadata") if isinstance(item, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not (isinstance(ns, str) and ns and isinstance(name, str) and name):
            raise RequestError(
                f"item {index} needs a non-empty metadata.namespace and metadata.name"
            )
        if "/" in ns or any(c in ns + name for c in "+#\x00"):
            raise RequestError(f"item {index} has '/', '+', '#' or NUL in its namespace or name")
        items.append((f"{ns}/{item_type}/{name}", item_type, value_text(item)))
    return items


def handle_list(msg: Message, ctx: Context) -> list[Effect]:
    items = list_items(msg.content, LIST_ITEM_TYPES[msg.restype])
    ctx.store.put_many(items)
    return [Forward(ctx.topics.mesh, msg), ok(msg)]
