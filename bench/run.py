"""`make bench`: edgemeta against a bare paho forwarder, and the durable store's costs.

    python -m bench.run [--runs 3] [--quick] [--only mqtt|store] [--out bench/results]

In one run it starts its own mosquitto (the shipped mosquitto/mosquitto.conf
on a free loopback port, persistence in a temp dir) and, per round:

1. throughput at QoS 1, end to end, with the same load generator for every
   subject: its own ceiling (publishing straight to <prefix>/hub), the echo
   baseline (bench/echo.py) and edgemeta (fsync on) handling pod status
   updates from edged (~1 KB, a new pod each time);
2. latency at a steady rate (default 500 msgs/s) for echo and edgemeta;
3. the durable store: put+commit cost at 1k, 10k and 100k records, open
   time and RSS, stock TinyDB at 1k for comparison.

Medians over the rounds are reported; the edgemeta/echo ratio is taken per
round and its median reported. Writes bench/results/latest.json (and a
timestamped copy) and bench/results/latest.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.broker import REPO_ROOT, BenchBroker
from bench.procs import Echo, Edgemeta, QuietWaiter, batch_summary, child_env, measure
from bench.report import chart, table

STORE_SIZES = (1_000, 10_000, 100_000)


def stat(values: list[float | None]) -> dict[str, Any] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "runs": present,
    }


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edgemeta"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "git unknown"
    return f"git {head}{' + uncommitted edgemeta/ changes' if dirty else ''}"


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount = parts[1]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- MQTT -----------------------------------------------------------------
def mqtt_round(
    broker: BenchBroker, work: Path, n: int, cfg: dict[str, Any], tag: str, quiet: QuietWaiter
) -> dict[str, Any]:
    base = ["--window", str(cfg["window"]), "--size", str(cfg["size"])]
    base += ["--warmup", str(cfg["warmup"])]
    tp = [*base, "--duration", str(cfg["duration"])]
    lat = [*base, "--mode", "rate", "--rate", str(cfg["rate"])]
    lat += ["--duration", str(cfg["latency_duration"])]
    out: dict[str, Any] = {}

    prefix = f"bench/{tag}/{n}/ceiling"
    out["ceiling"] = measure(
        broker, prefix, None, *tp, "--target", "hub", "--tag", f"{tag}c{n}", quiet=quiet
    )
    log(f"  round {n}: load generator ceiling {out['ceiling']['throughput']:,.0f} msgs/s")
    out["ceiling_latency"] = measure(
        broker, prefix + "-lat", None, *lat, "--target", "hub", "--tag", f"{tag}cl{n}", quiet=quiet
    )

    prefix = f"bench/{tag}/{n}/echo"
    with Echo(broker, prefix, work / f"echo-{n}") as echo:
        out["echo"] = measure(broker, prefix, echo, *tp, "--tag", f"{tag}e{n}", quiet=quiet)
    log(f"  round {n}: echo {out['echo']['throughput']:,.0f} msgs/s")

    prefix = f"bench/{tag}/{n}/edgemeta"
    with Edgemeta(broker, prefix, work / f"edgemeta-{n}", mirror=cfg["mirror"]) as edge:
        out["edgemeta"] = measure(
            broker, prefix, edge, *tp, "--answers", "--tag", f"{tag}m{n}", quiet=quiet
        )
        out["edgemeta"]["batches"] = batch_summary(edge.batch_sizes())
    log(f"  round {n}: edgemeta {out['edgemeta']['throughput']:,.0f} msgs/s")

    prefix = f"bench/{tag}/{n}/echo-lat"
    with Echo(broker, prefix, work / f"echo-lat-{n}") as echo:
        out["echo_latency"] = measure(
            broker, prefix, echo, *lat, "--tag", f"{tag}el{n}", quiet=quiet
        )
    prefix = f"bench/{tag}/{n}/edgemeta-lat"
    with Edgemeta(broker, prefix, work / f"edgemeta-lat-{n}", mirror=cfg["mirror"]) as edge:
        out["edgemeta_latency"] = measure(
            broker, prefix, edge, *lat, "--answers", "--tag", f"{tag}ml{n}", quiet=quiet
        )
        out["edgemeta_latency"]["batches"] = batch_summary(edge.batch_sizes())
    log(
        f"  round {n}: latency p99 echo {out['echo_latency']['latency_ms']['p99']:.2f} ms, "
        f"edgemeta {out['edgemeta_latency']['latency_ms']['p99']:.2f} ms"
    )
    out["ratio"] = out["edgemeta"]["throughput"] / out["echo"]["throughput"]
    return out


def summarise_mqtt(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    subjects = ("ceiling", "echo", "edgemeta")

    def pick(key: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
        return stat([fn(r[key]) for r in rounds])

    def median_of(key: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        s = pick(key, fn)
        return None if s is None else s["median"]

    cpu_us: dict[str, dict[str, Any]] = {"loadgen": {}, "broker": {}, "echo": {}, "edgemeta": {}}
    cpu_share: dict[str, dict[str, Any]] = {k: {} for k in cpu_us}
    for subject in subjects:
        for who in cpu_us:
            if who not in rounds[0][subject]["cpu"]:
                continue
            cpu_us[who][subject] = median_of(subject, lambda r, w=who: r["cpu"][w]["us_per_msg"])
            cpu_share[who][subject] = median_of(subject, lambda r, w=who: r["cpu"][w]["share"])
    latency = {
        name: {
            q: pick(f"{name}_latency", lambda r, q=q: r["latency_ms"][q])
            for q in ("p50", "p90", "p99", "max")
        }
        for name in subjects
    }
    all_batches = [r["edgemeta"]["batches"] for r in rounds if r["edgemeta"]["batches"]["commits"]]
    ratios = [r["ratio"] for r in rounds]
    throughput = {k: pick(k, lambda r: r["throughput"]) for k in subjects}
    return {
        "throughput": throughput,
        "answer_rate": pick("edgemeta", lambda r: r["answer_rate"]),
        "ratio": {"median": statistics.median(ratios), "runs": ratios},
        "ceiling_over_echo": throughput["ceiling"]["median"] / throughput["echo"]["median"],  # type: ignore[index]
        "lost": {k: sum(r[k]["lost"] for r in rounds) for k in subjects},
        "cpu_us_per_msg": cpu_us,
        "cpu_share": cpu_share,
        "latency": latency,
        "other_cores": {k: median_of(k, lambda r: r.get("other_cores")) for k in subjects},
        "latency_cpu_share": {
            name: median_of(f"{name}_latency", lambda r, n=name: r["cpu"][n]["share"])
            for name in ("echo", "edgemeta")
        }
        | {"ceiling": median_of("ceiling_latency", lambda r: r["cpu"]["loadgen"]["share"])},
        "latency_lost": {
            name: sum(r[f"{name}_latency"]["lost"] for r in rounds) for name in subjects
        },
        "batches": _merge_batches(all_batches),
        "latency_batches": _merge_batches(
            [r["edgemeta_latency"]["batches"] for r in rounds if r["edgemeta_latency"]["batches"]]
        ),
    }


def _merge_batches(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's batch summary (by mean batch size)."""
    usable = [s for s in summaries if s.get("commits")]
    if not usable:
        return {"commits": 0}
    return sorted(usable, key=lambda s: s["mean"])[len(usable) // 2]


# -- the store ------------------------------------------------------------
def storebench(*args: str, timeout: float = 300) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bench.storebench", *args],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storebench {args[0]} failed:\n{done.stderr.decode()}")
    return json.loads(done.stdout)


