"""Observability: the Prometheus endpoint, stats on <prefix>/meta/stats, health, JSON logs."""

from __future__ import annotations

import json
import re
import time
import urllib.request

from tests.conftest import ServiceFactory
from tests.support.broker import free_port
from tests.support.cli import CliProcess, run_cli
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_endpoint_counters_move_when_messages_flow(
    make_service: ServiceFactory, probe: MqttProbe
) -> None:
    port = free_port()
    edge = make_service(metrics={"port": port})
    received = 'edgemeta_messages_received_total{operation="insert",topic="meta"}'
    sent = 'edgemeta_messages_sent_total{operation="response",topic="response_topic"}'
    before = _scrape(port)
    assert before["edgemeta_cloud_connected"] == -1
    assert before.get(received, 0) == 0

    answers = f"{edge.prefix}/reply/metrics"
    probe.subscribe(answers)
    for i in range(3):
        pod = envelope("insert", f"default/pod/p{i}", "edgecontroller", {"i": i})
        probe.publish(f"{edge.prefix}/meta", pod, response_topic=answers)
        probe.expect(answers)
    probe.subscribe(f"{edge.prefix}/meta/error")
    probe.publish(f"{edge.prefix}/meta", b"not json")
    probe.expect(f"{edge.prefix}/meta/error")
    # Counted before anything is published: once the report is out, so is the count.
    after = _scrape(port)

    assert after[received] == 3
    assert after[sent] == 3
    assert after['edgemeta_messages_sent_total{operation="insert",topic="edged"}'] == 3
    assert after['edgemeta_errors_total{kind="invalid_message"}'] == 1
    assert after['edgemeta_messages_received_total{operation="invalid",topic="meta"}'] == 1
    assert after["edgemeta_store_records"] == 3
    assert after["edgemeta_store_commit_seconds_count"] >= 1


def test_remote_query_latency_and_connection_state(
    make_service: ServiceFactory, probe: MqttProbe
) -> None:
    port = free_port()
    edge = make_service(
        metrics={"port": port},
        modules={"metaManager": {"remoteQueryTimeout": 0.3, "remoteQueryAttempts": 2}},
    )
    meta = f"{edge.prefix}/meta"
    answers = f"{edge.prefix}/reply/remote"
    probe.subscribe(answers)
    probe.publish(meta, envelope("publish", "node/connection", "edgehub", "cloud_connected"))
    probe.publish(meta, envelope("query", "default/secret/s", "edged"), response_topic=answers)
    assert probe.expect(answers, timeout=10).json["route"]["operation"] == "error"

    samples = _scrape(port)

    assert samples["edgemeta_cloud_connected"] == 1
    assert samples['edgemeta_remote_calls_total{kind="query",outcome="no_reply"}'] == 1
    assert samples['edgemeta_remote_retries_total{kind="query"}'] == 1
    assert samples['edgemeta_remote_call_seconds_count{kind="query"}'] == 1
    assert samples['edgemeta_remote_call_seconds_sum{kind="query"}'] >= 0.6


def test_stats_are_published_retained_on_meta_stats(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    stats = f"{prefix}/meta/stats"
    probe.subscribe(stats)
    edge = make_service(metrics={"statsInterval": 0.2})
    done = run_cli(
        "send", "update", "default/podstatus/a", "--content", "{}", "--wait",
        "-c", edge.config_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    got = probe.expect(
        stats,
        lambda r: r.json["messages_received"].get("meta", {}).get("update") == 1,
        timeout=10,
    )

    assert got.json["store"]["records"] == 1
    assert got.json["messages_sent"]["response_topic"]["response"] == 1
    assert got.json["cloud"] == "unknown"
    assert got.json["uptime_seconds"] > 0
    health = run_cli("health", "--stats", "-c", edge.config_path)
    assert health.returncode == 0
    assert health.stdout.startswith("online\n{")
    assert '"messages_received"' in health.stdout


def test_no_stats_and_no_endpoint_by_default(service: EdgemetaProcess, probe: MqttProbe) -> None:
    probe.subscribe(f"{service.prefix}/meta/stats")
    probe.expect_none(f"{service.prefix}/meta/stats", within=1.5)
    assert "metrics on http" not in service.log_text()


def test_health_follows_the_status(make_service: ServiceFactory, prefix: str) -> None:
    edge = make_service()
    online = run_cli("health", "-c", edge.config_path)
    assert (online.returncode, online.stdout) == (0, "online\n")

    edge.stop()
    offline = run_cli("health", "-c", edge.config_path)
    assert (offline.returncode, offline.stdout) == (1, "offline\n")


def test_health_of_a_prefix_never_used_is_unknown(make_service: ServiceFactory) -> None:
    never = make_service(start=False)
    started = time.monotonic()
    done = run_cli("health", "--timeout", "5", "-c", never.config_path)
    assert (done.returncode, done.stdout) == (1, "unknown\n")
    # Known at once (the broker holds no retained status): the timeout is not waited out.
    assert time.monotonic() - started < 4


def test_health_without_a_broker() -> None:
    done = run_cli("health", env={"EDGEMETA_MQTT_PORT": str(free_port())})
    assert done.returncode == 3  # no broker: 3, as every client command
    assert done.stdout == "unknown\n"
    assert "cannot reach the MQTT broker" in done.stderr


def test_run_logs_json_lines(make_service: ServiceFactory, probe: MqttProbe) -> None:
    edge = make_service(start=False)
    probe.subscribe(edge.status_topic)
    with CliProcess("run", "--config", edge.config_path, "--log-format", "json") as run:
        run.expect_stderr(lambda line: "online: listening on" in line)
        probe.expect(edge.status_topic, lambda r: r.payload == b"online")
        assert run.stop() == 0
    entries = [json.loads(line) for line in run.stderr_lines]
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert any(e["message"] == "stopped" for e in entries)
    assert all(re.match(r"\d{4}-\d\d-\d\dT", e["time"]) for e in entries)
