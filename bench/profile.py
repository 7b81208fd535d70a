"""Profile edgemeta under the throughput load: py-spy samples, fdatasync count, batch sizes.

    python -m bench.profile [--seconds 15] [--out bench/results]

Starts mosquitto and edgemeta (fsync on) as `bench.run` does, drives the
windowed load, and meanwhile

1. samples edgemeta with ``py-spy record`` (collapsed stacks, ``--threads``)
   and summarises them: share of samples per thread, and per function the
   self share (the frame on top) and the inclusive share (anywhere on the
   stack), within the main (worker) thread and overall;
2. in a second load period, counts edgemeta's syscalls with ``strace -c -f``
   (fdatasync, write, sendto, recvfrom ...);
3. reads the batch sizes from the journal (one processed-msg_id record per
   commit) and sets them against the fdatasync count.

Writes ``profile.txt`` (raw stacks), ``profile.svg`` (flame graph),
``profile.json`` (the summary) and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.broker import REPO_ROOT, BenchBroker
from bench.procs import Edgemeta, batch_summary, measure

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarise(raw: str, top: int = 25) -> dict[str, Any]:
    """Thread shares and top functions (self / inclusive) of py-spy's collapsed stacks."""
    threads: Counter[str] = Counter()
    self_all: Counter[str] = Counter()
    incl_all: Counter[str] = Counter()
    self_main: Counter[str] = Counter()
    incl_main: Counter[str] = Counter()
    lines_main: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        if thread.startswith("thread ("):
            frames = frames[1:]
            name = thread.split(": ", 1)[1] if ": " in thread else thread
        else:
            name = "?"
        if not frames:
            continue
        total += count
        threads[name] += count
        names = [_frame_name(f) for f in frames]
        self_all[names[-1]] += count
        for fn in set(names):
            incl_all[fn] += count
        if name == "MainThread":
            self_main[names[-1]] += count
            lines_main[frames[-1]] += count
            for fn in set(names):
                incl_main[fn] += count
    main_total = threads.get("MainThread", 0)

    def table(counter: Counter[str], denom: int) -> list[tuple[str, float]]:
        return [(fn, 100.0 * n / denom) for fn, n in counter.most_common(top)] if denom else []

    return {
        "samples": total,
        "threads_pct": {t: 100.0 * n / total for t, n in threads.most_common()} if total else {},
        "main_self_pct": table(self_main, main_total),
        "main_inclusive_pct": table(incl_main, main_total),
        "main_hot_lines_pct": table(lines_main, main_total),
        "all_self_pct": table(self_all, total),
        "all_inclusive_pct": table(incl_all, total),
    }


def grouped(summary: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, float]:
    """Inclusive share (all threads) of named groups of functions, by substring."""
    incl = dict(summary["all_inclusive_pct_full"])
    return {
        label: max((pct for fn, pct in incl.items() if any(p in fn for p in pats)), default=0.0)
        for label, pats in groups.items()
    }


