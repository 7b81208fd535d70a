"""Command line: ``edgemeta run --config FILE``. Logging is configured only here."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from . import __version__
from .config import CONFIG_ENV, CONFIG_SEARCH, find_config, load_config
from .errors import BusError, ConfigError, StoreError

EXIT_USAGE = 2

DESCRIPTION = """\
edgemeta keeps an edge node's pods, configmaps, secrets, services, endpoints
and pod statuses in a local store and routes every change between the cloud
(hub), edged, edgemesh and edge functions over MQTT topics <prefix>/<group>.
Watch its traffic with:  edgemeta watch   (the toolbox: edgemeta COMMAND --help)
"""

EPILOG = f"""\
Configuration: -c FILE (before or after the command), else ${CONFIG_ENV}, else
the first of {", ".join(CONFIG_SEARCH)} that exists.

Exit status, the same for every command:
  0    success
  1    failure: an error answer, not found, not online, a doctor check
       failed, the database in use (run: the broker refused edgemeta)
  2    bad arguments or configuration (run: also an unusable database)
  3    the MQTT broker is unreachable, or no answer in time
  130  interrupted (Ctrl-C)
"""

RUN_EPILOG = """\
Runs until SIGINT or SIGTERM; then finishes the messages already received,
answers pending remote queries with an error, closes the store, publishes
'offline' on <prefix>/meta/status and exits 0.
Environment overrides: EDGEMETA_MQTT_HOST, EDGEMETA_MQTT_PORT, EDGEMETA_DB_PATH.
Exit status: 0 after a clean stop, 1 when the broker refuses edgemeta,
2 for a bad configuration or an unusable database.
"""


def build_parser() -> argparse.ArgumentParser:
    # Imported here: ``run`` catches SIGTERM before the toolbox's imports are read.
    from .commands import completion, keygen
    from .commands import register as register_commands
    from .commands.common import CONFIG_HELP

    parser = argparse.ArgumentParser(
        prog="edgemeta",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"edgemeta {__version__}")
    parser.add_argument("-c", "--config", default=None, metavar="FILE", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the metadata manager",
        description="Run the metadata manager against the configured MQTT broker.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="FILE", help=CONFIG_HELP)
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    run.add_argument(
        "--log-format",
        default="human",
        choices=["human", "json"],
        help="log lines for people (default) or JSON lines for a log collector",
    )
    register_commands(commands)
    keygen.register(commands)
    completion.register(commands, parser)
    return parser


class StopSignals:
    """SIGTERM and SIGINT set ``stop`` (and wake the service), from the start of ``run`` on.

    Installed before the slow part of start-up (imports, opening a large
    store), so a stop requested then still ends in a clean stop.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.wake: list[object] = []

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        for service in self.wake:
            service.wake()  # type: ignore[attr-defined]


def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    from .commands.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        path = find_config(args.config)
        if path is None:
            raise ConfigError(
                f"no configuration file: give -c FILE or ${CONFIG_ENV}, or create one of "
                + ", ".join(CONFIG_SEARCH)
            )
        config = load_config(path)
    except ConfigError as exc:
        print(f"edgemeta: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .service import Service

    try:
        service = Service(config)
    except (StoreError, BusError) as exc:
        print(f"edgemeta: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signals.wake.append(service)
    status = service.run(signals.stop)
    if status == 1 and service.bus.fatal:
        print(f"edgemeta: {service.bus.fatal}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    signals = StopSignals()
    if "run" in words:
        signals.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args, signals)
    if "run" in words:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    handler = getattr(args, "handler", None)
    if handler is not None:
        # Tools log progress and problems to stderr; their results go to stdout.
        logging.basicConfig(level=logging.INFO, format="edgemeta: %(message)s", stream=sys.stderr)
        status: int = handler(args)
        return status
    parser.print_help()
    return EXIT_USAGE
