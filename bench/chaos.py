"""Chaos run: a stream of inserts and updates while edgemeta is killed and the broker restarts.

One mosquitto (the shipped config, on a free loopback port, persistent) and
one edgemeta. A publisher streams inserts and updates of a few thousand
configmaps at a steady rate (QoS 1, a unique msg_id each, every message
carrying a version that grows along the stream). At random points edgemeta
is killed with SIGKILL and started again, or the broker is restarted. A
persistent-session subscriber records every answer and forward. At the end
the stream stops, the run waits for quiescence, edgemeta stops cleanly and
its store is read. One table is printed:

  sent          messages the broker acknowledged to the publisher
  answered OK   requests with at least one OK answer
  stored        keys of the run in the store
  lost          keys answered OK but absent from the store
  applied twice requests answered by two answers with different msg_ids
  stale         keys whose stored version is older than the last one answered OK
  replays       answers seen again with the same msg_id (allowed)

Exit status 1 when lost, applied twice or stale is not zero.

    .venv/bin/python -m bench.chaos [--seconds 180] [--rate 1000] [--keys 3000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.burst import SessionObserver
from tests.support.delivery import PacedPublisher
from tests.support.helpers import read_db
from tests.support.mqtt import envelope
from tests.support.service import EdgemetaProcess

PREFIX = "beehive/chaos"
QUIET_SECONDS = 15.0
SETTLE_LIMIT = 180.0


@dataclass
class Sent:
    """What the publisher generated: msg_id -> (key, version), in order."""

    by_id: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass
class Tally:
    """Every answer and forward, reduced to what the table needs."""

    answers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ok: set[str] = field(default_factory=set)
    answer_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    forwards: int = 0
    last_message: float = field(default_factory=time.monotonic)

    def add(self, payload: bytes) -> None:
        self.last_message = time.monotonic()
        try:
            data = json.loads(payload)
            header, route = data["header"], data["route"]
        except (ValueError, KeyError, TypeError):
            return
        if route.get("source") == "metaManager" and route.get("operation") in (
            "response",
            "error",
        ):
            parent, answer_id = header.get("parent_msg_id", ""), header["msg_id"]
            self.answers[parent].add(answer_id)
            self.answer_count[answer_id] += 1
            if route["operation"] == "response" and data.get("content") == "OK":
                self.ok.add(parent)
        else:
            self.forwards += 1


class Stream(threading.Thread):
    """Publishes `count` messages at `rate` per second from its own thread."""

    def __init__(self, broker: Broker, count: int, rate: float, keys: int, seed: int) -> None:
        super().__init__(name="chaos-stream", daemon=True)
        self.broker = broker
        self.count = count
        self.rate = rate
        self.keys = keys
        self.rng = random.Random(seed)
        self.sent = Sent()
        self.acked = 0
        self.error: BaseException | None = None

    def messages(self) -> Any:
        inserted: set[int] = set()
        for version in range(1, self.count + 1):
            k = self.rng.randrange(self.keys)
            operation = "update" if k in inserted and self.rng.random() < 0.7 else "insert"
            inserted.add(k)
            key = f"default/configmap/chaos-{k}"
            message = envelope(operation, key, "edgecontroller", {"key": k, "version": version})
            self.sent.by_id[message["header"]["msg_id"]] = (key, version)
            yield json.dumps(message).encode()

    def run(self) -> None:
        try:
            with PacedPublisher(self.broker.host, self.broker.port, timeout=30) as pub:
                self.acked = pub.publish_paced(
                    f"{PREFIX}/meta",
                    self.messages(),
                    self.rate,
                    timeout=self.count / self.rate + 300,
                )
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def drain(observer: SessionObserver, tally: Tally) -> None:
    for message in observer._take_all():
        tally.add(bytes(message.payload))


def start_edgemeta(service: EdgemetaProcess) -> None:
    # Not waiting for `online`: a kill may come before it, which is part of the chaos.
    service.start(wait_online=False)


def run(seconds: float, rate: float, keys: int, seed: int, every: tuple[float, float]) -> int:
    rng = random.Random(seed)
    kills = restarts = 0
    with tempfile.TemporaryDirectory(prefix="edgemeta-chaos-") as tmp:
        root = Path(tmp)
        log_tail: list[str] = []
        broker = Broker(tmp_dir=root / "broker")
        service = EdgemetaProcess(broker.host, broker.port, root / "edgemeta", prefix=PREFIX)
        observer: SessionObserver | None = None
        stream: Stream | None = None
        tally = Tally()
        try:
            broker.start()
            service.start()
            observer = SessionObserver(
                broker.host, broker.port, [f"{PREFIX}/hub", f"{PREFIX}/edged"], timeout=30
            )
            stream = Stream(broker, int(seconds * rate), rate, keys, seed)
            print(
                f"chaos: {stream.count} messages over {keys} keys at {rate:g}/s, "
                f"broker on {broker.host}:{broker.port}, data in {root}",
                flush=True,
            )
            stream.start()
            next_event = time.monotonic() + rng.uniform(*every)
            while stream.is_alive():
                stream.join(timeout=0.2)
                drain(observer, tally)
                if time.monotonic() < next_event or not stream.is_alive():
                    continue
                if rng.random() < 0.5:
                    service.kill()
                    kills += 1
                    print(f"  {time.strftime('%H:%M:%S')} kill -9 edgemeta", flush=True)
                    start_edgemeta(service)
                else:
                    broker.restart()
                    restarts += 1
                    print(f"  {time.strftime('%H:%M:%S')} broker restarted", flush=True)
                next_event = time.monotonic() + rng.uniform(*every)
            if stream.error is not None:
                print(f"chaos: the publisher failed: {stream.error!r}", file=sys.stderr)
            ids = set(stream.sent.by_id)
            settle_by = time.monotonic() + SETTLE_LIMIT
            while time.monotonic() < settle_by:
                time.sleep(0.2)
                drain(observer, tally)
                if ids <= tally.ok or time.monotonic() - tally.last_message > QUIET_SECONDS:
                    break
            if not service.is_running():
                start_edgemeta(service)
            status = service.stop(timeout=15)
            drain(observer, tally)
            store = read_db(service.db_path)
            log_tail = service.log_text().splitlines()[-20:]
        finally:
            if observer is not None:
                observer.close()
            if service.is_running():
                try:
                    service.stop(timeout=15)
                except RuntimeError:
                    service.kill()
            service.close()
            broker.stop()
            if stream is not None and stream.is_alive():
                stream.join(timeout=5)
        return report(stream, tally, store, kills, restarts, status, log_tail)


def report(
    stream: Stream,
    tally: Tally,
    store: dict[str, Any],
    kills: int,
    restarts: int,
    status: int,
    log_tail: list[str],
) -> int:
    sent = stream.sent.by_id
    last_ok: dict[str, int] = {}
    for msg_id in tally.ok & set(sent):
        key, version = sent[msg_id]
        last_ok[key] = max(version, last_ok.get(key, 0))
    ours = {key for key, _ in sent.values()}
    stored = {k: json.loads(doc["value"])["version"] for k, doc in store.items() if k in ours}
    lost = sum(1 for key in last_ok if key not in stored)
    stale = sum(1 for key, version in last_ok.items() if key in stored and stored[key] < version)
    twice = sum(1 for parent in sent if len(tally.answers.get(parent, ())) > 1)
    replays = sum(n - 1 for n in tally.answer_count.values())
    answered_ok = len(tally.ok & set(sent))
    rows = [
        ("sent", stream.acked),
        ("answered OK", answered_ok),
        ("unanswered", len(sent) - len(set(sent) & set(tally.answers))),
        ("stored", len(stored)),
        ("lost", lost),
        ("applied twice", twice),
        ("stale", stale),
        ("replays", replays),
        ("forwards", tally.forwards),
        ("kill -9", kills),
        ("broker restarts", restarts),
        ("edgemeta exit", status),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>9}")
    unanswered = len(sent) - len(set(sent) & set(tally.answers))
    if unanswered:
        print("\nchaos: requests left unanswered; the end of edgemeta's log:")
        for line in log_tail:
            print(f"  | {line[:200]}")
    bad = lost or twice or stale
    print(f"\nchaos: {'FAIL' if bad else 'OK'} (lost {lost}, applied twice {twice}, stale {stale})")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the stream")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--keys", type=int, default=3000, help="distinct configmaps")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--every",
        type=float,
        nargs=2,
        default=(10.0, 30.0),
        metavar=("MIN", "MAX"),
        # Longer than the duplicate window (20,000 ids: 20 s at 1,000/s) at times,
        # so a message redelivered at the next reconnect has left it.
        help="seconds between faults, drawn uniformly (default: 10 30)",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else uuid.uuid4().int % 100_000
    print(f"chaos: seed {seed}", flush=True)
    return run(args.seconds, args.rate, args.keys, seed, tuple(args.every))


if __name__ == "__main__":
    sys.exit(main())
