"""The measuring commands the README and docs name still run: `make chaos` (a
short stream), the mirror's reconcile benchmark and the fleet benchmark (small
sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import REPO_ROOT
from tests.support.nats import find_nats_server


def run(command: list[str], timeout: float) -> str:
    """Run ``command`` in the repository; its output, once it has exited 0."""
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def test_make_chaos_runs_a_short_stream_with_faults_and_finds_nothing_wrong() -> None:
    out = run(
        ["make", "chaos", "CHAOS_ARGS=--seconds 10 --rate 300 --keys 200 --seed 2 --every 2 3"],
        timeout=240,
    )
    assert "chaos: OK (lost 0, applied twice 0, stale 0)" in out, out
    # The faults happened (the seed draws both kinds): without them it proves nothing.
    counts = {
        " ".join(line.split()[:-1]): int(line.split()[-1])
        for line in out.splitlines()
        if line.strip().startswith(("kill -9", "broker restarts"))
    }
    assert counts["kill -9"] >= 1 and counts["broker restarts"] >= 1, out


def test_the_reconcile_benchmark_reports_cold_and_warm_starts() -> None:
    out = run([sys.executable, "-m", "bench.mirror", "--sizes", "300"], timeout=120)
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("300 ")]
    assert [(r[1], " ".join(r[3:])) for r in rows] == [
        ("cold", "0 retained, 0 cleared, 300 published"),
        ("warm", "300 retained, 0 cleared, 0 published"),
    ], out


@pytest.mark.skipif(find_nats_server() is None, reason="nats-server is not installed")
def test_the_fleet_benchmark_survives_a_silent_outage(tmp_path: Path) -> None:
    """docs/scaling.md's `bench.fleet --silent`, small: the heartbeat notices, one sync
    per node per namespace follows. Run in a temp folder: its results land there."""
    command = [sys.executable, "-m", "bench.fleet", "--nodes", "2", "--pods", "4"]
    command += ["--change-every", "1", "--steady", "2", "--outage", "8", "--quiet", "2"]
    command += ["--silent", "--timeout", "150"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "bench/results/fleet-2-silent.json").read_text())
    assert result["all_bridges_down_after_s"] is None
    assert result["all_edgemeta_disconnected_after_s"] <= 6 + 2 + 1  # timeout, interval, stats
    assert result["distinct_node_namespace_syncs"] == result["expected_syncs"] == 4
    assert result["other_messages_after_outage"] == 0
