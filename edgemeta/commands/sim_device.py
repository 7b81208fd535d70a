"""``edgemeta sim device``: IoT devices reporting readings to edgemeta at a rate."""

from __future__ import annotations

import argparse
import random
import time
import uuid
from typing import Any

from ..message import OP_ERROR, OP_UPDATE, dumps, new_message, now_ms
from ..topics import META_GROUP
from .client import BrokerClient, Received, reply_topic
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Lifetime,
    add_client_options,
    add_command,
    add_duration_option,
    guarded,
    note,
    positive_seconds,
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)

EPILOG = """\
Device i (i = 0 .. N-1) is `device-<i>`; each publishes `update` of
<namespace>/device/device-<i> with a reading as content, --rate times a
second. The messages carry a Response Topic of the simulator's own, so it
counts edgemeta's answers: the summary line says how many were OK, errors,
or unanswered (after --timeout). Exit status 1 when any was not OK.

--topic sets where devices publish; {prefix} and {id} are replaced
(default {prefix}/meta). On a device topic, {prefix}/meta/device/{id},
each device sends its reading as a bare JSON object, as a real device
would; edgemeta stores and forwards it but does not answer devices, so
the summary only counts what was sent.

example:
  edgemeta sim device --count 5 --rate 2 --duration 30
"""


def register(sims: Any) -> None:
    parser = add_command(
        sims,
        "device",
        help="devices publishing readings at a rate",
        description="Simulate IoT devices that report to edgemeta.",
        epilog=EPILOG,
    )
    parser.add_argument("--count", type=int, default=1, metavar="N", help="devices (default 1)")
    parser.add_argument(
        "--rate", type=float, default=1.0, metavar="PER-SECOND", help="per device (default 1)"
    )
    parser.add_argument("--namespace", default="default", help="namespace (default: default)")
    parser.add_argument(
        "--source",
        default="edged",
        help="route.source (default: edged; edgemeta stores updates from edged and the cloud)",
    )
    parser.add_argument("--topic", default="{prefix}/meta", help="publish topic template")
    parser.add_argument(
        "--messages", type=int, default=0, metavar="N", help="stop after N in all (0 = never)"
    )
    add_duration_option(parser)
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="wait for the last answers at the end (default 5)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    add_client_options(parser)
    parser.set_defaults(handler=run)


def reading(device: str, sequence: int) -> dict[str, Any]:
    return {
        "device": device,
        "sequence": sequence,
        "temperature": round(random.uniform(18.0, 26.0), 2),
        "humidity": round(random.uniform(30.0, 60.0), 1),
        "timestamp": now_ms(),
    }


class Tally:
    """Answers by correlation data."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, float] = {}
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []

    def sent(self, correlation: bytes) -> None:
        self.waiting[correlation] = time.monotonic()

    def answered(self, got: Received) -> None:
        started = self.waiting.pop(got.correlation or b"", None)
        if started is None:
            return
        self.latencies.append(time.monotonic() - started)
        answer = got.message()
        if answer is None or answer.operation == OP_ERROR:
            self.errors += 1
        else:
            self.ok += 1


@guarded("sim device")
def run(args: argparse.Namespace) -> int:
    if args.count < 1 or args.rate <= 0:
        raise CommandError("--count must be >= 1 and --rate > 0", EXIT_USAGE)
    config = tool_config(args)
    topics = tool_topics(config)
    devices = [f"device-{i}" for i in range(args.count)]
    every = 1.0 / (args.rate * args.count)
    tally = Tally()
    sent = 0
    lifetime = Lifetime(args.duration)
    device_topics = "/meta/device/" in args.topic
    with BrokerClient(config.mqtt, name="sim-device", client_id=tool_client_id(args)) as client:
        answers = reply_topic(config.mqtt, topics)
        client.subscribe(answers)
        note(
            f"edgemeta sim device: {args.count} device(s) at {args.rate:g}/s each, "
            f"namespace {args.namespace}"
        )
        next_at = lifetime.started
        while not lifetime.over():
            now = time.monotonic()
            if args.messages and sent >= args.messages:
                break
            if now >= next_at and device_topics:
                device = devices[sent % len(devices)]
                topic = args.topic.format(prefix=topics.prefix, id=device)
                client.publish(topic, dumps(reading(device, sent // len(devices))))
                if not args.quiet:
                    say(f"{device} reading on {topic}")
                sent += 1
                next_at += every
                continue
            if now >= next_at:
                device = devices[sent % len(devices)]
                msg = new_message(
                    OP_UPDATE,
                    f"{args.namespace}/device/{device}",
                    reading(device, sent // len(devices)),
                    source=args.source,
                    group=META_GROUP,
                )
                correlation = uuid.uuid4().bytes
                tally.sent(correlation)
                topic = args.topic.format(prefix=topics.prefix, id=device)
                client.publish(topic, msg.encode(), response_topic=answers, correlation=correlation)
                if not args.quiet:
                    say(f"{device} update {msg.resource}")
                sent += 1
                next_at += every
                continue
            got = client.receive(max(0.0, min(0.2, next_at - now)))
            if got is not None:
                tally.answered(got)
        grace = time.monotonic() + args.timeout
        while tally.waiting and (remaining := grace - time.monotonic()) > 0:
            got = client.receive(remaining)
            if got is None:
                break
            tally.answered(got)
    elapsed = time.monotonic() - lifetime.started
    if device_topics:
        say(f"sent {sent} reading(s) from {args.count} device(s) in {elapsed:.1f} s")
        return EXIT_OK
    latencies = sorted(tally.latencies)
    median = f", median answer {latencies[len(latencies) // 2] * 1000:.1f} ms" if latencies else ""
    say(
        f"sent {sent} update(s) from {args.count} device(s) in {elapsed:.1f} s: "
        f"{tally.ok} OK, {tally.errors} error(s), {len(tally.waiting)} unanswered{median}"
    )
    return EXIT_OK if tally.ok == sent else EXIT_FAIL
