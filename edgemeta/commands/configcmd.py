"""``edgemeta check-config FILE`` and ``edgemeta print-config``."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Any

from ..config import find_config, load_config
from ..errors import ConfigError
from .common import EXIT_OK, EXIT_USAGE, note, say

DEFAULT_RESOURCE = "default.yaml"

MINIMAL_CONFIG = """\
# edgemeta: the keys a node usually sets; every other key takes its default
# (`edgemeta print-config` shows them all, with their comments).
mqtt:
  host: 127.0.0.1
  port: 1883
  topicPrefix: beehive     # one prefix per edge node on a shared broker
database:
  path: data/edgemeta.json
"""


def default_config_text() -> str:
    """The commented default configuration shipped in the package (conf/edge.yaml)."""
    return (resources.files("edgemeta") / DEFAULT_RESOURCE).read_text(encoding="utf-8")


def register(commands: Any) -> None:
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Validate FILE as `edgemeta run --config FILE` would, environment "
        "overrides (EDGEMETA_MQTT_HOST, ...) included.",
        epilog="Exit status: 0 valid (prints OK), 2 invalid (prints the error).",
    )
    check.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="default: the file every command uses (-c, $EDGEMETA_CONFIG, ./conf/edge.yaml, "
        "/etc/edgemeta/edge.yaml)",
    )
    check.set_defaults(handler=run_check)
    show = commands.add_parser(
        "print-config",
        help="print the commented default configuration (--minimal: the usual keys)",
        description="Print the default configuration, every key with its comment; "
        "a starting point:  edgemeta print-config > /etc/edgemeta/edge.yaml",
    )
    show.add_argument(
        "--minimal",
        action="store_true",
        help="only the keys a node usually sets (as edgecore --minconfig)",
    )
    show.set_defaults(handler=run_print)


def run_check(args: argparse.Namespace) -> int:
    path = find_config(args.file or getattr(args, "config", None))
    if path is None:
        note("edgemeta check-config: no configuration file found; name one")
        return EXIT_USAGE
    try:
        load_config(path)
    except ConfigError as exc:
        note(f"edgemeta check-config: {exc}")
        return EXIT_USAGE
    say("OK")
    return EXIT_OK


def run_print(args: argparse.Namespace) -> int:
    sys.stdout.write(MINIMAL_CONFIG if args.minimal else default_config_text())
    sys.stdout.flush()
    return EXIT_OK
