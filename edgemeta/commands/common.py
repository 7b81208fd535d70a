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
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import DEFAULT_CONFIG_PATH, Config, load_config, parse_config
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
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE",
        help=f"YAML configuration for the broker settings (default: {DEFAULT_CONFIG_PATH}; "
        "built-in defaults when that file does not exist)",
    )


def tool_config(path: str | None) -> Config:
    """The config a tool uses: the named file, else the default file, else the defaults.

    Environment overrides (EDGEMETA_MQTT_HOST, ...) apply in every case.
    """
    if path is None:
        if not Path(DEFAULT_CONFIG_PATH).exists():
            return parse_config("", source="built-in defaults")
        path = DEFAULT_CONFIG_PATH
    return load_config(path)


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
