"""The operator's toolbox: one module per command; ``register`` adds them to the CLI.

Every command reads the same config file as ``edgemeta run`` for its broker
settings and returns its exit status (see ``common``).
"""

from __future__ import annotations

import argparse
from typing import Any

from . import configcmd, db, doctor, health, query, send, sim_cloud, sim_device, sim_edged, watch
from .common import add_command

SIM_EPILOG = """\
A scripted scenario on one broker (each in its own terminal):
  edgemeta run
  edgemeta sim cloud --objects examples/objects --push
  edgemeta sim edged --rate 1
  edgemeta sim device --count 3 --rate 0.5
  edgemeta watch
`make demo` starts all of these (and a broker when none is up).
"""


def register(commands: Any) -> None:
    """Add every toolbox command to the ``edgemeta`` sub-command parser."""
    for module in (send, query, watch, db, health, doctor, configcmd):
        module.register(commands)
    sim = add_command(
        commands,
        "sim",
        help="simulate the cloud, edged or devices around edgemeta",
        description="Simulators that talk to edgemeta over the broker.",
        epilog=SIM_EPILOG,
    )
    sims = sim.add_subparsers(dest="sim", metavar="WHAT")
    for module in (sim_cloud, sim_edged, sim_device):
        module.register(sims)

    def usage(args: argparse.Namespace) -> int:
        sim.print_help()
        return 2

    sim.set_defaults(handler=usage)
