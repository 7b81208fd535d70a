"""``edgemeta send OPERATION RESOURCE``: publish one message to edgemeta, maybe await the answer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import LimitsConfig
from ..message import OP_ERROR, Message, new_message
from ..topics import META_GROUP, Topics
from .client import BrokerClient, Received, reply_topic
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
    add_client_options,
    add_command,
    guarded,
    note,
    positive_seconds,
    pretty_json,
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)

EPILOG = (
    """\
examples:
  edgemeta send insert default/configmap/app --source edgecontroller \\
      --content '{"metadata":{"name":"app"},"data":{"k":"v"}}' --wait
  edgemeta send update default/podstatus/nginx --content '{"phase":"Running"}' --wait
  edgemeta send query default/pod/nginx --wait
  echo '{"phase":"Failed"}' | edgemeta send update default/podstatus/nginx --content -

With --wait the message carries an MQTT 5 Response Topic of the tool's own
(<prefix>/reply/<user>/<uuid>) and edgemeta answers there (SPEC section 2);
the answer's content is printed (-o json: the whole answer).
"""
    + EXIT_CODES_EPILOG
)


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "send",
        help="send one message to edgemeta (and wait for its answer)",
        description="Build a beehive message and publish it on <prefix>/meta.",
        epilog=EPILOG,
    )
    parser.add_argument("operation", metavar="OPERATION", help="insert, update, query, ...")
    parser.add_argument("resource", metavar="RESOURCE", help="<namespace>/<type>[/<name>]")
    parser.add_argument(
        "--source", default="edged", help="route.source, the sending module (default: edged)"
    )
    parser.add_argument("--group", default=META_GROUP, help=f"route.group (default: {META_GROUP})")
    parser.add_argument(
        "--content",
        metavar="JSON|@FILE|-",
        help="the content: JSON text, @FILE to read it from a file, - from stdin (default: null)",
    )
    parser.add_argument("--sync", action="store_true", help="set header.sync")
    parser.add_argument("--wait", action="store_true", help="wait for edgemeta's answer")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long --wait waits (default: 10)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["content", "json"],
        default="content",
        help="with --wait: print the answer's content (default) or the whole answer as JSON",
    )
    add_client_options(parser)
    parser.set_defaults(handler=run)


def read_content(spec: str | None) -> Any:
    """The content named by --content, parsed as JSON."""
    if spec is None:
        return None
    where = "--content"
    if spec == "-":
        text = sys.stdin.read()
        where = "stdin"
    elif spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                f"cannot read {spec[1:]}: {exc.strerror or exc}", EXIT_USAGE
            ) from None
        where = spec[1:]
    else:
        text = spec
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(
            f"{where} is not JSON ({exc}); a plain string is written with quotes: '\"text\"'",
            EXIT_USAGE,
        ) from None


def check_size(message: Message, limits: LimitsConfig) -> None:
    """Refuse what edgemeta would refuse for its size (limits.maxPayloadBytes)."""
    size = len(message.encode())
    if size > limits.maxPayloadBytes:
        raise CommandError(
            f"the message is {size} bytes; edgemeta refuses more than "
            f"limits.maxPayloadBytes = {limits.maxPayloadBytes}",
            EXIT_USAGE,
        )


def ask(
    client: BrokerClient, topics: Topics, message: Message, reply_to: str, timeout: float
) -> Message:
    """Send ``message`` to edgemeta and return its answer, or raise CommandError.

    A report of the message on ``<prefix>/meta/error`` (edgemeta refused it
    without an answer) is shown as the error it is; no answer at all is a timeout.
    """
    got: Received | None = client.request(
        topics.meta, message, reply_to, timeout, reports=topics.error
    )
    if got is None:
        raise CommandError(
            f"no answer within {timeout:g} s (is edgemeta running? try `edgemeta health`)",
            EXIT_UNAVAILABLE,
        )
    if got.topic == topics.error:
        try:
            reason = json.loads(got.payload).get("reason")
        except (ValueError, AttributeError):
            reason = None
        raise CommandError(
            f"edgemeta refused the message (reported on {topics.error}): {reason or '?'}"
        )
    answer = got.message()
    if answer is None:
        raise CommandError(f"the answer is not a beehive message: {got.payload[:200]!r}")
    return answer


def show_content(content: Any) -> None:
    say(content if isinstance(content, str) else pretty_json(content))


@guarded("send")
def run(args: argparse.Namespace) -> int:
    config = tool_config(args)
    topics = tool_topics(config)
    content = read_content(args.content)
    message = new_message(
        args.operation,
        args.resource,
        content,
        source=args.source,
        group=args.group,
        sync=args.sync,
    )
    check_size(message, config.limits)
    with BrokerClient(config.mqtt, name="send", client_id=tool_client_id(args)) as client:
        if not args.wait:
            client.publish(topics.meta, message.encode())
            say(message.msg_id)
            return EXIT_OK
        answer = ask(client, topics, message, reply_topic(config.mqtt, topics), args.timeout)
    if args.output == "json":
        say(pretty_json(answer.to_dict()))
    if answer.operation == OP_ERROR:
        if args.output != "json":
            note(f"edgemeta send: error: {answer.content}")
        return EXIT_FAIL
    if args.output != "json":
        show_content(answer.content)
    return EXIT_OK
