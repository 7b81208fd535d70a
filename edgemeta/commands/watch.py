"""``edgemeta watch [FILTER]``: the traffic of a node, one readable line per message."""

from __future__ import annotations

import argparse
import sys
import time
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
characters of parent_msg_id), size. Payloads that are not beehive messages
(status, error reports, stats) show their text instead. Colour only on a
terminal (--color to force). Ctrl-C stops.

examples:
  edgemeta watch                          everything under <prefix>/
  edgemeta watch 'beehive/hub' --count 5  the first 5 messages for the cloud
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
        help="colour the operation (default: auto = when stdout is a terminal)",
    )
    add_client_options(parser)
    parser.set_defaults(handler=run)


def _size(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1000:.0f} kB"


def format_line(got: Received, colour: bool) -> str:
    """One human line for a received message."""
    stamp = time.strftime("%H:%M:%S", time.localtime(got.at)) + f".{int(got.at * 1000) % 1000:03d}"
    size = _size(len(got.payload))
    message = got.message()
    retained = " (retained)" if got.retain else ""
    topic = f"{_DIM}{got.topic}{_RESET}" if colour else got.topic
    if message is None:
        text = got.payload[:_PREVIEW].decode("utf-8", "replace").replace("\n", " ")
        if len(got.payload) > _PREVIEW:
            text += "…"
        return f"{stamp}  {topic}  -  {text or '(empty)'}  {size}{retained}"
    operation = message.operation
    if colour and operation in _COLOURS:
        operation = f"{_COLOURS[operation]}{operation}{_RESET}"
    parent = message.parent_msg_id[:8] or "-"
    return (
        f"{stamp}  {topic}  {operation}  {message.resource or '-'}  "
        f"{message.source}  {parent}  {size}{retained}"
    )


@guarded("watch")
def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CommandError("--count must be >= 0", EXIT_USAGE)
    config = tool_config(args)
    topics = tool_topics(config)
    topic_filter = args.filter or f"{topics.prefix}/#"
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    stop = stop_on_signals()
    with BrokerClient(config.mqtt, name="watch", client_id=tool_client_id(args)) as client:
        client.subscribe(topic_filter, retained=not args.no_retained)
        note(
            f"edgemeta watch: watching {topic_filter} on {config.mqtt.host}:{config.mqtt.port}"
            + (f" for {args.count} message(s)" if args.count else " (Ctrl-C to stop)")
        )
        seen = 0
        while not stop.is_set():
            got = client.receive(0.2)
            if got is None:
                continue
            say(format_line(got, colour))
            seen += 1
            if args.count and seen >= args.count:
                break
    return EXIT_OK
