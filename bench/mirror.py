"""Reconcile time of the state mirror at start-up, at 10k and 100k objects.

For each size: a database of N objects is written, edgemeta starts on a
fresh prefix (cold: nothing retained, every object is published), stops,
and starts again (warm: every retained message is compared, none published).
The figure is what edgemeta logs: from its subscription to
``<prefix>/state/#`` until the diff is published.

    .venv/bin/python -m bench.mirror [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import uuid
from pathlib import Path

from bench.broker import BenchBroker
from bench.procs import Edgemeta
from edgemeta.store import MetaStore, open_storage

_DONE = re.compile(
    r"mirror reconciled in ([0-9.]+) s: (\d+) retained, (\d+) cleared, (\d+) published"
)


def make_db(path: Path, count: int) -> None:
    store = MetaStore(open_storage(path, sync=False))
    try:
        for start in range(0, count, 5000):
            store.put_many(
                (f"ns-{i % 50}/configmap/cm-{i}", "configmap", f'{{"data":{{"i":{i}}}}}')
                for i in range(start, min(count, start + 5000))
            )
            store.commit()
    finally:
        store.close()


def reconcile(broker: BenchBroker, prefix: str, work: Path) -> tuple[float, str]:
    started = time.monotonic()
    edgemeta = Edgemeta(broker, prefix, work)
    try:
        while True:
            found = _DONE.findall(edgemeta.log_path.read_text())
            if found:  # the log is written anew at every start
                seconds, retained, cleared, published = found[-1]
                break
            if time.monotonic() - started > 600:
                raise RuntimeError("no reconcile within 600 s")
            time.sleep(0.1)
    finally:
        edgemeta.stop()
    return float(seconds), f"{retained} retained, {cleared} cleared, {published} published"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgemeta-bench-mirror-") as tmp:
        root = Path(tmp)
        with BenchBroker(root / "broker") as broker:
            print(f"{'objects':>8}  {'start':>5}  {'reconcile s':>11}  what")
            for size in args.sizes:
                work = root / f"n{size}"
                work.mkdir()
                make_db(work / "edgemeta.json", size)
                prefix = f"bench/mirror-{uuid.uuid4().hex[:6]}"
                for label in ("cold", "warm"):
                    seconds, what = reconcile(broker, prefix, work)
                    print(f"{size:>8}  {label:>5}  {seconds:>11.2f}  {what}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
