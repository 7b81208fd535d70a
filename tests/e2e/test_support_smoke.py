"""The test support itself, against a real Mosquitto."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess, merge


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_config_is_rewritten_into_tmp(private_broker: Broker) -> None:
    conf = private_broker.conf_path.read_text()
    assert f"listener {private_broker.port} 127.0.0.1" in conf
    assert "listener 1883" not in conf
    assert f"persistence_location {private_broker.data_dir}/" in conf
    assert "persistence_location data/mosquitto/" not in conf
    assert "max_queued_messages 200000" in conf


def test_broker_restart_keeps_port_and_retained_messages(private_broker: Broker) -> None:
    port = private_broker.port
    with MqttProbe(private_broker.host, port) as publisher:
        publisher.publish("smoke/retained", b"kept", retain=True)

    private_broker.restart()

    assert private_broker.port == port
    assert private_broker.is_running()
    assert (private_broker.data_dir / "mosquitto.db").is_file()
    with MqttProbe(private_broker.host, port) as reader:
        reader.subscribe("smoke/retained")
        got = reader.expect("smoke/retained")
    assert got.payload == b"kept"
    assert got.retain


def test_broker_kill_then_start(private_broker: Broker) -> None:
    private_broker.kill()
    assert not private_broker.is_running()
    private_broker.start()
    with MqttProbe(private_broker.host, private_broker.port) as client:
        client.subscribe("smoke/alive")
        client.publish("smoke/alive", "yes")
        assert client.expect("smoke/alive").payload == b"yes"


def test_broker_failure_shows_the_log(tmp_path: Path) -> None:
    broken = Broker(tmp_dir=tmp_path, extra_conf="no_such_option true")
    with pytest.raises(RuntimeError, match="no_such_option"):
        broken.start()
    assert not broken.is_running()


def test_probe_reconnects_and_resubscribes(private_broker: Broker) -> None:
    with (
        MqttProbe(private_broker.host, private_broker.port) as watcher,
        MqttProbe(private_broker.host, private_broker.port) as publisher,
    ):
        watcher.subscribe("smoke/again")
        private_broker.restart()
        watcher.wait_disconnected()
        watcher.wait_reconnected()
        publisher.wait_reconnected()
        publisher.publish("smoke/again", b"1")
        assert watcher.expect("smoke/again").payload == b"1"


def test_round_trip_with_properties(probe: MqttProbe, prefix: str) -> None:
    topic = f"{prefix}/meta"
    probe.subscribe(topic)
    message = envelope("query", "default/pod/nginx", "edged", content={"a": 1})
    probe.publish(topic, message, response_topic=f"{prefix}/reply", correlation_data=b"c-1")

    got = probe.expect(topic)

    assert got.json == message
    assert got.qos == 1
    assert not got.retain
    assert got.properties.response_topic == f"{prefix}/reply"
    assert got.properties.correlation_data == b"c-1"


def test_expect_keeps_messages_that_do_not_match(probe: MqttProbe, prefix: str) -> None:
    probe.subscribe(f"{prefix}/#")
    first = envelope("update", "default/podstatus/a", "edged")
    second = envelope("update", "default/podstatus/b", "edged")
    probe.publish(f"{prefix}/one", first)
    probe.publish(f"{prefix}/two", second)

    got_second = probe.expect(
        predicate=lambda r: r.json["header"]["msg_id"] == second["header"]["msg_id"]
    )
    got_first = probe.expect(f"{prefix}/one")

    assert got_second.topic == f"{prefix}/two"
    assert got_first.json == first
    assert probe.drain() == []


def test_expect_none_and_expect_timeout(probe: MqttProbe, prefix: str) -> None:
    probe.subscribe(f"{prefix}/#")
    probe.publish(f"{prefix}/other", "x")

    probe.expect_none(f"{prefix}/quiet", within=0.3)
    with pytest.raises(AssertionError, match="unexpected message"):
        probe.expect_none(f"{prefix}/other", within=0.3)
    with pytest.raises(AssertionError, match="no message"):
        probe.expect(f"{prefix}/quiet", timeout=0.2)
    assert [r.payload for r in probe.drain()] == [b"x"]


def test_retained_message_seen_by_a_new_probe(
    broker: Broker, probe: MqttProbe, prefix: str
) -> None:
    topic = f"{prefix}/meta/status"
    probe.publish(topic, "online", retain=True)

    with MqttProbe(broker.host, broker.port) as late:
        late.subscribe(topic)
        got = late.expect(topic)
        assert got.payload == b"online"
        assert got.retain

    probe.publish(topic, b"", retain=True)
    with MqttProbe(broker.host, broker.port) as later:
        later.subscribe(topic)
        later.expect_none(topic, within=0.3)


def test_envelope_shape() -> None:
    message = envelope("insert", "default/pod/x", "edgecontroller", content="c", group="meta")
    header = message["header"]
    assert len(header["msg_id"]) == 36
    assert header["parent_msg_id"] == ""
    assert isinstance(header["timestamp"], int)
    assert header["sync"] is False
    assert message["route"] == {
        "source": "edgecontroller",
        "group": "meta",
        "operation": "insert",
        "resource": "default/pod/x",
    }
    assert message["content"] == "c"


def test_service_config_merges_overrides(tmp_path: Path) -> None:
    process = EdgemetaProcess(
        "127.0.0.1",
        1,
        tmp_path,
        prefix="beehive/node-a",
        overrides={"modules": {"metaManager": {"remoteQueryTimeout": 2}}},
    )
    assert process.client_id == "edgemeta-beehive-node-a"
    assert process.config["mqtt"]["topicPrefix"] == "beehive/node-a"
    assert process.config["modules"] == {"metaManager": {"remoteQueryTimeout": 2}}
    assert process.db_path == tmp_path / "edgemeta.json"
    assert "remoteQueryTimeout: 2" in process.config_path.read_text()
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
