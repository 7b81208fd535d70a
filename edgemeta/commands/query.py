"""``edgemeta get KEY`` and ``edgemeta list TYPE``: what a node stores.

Both read the state mirror (``mirror_reader``): no query round trip, no
database file. ``get`` falls back to a ``query`` over MQTT for what the
mirror does not hold (a type not mirrored, a key not there), and ``--from``
forces either; ``list`` does for a type the config does not mirror.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import EdgemetaError
from ..message import OP_ERROR, OP_QUERY, new_message, text_value
from ..mirror import MirrorPolicy, state_topic
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
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)
from .db import copy_consistent
from .listing import OUTPUTS, render, render_value
from .mirror_reader import (
    MirrorUnavailable,
    StateObject,
    check_namespace,
    check_type,
    read_snapshot,
    state_filter,
)
from .send import ask

ALL_TYPES = "all"
SOURCES = ("auto", "mirror", "query")

GET_EPILOG = (
    """\
By default (--from auto) get reads the node's state mirror (retained
<prefix>/state/<key>, README "State mirror"): no query round trip, and the
database file is not touched. A key the mirror does not hold (a type the
config does not mirror, such as secret by default, or mirror.enable: false;
or a key not there) is asked of edgemeta with a query (source edged), which
may ask the cloud; stderr says so. --from mirror / --from query forces one.
-o json / -o yaml print the value alone (parsed when it is JSON text).

examples:
  edgemeta get default/pod/nginx -o yaml
  edgemeta get configmap/app-cfg -n kube-system
  edgemeta get default/secret/gateway-token        not mirrored: a query

"""
    + EXIT_CODES_EPILOG
)

LIST_EPILOG = (
    """\
list reads the node's state mirror, ordered by key: NAME is the key
(<namespace>/<type>/<name>), VALUE a preview of the stored value. A type the
config does not mirror (secret by default) is asked of edgemeta with a query
instead (one namespace only); --from forces either. TYPE "all": every type.
-o wide adds TYPE, REVISION and SIZE (bytes); -o name prints the keys;
-o json / -o yaml a list of {"key", "type", "revision", "value"} (value
parsed when it is JSON text; revision null when it is not known).

examples:
  edgemeta list pod
  edgemeta list configmap -A -o wide
  edgemeta list all -n kube-system -o name

