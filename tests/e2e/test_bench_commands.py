"""The measuring commands the README names still run: `make chaos` (a short
stream) and the mirror's reconcile benchmark (small sizes)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.broker import REPO_ROOT


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
