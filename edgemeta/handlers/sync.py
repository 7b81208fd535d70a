"""meta-internal-sync: drop orphaned pod statuses, send the rest to the cloud."""

from __future__ import annotations

import logging

from ..message import Message, new_message, text_value
from ..topics import META_MODULE
from .context import Context
from .effects import Effect, Forward

log = logging.getLogger(__name__)


def pod_status_sync(ctx: Context) -> list[Effect]:
    """One update of ``<ns>/podstatus`` per namespace with every live pod's status."""
    by_namespace: dict[str, list[object]] = {}
    for key, value in ctx.store.items_of_type("podstatus"):
        namespace, _, name = key.partition("/podstatus/")
        if not name or not ctx.store.contains(f"{namespace}/pod/{name}"):
            log.info("pod status %s removed: pod %s/pod/%s is not stored", key, namespace, name)
            ctx.store.delete(key)
            continue
        by_namespace.setdefault(namespace, []).append(text_value(value))
    return [
        Forward(
            ctx.topics.cloud,
            new_message(
                "update", f"{ns}/podstatus", statuses, source=META_MODULE, group="resource"
            ),
        )
        for ns, statuses in sorted(by_namespace.items())
    ]


def handle_sync(msg: Message, ctx: Context) -> list[Effect]:
    return pod_status_sync(ctx)
