"""What reaches the cloud after an outage: edgemeta's catch-up versus forwarding every update.

Topology: a cloud broker, an edge broker bridged to it (the shipped configs)
and edgemeta beside the edge broker. The cloud goes away, ``--pods`` pods
change status once a "second" for ``--minutes`` (time is compressed: the
updates are published as fast as edgemeta takes them), the cloud returns.
Counted on the cloud: every message that arrives on the node's hub topic
until the pod status sync has come and the topic is quiet.

    .venv/bin/python -m bench.outage --pods 100 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.bridge import CLOUD_CONF, EdgeNode, SessionSubscriber
from tests.support.broker import Broker
from tests.support.burst import BurstPublisher, SessionObserver
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess


def updates(pods: int, seconds: int, namespaces: int) -> list[bytes]:
    out = []
    for second in range(seconds):
        for pod in range(pods):
            ns = f"ns-{pod % namespaces}"
            content = {"phase": "Running", "restarts": second, "pod": pod}
            out.append(
                json.dumps(
                    envelope("update", f"{ns}/podstatus/pod-{pod}", "edged", content=content)
                ).encode()
            )
    return out


def run(pods: int, minutes: float, namespaces: int) -> dict[str, object]:
    seconds = int(minutes * 60)
    tmp = Path(tempfile.mkdtemp(prefix="edgemeta-outage-"))
    with Broker(CLOUD_CONF, tmp_dir=tmp / "cloud") as cloud:
        edge = EdgeNode("node-a", cloud, tmp / "edge")
        edge.broker.start()
        try:
            edge.wait_linked(cloud)
            prefix = edge.prefix
            service = EdgemetaProcess(
                edge.host,
                edge.port,
                tmp / "edgemeta",
                prefix=prefix,
                overrides={"database": {"fsync": True}},
            )
            service.start()
            try:
                consumer_id = f"cloud-{uuid.uuid4().hex[:8]}"
                # The pods exist, so the sync keeps their statuses; their OK answers are
                # taken off the cloud before the outage starts.
                with SessionSubscriber(cloud.host, cloud.port, consumer_id, f"{prefix}/hub") as hub:
                    with MqttProbe(edge.host, edge.port) as probe:
                        for pod in range(pods):
                            resource = f"ns-{pod % namespaces}/pod/pod-{pod}"
                            insert = envelope("insert", resource, "edgecontroller", content={})
                            probe.publish(f"{prefix}/meta", insert)
                    hub.collect(pods, timeout=30)
                cloud.stop()
                edge.wait_state(b"0")
                batch = updates(pods, seconds, namespaces)
                started = time.monotonic()
                with SessionObserver(edge.host, edge.port, [f"{prefix}/edged"]) as answers:
                    with BurstPublisher(edge.host, edge.port, window=500) as burst:
                        burst.publish_all(f"{prefix}/meta", batch, timeout=600)
                    answers.collect(lambda got: len(got) >= len(batch), timeout=600)
                took = time.monotonic() - started
                cloud.start()
                received: list[dict[str, object]] = []
                with SessionSubscriber(cloud.host, cloud.port, consumer_id, f"{prefix}/hub") as hub:
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        try:
                            received.extend(
                                json.loads(m.payload) for m in hub.collect(1, timeout=3)
                            )
                        except AssertionError:
                            if any(r["route"]["resource"].endswith("/podstatus") for r in received):  # type: ignore[index]
                                break
            finally:
                service.close()
        finally:
            edge.broker.stop()
    statuses = sum(
        len(r["content"])
        for r in received
        if str(r["route"]["resource"]).endswith("/podstatus")  # type: ignore[index, arg-type]
    )
    return {
        "pods": pods,
        "outage_minutes": minutes,
        "namespaces": namespaces,
        "updates_during_outage": len(batch),
        "edgemeta_messages_to_cloud_after_outage": len(received),
        "statuses_carried_by_the_sync": statuses,
        "forward_every_update_would_send": len(batch),
        "seconds_to_apply_the_outage_updates": round(took, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--namespaces", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.pods, args.minutes, args.namespaces)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
