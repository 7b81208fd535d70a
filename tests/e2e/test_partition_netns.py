"""A real partition: the edge node and the cloud broker in network namespaces of their own.

The cloud end of the veth link is taken down (no FIN, no reset). The edge
broker's bridge drops the dead connection by its keepalive
(`--keepalive` of the render script) and retries; when the link is back it
reconnects and the bridge state reads 1 again. Skipped, with the reason,
where `ip netns add` is not permitted (not root, or no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.bridge import CLOUD_CONF, render_edge_conf
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
KEEPALIVE = 5
DEADLINE = 60.0


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


def test_silent_cut_is_dropped_by_the_bridge_keepalive(netns: NetnsPair, tmp_path: Path) -> None:
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
            }
        )
    )
    service = NetnsEdgemeta(netns.edge_ns, config, config.parent / "edgemeta.log")
    agent: NetnsAgent | None = None
    try:
        cloud.start()
        edge.start()
        agent = NetnsAgent(netns.edge_ns, edge.port, [STATE, STATUS])
        agent.expect(STATE, "1", DEADLINE)
        service.start()
        agent.expect(STATUS, "online", DEADLINE)

        attempts = edge.log_text().count("Connecting bridge (step 1)")
        cut_at = time.monotonic()
        netns.cut()
        while edge.log_text().count("Connecting bridge (step 1)") == attempts:
            assert time.monotonic() < cut_at + 4 * KEEPALIVE, edge.log_text()
            time.sleep(0.1)
        dropped = time.monotonic() - cut_at
        print(f"silent cut: bridge dropped the link after {dropped:.1f} s (keepalive {KEEPALIVE})")
        assert dropped <= 3 * KEEPALIVE

        netns.mend()
        agent.expect(STATE, "1", DEADLINE)
    finally:
        if agent is not None:
            agent.close()
        service.close()
        edge.stop()
        cloud.stop()
