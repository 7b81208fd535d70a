"""A device's message on its own topic: store it, forward it to the cloud.

``edgemeta.devices.decode_device`` has already checked that the device may
send it (operation, type, its own resource) and set ``route.source`` to the
device id. A device is no module: it is never answered.
"""

from __future__ import annotations

from ..message import Message
from .context import Context
from .effects import Effect, Forward
from .writes import store_content


def handle_device(msg: Message, ctx: Context) -> list[Effect]:
    store_content(msg, ctx)
    return [Forward(ctx.topics.cloud, msg)]
