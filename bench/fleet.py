"""A fleet on the NATS cluster: steady load, an outage of every link, the catch-up.

    .venv/bin/python -m bench.fleet --nodes 50 --outage 60

Topology: the 3-server NATS JetStream cluster of deploy/nats/ on loopback;
``--nodes`` edge nodes, each a Mosquitto (deploy/edge-bridge-nats.conf) with
its own edgemeta, its own prefix ``beehive/fleet-<i>`` and its own data; the
bridges reach the three servers through three TCP relays (tests/support/
relay.py), which is how all links fail at once. One cloud consumer (MQTT
3.1.1, persistent session on server 1) subscribes to ``beehive/+/hub``.

1. Every node gets ``--pods`` pods in ``--namespaces`` namespaces (inserted
   from the cloud), and a simulated edged per node reports a new status for
   each pod every ``--change-every`` seconds.
2. Steady state for ``--steady`` seconds: messages/s at the cloud consumer,
   memory (RSS) of every edgemeta and edge Mosquitto.
3. Outage: the relays close every connection and refuse new ones; the edge
   brokers publish bridge state 0 at once and edgemeta stops forwarding pod
   statuses. With ``--silent`` the relays forward nothing and close nothing
   instead (a cut cable): the bridge state stays 1 (Mosquitto 2.0.11), and
   it is edgemeta's cloud heartbeat that finds each link silent. The
   statuses keep changing for ``--outage`` seconds (600 = the 10-minute
   outage of docs/scaling.md; shorten it with this flag).
4. The links return and edged stops changing statuses: counted at the cloud
   are the pod status syncs (one per node per namespace expected) and the
   single pod status forwards, and the time until every node's syncs have
   arrived (catch-up).

Everything started is stopped on exit, Ctrl-C and SIGTERM included; the run
ends by itself after ``--timeout`` seconds at most.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Broker
from tests.support.mqtt import envelope
from tests.support.nats import Mqtt311Consumer, NatsCluster, render_nats_bridge_conf
from tests.support.relay import Relay
from tests.support.service import EdgemetaProcess


def rss_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Edged:
    """The simulated edged of every node: one MQTT 5 client per edge broker, QoS 1."""

    def __init__(self, nodes: list[tuple[str, Broker]], pods: int, namespaces: int) -> None:
        self.pods = pods
        self.namespaces = namespaces
        self.states: dict[str, bytes] = {}
        #: The cloud state of each node's edgemeta, from its statistics.
        self.clouds: dict[str, str] = {}
        self._lock = threading.Lock()
        self.clients: list[tuple[str, mqtt.Client]] = []
        for prefix, broker in nodes:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"edged-{prefix.replace('/', '-')}"
            )
            client.max_queued_messages_set(0)
            client.max_inflight_messages_set(1000)
            client.on_message = self._on_state
            client.connect(broker.host, broker.port, keepalive=60)
            client.subscribe(f"{prefix}/meta/bridge/state", qos=1)
            client.subscribe(f"{prefix}/meta/stats", qos=0)
            client.loop_start()
            self.clients.append((prefix, client))

    def _on_state(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            prefix = msg.topic.split("/meta/")[0]
            if msg.topic.endswith("/stats"):
                cloud = str(json.loads(msg.payload)["cloud"])
                with self._lock:
                    self.clouds[prefix] = cloud
                return
            with self._lock:
                self.states[prefix] = bytes(msg.payload)
        except Exception as exc:  # never into paho's thread
            print(f"fleet: bad message on {msg.topic}: {exc!r}", file=sys.stderr)

    def count_state(self, payload: bytes) -> int:
        with self._lock:
            return sum(1 for v in self.states.values() if v == payload)

    def count_cloud(self, state: str) -> int:
        """Nodes whose edgemeta counts the cloud as `state` in its last statistics."""
        with self._lock:
            return sum(1 for v in self.clouds.values() if v == state)

    def resource(self, pod: int, kind: str) -> str:
        return f"ns-{pod % self.namespaces}/{kind}/pod-{pod}"

    def insert_pods(self, cloud: Mqtt311Consumer) -> None:
        for prefix, _ in self.clients:
            for pod in range(self.pods):
                msg = envelope("insert", self.resource(pod, "pod"), "edgecontroller", content={})
                cloud.publish(f"{prefix}/meta", json.dumps(msg).encode())

    def report(self, round_no: int) -> int:
        """One new status for every pod of every node."""
        for prefix, client in self.clients:
            for pod in range(self.pods):
                content = {"phase": "Running", "round": round_no, "pod": pod}
                msg = envelope("update", self.resource(pod, "podstatus"), "edged", content=content)
                client.publish(f"{prefix}/meta", json.dumps(msg).encode(), qos=1)
        return len(self.clients) * self.pods

    def close(self) -> None:
        for _, client in self.clients:
            client.disconnect()
            client.loop_stop()


class Reporter(threading.Thread):
    """Calls `edged.report` so that each pod changes every `every` seconds, spread evenly."""

    def __init__(self, edged: Edged, every: float) -> None:
        super().__init__(daemon=True)
        self.edged, self.every = edged, every
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        round_no = 0
        while not self.stop_event.wait(0 if round_no == 0 else self.every):
            self.sent += self.edged.report(round_no)
            round_no += 1


def wait_for(what: str, ready: Any, deadline: float) -> None:
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    hard_deadline = time.monotonic() + args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="edgemeta-fleet-"))
    cluster = NatsCluster(tmp / "nats")
    relays: list[Relay] = []
    brokers: list[Broker] = []
    services: list[EdgemetaProcess] = []
    edged: Edged | None = None
    reporter: Reporter | None = None
    consumer: Mqtt311Consumer | None = None
    try:
        cluster.start()
        relays = [Relay(s.host, s.mqtt_port) for s in cluster.servers]
        addresses = [f"{r.host}:{r.port}" for r in relays]
        consumer = Mqtt311Consumer(
            cluster.servers[0].host, cluster.servers[0].mqtt_port, "fleet-cloud", "beehive/+/hub"
        )
        nodes: list[tuple[str, Broker]] = []
        started = time.monotonic()
        for i in range(args.nodes):
            node = f"fleet-{i:03d}"
            conf = tmp / f"{node}.conf"
            conf.write_text(
                render_nats_bridge_conf(
                    node, 1883, tmp / node, addresses, restart_timeout=args.restart_timeout
                )
            )
            broker = Broker(conf, tmp_dir=tmp / f"edge-{node}")
            broker.start()
            brokers.append(broker)
            service = EdgemetaProcess(
                broker.host,
                broker.port,
                tmp / f"edgemeta-{node}",
                prefix=f"beehive/{node}",
                overrides={
                    "modules": {"metaManager": {"podStatusSyncInterval": 3600}},
                    "metrics": {"statsInterval": 1},
                },
            )
            service.start()
            services.append(service)
            nodes.append((f"beehive/{node}", broker))
        edged = Edged(nodes, args.pods, args.namespaces)
        wait_for(
            "every bridge up",
            lambda: edged is not None and edged.count_state(b"1") == args.nodes,
            hard_deadline,
        )
        start_seconds = time.monotonic() - started
        edged.insert_pods(consumer)

        def drain(window: float) -> list[tuple[float, dict[str, Any]]]:
            assert consumer is not None
            out = []
            end = time.monotonic() + window
            while (left := end - time.monotonic()) > 0:
                got = consumer.get(timeout=left)
                if got is not None:
                    out.append((got[0], json.loads(got[2])))
            return out

        reporter = Reporter(edged, args.change_every)
        reporter.start()
        drain(args.change_every * 2)  # warm-up: the inserts' OKs, the first round
        steady = drain(args.steady)
        steady_rate = len(steady) / args.steady
        edgemeta_rss = [rss_kib(s.pid) for s in services]
        mosquitto_rss = [rss_kib(b.pid) for b in brokers]
        nats_rss = [rss_kib(s.pid) for s in cluster.servers]

        wait_for(
            "every edgemeta connected",
            lambda: edged is not None and edged.count_cloud("connected") == args.nodes,
            hard_deadline,
        )
        for relay in relays:
            if args.silent:
                relay.blackhole(True)
            else:
                relay.down()
        down_at = time.monotonic()
        if not args.silent:
            wait_for(
                "every bridge down", lambda: edged.count_state(b"0") == args.nodes, hard_deadline
            )
        detected = time.monotonic() - down_at
        wait_for(
            "every edgemeta disconnected",
            lambda: edged.count_cloud("disconnected") == args.nodes,
            hard_deadline,
        )
        noticed = time.monotonic() - down_at
        sent_before = reporter.sent
        leftovers = drain(max(0.0, args.outage - (time.monotonic() - down_at)))
        reporter.stop_event.set()
        reporter.join()
        updates_during_outage = reporter.sent - sent_before

        for relay in relays:
            if args.silent:
                relay.blackhole(False)
            else:
                relay.up()
        up_at = time.monotonic()
        expected_syncs = args.nodes * args.namespaces
        syncs: Counter[str] = Counter()
        singles = others = 0
        caught_up: float | None = None
        quiet_since = time.monotonic()
        while time.monotonic() < hard_deadline:
            got = consumer.get(timeout=0.5)
            now = time.monotonic()
            if got is None:
                if caught_up is not None and now - quiet_since > args.quiet:
                    break
                continue
            quiet_since = now
            msg = json.loads(got[2])
            resource = msg["route"]["resource"]
            if resource.endswith("/podstatus"):
                syncs[f"{got[1]} {resource}"] += 1
                if len(syncs) == expected_syncs and caught_up is None:
                    caught_up = got[0] - up_at
            elif "/podstatus/" in resource:
                singles += 1
            else:
                others += 1
        return {
            "nodes": args.nodes,
            "edgemeta_processes": len(services),
            "edge_brokers": len(brokers),
            "pods_per_node": args.pods,
            "namespaces_per_node": args.namespaces,
            "status_change_every_s": args.change_every,
            "fleet_start_s": round(start_seconds, 1),
            "steady_cloud_msgs_per_s": round(steady_rate, 1),
            "expected_steady_msgs_per_s": round(args.nodes * args.pods / args.change_every, 1),
            "edgemeta_rss_mib_avg": round(sum(edgemeta_rss) / len(edgemeta_rss) / 1024, 1),
            "edge_mosquitto_rss_mib_avg": round(sum(mosquitto_rss) / len(mosquitto_rss) / 1024, 1),
            "nats_rss_mib_total": round(sum(nats_rss) / 1024, 1),
            "outage_s": args.outage,
            "outage_kind": "silent" if args.silent else "connections closed",
            "all_bridges_down_after_s": None if args.silent else round(detected, 2),
            "all_edgemeta_disconnected_after_s": round(noticed, 2),
            "messages_at_cloud_during_outage": len(leftovers),
            "status_updates_during_outage": updates_during_outage,
            "syncs_after_outage": sum(syncs.values()),
            "distinct_node_namespace_syncs": len(syncs),
            "expected_syncs": expected_syncs,
            "single_status_forwards_after_outage": singles,
            "other_messages_after_outage": others,
            "catch_up_s": None if caught_up is None else round(caught_up, 1),
        }
    finally:
        if reporter is not None:
            reporter.stop_event.set()
        if edged is not None:
            edged.close()
        if consumer is not None:
            consumer.close()
        for service in services:
            try:
                service.close()
            except RuntimeError as exc:
                print(f"fleet: {exc}", file=sys.stderr)
        for broker in brokers:
            broker.kill()
        for relay in relays:
            relay.close()
        cluster.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--pods", type=int, default=20, help="pods per node")
    parser.add_argument("--namespaces", type=int, default=2, help="namespaces per node")
    parser.add_argument(
        "--change-every", type=float, default=10.0, help="seconds per status change"
    )
    parser.add_argument(
        "--steady", type=float, default=30.0, help="seconds measured at steady state"
    )
    parser.add_argument("--outage", type=float, default=600.0, help="outage length in seconds")
    parser.add_argument("--quiet", type=float, default=5.0, help="catch-up ends after this quiet")
    parser.add_argument("--restart-timeout", default="1 30", help="bridge restart_timeout")
    parser.add_argument(
        "--silent", action="store_true", help="the outage is a black hole, not closed connections"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, data)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit of the run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    result = run(args)
    print(json.dumps(result, indent=2))
    os.makedirs("bench/results", exist_ok=True)
    out = Path(f"bench/results/fleet-{args.nodes}{'-silent' if args.silent else ''}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