"""
    + EXIT_CODES_EPILOG
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table",
        help="table (default), wide, name, json or yaml",
    )
    parser.add_argument(
        "--from",
        dest="source",
        choices=SOURCES,
        default="auto",
        help="read the state mirror, or query edgemeta (default auto: the mirror, else a query)",
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
        help="show one stored resource (from the state mirror)",
        description="Show one resource: <namespace>/<type>/<name>, or <type>/<name> with -n.",
        epilog=GET_EPILOG,
    )
    get.add_argument("resource", metavar="KEY")
    _add_common(get)
    get.set_defaults(handler=run_get)
    lst = add_command(
        commands,
        "list",
        help="list the stored resources of a type (from the state mirror)",
        description="List every resource of TYPE in a namespace, or in all of them (-A).",
        epilog=LIST_EPILOG,
    )
    lst.add_argument(
        "type", metavar="TYPE", help="pod, configmap, podstatus, service, ...; all: every type"
    )
    lst.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="every namespace (NAME shows each key's namespace)",
    )
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


def _key(value: Any, namespace: str, restype: str) -> str | None:
    if isinstance(value, dict):
        meta = value.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            return f"{meta.get('namespace') or namespace}/{restype}/{meta['name']}"
        if isinstance(value.get("name"), str):
            return f"{namespace}/{restype}/{value['name']}"
    return None


def _query_objects(
    args: argparse.Namespace, config: Config, resource: str, restype: str
) -> list[StateObject]:
    """The answer of a query as objects (no revision: a query does not tell it)."""
    raw = _raw(_query(args, resource, config))
    if resource.count("/") >= 2:
        keys: list[str | None] = [resource] * len(raw)
    else:
        namespace = resource.split("/")[0]
        stored = _local_keys(config, namespace, restype) if raw else []
        keys = _keys(raw, stored, namespace, restype)
        keys = [key or f"{namespace}/{restype}/?" for key in keys]
    return [
        StateObject(key or resource, restype, None, _text(item).encode("utf-8", "surrogatepass"))
        for key, item in zip(keys, raw, strict=True)
    ]


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def _mirror(args: argparse.Namespace, config: Config, topic_filter: str) -> dict[str, StateObject]:
    prefix = config.mqtt.topicPrefix
    with BrokerClient(config.mqtt, name="mirror", client_id=tool_client_id(args)) as client:
        return read_snapshot(client, prefix, topic_filter, args.timeout).objects


def _width() -> int:
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 0


def _policy(config: Config) -> MirrorPolicy:
    return MirrorPolicy.from_config(config.mqtt.topicPrefix, config.mirror)


@guarded("get")
def run_get(args: argparse.Namespace) -> int:
    resource = full_resource(args.resource, args.namespace)
    if resource.count("/") < 2:
        raise CommandError(f"{resource!r} names no resource; use `edgemeta list`", EXIT_USAGE)
    restype = resource.split("/")[1]
    config = tool_config(args)
    found: StateObject | None = None
    source = args.source
    if source == "auto" and not _policy(config).mirrors(restype):
        note(
            f"edgemeta get: {restype} is not mirrored (mirror.enable, mirror.types); "
            "asking edgemeta"
        )
        source = "query"
    if source != "query":
        topic = state_topic(config.mqtt.topicPrefix, resource)
        if topic is None:
            raise CommandError(f"{resource!r} cannot be a key", EXIT_USAGE)
        try:
            found = _mirror(args, config, topic).get(resource)
        except MirrorUnavailable as exc:
            if source == "mirror":
                raise
            note(f"edgemeta get: {exc}; asking edgemeta")
        else:
            if found is None and source == "auto":
                note(
                    f"edgemeta get: {resource} is not in the mirror; "
                    "asking edgemeta (it may ask the cloud)"
                )
        if found is None and source == "auto":
            source = "query"
    if found is None and source == "query":
        objects = _query_objects(args, config, resource, restype)
        found = objects[0] if objects else None
    if found is None:
        note(f"edgemeta get: {resource} not found")
        return EXIT_FAIL
    say(render_value(found, args.output, _width()))
    return EXIT_OK


@guarded("list")
def run_list(args: argparse.Namespace) -> int:
    restype = None if args.type == ALL_TYPES else check_type(args.type)
    namespace = None if args.all_namespaces else check_namespace(args.namespace)
    config = tool_config(args)
    source = args.source
    if source == "auto" and restype is not None and not _policy(config).mirrors(restype):
        note(
            f"edgemeta list: {restype} is not mirrored (mirror.enable, mirror.types); "
            "asking edgemeta"
        )
        source = "query"
    objects: list[StateObject] | None = None
    if source != "query":
        topic_filter = state_filter(config.mqtt.topicPrefix, namespace, restype)
        try:
            by_key = _mirror(args, config, topic_filter)
        except MirrorUnavailable as exc:
            if source == "mirror" or restype is None or namespace is None:
                raise
            note(f"edgemeta list: {exc}; asking edgemeta")
        else:
            objects = [by_key[key] for key in sorted(by_key)]
    if objects is None:
        if restype is None or namespace is None:
            raise CommandError(
                "a query lists one type in one namespace: no `all`, no -A", EXIT_USAGE
            )
        objects = _query_objects(args, config, f"{namespace}/{restype}", restype)
    if not objects and args.output not in ("json", "yaml"):
        what = "resource" if restype is None else restype
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        note(f"no {what} in {where}")
        return EXIT_OK
    say(render(objects, args.output, _width()))
    return EXIT_OK
