"""``edgemeta watch [FILTER]``: the traffic of a node, one readable line per message."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from .client import BrokerClient, Received
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_client_options,
    add_command,
    guarded,
    note,
    say,
    stop_on_signals,
    tool_client_id,
    tool_config,
    tool_topics,
)

EPILOG = """\
Each line: time, topic, operation, resource, source, parent (the first 8
characters of parent_msg_id), size, in aligned columns. Payloads that are not
beehive messages (status, error reports, stats) show their text instead.
Colour only on a terminal and without NO_COLOR (--color always forces it).
-o json: one JSON object per line (time, topic, retained, size, and message
or payload). A lost broker is said on stderr; watch reconnects. Ctrl-C stops.

examples:
  edgemeta watch                          everything under <prefix>/
  edgemeta watch 'beehive/hub' --count 5  the first 5 messages for the cloud
  edgemeta watch -o json --count 1        one JSON line, for scripts
"""

_RESET = "\x1b[0m"
_COLOURS = {
    "insert": "\x1b[32m",
    "update": "\x1b[32m",
    "delete": "\x1b[33m",
    "query": "\x1b[34m",
    "response": "\x1b[36m",
    "error": "\x1b[31;1m",
    "publish": "\x1b[35m",
}
_DIM = "\x1b[2m"
_PREVIEW = 80


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "watch",
        help="show the messages on the broker as they pass",
        description="Subscribe to a topic filter (default <prefix>/#) and print each message.",
        epilog=EPILOG,
    )
    parser.add_argument("filter", nargs="?", metavar="TOPIC-FILTER", help="default <prefix>/#")
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="exit after N messages (0 = never)"
    )
    parser.add_argument(
        "--no-retained",
        action="store_true",
        help="skip the retained messages (status, stats) the broker holds",
    )
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the operation (default: auto = when stdout is a terminal and NO_COLOR "
        "is not set)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="aligned text lines (default) or JSON lines",
    )
    add_client_options(parser)
    parser.set_defaults(handler=run)


def _size(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.0f} kB"


class Columns:
    """Column widths that only grow, so the lines of a session stay aligned."""

    def __init__(self, topic: int = 0) -> None:
        self.widths = {"topic": topic, "operation": 8, "resource": 24, "source": 12}

    def pad(self, name: str, text: str) -> str:
        width = self.widths[name] = max(self.widths[name], len(text))
        return text.ljust(width)


def format_line(got: Received, colour: bool, columns: Columns | None = None) -> str:
    """One human line for a received message."""
    columns = columns or Columns()
    stamp = time.strftime("%H:%M:%S", time.localtime(got.at)) + f".{int(got.at * 1000) % 1000:03d}"
    size = _size(len(got.payload))
    message = got.message()
    retained = " (retained)" if got.retain else ""
    topic = columns.pad("topic", got.topic)
    if colour:
        topic = f"{_DIM}{got.topic}{_RESET}{topic[len(got.topic) :]}"
    if message is None:
        text = got.payload[:_PREVIEW].decode("utf-8", "replace").replace("\n", " ")
        if len(got.payload) > _PREVIEW:
            text += "…"
        dash = columns.pad("operation", "-")
        return f"{stamp}  {topic}  {dash}  {text or '(empty)'}  {size}{retained}"
    operation = columns.pad("operation", message.operation)
    if colour and message.operation in _COLOURS:
        # Only the word is coloured: the padding stays outside the escape codes.
        word = message.operation
        operation = f"{_COLOURS[word]}{word}{_RESET}{operation[len(word) :]}"
    parent = message.parent_msg_id[:8] or "-"
    return (
        f"{stamp}  {topic}  {operation}  {columns.pad('resource', message.resource or '-')}  "
        f"{columns.pad('source', message.source)}  {parent:<8}  {size}{retained}"
    )


def json_line(got: Received) -> str:
    """One JSON object for a received message (``-o json``)."""
    record: dict[str, Any] = {
        "time": round(got.at, 3),
        "topic": got.topic,
        "retained": got.retain,
        "size": len(got.payload),
    }
    message = got.message()
    if message is not None:
        record["message"] = {
            "msg_id": message.msg_id,
            "parent_msg_id": message.parent_msg_id,
            "operation": message.operation,
            "resource": message.resource,
            "source": message.source,
            "group": message.group,
            "content": message.content,
        }
    else:
        record["payload"] = got.payload.decode("utf-8", "replace")
    return json.dumps(record, ensure_ascii=False)


def use_colour(choice: str, isatty: bool, environ: Mapping[str, str]) -> bool:
    """--color always / never, or auto: a terminal, and NO_COLOR unset or empty."""
    if choice == "always":
        return True
    return choice == "auto" and isatty and not environ.get("NO_COLOR")


@guarded("watch")
def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CommandError("--count must be >= 0", EXIT_USAGE)
    config = tool_config(args)
    topics = tool_topics(config)
    topic_filter = args.filter or f"{topics.prefix}/#"
    colour = args.output == "text" and use_colour(args.color, sys.stdout.isatty(), os.environ)
    columns = Columns(len(topic_filter.rstrip("#")) + 10)
    stop = stop_on_signals()
    with BrokerClient(config.mqtt, name="watch", client_id=tool_client_id(args)) as client:
        client.subscribe(topic_filter, retained=not args.no_retained)
        note(
            f"edgemeta watch: watching {topic_filter} on {config.mqtt.host}:{config.mqtt.port}"
            + (f" for {args.count} message(s)" if args.count else " (Ctrl-C to stop)")
        )
        seen = 0
        while not stop.is_set():
            while not client.link_events.empty():
                event = client.link_events.get()
                where = f"{config.mqtt.host}:{config.mqtt.port}"
                if event == "back":
                    note(f"edgemeta watch: connected again to {where}")
                else:
                    note(f"edgemeta watch: {event.removeprefix('lost: ')} ({where}); reconnecting")
            got = client.receive(0.2)
            if got is None:
                continue
            say(json_line(got) if args.output == "json" else format_line(got, colour, columns))
            seen += 1
            if args.count and seen >= args.count:
                break
    return EXIT_OK
