"""edgemeta run as a user runs it: `python -m edgemeta run --config FILE`."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import cli_env, command
from tests.support.mqtt import MqttProbe
from tests.support.process import LoggedProcess

START_TIMEOUT = 15.0


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, nested mappings key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def client_id_for(prefix: str) -> str:
    """SPEC §5 default client id for a topic prefix."""
    return "edgemeta-" + prefix.replace("/", "-")


class EdgemetaProcess(LoggedProcess):
    """One edgemeta process with its own config, database and log in `tmp_dir`.

    `start()` may be called again after `stop()`/`kill()`: same config, same
    database, same client id (so the broker keeps its session), log appended.
    After `kill()` the broker's Last Will says `offline`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tmp_dir: Path,
        prefix: str = "beehive",
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.tmp_dir / "edgemeta.log")
        self.config_path = self.tmp_dir / "edge.yaml"
        defaults: dict[str, Any] = {
            "mqtt": {"host": host, "port": port, "topicPrefix": prefix},
            "database": {"path": str(self.tmp_dir / "edgemeta.json")},
        }
        self.config = merge(defaults, overrides or {})
        mqtt = self.config["mqtt"]
        self.prefix: str = mqtt["topicPrefix"]
        # Written out, unique per prefix, so runs on one broker never share a session.
        mqtt.setdefault("clientId", client_id_for(self.prefix))
        self.client_id: str = mqtt["clientId"] or client_id_for(self.prefix)
        self.db_path = self.tmp_dir / self.config["database"]["path"]
        self.status_topic = f"{self.prefix}/meta/status"
        self.env = dict(env or {})
        self._status_probe: MqttProbe | None = None
        self.write_config()

    def write_config(self) -> None:
        """(Re)write the YAML config from `self.config`."""
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def command(self) -> list[str]:
        return command("run", "--config", str(self.config_path))

    def _probe(self) -> MqttProbe:
        if self._status_probe is None:
            self._status_probe = MqttProbe(self.host, self.port)
        return self._status_probe

    def start(self, wait_online: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Spawn the process; by default return once it has published a fresh `online`."""
        if self.is_running():
            raise RuntimeError(f"edgemeta (pid {self.pid}) is already running")
        probe: MqttProbe | None = None
        if wait_online:
            probe = self._probe()
            # The status is retained: clear a previous run's `online` first,
            # then subscribe, so only this run's status can arrive.
            probe.publish(self.status_topic, b"", qos=1, retain=True)
            probe.subscribe(self.status_topic, qos=1)
            probe.drain()
        self._spawn(self.command(), cwd=self.tmp_dir, env=cli_env(self.env))
        if probe is not None:
            self._wait_status(probe, b"online", timeout)

    def _wait_status(self, probe: MqttProbe, status: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe.expect(self.status_topic, lambda r: r.payload == status, timeout=0.2)
                return
            except AssertionError:
                pass
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"edgemeta exited with {self._proc.returncode} before publishing "
                    f"{status.decode()!r} on {self.status_topic}\n{self.log_text()}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"edgemeta did not publish {status.decode()!r} on {self.status_topic} "
                    f"within {timeout} s\n{self.log_text()}"
                )

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for the process to exit by itself; return its exit code."""
        if self._proc is None:
            raise RuntimeError("edgemeta was never started")
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"edgemeta still running after {timeout} s\n{self.log_text()}"
            ) from None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code (SIGKILL and raise on timeout)."""
        status = self._terminate(timeout, f"edgemeta did not exit within {timeout} s of SIGTERM")
        if status is None:
            raise RuntimeError("edgemeta was never started")
        return status

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def close(self) -> None:
        """Stop the process if it still runs, and the status probe.

        A process that ignores SIGTERM is killed and reported (RuntimeError).
        """
        try:
            if self.is_running():
                self.stop()
        finally:
            if self._status_probe is not None:
                self._status_probe.close()
                self._status_probe = None

    def __repr__(self) -> str:
        return f"EdgemetaProcess(pid={self.pid}, prefix={self.prefix}, {self.tmp_dir})"
