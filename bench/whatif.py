"""What-if runs: edgemeta with one suggested change patched in at start-up.

    python -m bench.whatif --patch inflight0,fastuuid run --config FILE

Not edgemeta code and never used by `make bench`: the patches exist only to
put a number on a profiling suggestion (bench/README.md, "What-if") before
anyone changes the package. Each patch wraps one function at import time.

- ``inflight0``: paho's ``max_inflight_messages_set(0)``. With a limit, paho
  walks every unacknowledged message on every PUBACK (``_update_inflight``).
- ``fastuuid``: uuid4 text from ``random.getrandbits(128)`` instead of
  ``os.urandom`` (one getrandom syscall, and so a GIL hand-off, per answer).
- ``orjsonvalue``: the stored value text with orjson instead of ``json.dumps``.
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from collections.abc import Callable
from typing import Any


def _inflight0() -> None:
    from edgemeta import bus

    make = bus.MqttBus._make_client

    def make_client(self: Any) -> Any:
        client = make(self)
        client.max_inflight_messages_set(0)
        return client

    bus.MqttBus._make_client = make_client  # type: ignore[method-assign]


def _fastuuid() -> None:
    from edgemeta import message
    from edgemeta.handlers import query, volumes

    getrandbits = random.getrandbits

    def new_id() -> str:
        return str(uuid.UUID(int=getrandbits(128), version=4))

    for module in (message, query, volumes):
        module.new_id = new_id  # type: ignore[attr-defined]


def _orjsonvalue() -> None:
    import orjson

    from edgemeta import message
    from edgemeta.handlers import lists, query, writes

    slow = message.value_text

    def value_text(content: Any) -> str:
        if isinstance(content, str):
            return content
        try:
            return orjson.dumps(content).decode()
        except TypeError:
            return slow(content)

    for module in (message, lists, query, writes):
        module.value_text = value_text  # type: ignore[attr-defined]


PATCHES: dict[str, Callable[[], None]] = {
    "inflight0": _inflight0,
    "fastuuid": _fastuuid,
    "orjsonvalue": _orjsonvalue,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", default="", help=f"comma-separated: {', '.join(PATCHES)}")
    args, rest = parser.parse_known_args()
    for name in filter(None, args.patch.split(",")):
        PATCHES[name]()
    from edgemeta.cli import main as edgemeta_main

    return edgemeta_main(rest)


if __name__ == "__main__":
    sys.exit(main())
