"""SPEC §2 status and session, §4 storage, §5 configuration, §6 the run command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ServiceFactory
from tests.support.broker import REPO_ROOT, Broker
from tests.support.helpers import Edge, msg_id, read_db
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess

# -- status ---------------------------------------------------------------


def test_online_is_retained_after_start(service: EdgemetaProcess, broker: Broker) -> None:
    with MqttProbe(broker.host, broker.port) as late:
        late.subscribe(service.status_topic)
        got = late.expect(service.status_topic, timeout=2)

    assert got.payload == b"online"
    assert got.retain


def test_sigterm_publishes_offline_and_exits_0(
    service: EdgemetaProcess, probe: MqttProbe, broker: Broker
) -> None:
    probe.subscribe(service.status_topic)
    probe.expect(service.status_topic, lambda r: r.payload == b"online")

    assert service.stop() == 0

    assert probe.expect(service.status_topic, timeout=2).payload == b"offline"
    with MqttProbe(broker.host, broker.port) as late:
        late.subscribe(service.status_topic)
        got = late.expect(service.status_topic, timeout=2)
    assert (got.payload, got.retain) == (b"offline", True)


def test_last_will_says_offline_after_sigkill(
    service: EdgemetaProcess, probe: MqttProbe, broker: Broker
) -> None:
    probe.subscribe(service.status_topic)
    probe.expect(service.status_topic, lambda r: r.payload == b"online")

    service.kill()

    assert probe.expect(service.status_topic, timeout=5).payload == b"offline"
    with MqttProbe(broker.host, broker.port) as late:
        late.subscribe(service.status_topic)
        got = late.expect(service.status_topic, timeout=2)
    assert (got.payload, got.retain) == (b"offline", True)


# -- processing right after start, and across restarts -------------------------


def test_first_messages_after_start_are_processed_once_and_it_keeps_running(
    service: EdgemetaProcess, edge: Edge
) -> None:
    requests = [
        edge.send("insert", f"default/pod/p{i}", "edgecontroller", {"i": i}) for i in range(3)
    ]

    for request in requests:
        edge.forwarded(request, edge.edged)
        edge.ok(request, edge.hub)
    # Each effect is published once: no forward or answer is repeated.
    ids = {msg_id(r) for r in requests}
    edge.probe.expect_none(
        f"{edge.prefix}/#",
        lambda r: (
            r.topic != edge.meta
            and (r.json["header"]["msg_id"] in ids or r.json["header"]["parent_msg_id"] in ids)
        ),
        within=0.5,
    )
    assert edge.query("default/pod") == ['{"i":0}', '{"i":1}', '{"i":2}']
    assert service.is_running(), service.log_text()
    assert service.stop() == 0, service.log_text()


def test_messages_published_while_down_are_processed_on_return(
    service: EdgemetaProcess, edge: Edge
) -> None:
    assert service.stop() == 0
    requests = [
        edge.send("insert", f"default/configmap/c{i:03}", "edgecontroller", i) for i in range(50)
    ]
    query = edge.send("query", "default/configmap/c049", "edged")

    service.start()

    for request in requests:
        edge.ok(request, edge.hub)
    assert edge.answer(query, edge.edged).json["content"] == ["49"]
    ids = {msg_id(r) for r in requests}
    edge.probe.expect_none(edge.hub, lambda r: r.json["header"]["parent_msg_id"] in ids, within=0.3)
    assert service.stop() == 0, service.log_text()
    docs = read_db(service.db_path)
    assert len(docs) == 50
    assert docs["default/configmap/c007"] == {
        "key": "default/configmap/c007",
        "type": "configmap",
        "value": "7",
    }


def test_messages_in_flight_at_sigterm_are_answered_exactly_once(
    service: EdgemetaProcess, edge: Edge
) -> None:
    requests = [
        edge.send("insert", f"default/pod/p{i:03}", "edgecontroller", i) for i in range(100)
    ]

    assert service.stop() == 0
    service.start()

    # Whatever was processed before the stop was acknowledged; the rest came back.
    for request in requests:
        edge.ok(request, edge.hub)
    ids = {msg_id(r) for r in requests}
    edge.probe.expect_none(edge.hub, lambda r: r.json["header"]["parent_msg_id"] in ids, within=0.3)
    assert len(edge.query("default/pod")) == 100


def test_store_survives_a_clean_restart(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/secret/s", {"k": "v"})
    assert service.stop() == 0

    service.start()

    assert edge.query("default/secret/s") == ['{"k":"v"}']


def test_acknowledged_effect_survives_kill_9(service: EdgemetaProcess, edge: Edge) -> None:
    request = edge.send("insert", "default/configmap/durable", "edgecontroller", {"d": 1})
    edge.ok(request, edge.hub)

    service.kill()
    service.start()

    assert edge.query("default/configmap/durable") == ['{"d":1}']
    assert service.stop() == 0
    assert read_db(service.db_path)["default/configmap/durable"]["value"] == '{"d":1}'


# -- several edge nodes on one broker ---------------------------------------


def test_prefixes_are_isolated(make_service: ServiceFactory, probe: MqttProbe, prefix: str) -> None:
    other_prefix = f"beehive/t-{uuid.uuid4().hex[:8]}"
    node_a = make_service()
    node_b = make_service(prefix=other_prefix)
    assert node_a.client_id != node_b.client_id
    edge_a = Edge(probe, prefix)
    edge_b = Edge(probe, other_prefix)

    request = edge_a.send("insert", "default/pod/only-a", "edgecontroller", {"a": 1})
    edge_a.ok(request, edge_a.hub)
    edge_a.forwarded(request, edge_a.edged)

    # Nothing but B's own retained status (and its state mirror's start-up
    # marker, README "State mirror") ever shows under B's prefix.
    probe.expect_none(
        f"{other_prefix}/#",
        lambda r: (
            r.topic != node_b.status_topic
            and not r.topic.startswith(f"{other_prefix}/state/$reconcile/")
        ),
        within=0.3,
    )
    assert edge_b.query("default/pod/only-a") == []
    assert edge_a.query("default/pod/only-a") == ['{"a":1}']
    edge_b.insert("default/pod/only-b", {"b": 1})
    assert edge_a.query("default/pod") == ['{"a":1}']
    assert node_a.is_running() and node_b.is_running()


# -- MQTT settings -----------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_qos_sets_the_qos_of_edgemetas_publishes(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str, qos: int
) -> None:
    make_service(mqtt={"qos": qos})
    edge = Edge(probe, prefix)
    request = edge.send("insert", "default/pod/p", "edgecontroller", {"a": 1})

    assert edge.forwarded(request, edge.edged).qos == qos
    assert edge.ok(request, edge.hub).qos == qos


def test_relative_database_path_is_relative_to_the_working_directory(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(database={"path": "rel/dir/meta.json"})
    Edge(probe, prefix).insert("default/pod/p", {"a": 1})

    assert service.stop() == 0

    assert service.db_path == service.tmp_dir / "rel/dir/meta.json"
    assert set(read_db(service.db_path)) == {"default/pod/p"}


# -- configuration errors ------------------------------------------------------


def run_edgemeta(
    config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMETA_")}
    environ["PYTHONPATH"] = str(REPO_ROOT)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgemeta", "run", "--config", str(config)],
        cwd=config.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


BAD_CONFIGS = {
    "unknown top-level key": ("bogus: 1\n", "bogus"),
    "unknown nested key": ("modules:\n  metaManager:\n    bogus: 1\n", "modules.metaManager.bogus"),
    "port a string": ("mqtt:\n  port: '1883'\n", "mqtt.port"),
    "port out of range": ("mqtt:\n  port: 70000\n", "mqtt.port"),
    "port a boolean": ("mqtt:\n  port: true\n", "mqtt.port"),
    "qos 3": ("mqtt:\n  qos: 3\n", "mqtt.qos"),
    "keepalive negative": ("mqtt:\n  keepalive: -1\n", "mqtt.keepalive"),
    "tls.enable not a boolean": ("mqtt:\n  tls:\n    enable: 1\n", "mqtt.tls.enable"),
    "attempts a float": (
        "modules:\n  metaManager:\n    remoteQueryAttempts: 1.5\n",
        "modules.metaManager.remoteQueryAttempts",
    ),
    "attempts 0": (
        "modules:\n  metaManager:\n    remoteQueryAttempts: 0\n",
        "modules.metaManager.remoteQueryAttempts",
    ),
    "sync interval 0": (
        "modules:\n  metaManager:\n    podStatusSyncInterval: 0\n",
        "modules.metaManager.podStatusSyncInterval",
    ),
    "query timeout negative": (
        "modules:\n  metaManager:\n    remoteQueryTimeout: -1\n",
        "modules.metaManager.remoteQueryTimeout",
    ),
    "volume timeout 0": (
        "modules:\n  metaManager:\n    volumeTimeout: 0\n",
        "modules.metaManager.volumeTimeout",
    ),
    "edgeSite a string": (
        "modules:\n  metaManager:\n    edgeSite: 'yes'\n",
        "modules.metaManager.edgeSite",
    ),
    "database.path a number": ("database:\n  path: 5\n", "database.path"),
    "section not a mapping": ("mqtt: 5\n", "mqtt"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_config_error_exits_2_naming_the_dotted_key(
    tmp_path: Path, broker: Broker, case: str
) -> None:
    text, key = BAD_CONFIGS[case]
    # Everything else is valid: were the error missed, edgemeta would go on running.
    good = (
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
        f"  topicPrefix: beehive/cfg-{uuid.uuid4().hex[:8]}\n"
    )
    config = tmp_path / "edge.yaml"
    config.write_text(text if text.startswith("mqtt:") else good + text)

    result = run_edgemeta(config)

    assert result.returncode == 2, result.stderr
    assert key in result.stderr


def test_default_config_path_is_conf_edge_yaml(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMETA_")}
    environ["PYTHONPATH"] = str(REPO_ROOT)

    result = subprocess.run(
        [sys.executable, "-m", "edgemeta", "run"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "conf/edge.yaml" in result.stderr


def test_invalid_yaml_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("mqtt:\n  port: [1883\n")

    result = run_edgemeta(config)

    assert result.returncode == 2, result.stderr
    assert "broken.yaml" in result.stderr


def test_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_edgemeta(tmp_path / "absent.yaml")

    assert result.returncode == 2, result.stderr
    assert "absent.yaml" in result.stderr


# -- environment overrides -------------------------------------------------------


def test_environment_overrides_the_file(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str, broker: Broker, tmp_path: Path
) -> None:
    db_path = tmp_path / "from-env" / "meta.json"
    service = make_service(
        mqtt={"host": "127.0.0.2", "port": 1},
        database={"path": "from-file.json"},
        env={
            "EDGEMETA_MQTT_HOST": broker.host,
            "EDGEMETA_MQTT_PORT": str(broker.port),
            "EDGEMETA_DB_PATH": str(db_path),
        },
    )
    Edge(probe, prefix).insert("default/pod/p", {"env": True})

    assert service.stop() == 0

    assert set(read_db(db_path)) == {"default/pod/p"}
    assert not (service.tmp_dir / "from-file.json").exists()


def test_empty_environment_variables_count_as_unset(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(
        env={"EDGEMETA_MQTT_HOST": "", "EDGEMETA_MQTT_PORT": "", "EDGEMETA_DB_PATH": ""}
    )
    Edge(probe, prefix).insert("default/pod/p", {"a": 1})

    assert service.stop() == 0

    assert set(read_db(service.db_path)) == {"default/pod/p"}


@pytest.mark.parametrize("value", ["abc", "70000", "0", "1.5"])
def test_bad_environment_value_exits_2_naming_the_variable(
    tmp_path: Path, broker: Broker, value: str
) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n")

    result = run_edgemeta(config, {"EDGEMETA_MQTT_PORT": value})

    assert result.returncode == 2, result.stderr
    assert "EDGEMETA_MQTT_PORT" in result.stderr
