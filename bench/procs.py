"""The processes a benchmark run starts: edgemeta, the echo baseline, the load generator."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.broker import REPO_ROOT, BenchBroker
from bench.mqttwire import wait_for_payload

START_TIMEOUT = 20.0
SETTLE_S = 0.5


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMETA_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (psutil, else /proc)."""
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except ImportError:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Forwarder:
    """A process under test: something that forwards <prefix>/meta to <prefix>/hub."""

    name = "?"
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Echo(Forwarder):
    name = "echo"

    def __init__(self, broker: BenchBroker, prefix: str, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "echo.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.echo",
                    "--port",
                    str(broker.port),
                    "--prefix",
                    prefix,
                ],
                cwd=REPO_ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"READY":
            self.stop()
            raise RuntimeError(f"echo did not start: {line!r}\n{self.log_path.read_text()}")


class Edgemeta(Forwarder):
    """``python -m edgemeta run --config FILE`` with fsync on, its own database and prefix."""

    name = "edgemeta"

    def __init__(
        self,
        broker: BenchBroker,
        prefix: str,
        work: Path,
        *,
        fsync: bool = True,
        patches: str = "",
        mirror: bool = True,
    ) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.db_path = work / "edgemeta.json"
        self.journal_path = work / "edgemeta.json.journal"
        self.log_path = work / "edgemeta.log"
        config = {
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "topicPrefix": prefix,
                "clientId": "edgemeta-" + prefix.replace("/", "-"),
            },
            "database": {"path": str(self.db_path), "fsync": fsync},
            # The periodic pod status sync is not part of the load.
            "modules": {"metaManager": {"podStatusSyncInterval": 3600}},
            "mirror": {"enable": mirror},
        }
        config_path = work / "edge.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        with self.log_path.open("wb") as log:
            module = ["bench.whatif", "--patch", patches] if patches else ["edgemeta"]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *module, "run", "--config", str(config_path)],
                cwd=work,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        status = f"{prefix}/meta/status"
        online = wait_for_payload(
            broker.host, broker.port, status, b"online", START_TIMEOUT, f"wait-{os.getpid()}"
        )
        if not online or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"edgemeta did not come online:\n{self.log_path.read_text()}")
        # Keep start-up (outbox replay, first loop turns) out of the measurement;
        # trees before 7f96cf6 also crashed when load arrived in that turn.
        time.sleep(SETTLE_S)

    def batch_sizes(self) -> list[int]:
        """Messages per commit, from the journal's processed-msg_id records (one per commit)."""
        return journal_batches(self.journal_path)


def journal_batches(path: Path) -> list[int]:
    """Sizes of the ``["s", [msg_ids]]`` records: one per committed batch of messages.

    A journal folded into a snapshot restarts with one record of the whole
    duplicate window; records longer than any batch can be are skipped.
    """
    sizes: list[int] = []
    try:
        with path.open("rb") as journal:
            for line in journal:
                if line[9:14] != b'["s",':
                    continue
                record = json.loads(line[9:])
                if len(record[1]) <= 4096:
                    sizes.append(len(record[1]))
    except (OSError, ValueError, IndexError):
        return sizes
    return sizes


def batch_summary(sizes: list[int]) -> dict[str, Any]:
    if not sizes:
        return {"commits": 0}
    ordered = sorted(sizes)
    return {
        "commits": len(sizes),
        "messages": sum(sizes),
        "mean": statistics.fmean(sizes),
        "p50": ordered[len(ordered) // 2],
        "p90": ordered[int(len(ordered) * 0.9)],
        "max": ordered[-1],
    }


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class QuietWaiter:
    """Waits, within a total budget, until the rest of the machine is nearly idle.

    The machine may be shared (other people's test runs); a measurement taken
    while a neighbour burns a core says little. What each measurement still
    got is recorded as ``other_cores``.
    """

    def __init__(self, threshold: float = 0.3, budget: float = 60.0) -> None:
        self.threshold = threshold
        self.budget = budget
        self.waited = 0.0

    def wait(self, max_wait: float = 15.0) -> float:
        waited = 0.0
        while self.budget > 0 and waited < max_wait:
            before = busy_cpu_seconds()
            if before is None:
                return waited
            time.sleep(0.5)
            after = busy_cpu_seconds()
            assert after is not None
            if (after - before) / 0.5 <= self.threshold:
                break
            waited += 0.5
            self.budget -= 0.5
        self.waited += waited
        return waited


def run_loadgen(broker: BenchBroker, prefix: str, *args: str, timeout: float = 120) -> Any:
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(broker.port), "--prefix", prefix]
    done = subprocess.run(
        [*cmd, *args], cwd=REPO_ROOT, env=child_env(), capture_output=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


def measure(
    broker: BenchBroker,
    prefix: str,
    forwarder: Forwarder | None,
    *args: str,
    quiet: QuietWaiter | None = None,
) -> dict[str, Any]:
    """One load generator run, with the CPU time the forwarder and the broker spent meanwhile."""
    waited = quiet.wait() if quiet is not None else 0.0
    pids = {"broker": broker.pid}
    if forwarder is not None:
        pids[forwarder.name] = forwarder.pid
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy_before = busy_cpu_seconds()
    result: dict[str, Any] = run_loadgen(broker, prefix, *args)
    busy_after = busy_cpu_seconds()
    wall = result["wall_s"]
    outputs = max(1, result["outputs"])
    result["cpu"] = {
        name: {
            "share": (cpu_seconds(pid) - before[name]) / wall,
            "us_per_msg": (cpu_seconds(pid) - before[name]) / outputs * 1e6,
        }
        for name, pid in pids.items()
    }
    result["cpu"]["loadgen"] = {
        "share": result["cpu_share"],
        "us_per_msg": result["cpu_s"] / outputs * 1e6,
    }
    if busy_before is not None and busy_after is not None:
        # Everything else the machine ran meanwhile (other users, the benchmark's own
        # start-up of the load generator), in cores: a noisy neighbour shows up here.
        ours = sum(c["share"] for c in result["cpu"].values())
        result["other_cores"] = max(0.0, (busy_after - busy_before) / wall - ours)
    result["waited_for_quiet_s"] = waited
    return result
