"""``edgemeta check-config FILE`` and ``edgemeta print-config``."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Any

from ..config import load_config
from ..errors import ConfigError
from .common import EXIT_OK, EXIT_USAGE, note, say

DEFAULT_RESOURCE = "default.yaml"


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
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=run_check)
    show = commands.add_parser(
        "print-config",
        help="print the commented default configuration",
        description="Print the default configuration, every key with its comment; "
        "a starting point:  edgemeta print-config > /etc/edgemeta/edge.yaml",
    )
    show.set_defaults(handler=run_print)


def run_check(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as exc:
        note(f"edgemeta check-config: {exc}")
        return EXIT_USAGE
    say("OK")
    return EXIT_OK


def run_print(args: argparse.Namespace) -> int:
    sys.stdout.write(default_config_text())
    sys.stdout.flush()
    return EXIT_OK
