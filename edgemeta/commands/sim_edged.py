"""``edgemeta sim edged``: a stand-in for the node's pod manager.

It listens on ``<prefix>/edged``: answers the volume requests edgemeta relays
(``sync: true``, answer's parent_msg_id = the request's msg_id), keeps the
pods edgemeta sends it, and reports a status for its pods at a rate.
"""

from __future__ import annotations

import argparse
import itertools
import time
from datetime import UTC, datetime
from typing import Any

from ..message import (
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    VOLUME_OPS,
    Message,
    new_error,
    new_message,
    new_response,
)
from ..topics import META_GROUP
from .client import BrokerClient
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Lifetime,
    add_client_options,
    add_command,
    add_duration_option,
    guarded,
    note,
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)

SOURCE = "edged"

EPILOG = """\
Pods: those given with --pod NAMESPACE/NAME, plus every pod edgemeta sends to
edged (insert / update), less those it deletes. Each pod's status is
reported as `update <ns>/podstatus/<name>` (source edged), round-robin,
--rate reports per second in all.

Printed on stdout, one line each: volume requests answered, pods added or
removed, statuses sent.

example:
  edgemeta sim edged --pod default/nginx --rate 0.5
"""


def register(sims: Any) -> None:
    parser = add_command(
        sims,
        "edged",
        help="answer volume requests, report pod statuses",
        description="Simulate edged, the pod manager of the node.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--pod", action="append", default=[], metavar="NS/NAME", help="a pod from the start"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="PER-SECOND",
        help="pod status reports per second, all pods together (0 = none; default 1)",
    )
    parser.add_argument("--phase", default="Running", help="the phase reported (default: Running)")
    parser.add_argument(
        "--volume-error",
        action="store_true",
        help="answer volume requests with an error instead",
    )
    parser.add_argument(
        "--messages", type=int, default=0, metavar="N", help="stop after N statuses (0 = never)"
    )
    add_duration_option(parser)
    add_client_options(parser)
    parser.set_defaults(handler=run)


class EdgedSimulator:
    """Pods known to edged and the answers it gives."""

    def __init__(self, pods: list[str], phase: str, volume_error: bool) -> None:
        self.pods: dict[str, None] = {}
        for pod in pods:
            parts = pod.split("/")
            if len(parts) != 2 or not all(parts):
                raise CommandError(f"--pod {pod!r}: expected NAMESPACE/NAME", EXIT_USAGE)
            self.pods[f"{parts[0]}/pod/{parts[1]}"] = None
        self.phase = phase
        self.volume_error = volume_error
        self._turn = itertools.count()

    def take(self, msg: Message) -> tuple[Message | None, str | None]:
        """The answer to send (if any) and a line to print (if any) for a received message."""
        if msg.operation in VOLUME_OPS and msg.sync:
            if self.volume_error:
                answer = new_error(msg, f"{msg.operation} failed (simulated)", SOURCE)
            else:
                content = {"operation": msg.operation, "resource": msg.resource, "result": "ok"}
                answer = new_response(msg, content, SOURCE)
            answer.group = META_GROUP
            return answer, f"volume {msg.operation} {msg.resource}: {answer.operation}"
        if msg.restype == "pod" and msg.resid:
            if msg.operation in (OP_INSERT, OP_UPDATE) and msg.resource not in self.pods:
                self.pods[msg.resource] = None
                return None, f"pod added {msg.resource}"
            if msg.operation == OP_DELETE and msg.resource in self.pods:
                del self.pods[msg.resource]
                return None, f"pod removed {msg.resource}"
        return None, None

    def next_status(self) -> Message | None:
        if not self.pods:
            return None
        keys = list(self.pods)
        key = keys[next(self._turn) % len(keys)]
        namespace, _pod, name = key.split("/", 2)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        content = {
            "name": name,
            "status": {
                "phase": self.phase,
                "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": now}],
            },
        }
        return new_message(
            OP_UPDATE, f"{namespace}/podstatus/{name}", content, source=SOURCE, group=META_GROUP
        )


@guarded("sim edged")
def run(args: argparse.Namespace) -> int:
    config = tool_config(args)
    topics = tool_topics(config)
    sim = EdgedSimulator(args.pod, args.phase, args.volume_error)
    lifetime = Lifetime(args.duration)
    every = 1.0 / args.rate if args.rate > 0 else None
    next_status = lifetime.started + every if every else None
    sent = 0
    with BrokerClient(config.mqtt, name="sim-edged", client_id=tool_client_id(args)) as client:
        client.subscribe(topics.edged)
        note(f"edgemeta sim edged: {len(sim.pods)} pod(s); listening on {topics.edged}")
        while not lifetime.over():
            now = time.monotonic()
            if next_status is not None and every is not None and now >= next_status:
                status = sim.next_status()
                next_status += every
                if status is not None:
                    client.publish(topics.meta, status.encode())
                    say(f"status {status.resource}: {sim.phase}")
                    sent += 1
                    if args.messages and sent >= args.messages:
                        break
            wait = 0.2 if next_status is None else max(0.0, min(0.2, next_status - now))
            msg = client.receive_message(wait)
            if msg is None:
                continue
            answer, line = sim.take(msg)
            if answer is not None:
                client.publish(topics.meta, answer.encode())
            if line is not None:
                say(line)
    return EXIT_OK
