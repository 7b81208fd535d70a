"""SPEC §7 state mirror: every stored object retained on <prefix>/state/<key>."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

from tests.support.broker import Broker
from tests.support.helpers import Edge, compact, read_db
from tests.support.mqtt import MqttProbe, Received
from tests.support.service import EdgemetaProcess

ServiceFactory = Any


def mirror_of(broker: Broker, prefix: str) -> dict[str, Received]:
    """What a subscriber arriving now sees at once: the retained messages, by topic."""
    with MqttProbe(broker.host, broker.port) as late:
        late.subscribe(f"{prefix}/state/#")
        # Retained messages come before anything published after the SUBACK.
        end = f"{prefix}/test-end/{uuid.uuid4().hex}"
        late.subscribe(end)
        late.publish(end, b"end")
        seen: dict[str, Received] = {}
        while True:
            got = late.expect(timeout=10)
            if got.topic == end:
                return seen
            if got.retain:
                seen[got.topic] = got


def props(received: Received) -> dict[str, str]:
    return dict(received.properties.user_properties)


def wait_reconciled(service: EdgemetaProcess, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while service.log_text().count("mirror reconciled") < count:
        assert time.monotonic() < deadline, service.log_text()
        time.sleep(0.05)


def test_a_late_subscriber_sees_the_whole_state_at_once(
    service: EdgemetaProcess, edge: Edge, broker: Broker, prefix: str
) -> None:
    edge.insert("default/configmap/a", {"v": 1})
    edge.insert("default/pod/p1", {"spec": "x"})
    edge.insert("kube-system/node", "plain text")

    mirror = mirror_of(broker, prefix)

    assert {t: m.payload for t, m in mirror.items()} == {
        f"{prefix}/state/default/configmap/a": b'{"v":1}',
        f"{prefix}/state/default/pod/p1": b'{"spec":"x"}',
        f"{prefix}/state/kube-system/node": b"plain text",
    }
    a = mirror[f"{prefix}/state/default/configmap/a"]
    assert a.qos == 1
    assert props(a)["key"] == "default/configmap/a"
    assert props(a)["type"] == "configmap"
    assert int(props(a)["revision"]) >= 1
    assert props(mirror[f"{prefix}/state/kube-system/node"])["key"] == "kube-system/node"


def test_updates_deletes_and_list_inserts_come_in_order_with_growing_revisions(
    service: EdgemetaProcess, edge: Edge, prefix: str
) -> None:
    wait_reconciled(service)
    # Each committed on its own (answered before the next is sent): a batch that
    # holds several changes of one key publishes only its last state.
    edge.insert("default/configmap/c", {"v": 1})
    edge.ok(edge.send("update", "default/configmap/c", "edgecontroller", {"v": 2}), edge.hub)
    edge.ok(edge.send("delete", "default/configmap/c", "edgecontroller"), edge.hub)
    items = [
        {"metadata": {"namespace": "default", "name": "web"}},
        {"metadata": {"namespace": "other", "name": "db"}},
    ]
    edge.send("insert", "default/servicelist", "edgecontroller", items)

    def state(topic: str) -> Received:
        return edge.probe.expect(f"{prefix}/state/{topic}", timeout=5)

    seen = [state("default/configmap/c") for _ in range(3)]
    web, db = state("default/service/web"), state("other/service/db")

    assert [m.payload for m in seen] == [b'{"v":1}', b'{"v":2}', b""]
    assert all(m.retain is False and m.qos == 1 for m in seen)  # live: not a retained replay
    revisions = [int(props(m)["revision"]) for m in [*seen, web, db]]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert props(seen[2]) == {
        "key": "default/configmap/c",
        "type": "configmap",
        "revision": str(revisions[2]),
    }
    assert web.payload == compact(items[0]).encode()
    assert props(db)["type"] == "service" and props(db)["key"] == "other/service/db"


def test_a_key_gone_while_edgemeta_was_stopped_is_cleared_at_start(
    make_service: ServiceFactory, broker: Broker, prefix: str, probe: MqttProbe
) -> None:
    service = make_service()
    edge = Edge(probe, prefix)
    edge.insert("default/configmap/keep", {"v": 1})
    assert service.stop() == 0
    # Left behind by a run that crashed, or by hand: nothing in the store has it.
    probe.publish(f"{prefix}/state/default/configmap/gone", b'{"old":1}', retain=True)
    probe.publish(f"{prefix}/state/default/configmap/keep", b'{"v":0}', retain=True)

    service.start()
    wait_reconciled(service, count=2)  # the log goes on across restarts

    mirror = mirror_of(broker, prefix)
    assert {t: m.payload for t, m in mirror.items()} == {
        f"{prefix}/state/default/configmap/keep": b'{"v":1}',
    }


def test_after_kill_9_in_a_burst_the_mirror_equals_the_store(
    make_service: ServiceFactory, broker: Broker, prefix: str, probe: MqttProbe
) -> None:
    service = make_service()
    edge = Edge(probe, prefix, listen=("hub",))
    for i in range(200):
        edge.send("insert", f"default/configmap/c{i}", "edgecontroller", {"i": i})
        if i % 3 == 0:
            edge.send("delete", f"default/configmap/c{i // 2}", "edgecontroller")
    service.kill()
    service.start()
    wait_reconciled(service, count=2)
    assert service.stop() == 0

    stored = {key: doc["value"].encode() for key, doc in read_db(service.db_path).items()}
    mirror = {t: m.payload for t, m in mirror_of(broker, prefix).items()}
    assert mirror == {f"{prefix}/state/{key}": value for key, value in stored.items()}
    assert stored


def test_secrets_are_not_mirrored_by_default(
    service: EdgemetaProcess, edge: Edge, broker: Broker, prefix: str
) -> None:
    edge.insert("default/secret/s", {"password": "hunter2"})
    edge.insert("default/configmap/c", {"v": 1})

    assert list(mirror_of(broker, prefix)) == [f"{prefix}/state/default/configmap/c"]


def test_every_type_with_a_star_secrets_too_in_plain(
    make_service: ServiceFactory, probe: MqttProbe, broker: Broker, prefix: str, tmp_path: Any
) -> None:
    key_file = tmp_path / "secret.key"
    from cryptography.fernet import Fernet

    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(0o600)
    make_service(mirror={"types": ["*"]}, database={"secretKeyFile": str(key_file)})
    edge = Edge(probe, prefix)
    edge.insert("default/secret/s", {"password": "hunter2"})

    mirror = mirror_of(broker, prefix)
    secret = mirror[f"{prefix}/state/default/secret/s"]
    assert secret.payload == b'{"password":"hunter2"}'
    assert props(secret)["type"] == "secret"


def test_only_the_listed_types(
    make_service: ServiceFactory, probe: MqttProbe, broker: Broker, prefix: str
) -> None:
    make_service(mirror={"types": ["pod"]})
    edge = Edge(probe, prefix)
    edge.insert("default/pod/p", {"v": 1})
    edge.insert("default/configmap/c", {"v": 1})

    assert list(mirror_of(broker, prefix)) == [f"{prefix}/state/default/pod/p"]


def test_a_disabled_mirror_publishes_nothing_under_state(
    make_service: ServiceFactory, probe: MqttProbe, broker: Broker, prefix: str
) -> None:
    make_service(mirror={"enable": False})
    probe.subscribe(f"{prefix}/state/#")
    edge = Edge(probe, prefix, listen=("hub",))
    edge.insert("default/configmap/c", {"v": 1})

    probe.expect_none(f"{prefix}/state/#", within=0.5)
    assert mirror_of(broker, prefix) == {}


def test_a_retained_message_on_state_is_never_a_request(
    make_service: ServiceFactory, probe: MqttProbe, broker: Broker, prefix: str
) -> None:
    # Something that looks like a request, retained under state/ before the start.
    raw = (
        '{"route":{"source":"edgecontroller","group":"meta","operation":"insert",'
        '"resource":"default/configmap/x"},"content":{}}'
    )
    probe.publish(f"{prefix}/state/default/configmap/x", raw, retain=True)
    service = make_service()
    wait_reconciled(service)
    edge = Edge(probe, prefix)

    assert edge.query("default/configmap/x") == []
    assert mirror_of(broker, prefix) == {}


def test_the_readme_session_with_mosquitto_sub(
    service: EdgemetaProcess, edge: Edge, broker: Broker, prefix: str
) -> None:
    edge.insert("default/configmap/app-cfg", {"data": {"mode": "edge"}})
    edge.insert("default/pod/nginx", {"spec": {"nodeName": "n1"}})

    # README "State mirror": what a late subscriber sees at once.
    where = ["-h", broker.host, "-p", str(broker.port)]
    result = subprocess.run(
        ["mosquitto_sub", *where, "-V", "mqttv5", "-t", f"{prefix}/state/#", "-v", "-C", "2"],
        capture_output=True,
        text=True,
        timeout=20,
    )

    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        f'{prefix}/state/default/configmap/app-cfg {{"data":{{"mode":"edge"}}}}',
        f'{prefix}/state/default/pod/nginx {{"spec":{{"nodeName":"n1"}}}}',
    ]
