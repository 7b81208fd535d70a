"""Durable write cost, start-up time and memory of ``edgemeta.store.MetaStore``.

Each measurement runs in a fresh process (``python -m bench.storebench ...``)
so its RSS is that of a process holding exactly one store. Prints one JSON
object on stdout.

- ``build``: a database of N records (~1 KB values), written without fsync
  and closed (folded into the snapshot).
- ``measure``: open the store over DurableStorage with fsync (start-up time,
  RSS), then time puts: one commit (one fdatasync) per put, and group commit
  of 64 puts per commit; each for replacing existing keys and for new keys.
- ``tinydb``: stock TinyDB with its default JSONStorage (rewrites and fsyncs
  the whole file on every write) at N records, for comparison.
- ``fsync``: append ~1 KB and fdatasync, the floor of any durable write.
- ``baseline``: RSS of a process that imported everything but opened nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

KEY = "default/podstatus/pod-{}"
WARMUP_PUTS = 20


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def value_of(i: int, size: int = 1024) -> str:
    """~``size`` bytes of pod status JSON text, different for every ``i``."""
    head = {
        "bench": {"seq": i, "t": time.perf_counter_ns()},
        "phase": "Running",
        "podIP": f"10.244.{i // 250 % 250}.{i % 250}",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    text = json.dumps(head, separators=(",", ":"))
    return text[:-1] + ',"pad":"' + "x" * max(0, size - len(text) - 9) + '"}'


def cmd_build(args: argparse.Namespace) -> dict[str, Any]:
    from edgemeta.store import MetaStore, open_storage

    path = Path(args.dir) / "edgemeta.json"
    t0 = time.perf_counter()
    store = MetaStore(open_storage(path, sync=False))
    for i in range(args.n):
        store.put(KEY.format(i), "podstatus", value_of(i))
        if i % 1000 == 999:
            store.commit()
    store.close()
    return {"n": args.n, "build_s": time.perf_counter() - t0, "bytes": path.stat().st_size}


def _timed_puts(store: Any, keys: list[str], group: int) -> float:
    """Microseconds per put, committing every ``group`` puts."""
    values = [value_of(i) for i in range(len(keys))]
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        store.put(key, "podstatus", value)
        if (i + 1) % group == 0:
            store.commit()
    store.commit()
    return (time.perf_counter() - t0) / len(keys) * 1e6


def cmd_measure(args: argparse.Namespace) -> dict[str, Any]:
    from edgemeta.store import MetaStore, open_storage

    path = Path(args.dir) / "edgemeta.json"
    # ext4 (data=ordered) flushes every dirty page of the file system with the
    # first fdatasync: the freshly copied snapshot must not be charged to a put.
    os.sync()
    before = rss_bytes()
    t0 = time.perf_counter()
    store = MetaStore(open_storage(path, sync=True))
    startup = time.perf_counter() - t0
    held = rss_bytes()
    if len(store) != args.n:
        raise RuntimeError(f"expected {args.n} records, found {len(store)}")
    rng = random.Random(args.n)
    fresh = iter(range(args.n, args.n * 10 + 10**6))

    def existing(count: int) -> list[str]:
        return [KEY.format(rng.randrange(args.n)) for _ in range(count)]

    def new(count: int) -> list[str]:
        return [KEY.format(next(fresh)) for _ in range(count)]

    single = args.puts
    grouped = args.groups * 64
    _timed_puts(store, existing(WARMUP_PUTS), 1)
    result = {
        "n": args.n,
        "startup_s": startup,
        "rss_before_open": before,
        "rss_open": held,
        "put_update_commit_each_us": _timed_puts(store, existing(single), 1),
        "put_insert_commit_each_us": _timed_puts(store, new(single), 1),
        "put_update_group64_us": _timed_puts(store, existing(grouped), 64),
        "put_insert_group64_us": _timed_puts(store, new(grouped), 64),
        "rss_after_puts": rss_bytes(),
        "rss_peak": peak_rss_bytes(),
    }
    # Exit without close(): the folding into a new snapshot is not part of a put.
    return result


def cmd_tinydb(args: argparse.Namespace) -> dict[str, Any]:
    from tinydb import TinyDB

    path = Path(args.dir) / "stock.json"
    path.unlink(missing_ok=True)
    db = TinyDB(path)
    table = db.table("meta")
    ids = table.insert_multiple(
        {"key": KEY.format(i), "type": "podstatus", "value": value_of(i)} for i in range(args.n)
    )
    rng = random.Random(1)
    values = [value_of(i) for i in range(args.puts)]
    os.sync()
    t0 = time.perf_counter()
    for value in values:
        table.update({"value": value}, doc_ids=[rng.choice(ids)])
    update_us = (time.perf_counter() - t0) / args.puts * 1e6
    t0 = time.perf_counter()
    for i in range(args.puts):
        table.insert({"key": KEY.format(args.n + i), "type": "podstatus", "value": values[i]})
    insert_us = (time.perf_counter() - t0) / args.puts * 1e6
    db.close()
    return {
        "n": args.n,
        "put_update_commit_each_us": update_us,
        "put_insert_commit_each_us": insert_us,
        "rss_open": rss_bytes(),
    }


def cmd_fsync(args: argparse.Namespace) -> dict[str, Any]:
    """The floor: appending ~1 KB to a file and fdatasync, nothing else."""
    path = Path(args.dir) / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    chunk = b"x" * 1100 + b"\n"
    try:
        t0 = time.perf_counter()
        for _ in range(args.puts):
            os.write(fd, chunk)
            os.fdatasync(fd)
        return {"fdatasync_us": (time.perf_counter() - t0) / args.puts * 1e6}
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def cmd_baseline(args: argparse.Namespace) -> dict[str, Any]:
    import edgemeta.store  # noqa: F401  (the imports a store process has)

    return {"rss": rss_bytes()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MetaStore durability benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "measure", "tinydb", "fsync", "baseline"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", default=".")
        cmd.add_argument("--n", type=int, default=1000)
        cmd.add_argument("--puts", type=int, default=300, help="puts with one commit each")
        cmd.add_argument("--groups", type=int, default=20, help="commits of 64 puts")
    args = parser.parse_args(argv)
    handler = {
        "build": cmd_build,
        "measure": cmd_measure,
        "tinydb": cmd_tinydb,
        "fsync": cmd_fsync,
        "baseline": cmd_baseline,
    }[args.command]
    os.makedirs(args.dir, exist_ok=True)
    json.dump(handler(args), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
