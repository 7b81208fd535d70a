"""``edgemeta health``: is the service online? (its retained ``<prefix>/meta/status``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import BusError
from ..metrics import stats_topic
from .client import BrokerClient, reply_topic
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    add_client_options,
    add_command,
    guarded,
    note,
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
Exit status: 0 online, 1 anything else (including no broker).
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
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="broker wait (default 5)"
    )
    parser.add_argument("--stats", action="store_true", help="also print the latest stats")
    add_client_options(parser)
    parser.set_defaults(handler=run)


@guarded("health")
def run(args: argparse.Namespace) -> int:
    config = tool_config(args)
    topics = tool_topics(config)
    try:
        with BrokerClient(
            config.mqtt, name="health", client_id=tool_client_id(args), timeout=args.timeout
        ) as client:
            got = client.retained(topics.status, reply_topic(config.mqtt, topics), args.timeout)
            stats = None
            if args.stats:
                marker = reply_topic(config.mqtt, topics)
                stats = client.retained(stats_topic(topics), marker, args.timeout)
    except BusError as exc:
        note(f"edgemeta health: {exc}")
        say("unknown")
        return EXIT_FAIL
    status = got.payload.decode("utf-8", "replace") if got is not None and got.payload else ""
    say(status or "unknown")
    if stats is not None:
        try:
            say(json.dumps(json.loads(stats.payload), indent=2))
        except ValueError:
            say(stats.payload.decode("utf-8", "replace"))
    return EXIT_OK if status == "online" else EXIT_FAIL
