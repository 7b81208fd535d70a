"""``edgemeta health``: is the service online? (its retained ``<prefix>/meta/status``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import BusError
from ..metrics import stats_topic
from .client import BrokerClient, tool_topic
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_client_options,
    add_command,
    guarded,
    note,
    positive_seconds,
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)

EPILOG = """\
Prints the status edgemeta keeps retained on <prefix>/meta/status: online,
offline (clean stop, or the broker's Last Will after a crash) or unknown
(never started on this prefix). With --stats, also the latest counters of
<prefix>/meta/stats (when metrics.statsInterval is set).
-o json prints {"status", "broker", "prefix", "stats"} for scripts.
Exit status: 0 online, 1 offline or unknown, 3 no broker (as every client command).
"""


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "health",
        help="exit 0 when edgemeta is online",
        description="Check the service's retained status on the broker.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="broker wait (default 5)",
    )
    parser.add_argument("--stats", action="store_true", help="also print the latest stats")
    parser.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="text (default) or json"
    )
    add_client_options(parser)
    parser.set_defaults(handler=run)


@guarded("health")
def run(args: argparse.Namespace) -> int:
    config = tool_config(args)
    topics = tool_topics(config)
    broker = f"{config.mqtt.host}:{config.mqtt.port}"
    stats = None
    try:
        with BrokerClient(
            config.mqtt, name="health", client_id=tool_client_id(args), timeout=args.timeout
        ) as client:
            marker = tool_topic(config.mqtt, topics.prefix)
            got = client.retained(topics.status, marker, args.timeout)
            if args.stats:
                marker = tool_topic(config.mqtt, topics.prefix)
                stats = client.retained(stats_topic(topics), marker, args.timeout)
    except BusError as exc:
        note(f"edgemeta health: {exc}")
        _show(args, "unknown", broker, topics.prefix, None, str(exc))
        return EXIT_UNAVAILABLE
    status = got.payload.decode("utf-8", "replace") if got is not None and got.payload else ""
    numbers: Any = None
    if stats is not None:
        try:
            numbers = json.loads(stats.payload)
        except ValueError:
            numbers = stats.payload.decode("utf-8", "replace")
    _show(args, status or "unknown", broker, topics.prefix, numbers, None)
    return EXIT_OK if status == "online" else EXIT_FAIL


def _show(
    args: argparse.Namespace,
    status: str,
    broker: str,
    prefix: str,
    stats: Any,
    error: str | None,
) -> None:
    if args.output == "json":
        report: dict[str, Any] = {"status": status, "broker": broker, "prefix": prefix}
        if args.stats:
            report["stats"] = stats
        if error is not None:
            report["error"] = error
        say(json.dumps(report))
        return
    say(status)
    if stats is not None:
        say(json.dumps(stats, indent=2) if not isinstance(stats, str) else stats)
