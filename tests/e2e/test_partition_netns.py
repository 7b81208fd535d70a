"""A real partition: the edge node and the cloud broker in network namespaces of their own.

The cloud end of the veth link is taken down (no FIN, no reset). edgemeta's
cloud heartbeat finds the link silent within its timeout and counts the
cloud disconnected; the edge broker's bridge drops the dead connection by
its keepalive (`--keepalive` of the render script) and retries. When the
link is back, the bridge reconnects, edgemeta counts the cloud connected
again and sends its pod status sync. Skipped, with the reason, where
`ip netns add` is not permitted (not root, or no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.bridge import CLOUD_CONF, render_edge_conf
from tests.support.mqtt import envelope
from tests.support.netns import (
    NetnsAgent,
    NetnsBroker,
    NetnsEdgemeta,
    NetnsPair,
    NetnsUnavailable,
)

NODE = "node-a"
PREFIX = f"beehive/{NODE}"
STATE = f"{PREFIX}/meta/bridge/state"
STATUS = f"{PREFIX}/meta/status"
STATS = f"{PREFIX}/meta/stats"
HUB = f"{PREFIX}/hub"
KEEPALIVE = 5
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 3.0
DEADLINE = 60.0


def cloud_is(state: str) -> Callable[[str], bool]:
    return lambda payload: json.loads(payload)["cloud"] == state


def armed(payload: str) -> bool:
    return json.loads(payload)["cloud_heartbeat_rtt_seconds"] is not None


def is_sync(payload: str) -> bool:
    route = json.loads(payload)["route"]
    return route["source"] == "metaManager" and route["resource"] == "default/podstatus"


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    try:
        pair = NetnsPair.create()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield pair
    finally:
        pair.close()


def test_silent_cut_is_noticed_by_the_heartbeat_and_its_end_syncs(
    netns: NetnsPair, tmp_path: Path
) -> None:
    cloud = NetnsBroker(netns.cloud_ns, netns.cloud_ip, CLOUD_CONF, tmp_dir=tmp_path / "cloud")
    conf = tmp_path / "edge.conf"
    conf.write_text(render_edge_conf(NODE, netns.cloud_ip, cloud.port, keepalive=KEEPALIVE))
    edge = NetnsBroker(netns.edge_ns, "127.0.0.1", conf, tmp_dir=tmp_path / "edge")
    config = tmp_path / "edgemeta" / "edge.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"host": "127.0.0.1", "port": edge.port, "topicPrefix": PREFIX},
                "database": {"path": str(config.parent / "edgemeta.json")},
                "modules": {
                    "metaManager": {
                        "cloudHeartbeatInterval": HEARTBEAT_INTERVAL,
                        "cloudHeartbeatTimeout": HEARTBEAT_TIMEOUT,
                        "podStatusSyncInterval": 3600,
                    }
                },
                "metrics": {"statsInterval": 0.25},
            }
        )
    )
    service = NetnsEdgemeta(netns.edge_ns, config, config.parent / "edgemeta.log")
    agent: NetnsAgent | None = None
    try:
        cloud.start()
        edge.start()
        agent = NetnsAgent(netns.edge_ns, edge.port, [STATE, STATUS, STATS, HUB])
        agent.expect(STATE, "1", DEADLINE)
        service.start()
        agent.expect(STATUS, "online", DEADLINE)
        for resource, content in (("pod/web", {"name": "web"}), ("podstatus/web", "Running")):
            agent.publish(
                f"{PREFIX}/meta",
                envelope("update", f"default/{resource}", "edged", content=content),
            )
        agent.expect(STATS, armed, DEADLINE)

        attempts = edge.log_text().count("Connecting bridge (step 1)")
        cut_at = time.monotonic()
        cut_wall = time.time()
        netns.cut()
        noticed = agent.expect(STATS, cloud_is("disconnected"), HEARTBEAT_TIMEOUT + 5) - cut_wall
        print(f"silent cut: edgemeta counted the cloud disconnected after {noticed:.1f} s")
        assert noticed <= HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + 1.0
        agent.forget()  # from here on, "connected" and a sync can only be news
        while edge.log_text().count("Connecting bridge (step 1)") == attempts:
            assert time.monotonic() < cut_at + 4 * KEEPALIVE, edge.log_text()
            time.sleep(0.1)
        dropped = time.monotonic() - cut_at
        print(f"silent cut: bridge dropped the link after {dropped:.1f} s (keepalive {KEEPALIVE})")
        assert dropped <= 3 * KEEPALIVE

        mend_wall = time.time()
        netns.mend()
        agent.expect(STATE, "1", DEADLINE)
        synced = agent.expect(HUB, is_sync, DEADLINE) - mend_wall
        print(f"link mended: pod status sync sent after {synced:.1f} s")
        agent.expect(STATS, cloud_is("connected"), DEADLINE)
    finally:
        if agent is not None:
            agent.close()
        service.close()
        edge.stop()
        cloud.stop()
