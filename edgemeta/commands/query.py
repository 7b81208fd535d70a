"""``edgemeta get RESOURCE`` and ``edgemeta list TYPE``: ask edgemeta what it stores."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..config import Config
from ..errors import EdgemetaError
from ..message import OP_ERROR, OP_QUERY, new_message, text_value
from ..store import MetaStore, open_storage
from ..topics import META_GROUP
from .client import BrokerClient, reply_topic
from .common import (
    EXIT_CODES_EPILOG,
    EXIT_FAIL,
    EXIT_OK,
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
from .db import copy_consistent
from .send import ask

EPILOG = (
    """\
The query goes over MQTT with source edged, so edgemeta answers from its store
(configmaps, secrets and the like go to the cloud only when it is connected
and the store has no answer). Stored values that are JSON text are shown as
JSON; -o json / -o yaml print them for scripts.
"""
    + EXIT_CODES_EPILOG
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default="table",
        help="table (default), json or yaml",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="answer wait (default 10)",
    )
    add_client_options(parser)


def register(commands: Any) -> None:
    get = add_command(
        commands,
        "get",
        help="show one stored resource",
        description="Query one resource: <namespace>/<type>/<name>, or <type>/<name> with -n.",
        epilog="example:  edgemeta get default/pod/nginx -o yaml\n\n" + EPILOG,
    )
    get.add_argument("resource", metavar="RESOURCE")
    _add_common(get)
    get.set_defaults(handler=run_get)
    lst = add_command(
        commands,
        "list",
        help="list the stored resources of a type in a namespace",
        description="Query every resource of TYPE in a namespace (ordered by key).",
        epilog="example:  edgemeta list pod -n kube-system\n\n" + EPILOG,
    )
    lst.add_argument("type", metavar="TYPE", help="pod, configmap, podstatus, service, ...")
    _add_common(lst)
    lst.set_defaults(handler=run_list)


def full_resource(resource: str, namespace: str) -> str:
    """``<type>/<name>`` gets the namespace in front; anything longer is taken as it is."""
    parts = resource.split("/")
    if len(parts) < 2 or "" in parts:
        raise CommandError(
            f"{resource!r} is not <namespace>/<type>/<name> nor <type>/<name>", EXIT_USAGE
        )
    return f"{namespace}/{resource}" if len(parts) == 2 else resource


def _query(args: argparse.Namespace, resource: str, config: Config | None = None) -> Any:
    config = config or tool_config(args)
    topics = tool_topics(config)
    message = new_message(OP_QUERY, resource, None, source="edged", group=META_GROUP)
    with BrokerClient(config.mqtt, name="query", client_id=tool_client_id(args)) as client:
        answer = ask(client, topics, message, reply_topic(config.mqtt, topics), args.timeout)
    if answer.operation == OP_ERROR:
        raise CommandError(f"error: {answer.content}")
    return answer.content


def _raw(content: Any) -> list[Any]:
    """A list answer's items as answered (the stored value strings)."""
    if isinstance(content, str):
        content = text_value(content)
    return content if isinstance(content, list) else [content]


def _local_keys(config: Config, namespace: str, restype: str) -> list[tuple[str, str]]:
    """(key, value) of a type in a namespace from the node's own database, read without
    its lock (``db.copy_consistent``); [] when the database is not on this machine."""
    path = Path(config.database.path)
    if not (path.exists() or path.with_name(path.name + ".journal").exists()):
        return []
    prefix = f"{namespace}/"
    try:
        with tempfile.TemporaryDirectory(prefix="edgemeta-list-") as tmp:
            copy = copy_consistent(path, Path(tmp))
            storage = open_storage(copy, sync=False, lock=False)
            try:
                return [
                    (key, value)
                    for key, value in MetaStore(storage).items_of_type(restype)
                    if key.startswith(prefix)
                ]
            finally:
                storage.journal.close()  # type: ignore[attr-defined]
    except (OSError, EdgemetaError, CommandError):
        return []


def _keys(
    raw: list[Any], stored: list[tuple[str, str]], namespace: str, restype: str
) -> list[str | None]:
    """The key of each answered value: from the node's database when it is here (the
    answer is ordered by key, as the store), else from the value's metadata."""
    by_value: dict[str, list[str]] = {}
    for key, value in stored:
        by_value.setdefault(value, []).append(key)
    keys: list[str | None] = []
    for item in raw:
        candidates = by_value.get(item) if isinstance(item, str) else None
        if candidates:
            keys.append(candidates.pop(0))
            continue
        value = text_value(item) if isinstance(item, str) else item
        keys.append(_key(value, namespace, restype))
    return keys


def _values(content: Any) -> list[Any]:
    """A query answer as a list of JSON values (stored strings parsed when they are JSON)."""
    if isinstance(content, str):
        content = text_value(content)
    items = content if isinstance(content, list) else [content]
    return [text_value(v) if isinstance(v, str) else v for v in items]


def _key(value: Any, namespace: str, restype: str) -> str | None:
    if isinstance(value, dict):
        meta = value.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            return f"{meta.get('namespace') or namespace}/{restype}/{meta['name']}"
        if isinstance(value.get("name"), str):
            return f"{namespace}/{restype}/{value['name']}"
    return None


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def table(rows: list[tuple[str, str, str]]) -> str:
    """KEY / TYPE / VALUE columns; on a terminal the value is cut to the screen width."""
    headers = ("KEY", "TYPE", "VALUE")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(2)]
    limit = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
    lines = []
    for key, restype, value in [headers, *rows]:
        line = f"{key:<{widths[0]}}  {restype:<{widths[1]}}  {value}"
        if limit and len(line) > limit:
            line = line[: max(limit - 1, 0)] + "…"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _print(values: list[Any], output: str, single: bool) -> None:
    if output == "json":
        say(pretty_json(values[0] if single else values))
    elif output == "yaml":
        data = values[0] if single else values
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        sys.stdout.flush()


@guarded("get")
def run_get(args: argparse.Namespace) -> int:
    resource = full_resource(args.resource, args.namespace)
    if resource.count("/") < 2:
        raise CommandError(f"{resource!r} names no resource; use `edgemeta list`", EXIT_USAGE)
    values = _values(_query(args, resource))
    if not values:
        note(f"edgemeta get: {resource} not found")
        return EXIT_FAIL
    if args.output != "table":
        _print(values, args.output, single=len(values) == 1)
        return EXIT_OK
    restype = resource.split("/")[1]
    say(table([(resource, restype, _compact(v)) for v in values]))
    return EXIT_OK


@guarded("list")
def run_list(args: argparse.Namespace) -> int:
    restype = args.type
    if not restype or "/" in restype:
        raise CommandError(f"{restype!r} is not a resource type", EXIT_USAGE)
    namespace = args.namespace
    config = tool_config(args)
    raw = _raw(_query(args, f"{namespace}/{restype}", config))
    keys = _keys(raw, _local_keys(config, namespace, restype) if raw else [], namespace, restype)
    values = _values(raw)
    if args.output != "table":
        records = [
            {"key": key, "type": restype, "value": value}
            for key, value in zip(keys, values, strict=True)
        ]
        _print(records, args.output, single=False)
        return EXIT_OK
    if not values:
        note(f"no {restype} in namespace {namespace}")
        return EXIT_OK
    rows = [
        (key or f"{namespace}/{restype}/?", restype, _compact(value))
        for key, value in zip(keys, values, strict=True)
    ]
    say(table(rows))
    return EXIT_OK
