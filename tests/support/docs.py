"""What the tests of documented steps share: finding a command in a doc, Debian's stock broker."""

from __future__ import annotations

import os
from pathlib import Path

#: Debian 12's /etc/mosquitto/mosquitto.conf (package mosquitto 2.0.11), as shipped.
DEBIAN_STOCK_CONF = """\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""


def documented_command(path: Path, starts: str) -> str:
    """The first command line in `path` (markdown or a config's comments) starting with `starts`."""
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if text.startswith(starts):
            command = text
            break
    else:
        raise AssertionError(f"{path.name} no longer documents `{starts} ...`")
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.lstrip("# ").strip() == command)
    while command.endswith("\\"):
        index += 1
        command = command[:-1] + lines[index].lstrip("# ").strip()
    return command


def stock_debian_broker(tmp: Path) -> tuple[Path, Path]:
    """Debian's stock mosquitto.conf pointed at `tmp`: (its path, its conf.d folder)."""
    conf_d = tmp / "conf.d"
    conf_d.mkdir(parents=True)
    (tmp / "data").mkdir()
    text = DEBIAN_STOCK_CONF
    text = text.replace("/run/mosquitto/mosquitto.pid", str(tmp / "mosquitto.pid"))
    text = text.replace("/var/lib/mosquitto/", f"{tmp}/data/")
    text = text.replace("/var/log/mosquitto/mosquitto.log", str(tmp / "mosquitto.log"))
    text = text.replace("/etc/mosquitto/conf.d", str(conf_d))
    if os.geteuid() == 0:
        # The packaged service also starts as root and becomes `mosquitto`;
        # that user cannot write the test's private temp folder.
        text += "user root\n"
    conf = tmp / "mosquitto.conf"
    conf.write_text(text)
    return conf, conf_d
