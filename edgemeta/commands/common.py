"""What the commands share: exit codes, parsers, the config file, output helpers, stop signals."""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import CONFIG_ENV, CONFIG_SEARCH, Config, find_config, load_config, parse_config
from ..errors import BusError, ConfigError, StoreError
from ..topics import Topics

EXIT_OK = 0
#: The answer was an error, the service is not online, the database is in use.
EXIT_FAIL = 1
#: Bad arguments or a bad configuration.
EXIT_USAGE = 2
#: No broker, or no answer in time.
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]

EXIT_CODES_EPILOG = """\
Exit status: 0 success, 1 an error answer (or not online, or the database in
use), 2 bad arguments or configuration, 3 broker unreachable or no answer in time.
"""

CONFIG_HELP = (
    f"YAML configuration (default: ${CONFIG_ENV}, else the first of "
    f"{', '.join(CONFIG_SEARCH)} that exists, else the built-in defaults)"
)


class CommandError(Exception):
    """A command cannot go on: ``message`` is printed, ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.status = status


def add_command(
    commands: Any,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """A sub-command whose epilog (examples, exit status) keeps its line breaks."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    return parser


def add_duration_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=0, metavar="SECONDS", help="stop after (0 = never)"
    )


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c/--config`` on a sub-command; the same option before the sub-command is kept
    (argparse would otherwise overwrite it with the sub-command's default)."""
    parser.add_argument(
        "--config", "-c", default=argparse.SUPPRESS, metavar="FILE", help=CONFIG_HELP
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The config option and mosquitto_sub-style connection flags; they override the config.

    As in mosquitto_sub, ``-h`` is the host: help is ``--help`` only.
    """
    add_config_option(parser)
    parser.conflict_handler = "resolve"
    group = parser.add_argument_group("connection (override the config, as mosquitto_sub's)")
    suppress = argparse.SUPPRESS
    group.add_argument("-h", "--host", default=suppress, help="broker host (mqtt.host)")
    group.add_argument(
        "-p", "--port", type=port_number, default=suppress, help="broker port (mqtt.port)"
    )
    group.add_argument("-u", "--username", default=suppress, help="user name (mqtt.username)")
    group.add_argument("-P", "--pw", dest="password", default=suppress, help="password")
    group.add_argument("--cafile", default=suppress, metavar="FILE", help="CA file; turns on TLS")
    group.add_argument("--cert", default=suppress, metavar="FILE", help="client certificate")
    group.add_argument("--key", default=suppress, metavar="FILE", help="client key")
    group.add_argument(
        "-i", "--id", dest="client_id", default=suppress, help="this tool's MQTT client id"
    )
    group.add_argument(
        "--prefix", default=suppress, metavar="PREFIX", help="topic prefix (mqtt.topicPrefix)"
    )


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 65535")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type for a wait: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file of a command: -c, $EDGEMETA_CONFIG, ./conf/edge.yaml, /etc/edgemeta."""
    return find_config(getattr(args, "config", None))


def tool_config(args: argparse.Namespace) -> Config:
    """The config a tool uses: the file found (``config_path``), else the built-in defaults,
    with the connection flags on top.

    Environment overrides (EDGEMETA_MQTT_HOST, ...) apply in every case.
    """
    path = config_path(args)
    config = parse_config("", source="built-in defaults") if path is None else load_config(path)
    mqtt = config.mqtt
    changes = {
        name: getattr(args, flag)
        for flag, name in (
            ("host", "host"),
            ("port", "port"),
            ("username", "username"),
            ("password", "password"),
            ("prefix", "topicPrefix"),
        )
        if getattr(args, flag, None) is not None
    }
    tls = mqtt.tls
    for flag, name in (("cafile", "caFile"), ("cert", "certFile"), ("key", "keyFile")):
        value = getattr(args, flag, None)
        if value is not None:
            tls = replace(tls, enable=True, **{name: value})
    if changes or tls is not mqtt.tls:
        prefix = changes.get("topicPrefix")
        if prefix is not None and (not prefix or "" in prefix.split("/") or "#" in prefix):
            raise CommandError(f"--prefix {prefix!r} is not a topic prefix", EXIT_USAGE)
        config = replace(config, mqtt=replace(mqtt, tls=tls, **changes))
    return config


def tool_client_id(args: argparse.Namespace) -> str | None:
    """The tool's own client id when -i gives one (None: a fresh edgemeta-<tool>-<uuid>)."""
    value = getattr(args, "client_id", None)
    return str(value) if value else None


def tool_topics(config: Config) -> Topics:
    """The topics of the config's prefix, the cloud's messages in its contextSendGroup."""
    return Topics(config.mqtt.topicPrefix, config.modules.metaManager.contextSendGroup)


def guarded(name: str) -> Callable[[Handler], Handler]:
    """Turn the errors a command may meet into a message on stderr and an exit status."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except CommandError as exc:
                print(f"edgemeta {name}: {exc}", file=sys.stderr)
                return exc.status
            except ConfigError as exc:
                print(f"edgemeta {name}: configuration error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except BusError as exc:
                print(f"edgemeta {name}: {exc}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            except StoreError as exc:
                print(f"edgemeta {name}: {exc}", file=sys.stderr)
                return EXIT_FAIL
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                # `edgemeta db export | head`: the reader left; that is not an error.
                sys.stderr.close()
                return EXIT_OK

        return run

    return wrap


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (long-running commands stop cleanly on either)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


class Lifetime:
    """How long a long-running command runs: until SIGINT or SIGTERM, or ``duration`` seconds.

    A ``duration`` of 0 sets no limit.
    """

    def __init__(self, duration: float = 0) -> None:
        self.started = time.monotonic()
        self._deadline = self.started + duration if duration > 0 else None
        self._stop = stop_on_signals()

    def over(self) -> bool:
        if self._stop.is_set():
            return True
        return self._deadline is not None and time.monotonic() >= self._deadline


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def say(text: str) -> None:
    """A line on stdout, flushed at once (pipes and tests read it as it comes)."""
    print(text, flush=True)


def note(text: str) -> None:
    """A line on stderr, flushed at once."""
    print(text, file=sys.stderr, flush=True)
