"""``edgemeta sim cloud``: a stand-in for the cloud, serving Kubernetes objects from a folder.

It listens where edgemeta sends the cloud's messages (``<prefix>/<contextSendGroup>``),
answers remote queries (``query`` with ``sync: true``) from the objects, pushes
pods and configmaps to edgemeta with ``--push``, and prints the pod statuses
edgemeta reports. On start it tells edgemeta the cloud is connected (as
edgehub does), on stop that it is gone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from ..message import OP_INSERT, OP_PUBLISH, OP_QUERY, Message, new_error, new_response
from ..message import new_message as _new_message
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

CLOUD_SOURCE = "edgecontroller"
CONNECTION_SOURCE = "edgehub"
CONNECTION_RESOURCE = "node/connection"
PUSHED_TYPES = ("pod", "configmap")
SUFFIXES = (".yaml", ".yml", ".json")

EPILOG = """\
Objects: every *.yaml, *.yml and *.json file of DIR (a YAML file may hold
several documents; kind: List is unpacked). An object of kind K named N in
namespace NS (default "default") answers the resource NS/<k lowercased>/N;
a query without a name gets the list of that type in that namespace.

Printed on stdout, one line each: queries answered, objects pushed, pod
statuses received (single ones from edged and the periodic syncs).

example:
  edgemeta sim cloud --objects examples/objects --push
"""


def register(sims: Any) -> None:
    parser = add_command(
        sims,
        "cloud",
        help="answer remote queries from a folder of Kubernetes objects",
        description="Simulate the cloud side of edgemeta (the hub group).",
        epilog=EPILOG,
    )
    parser.add_argument("--objects", metavar="DIR", required=True, help="folder of objects")
    parser.add_argument(
        "--push", action="store_true", help="send the folder's pods and configmaps to edgemeta"
    )
    parser.add_argument(
        "--push-operation",
        choices=["insert", "update"],
        default=OP_INSERT,
        help="operation of the pushed objects (default: insert)",
    )
    parser.add_argument(
        "--no-connection",
        action="store_true",
        help="do not announce cloud_connected / cloud_disconnected",
    )
    add_duration_option(parser)
    add_client_options(parser)
    parser.set_defaults(handler=run)


def _documents(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [json.loads(text)]
    return list(yaml.safe_load_all(text))


def load_objects(folder: Path) -> dict[str, dict[str, Any]]:
    """Resource key -> object, for every object in the folder's files."""
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder", EXIT_USAGE)
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES):
        try:
            docs = _documents(path)
        except (ValueError, yaml.YAMLError) as exc:
            raise CommandError(f"{path}: cannot read: {exc}", EXIT_USAGE) from None
        pending = list(docs)
        while pending:
            doc = pending.pop(0)
            if doc is None:
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
                raise CommandError(f"{path}: an object without a kind", EXIT_USAGE)
            if doc["kind"] == "List":
                pending.extend(doc.get("items") or [])
                continue
            meta = doc.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                raise CommandError(f"{path}: a {doc['kind']} without metadata.name", EXIT_USAGE)
            namespace = meta.get("namespace") or "default"
            objects[f"{namespace}/{doc['kind'].lower()}/{meta['name']}"] = doc
    return objects


def _phase(status: Any) -> str:
    if isinstance(status, str):
        try:
            status = json.loads(status)
        except ValueError:
            return status
    if isinstance(status, dict):
        inner = status.get("status")
        if isinstance(inner, dict) and isinstance(inner.get("phase"), str):
            return str(inner["phase"])
        if isinstance(status.get("phase"), str):
            return str(status["phase"])
    return "?"


def _status_name(status: Any) -> str:
    if isinstance(status, dict):
        for holder in (status, status.get("metadata")):
            if isinstance(holder, dict) and isinstance(holder.get("name"), str):
                return str(holder["name"])
    return "?"


class CloudSimulator:
    """The cloud's answers, given the objects; ``handle`` returns the messages to send."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    def answer_query(self, msg: Message) -> tuple[Message, str]:
        if msg.resid:
            obj = self.objects.get(msg.resource)
            if obj is None:
                return new_error(msg, f"{msg.resource} not found", CLOUD_SOURCE), "not found"
            return new_response(msg, obj, CLOUD_SOURCE), "found"
        head = msg.resource + "/"
        items = [obj for key, obj in sorted(self.objects.items()) if key.startswith(head)]
        return new_response(msg, items, CLOUD_SOURCE), f"{len(items)} object(s)"

    def describe(self, msg: Message) -> str | None:
        """A line for a message the cloud receives, None when it is not worth one."""
        if msg.restype == "podstatus":
            if isinstance(msg.content, list):
                pods = ", ".join(f"{_status_name(s)}={_phase(s)}" for s in msg.content)
                return f"pod status sync {msg.resource}: {len(msg.content)} pod(s)" + (
                    f": {pods}" if pods else ""
                )
            return f"pod status {msg.resource}: {_phase(msg.content)} (from {msg.source})"
        return None

    def push(self, operation: str) -> list[Message]:
        return [
            _new_message(operation, key, obj, source=CLOUD_SOURCE, group=META_GROUP)
            for key, obj in sorted(self.objects.items())
            if key.split("/")[1] in PUSHED_TYPES
        ]


def connection_message(connected: bool) -> Message:
    content = "cloud_connected" if connected else "cloud_disconnected"
    return _new_message(
        OP_PUBLISH, CONNECTION_RESOURCE, content, source=CONNECTION_SOURCE, group=META_GROUP
    )


@guarded("sim cloud")
def run(args: argparse.Namespace) -> int:
    config = tool_config(args)
    topics = tool_topics(config)
    sim = CloudSimulator(load_objects(Path(args.objects)))
    lifetime = Lifetime(args.duration)
    with BrokerClient(config.mqtt, name="sim-cloud", client_id=tool_client_id(args)) as client:
        client.subscribe(topics.cloud)
        note(
            f"edgemeta sim cloud: {len(sim.objects)} object(s) from {args.objects}; "
            f"listening on {topics.cloud}"
        )
        if not args.no_connection:
            client.publish(topics.meta, connection_message(True).encode())
            say("connected: told edgemeta cloud_connected")
        if args.push:
            for message in sim.push(args.push_operation):
                client.publish(topics.meta, message.encode())
                say(f"pushed {message.operation} {message.resource}")
        try:
            while not lifetime.over():
                msg = client.receive_message(0.2)
                if msg is None:
                    continue
                if msg.operation == OP_QUERY and msg.sync:
                    answer, outcome = sim.answer_query(msg)
                    client.publish(topics.meta, answer.encode())
                    say(f"query {msg.resource}: {outcome}")
                    continue
                line = sim.describe(msg)
                if line is not None:
                    say(line)
        finally:
            if not args.no_connection:
                client.publish(topics.meta, connection_message(False).encode())
                say("disconnected: told edgemeta cloud_disconnected")
    return EXIT_OK