def store_rounds(work: Path, runs: int, quick: bool) -> dict[str, Any]:
    puts = "100" if quick else "300"
    groups = "8" if quick else "20"
    built = {}
    for n in STORE_SIZES:
        built[n] = storebench("build", "--dir", str(work / f"base-{n}"), "--n", str(n))
        log(f"  store: built {n:,} records in {built[n]['build_s']:.1f} s")
    per_size: dict[int, list[dict[str, Any]]] = {n: [] for n in STORE_SIZES}
    tiny: list[dict[str, Any]] = []
    fsyncs: list[float] = []
    for r in range(runs):
        for n in STORE_SIZES:
            target = work / f"run-{n}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work / f"base-{n}", target)
            sizing = ["--n", str(n), "--puts", puts, "--groups", groups]
            per_size[n].append(storebench("measure", "--dir", str(target), *sizing))
            shutil.rmtree(target, ignore_errors=True)
        tiny_dir = str(work / "tiny")
        tiny.append(storebench("tinydb", "--dir", tiny_dir, "--n", "1000", "--puts", puts))
        fsyncs.append(storebench("fsync", "--dir", str(work), "--puts", puts)["fdatasync_us"])
        log(
            f"  store round {r + 1}: 100k update+commit "
            f"{per_size[100_000][-1]['put_update_commit_each_us']:.0f} us, "
            f"TinyDB 1k {tiny[-1]['put_update_commit_each_us']:.0f} us"
        )
    keys = [
        "startup_s",
        "rss_open",
        "rss_peak",
        "put_update_commit_each_us",
        "put_insert_commit_each_us",
        "put_update_group64_us",
        "put_insert_group64_us",
    ]
    return {
        "sizes": {
            str(n): {k: stat([m[k] for m in per_size[n]]) for k in keys}
            | {"snapshot_bytes": built[n]["bytes"]}
            for n in STORE_SIZES
        },
        "tinydb": {
            "n": 1000,
            "put_update_commit_each_us": stat([t["put_update_commit_each_us"] for t in tiny]),
            "put_insert_commit_each_us": stat([t["put_insert_commit_each_us"] for t in tiny]),
        },
        "baseline_rss": storebench("baseline")["rss"],
        "fdatasync_us": statistics.median(fsyncs),
    }