def strace_counts(pid: int, seconds: float) -> dict[str, Any]:
    tool = shutil.which("strace")
    if tool is None:
        return {"error": "strace not installed"}
    proc = subprocess.Popen(
        [tool, "-c", "-f", "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(seconds)
    proc.send_signal(2)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    calls: dict[str, int] = {}
    for line in err.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
    return {"calls": calls, "text": err}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="sampled seconds of load")
    parser.add_argument("--strace-seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--no-mirror", action="store_true", help="edgemeta with mirror.enable: false"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    spy = py_spy()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgemeta-profile-") as tmp:
        work = Path(tmp)
        with BenchBroker(work / "broker") as broker:
            prefix = "bench/profile"
            with Edgemeta(broker, prefix, work / "edgemeta", mirror=not args.no_mirror) as edge:
                raw_path = args.out / "profile.txt"
                load = ["--window", str(args.window), "--answers", "--warmup", "0.5"]
                sampler = subprocess.Popen(
                    [
                        *(spy, "record", "--pid", str(edge.pid), "--rate", str(args.rate)),
                        *("--duration", str(int(args.seconds)), "--threads", "--format", "raw"),
                        *("--output", str(raw_path), "--nonblocking"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                time.sleep(0.5)
                run = measure(broker, prefix, edge, *load, "--duration", str(args.seconds))
                sampler.wait(30)
                result["load_sampled"] = {
                    k: run[k] for k in ("throughput", "answer_rate", "sent", "lost", "cpu")
                }
                before = edge.batch_sizes()
                tracer_load = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "bench.loadgen", "--port", str(broker.port)),
                        *("--prefix", prefix, *load, "--duration", str(args.strace_seconds + 2)),
                    ],
                    cwd=REPO_ROOT,
                    stdout=subprocess.PIPE,
                    env=_env(),
                )
                time.sleep(1.0)
                seen_before = len(edge.batch_sizes())
                traced = strace_counts(edge.pid, args.strace_seconds)
                seen_after = edge.batch_sizes()
                out, _ = tracer_load.communicate(timeout=60)
                traced_load = json.loads(out) if out else {}
                window_batches = seen_after[seen_before:]
                result["strace"] = {
                    "seconds": args.strace_seconds,
                    "calls": traced.get("calls", {}),
                    "batches_in_window": batch_summary(window_batches),
                    "throughput_under_strace": traced_load.get("throughput"),
                }
                result["batches_profiled_run"] = batch_summary(before)
                # Flame graph from a short second sampling of the same load.
                svg = args.out / "profile.svg"
                flame = subprocess.Popen(
                    [
                        *(spy, "record", "--pid", str(edge.pid), "--rate", str(args.rate)),
                        *("--duration", "5", "--output", str(svg), "--nonblocking"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                measure(broker, prefix, edge, *load, "--duration", "5")
                flame.wait(30)
        raw = raw_path.read_text() if raw_path.exists() else ""
        summary = summarise(raw)
        summary_full = summarise(raw, top=10_000)
        summary["all_inclusive_pct_full"] = summary_full["all_inclusive_pct"]
        result["profile"] = {k: v for k, v in summary.items() if k != "all_inclusive_pct_full"}
        result["profile"]["groups_inclusive_pct"] = grouped(summary, GROUPS)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    return 0


# Inclusive shares (all threads) worth watching, by function name substring.
GROUPS: dict[str, list[str]] = {
    "Service._process (a whole batch)": ["Service._process "],
    "decode (orjson + validation)": ["decode (edgemeta/message.py)"],
    "handle_update": ["handle_update "],
    "value_text (json.dumps)": ["value_text "],
    "MetaStore.put (TinyDB)": ["MetaStore.put "],
    "MetaStore.get": ["MetaStore.get "],
    "store.commit (write + fdatasync)": ["MetaStore.commit "],
    "Journal.append (orjson + crc32)": ["Journal.append "],
    "Service._publish (paho publish)": ["Service._publish "],
    "MqttBus.ack": ["MqttBus.ack "],
    "paho network thread (loop)": ["MqttBus._loop "],
    "metrics": ["edgemeta/metrics.py"],
}


def _env() -> dict[str, str]:
    from bench.procs import child_env

    return child_env()


def print_summary(result: dict[str, Any]) -> None:
    load = result["load_sampled"]
    print(f"\nthroughput while sampled: {load['throughput']:.0f} msgs/s (lost {load['lost']})")
    cpu = load["cpu"]
    print(
        "CPU share of one core: "
        + ", ".join(f"{name} {100 * c['share']:.0f}%" for name, c in cpu.items())
    )
    prof = result["profile"]
    print(f"\npy-spy: {prof['samples']} samples; by thread:")
    for thread, pct in prof["threads_pct"].items():
        print(f"  {pct:5.1f}%  {thread}")
    print("\ninclusive share of all samples, by area:")
    for label, pct in prof["groups_inclusive_pct"].items():
        print(f"  {pct:5.1f}%  {label}")
    print("\nmain thread, self (top of stack):")
    for fn, pct in prof["main_self_pct"][:20]:
        print(f"  {pct:5.1f}%  {fn}")
    print("\nmain thread, inclusive:")
    for fn, pct in prof["main_inclusive_pct"][:25]:
        print(f"  {pct:5.1f}%  {fn}")
    st = result["strace"]
    print(f"\nstrace -c -f over {st['seconds']:.0f} s of load:")
    for name, count in sorted(st["calls"].items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {count:8d}  {name}")
    print(f"  batches (journal) in that window: {st['batches_in_window']}")
    print(f"\nbatch sizes, sampled run: {result['batches_profiled_run']}")


if __name__ == "__main__":
    sys.exit(main())
