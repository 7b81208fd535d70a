"""Cloud liveness through the bridge (edgemeta.heartbeat), with the test as the bridge.

The test publishes the bridge state and echoes edgemeta's heartbeats as a
bridge rendered from the shipped templates does (`tests/support/heartbeat.py`);
stopping the echo is a link that died silently while the bridge state stays
`1`. The real bridges' cases are in test_bridge_faults.py (a relay that
black-holes) and test_partition_netns.py (a veth link set down).
"""

from __future__ import annotations

import json
import time

from tests.conftest import ServiceFactory
from tests.e2e.test_connection_and_sync import add_pod, asks_the_cloud, expect_sync, is_sync
from tests.support.broker import Broker
from tests.support.cli import run_cli
from tests.support.heartbeat import HeartbeatEcho, heartbeat_topic
from tests.support.helpers import Edge
from tests.support.mqtt import MqttProbe

INTERVAL = 0.5
TIMEOUT = 1.5
HEARTBEAT = {
    "cloudHeartbeatInterval": INTERVAL,
    "cloudHeartbeatTimeout": TIMEOUT,
    "podStatusSyncInterval": 3600,
}


def bridge_up(probe: MqttProbe, prefix: str) -> None:
    probe.publish(f"{prefix}/meta/bridge/state", "1", retain=True)


def test_silent_link_cancels_remote_queries_and_its_return_syncs(
    make_service: ServiceFactory, broker: Broker, probe: MqttProbe, prefix: str, ns: str
) -> None:
    make_service(modules={"metaManager": HEARTBEAT})
    edge = Edge(probe, prefix)
    add_pod(edge, ns, "web", {"phase": "Running"})
    with HeartbeatEcho(broker.host, broker.port, prefix) as echo:
        bridge_up(probe, prefix)
        expect_sync(edge, ns)
        echo.beats(2, timeout=5 * INTERVAL)  # echoed: the check is armed
        assert asks_the_cloud(edge, f"{ns}/configmap/a")

        waiting = edge.send("query", f"{ns}/configmap/b", "edged")
        edge.probe.expect(
            edge.hub, lambda r: r.json["route"]["resource"] == f"{ns}/configmap/b", timeout=5
        )
        echo.echoing.clear()
        silent_at = time.monotonic()
        error = edge.error(waiting, edge.edged, timeout=TIMEOUT + INTERVAL + 3)
        noticed = time.monotonic() - silent_at
        assert "the cloud is disconnected" in str(error.json["content"]), error.json
        assert noticed <= TIMEOUT + INTERVAL + 1.0, noticed
        assert not asks_the_cloud(edge, f"{ns}/configmap/c")
        # While the link is silent, pod statuses are stored, not forwarded.
        status = edge.send("update", f"{ns}/podstatus/web", "edged", {"phase": "Failed"})
        edge.ok(status, edge.edged)
        edge.not_forwarded(status, edge.hub)

        echo.echoing.set()
        back = expect_sync(edge, ns, timeout=TIMEOUT + 3)
        assert back.json["content"] == [{"phase": "Failed"}]
        assert asks_the_cloud(edge, f"{ns}/configmap/d")
        edge.probe.expect_none(edge.hub, is_sync, within=3 * INTERVAL)  # one sync, not more


def test_a_bridge_without_heartbeats_keeps_its_plain_state(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str, ns: str
) -> None:
    service = make_service(modules={"metaManager": HEARTBEAT})
    edge = Edge(probe, prefix)
    probe.subscribe(heartbeat_topic(prefix))
    bridge_up(probe, prefix)
    # Beats go out and none comes back, for longer than the timeout.
    # (A beat may arrive twice: the probe's subscriptions overlap.)
    beats: set[bytes] = set()
    while len(beats) * INTERVAL <= TIMEOUT + INTERVAL:
        beats.add(probe.expect(heartbeat_topic(prefix), timeout=5 * INTERVAL).payload)
    assert asks_the_cloud(edge, f"{ns}/configmap/a")
    assert "no heartbeat echo through the bridge" in service.log_text()


def test_no_heartbeat_when_it_is_off_or_the_node_is_an_edge_site(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    probe.subscribe(heartbeat_topic(f"{prefix}/+"))
    for settings, where in (
        ({"cloudHeartbeatInterval": 0}, f"{prefix}/off"),
        ({**HEARTBEAT, "edgeSite": True}, f"{prefix}/site"),
    ):
        make_service(prefix=where, modules={"metaManager": settings})
        bridge_up(probe, where)
    probe.expect_none(heartbeat_topic(f"{prefix}/+"), within=4 * INTERVAL)


def test_doctor_says_whether_heartbeats_come_back(
    make_service: ServiceFactory, broker: Broker, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(modules={"metaManager": HEARTBEAT})
    bridge_up(probe, prefix)

    def heartbeat_check() -> dict[str, str]:
        done = run_cli("doctor", "-o", "json", "--config", service.config_path)
        checks = {c["check"]: c for c in json.loads(done.stdout)}
        assert checks["cloud link"]["status"] == "ok", checks
        return checks["cloud heartbeat"]

    with HeartbeatEcho(broker.host, broker.port, prefix):
        assert heartbeat_check()["status"] == "ok"
    silent = heartbeat_check()
    assert silent["status"] == "warn"
    assert "none of edgemeta's heartbeats came back" in silent["detail"]
