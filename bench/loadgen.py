"""The load generator: one process, two raw MQTT 3.1.1 connections, QoS 1 both ways.

It publishes pod status ``update`` messages from edged to ``<prefix>/<target>``
and counts what arrives on ``<prefix>/hub`` (the forwards) and, with
``--answers``, on ``<prefix>/edged`` (the OK answers). Every message carries
its sequence number and send time in ``content.bench``, so the latency of a
forward is its arrival time minus that send time (same process, same clock).

``--mode window`` keeps at most ``--window`` messages in flight end to end
(published but whose forward has not arrived yet): the closed-loop maximum
throughput. ``--mode rate`` publishes at a fixed ``--rate`` on a schedule;
the embedded time is the scheduled one, so a late generator shows up as
latency instead of hiding it (no coordinated omission).

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import sys
import time
from array import array

from bench.mqttwire import (
    PUBACK,
    PUBLISH,
    RawClient,
    parse,
    puback_packet,
    publish_packet,
    split_publish,
    topic_field,
)

MAX_MESSAGES = 4_000_000
_BENCH_FIELD = re.compile(rb'"seq":\s*(\d+),\s*"t":\s*(\d+)')


def payload_template(size: int, tag: str) -> tuple[bytes, list[str]]:
    """A SPEC section 1 envelope as a ``%``-template, and the names of its fields in order."""
    status = {
        "phase": "Running",
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": "2024-11-27T10:00:00Z"}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "hostIP": "10.0.0.7",
        "podIP": "10.244.1.23",
        "containerStatuses": [
            {
                "name": "app",
                "ready": True,
                "restartCount": 0,
                "image": "registry.local/app:1.0",
                "imageID": "sha256:" + "0" * 64,
                "state": {"running": {"startedAt": "2024-11-27T10:00:01Z"}},
            }
        ],
    }
    content = {"bench": {"seq": 111111111, "t": 222222222}, "status": status, "pad": ""}
    base = len(json.dumps(content, separators=(",", ":")))
    content["pad"] = "x" * max(0, size - base)
    envelope = {
        "header": {
            "msg_id": f"{tag}-333333333",
            "parent_msg_id": "",
            "timestamp": 444444444,
            "sync": False,
        },
        "route": {
            "source": "edged",
            "group": "meta",
            "operation": "update",
            "resource": "default/podstatus/pod-555555555",
        },
        "content": content,
    }
    text = json.dumps(envelope, separators=(",", ":")).encode()
    if b"%" in text:
        raise ValueError("the template must not contain %")
    markers = {b"111111111": "seq", b"222222222": "t", b"333333333": "seq"}
    markers.update({b"444444444": "ms", b"555555555": "seq"})
    order = sorted(markers, key=text.index)
    for marker in markers:
        text = text.replace(marker, b"%d")
    return text, [markers[m] for m in order]


def run(args: argparse.Namespace) -> dict[str, object]:
    prefix = args.prefix
    target = f"{prefix}/{args.target}".encode()
    out_topic = f"{prefix}/hub".encode()
    answer_topic = f"{prefix}/edged".encode()
    template, order = payload_template(args.size, args.tag)
    if order != ["seq", "ms", "seq", "seq", "t"]:
        raise RuntimeError(f"unexpected template field order {order}")
    topic_bytes = topic_field(target.decode())

    pub = RawClient(args.host, args.port, f"{args.tag}-pub")
    sub = RawClient(args.host, args.port, f"{args.tag}-sub")
    topics = [out_topic.decode()] + ([answer_topic.decode()] if args.answers else [])
    sub.subscribe(topics)

    ns = 1_000_000_000
    clock = time.perf_counter_ns
    t0 = clock()
    warm_end = t0 + int(args.warmup * ns)
    end = warm_end + int(args.duration * ns)
    hard_end = end + int(args.drain * ns)
    interval = ns / args.rate if args.mode == "rate" else 0.0

    seen = bytearray(MAX_MESSAGES)
    latencies = array("q")
    sent = outputs = answers = pubacks = dups = 0
    pid = 0
    sending = True
    outputs_at_warm = outputs_at_end = answers_at_warm = answers_at_end = 0
    time_at_warm = time_at_end = 0
    warm_marked = False
    cpu0 = os.times()
    pub_fd, sub_fd = pub.sock, sub.sock
    window = args.window
    max_batch = 64

    while True:
        now = clock()
        if now >= hard_end:
            break
        if not warm_marked and now >= warm_end:
            warm_marked = True
            outputs_at_warm, answers_at_warm, time_at_warm = outputs, answers, now
        if sending and (now >= end or sent >= MAX_MESSAGES - max_batch):
            sending = False
            outputs_at_end, answers_at_end, time_at_end = outputs, answers, now
        if not sending and outputs >= sent and (not args.answers or answers >= sent):
            break

        timeout = 0.01
        if sending:
            if args.mode == "window":
                room = min(window - (sent - outputs), window - (sent - pubacks), max_batch)
            else:
                due = int((now - t0) / interval) + 1 - sent
                room = min(due, max_batch)
                if room <= 0:
                    timeout = min(0.01, (t0 + (sent * interval) - now) / ns)
            if room > 0:
                chunks = []
                wall_ms = time.time_ns() // 1_000_000
                for _ in range(room):
                    seq = sent
                    stamp = now if args.mode == "window" else t0 + int(seq * interval)
                    payload = template % (seq, wall_ms, seq, seq, stamp)
                    pid = pid % 65535 + 1
                    chunks.append(publish_packet(topic_bytes, payload, pid))
                    sent += 1
                pub.outbuf += b"".join(chunks)
                timeout = 0.0
        pub.flush()
        sub.flush()

        writers = [c.sock for c in (pub, sub) if c.outbuf]
        readable, _w, _x = select.select([pub_fd, sub_fd], writers, [], max(timeout, 0.0))
        if pub_fd in readable:
            if not pub.receive():
                raise ConnectionError("broker closed the publisher connection")
            for first, _body in parse(pub.inbuf):
                if first & 0xF0 == PUBACK:
                    pubacks += 1
        if sub_fd in readable:
            if not sub.receive():
                raise ConnectionError("broker closed the subscriber connection")
            arrived = clock()
            acks = []
            for first, body in parse(sub.inbuf):
                if first & 0xF0 != PUBLISH:
                    continue
                topic, rpid, data = split_publish(first, body)
                if rpid:
                    acks.append(puback_packet(rpid))
                if topic == out_topic:
                    m = _BENCH_FIELD.search(data)
                    if m is None:
                        continue
                    seq = int(m.group(1))
                    if seen[seq]:
                        dups += 1
                        continue
                    seen[seq] = 1
                    outputs += 1
                    stamp = int(m.group(2))
                    if warm_end <= stamp < end:
                        latencies.append(arrived - stamp)
                elif topic == answer_topic:
                    answers += 1
            if acks:
                sub.outbuf += b"".join(acks)

    if sending:
        outputs_at_end, answers_at_end, time_at_end = outputs, answers, clock()
    cpu1 = os.times()
    pub.close()
    sub.close()
    wall = (clock() - t0) / ns
    span = max(1, time_at_end - time_at_warm) / ns
    lat = sorted(latencies)

    def pct(q: float) -> float | None:
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6

    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "mode": args.mode,
        "target": args.target,
        "sent": sent,
        "outputs": outputs,
        "answers": answers,
        "pubacks": pubacks,
        "duplicates": dups,
        "lost": sent - outputs,
        "throughput": (outputs_at_end - outputs_at_warm) / span,
        "answer_rate": (answers_at_end - answers_at_warm) / span,
        "offered_rate": args.rate if args.mode == "rate" else None,
        "latency_ms": {
            "count": len(lat),
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": lat[-1] / 1e6 if lat else None,
        },
        "measured_s": span,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_share": cpu / wall if wall else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--target", default="meta", help="topic suffix to publish to")
    parser.add_argument("--mode", choices=["window", "rate"], default="window")
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=10.0, help="max seconds to wait after")
    parser.add_argument("--size", type=int, default=1024, help="bytes of content")
    parser.add_argument("--answers", action="store_true", help="also count <prefix>/edged")
    parser.add_argument("--tag", default=f"loadgen-{os.getpid()}")
    args = parser.parse_args(argv)
    result = run(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
