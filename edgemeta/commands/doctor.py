"""``edgemeta doctor``: check a node's set-up from the outside and say what to fix."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import BusError, ConfigError, EdgemetaError
from ..heartbeat import ECHO_TOPIC
from ..store import MetaStore, open_storage
from .client import BrokerClient, broker_keeps_sessions, tool_topic
from .common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_client_options,
    add_command,
    config_path,
    guarded,
    positive_seconds,
    say,
    tool_client_id,
    tool_config,
    tool_topics,
)
from .db import copy_consistent

EPILOG = """\
Checks, in order: the configuration file and the modes of the files holding
secrets; the broker (reachable, credentials, TLS); the prefix and client id
(edgemeta's retained status, and whether the instance that is online is the
one using this node's database); the broker's persistent sessions; the cloud
link (the bridge's retained state); the database (readable, its mode). Each
line: ok, warn or FAIL, what was found, and for a problem what to do.

It connects only with throwaway client ids: never with edgemeta's own, which
would take its session over. The database is read from a consistent copy,
without its lock, so a running edgemeta is not disturbed.

examples:
  edgemeta doctor
  edgemeta doctor -o json
Exit status: 0 no FAIL (warnings allowed), 1 a check failed, 2 a bad
configuration, 3 the broker is unreachable.
"""

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    check: str
    status: str
    detail: str
    fix: str = ""


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "doctor",
        help="check broker, credentials, TLS, prefix, session, cloud link, store; say what to fix",
        description="Check this node's edgemeta set-up and say what to fix.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=5.0, metavar="SECONDS", help="broker wait"
    )
    parser.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="text (default) or json"
    )
    add_client_options(parser)
    parser.set_defaults(handler=run)


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _private(checks: list[Check], name: str, path_text: str, directory: bool = False) -> None:
    """A file (or folder) holding secrets must not be readable by others."""
    if not path_text:
        return
    path = Path(path_text)
    mode = _mode(path)
    if mode is None:
        return
    if mode & 0o077:
        want = "700" if directory else "600"
        checks.append(
            Check(
                name, WARN, f"{path} is mode {mode:04o}: others can read it", f"chmod {want} {path}"
            )
        )
    else:
        checks.append(Check(name, OK, f"{path} is mode {mode:04o}"))


def _lock_held(db: Path) -> bool:
    """Whether a process holds the database lock now (probed without keeping it)."""
    lock = db.with_name(db.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's shared lock at once
    return False


def _config_checks(args: argparse.Namespace, checks: list[Check]) -> Config:
    path = config_path(args)
    config = tool_config(args)
    if path is None:
        checks.append(
            Check(
                "config",
                WARN,
                "no configuration file found: the built-in defaults",
                "edgemeta print-config > /etc/edgemeta/edge.yaml (or set $EDGEMETA_CONFIG)",
            )
        )
    else:
        checks.append(Check("config", OK, f"{path}"))
        if config.mqtt.password and not config.mqtt.passwordFile:
            _private(checks, "config mode", str(path))
    _private(checks, "password file", config.mqtt.passwordFile)
    _private(checks, "TLS key", config.mqtt.tls.keyFile)
    _private(checks, "secret key", config.database.secretKeyFile)
    return config


def _broker_check(config: Config, error: BusError) -> Check:
    text = str(error)
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    if "not authori" in text.lower() or "user name or password" in text.lower():
        return Check(
            "credentials",
            FAIL,
            text,
            "check mqtt.username and mqtt.password / mqtt.passwordFile (-u, -P) against the "
            "broker's password file",
        )
    if "ssl" in text.lower() or "certificate" in text.lower():
        return Check(
            "TLS",
            FAIL,
            text,
            "check mqtt.tls.caFile (--cafile), the broker's certificate name and port",
        )
    return Check(
        "broker",
        FAIL,
        text,
        f"start the broker at {where} (`make run` starts one), or set mqtt.host / mqtt.port "
        "(-h, -p)",
    )


def _status_checks(config: Config, status: str, checks: list[Check]) -> None:
    topics = tool_topics(config)
    client_id = config.mqtt.client_id
    db = Path(config.database.path)
    here = _lock_held(db)
    if status == "online" and here:
        checks.append(
            Check("instance", OK, f"edgemeta is online on {topics.prefix}, using {db} here")
        )
    elif status == "online":
        checks.append(
            Check(
                "instance",
                WARN,
                f"an edgemeta is online on {topics.prefix} but none uses {db} on this machine: "
                f"another node has this prefix; a second edgemeta with client id {client_id!r} "
                "would take its session over",
                "give each node its own mqtt.topicPrefix and mqtt.clientId",
            )
        )
    elif here:
        checks.append(
            Check(
                "instance",
                WARN,
                f"a process holds {db} but {topics.status} is {status or 'unset'}: starting, "
                "or connected to another broker or prefix",
                "compare its mqtt.host, mqtt.port and mqtt.topicPrefix with this config",
            )
        )
    else:
        said = status or "never published"
        checks.append(
            Check(
                "instance",
                WARN,
                f"edgemeta is not running on {topics.prefix} ({topics.status}: {said}); "
                f"client id {client_id!r} is free",
                "start it: edgemeta run (or systemctl start edgemeta)",
            )
        )


def _cloud_check(config: Config, link: str | None) -> Check:
    settings = config.modules.metaManager
    if settings.edgeSite:
        return Check("cloud link", OK, "edgeSite: the cloud counts as always connected")
    if not settings.bridgeStateTopic:
        return Check("cloud link", OK, "no bridge state topic: the cloud reports its own state")
    if link == "1":
        return Check("cloud link", OK, "the bridge to the cloud broker is up")
    if link == "0":
        return Check(
            "cloud link",
            WARN,
            "the bridge to the cloud broker is down: remote queries fail, statuses wait",
            "check the edge broker's bridge (its log) and the cloud broker",
        )
    return Check(
        "cloud link",
        WARN,
        "no bridge state retained: no bridge reports the cloud link",
        "configure the edge broker's bridge (docs: Deploying beside a cloud broker), or "
        "ignore on a node without one",
    )


def _heartbeat_check(client: BrokerClient, config: Config) -> Check | None:
    """Whether edgemeta's heartbeats come back through the bridge (edgemeta.heartbeat)."""
    settings = config.modules.metaManager
    if settings.edgeSite or not settings.cloudHeartbeatInterval:
        return None
    topic = tool_topics(config).group(ECHO_TOPIC)
    wait = settings.cloudHeartbeatTimeout
    try:
        client.subscribe(topic, retained=False)
    except BusError as exc:
        return Check("cloud heartbeat", WARN, f"cannot read {topic}: {exc}", "")
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        got = client.receive(remaining)
        if got is not None and got.topic == topic:
            return Check(
                "cloud heartbeat", OK, "edgemeta's heartbeats come back through the bridge"
            )
    return Check(
        "cloud heartbeat",
        WARN,
        f"the bridge says up, but none of edgemeta's heartbeats came back within {wait:g} s: "
        "the link may be dead without the bridge knowing, or the bridge does not carry "
        "the heartbeat",
        "render the bridge from the current template (scripts/render-bridge-conf.sh), "
        "and check the link to the cloud broker",
    )


def _store_checks(config: Config, checks: list[Check]) -> None:
    db = Path(config.database.path)
    journal = db.with_name(db.name + ".journal")
    if not db.exists() and not journal.exists():
        checks.append(
            Check("database", WARN, f"no database at {db} yet", "edgemeta creates it at start")
        )
        return
    try:
        with tempfile.TemporaryDirectory(prefix="edgemeta-doctor-") as tmp:
            storage = open_storage(copy_consistent(db, Path(tmp)), sync=False, lock=False)
            try:
                store = MetaStore(storage)
                records, damaged = len(store), store.recovered_from_damage
            finally:
                storage.journal.close()  # type: ignore[attr-defined]
    except (OSError, EdgemetaError) as exc:
        checks.append(Check("database", FAIL, f"cannot read {db}: {exc}", "check its owner/mode"))
        return
    if damaged:
        checks.append(
            Check(
                "database",
                FAIL,
                f"{db} is damaged (edgemeta recovers what is intact at start)",
                "restore a backup: edgemeta db import",
            )
        )
    else:
        checks.append(Check("database", OK, f"{db}: {records} records"))
    _private(checks, "database folder", str(db.parent), directory=True)


@guarded("doctor")
def run(args: argparse.Namespace) -> int:
    checks: list[Check] = []
    try:
        config = _config_checks(args, checks)
    except ConfigError as exc:
        checks.append(Check("config", FAIL, str(exc), "edgemeta check-config; fix the named key"))
        _show(args, checks)
        return EXIT_USAGE
    topics = tool_topics(config)
    status = link = None
    echo: Check | None = None
    unreachable = False
    try:
        with BrokerClient(
            config.mqtt, name="doctor", client_id=tool_client_id(args), timeout=args.timeout
        ) as client:
            where = f"{config.mqtt.host}:{config.mqtt.port}"
            tls = " over TLS" if config.mqtt.tls.enable else ""
            user = f" as {config.mqtt.username}" if config.mqtt.username else " anonymously"
            checks.append(Check("broker", OK, f"connected to {where}{tls}{user}"))
            marker = tool_topic(config.mqtt, topics.prefix)
            got = client.retained(topics.status, marker, args.timeout)
            status = got.payload.decode("utf-8", "replace") if got and got.payload else ""
            bridge = config.modules.metaManager.bridgeStateTopic
            if bridge:
                marker = tool_topic(config.mqtt, topics.prefix)
                state = client.retained(topics.group(bridge), marker, args.timeout)
                link = state.payload.decode("utf-8", "replace") if state else None
                if link == "1" and status == "online":
                    echo = _heartbeat_check(client, config)
    except BusError as exc:
        checks.append(_broker_check(config, exc))
        unreachable = True
    if not unreachable:
        _status_checks(config, status or "", checks)
        kept = broker_keeps_sessions(config.mqtt, args.timeout)
        if kept:
            checks.append(Check("session", OK, "the broker keeps persistent sessions"))
        else:
            checks.append(
                Check(
                    "session",
                    FAIL,
                    "the broker does not keep a session across a reconnect: messages sent "
                    "while edgemeta restarts are lost",
                    "use the shipped mosquitto/*.conf (persistence, max_queued_messages)",
                )
            )
        checks.append(_cloud_check(config, link))
        if echo is not None:
            checks.append(echo)
    _store_checks(config, checks)
    _show(args, checks)
    if unreachable:
        return EXIT_UNAVAILABLE
    return EXIT_FAIL if any(c.status == FAIL for c in checks) else EXIT_OK


def _show(args: argparse.Namespace, checks: list[Check]) -> None:
    if args.output == "json":
        say(json.dumps([asdict(c) for c in checks], ensure_ascii=False))
        return
    width = max(len(c.check) for c in checks)
    for c in checks:
        say(f"{c.status:<4}  {c.check:<{width}}  {c.detail}")
        if c.fix:
            say(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    say(f"{failed} problem(s), {warned} warning(s)")
