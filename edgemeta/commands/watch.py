"""``edgemeta watch``: the traffic of a node, one readable line per message
(``watch [TOPIC-FILTER]``), or its objects' changes from the state mirror
(``watch TYPE``), kubectl-watch style."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config
from .client import BrokerClient, Received
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_client_options,
    add_command,
    guarded,
    note,
    positive_seconds,
    say,
    stop_on_signals,
    tool_client_id,
    tool_config,
    tool_topics,
)
from .mirror_reader import (
    StateObject,
    check_namespace,
    check_type,
    read_snapshot,
    state_filter,
    state_object,
)
from .state_events import EventColumns, EventStream, event_json

EPILOG = """\
Two views, told apart by the argument:

  watch [TOPIC-FILTER]   the traffic: one line per message (a filter has a
                         "/", "#" or "+"; default <prefix>/#)
  watch TYPE | --state   the objects of the state mirror (TYPE has none of
                         them; "all", or --state alone: every type)

Traffic lines: time, topic, operation, resource, source, parent (the first 8
characters of parent_msg_id), size, in aligned columns. Payloads that are not
beehive messages (status, error reports, stats) show their text instead.
Colour only on a terminal and without NO_COLOR (--color always forces it).
-o json: one JSON object per line (time, topic, retained, size, and message
or payload).

Object lines: REVISION EVENT NAME VALUE (a preview). The objects there when
watch starts are ADDED (ordered by revision), then each change as it comes:
ADDED (a new key), MODIFIED, DELETED (with the revision of the change).
-n NS (default: default) or -A (every namespace). --since REV leaves out
the events at or below REV. The broker keeps the latest state, not a
history: a key deleted while no watcher ran is simply absent, never replayed
as DELETED, and of several changes of a key only the last is seen. On an
MQTT 3.1.1 broker there are no revisions ("-"), and --since filters nothing.
-o json: {"type", "revision", "key", "restype", "value"} per line.

A lost broker is said on stderr; watch reconnects. Ctrl-C stops.

examples:
  edgemeta watch                          everything under <prefix>/
  edgemeta watch 'beehive/hub' --count 5  the first 5 messages for the cloud
  edgemeta watch -o json --count 1        one JSON line, for scripts
  edgemeta watch pod                      the pods of namespace default
  edgemeta watch all -A --since 120       every object change after revision 120
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
    parser.add_argument(
        "filter",
        nargs="?",
        metavar="TOPIC-FILTER | TYPE",
        help="a topic filter (default <prefix>/#), or a resource TYPE (all: every type)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="exit after N messages or events (0 = never)",
    )
    objects = parser.add_argument_group("objects (TYPE or --state)")
    objects.add_argument(
        "--state", action="store_true", help="the objects of the state mirror (every type)"
    )
    objects.add_argument("-n", "--namespace", help="namespace (default: default)")
    objects.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    objects.add_argument(
        "--since",
        type=int,
        metavar="REV",
        help="leave out events at or below revision REV (their keys are remembered)",
    )
    objects.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="longest wait for the next message of the start snapshot (default 10)",
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


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """What to watch: the traffic of a topic filter, or the objects of a type."""

    objects: bool
    #: Traffic: the filter (None: ``<prefix>/#``). Objects: the type (None: every type).
    value: str | None


def watch_target(argument: str | None, state: bool) -> WatchTarget:
    """A topic filter has a ``/``, ``#`` or ``+``; anything else is a TYPE (``all``: every
    type). No argument is the traffic of the prefix, unless ``--state`` asks for objects."""
    if argument is not None and any(c in argument for c in "/#+"):
        if state:
            raise CommandError(f"--state takes a TYPE, not the filter {argument!r}", EXIT_USAGE)
        return WatchTarget(False, argument)
    if argument is None and not state:
        return WatchTarget(False, None)
    restype = None if argument in (None, "all") else check_type(argument or "")
    return WatchTarget(True, restype)


@guarded("watch")
def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CommandError("--count must be >= 0", EXIT_USAGE)
    target = watch_target(args.filter, args.state)
    if target.objects:
        return _watch_objects(args, target.value)
    if args.namespace is not None or args.all_namespaces or args.since is not None:
        raise CommandError(
            "-n, -A and --since go with a TYPE (or --state), not a topic filter", EXIT_USAGE
        )
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
            _say_link_events(client, config)
            got = client.receive(0.2)
            if got is None:
                continue
            say(json_line(got) if args.output == "json" else format_line(got, colour, columns))
            seen += 1
            if args.count and seen >= args.count:
                break
    return EXIT_OK


def _say_link_events(client: BrokerClient, config: Config) -> None:
    while not client.link_events.empty():
        event = client.link_events.get()
        where = f"{config.mqtt.host}:{config.mqtt.port}"
        if event == "back":
            note(f"edgemeta watch: connected again to {where}")
        else:
            note(f"edgemeta watch: {event.removeprefix('lost: ')} ({where}); reconnecting")


class _Printer:
    """Classifies the mirror's messages and prints their events, up to ``count``."""

    def __init__(self, since: int | None, as_json: bool, count: int) -> None:
        self.stream = EventStream(since)
        self.columns = EventColumns()
        self.as_json = as_json
        self.count = count
        self.shown = 0

    def show(self, obj: StateObject) -> None:
        event = self.stream.classify(obj)
        if event is None or self.done:
            return
        say(event_json(event) if self.as_json else self.columns.line(event))
        self.shown += 1

    @property
    def done(self) -> bool:
        return bool(self.count) and self.shown >= self.count


def _by_revision(obj: StateObject) -> tuple[bool, int, str]:
    return (obj.revision is None, obj.revision or 0, obj.key)


def _watch_objects(args: argparse.Namespace, restype: str | None) -> int:
    namespace = None if args.all_namespaces else check_namespace(args.namespace or "default")
    config = tool_config(args)
    prefix = config.mqtt.topicPrefix
    topic_filter = state_filter(prefix, namespace, restype)
    printer = _Printer(args.since, args.output == "json", args.count)
    stop = stop_on_signals()
    with BrokerClient(config.mqtt, name="watch", client_id=tool_client_id(args)) as client:
        snapshot = read_snapshot(client, prefix, topic_filter, args.timeout)
        what = "every type" if restype is None else restype
        where = "every namespace" if namespace is None else f"namespace {namespace}"
        note(
            f"edgemeta watch: watching {what} in {where} ({topic_filter}) on "
            f"{config.mqtt.host}:{config.mqtt.port}"
            + (f" for {args.count} event(s)" if args.count else " (Ctrl-C to stop)")
        )
        for obj in [*sorted(snapshot.objects.values(), key=_by_revision), *snapshot.live]:
            printer.show(obj)
        _follow(client, config, printer, stop)
    return EXIT_OK


def _follow(client: BrokerClient, config: Config, printer: _Printer, stop: threading.Event) -> None:
    prefix = config.mqtt.topicPrefix
    while not (printer.done or stop.is_set()):
        _say_link_events(client, config)
        got = client.receive(0.2)
        obj = None if got is None else state_object(prefix, got)
        if obj is not None:
            printer.show(obj)