# -- main -----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 short round, fewer puts")
    parser.add_argument("--only", choices=["mqtt", "store"], help="run one part only")
    parser.add_argument("--duration", type=float, help="throughput seconds measured (5)")
    parser.add_argument("--latency-duration", type=float, help="latency seconds measured (5)")
    parser.add_argument("--rate", type=float, default=500.0, help="latency rate, msgs/s")
    parser.add_argument("--window", type=int, default=500, help="messages in flight")
    parser.add_argument("--size", type=int, default=1024, help="bytes of content")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait for other load to calm down"
    )
    parser.add_argument("--tmp-dir", type=Path, help="where databases go (default: $TMPDIR)")
    parser.add_argument(
        "--no-mirror", action="store_true", help="edgemeta with mirror.enable: false"
    )
    args = parser.parse_args(argv)
    if args.quick and "--runs" not in " ".join(argv or sys.argv):
        args.runs = 1
    quick = args.quick
    cfg = {
        "window": args.window,
        "size": args.size,
        "mirror": not args.no_mirror,
        "rate": args.rate,
        "warmup": 0.5 if quick else 1.0,
        "duration": args.duration or (2.0 if quick else 5.0),
        "latency_duration": args.latency_duration or (2.0 if quick else 5.0),
    }
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgemeta-bench-", dir=args.tmp_dir))
    results: dict[str, Any] = {
        "meta": {
            "started": started,
            "runs": args.runs,
            "quick": quick,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "tmp_dir": str(work.parent),
            "fs": fs_type(work),
            "git": git_state(),
            "loadavg_start": os.getloadavg(),
        },
        "config": cfg,
        "rounds": {},
        "summary": {},
    }
    try:
        if args.only in (None, "mqtt"):
            log(f"MQTT: {args.runs} round(s)")
            tag = f"{os.getpid()}"
            quiet = QuietWaiter(budget=0.0 if args.no_wait else 20.0 * args.runs)
            with BenchBroker(work / "broker") as broker:
                rounds = [mqtt_round(broker, work, n, cfg, tag, quiet) for n in range(args.runs)]
            results["meta"]["waited_for_quiet_s"] = quiet.waited
            results["rounds"]["mqtt"] = rounds
            results["summary"]["mqtt"] = summarise_mqtt(rounds)
        if args.only in (None, "store"):
            log("store:")
            results["summary"]["store"] = store_rounds(work / "store", args.runs, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["meta"]["elapsed_s"] = time.monotonic() - t0
    results["meta"]["loadavg_end"] = os.getloadavg()
    text = table(results)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = json.dumps(results, indent=2) + "\n"
    (args.out / "latest.json").write_text(payload)
    (args.out / f"{stamp}.json").write_text(payload)
    (args.out / "latest.txt").write_text(text + "\n")
    try:
        chart(results, args.out / "latest.png")
    except ImportError:
        log("matplotlib is not installed: no chart (pip install '.[bench]')")
    log(f"results: {args.out / 'latest.json'}, {args.out / 'latest.png'}")
    log(f"elapsed: {results['meta']['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
