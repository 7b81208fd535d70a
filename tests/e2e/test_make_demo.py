"""`make demo` as the README and docs/toolbox.md tell: a private broker beside a
busy port, edgemeta and the simulators, their traffic on screen; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tests.support.broker import REPO_ROOT, free_port

DEADLINE = 60.0


def processes_with(env_entry: bytes) -> set[int]:
    """The processes whose environment holds ``env_entry`` (``NAME=value``)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if env_entry in environ.split(b"\0"):
            found.add(int(entry.name))
    return found


class Terminal:
    """A pseudo-terminal: what a command run in it prints, and a Ctrl-C key."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self._output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return  # every process holding the slave side is gone
            if not data:
                return
            with self._changed:
                self._output += data
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._output.decode("utf-8", "replace")

    def wait_for(self, shown: Callable[[str], bool], timeout: float) -> bool:
        """Whether the screen came to show what ``shown`` looks for within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(
                lambda: shown(self._output.decode("utf-8", "replace")), timeout
            )

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(5)
        os.close(self.master)


def test_make_demo_shows_the_traffic_and_stops_everything_on_ctrl_c() -> None:
    port = free_port()
    marker = f"EDGEMETA_MQTT_PORT={port}".encode()
    env = dict(os.environ, EDGEMETA_MQTT_PORT=str(port), NO_COLOR="1", TERM="dumb")
    terminal = Terminal()
    # In a terminal of its own (setsid -c): Ctrl-C goes to its foreground job.
    make = subprocess.Popen(
        ["setsid", "-c", "make", "demo"],
        cwd=REPO_ROOT,
        env=env,
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
    )
    try:
        # The watch on screen shows the mirror of what the simulated cloud pushed,
        # then the pod statuses the simulated edged reports every 2 s.
        def shown(text: str) -> bool:
            return (
                "demo: the traffic on" in text
                and "beehive/state/default/pod/nginx" in text
                and " update " in text
            )

        assert terminal.wait_for(shown, DEADLINE), f"exit {make.poll()}\n{terminal.text}"
        text = terminal.text
        assert f"demo: started mosquitto on 127.0.0.1:{port}" in text, text
        assert "demo: edgemeta online" in text, text
        # mosquitto, edgemeta, three simulators and the watch at least
        assert len(processes_with(marker)) >= 6, text
        terminal.ctrl_c()
        status = make.wait(30)
    finally:
        if make.poll() is None:
            make.kill()
            make.wait(10)
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        terminal.close()
    text = terminal.text
    for name in ("sim device", "sim cloud", "sim edged", "edgemeta", "mosquitto"):
        assert f"demo: stopping {name}" in text, text
    assert status == 0, text
    assert processes_with(marker) == set(), text
