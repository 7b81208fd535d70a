"""The store from outside: crafted secrets, damaged journals, a small disk (issue 10, items 6-8)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_durability import DURABLE, AllAnswered, encode, stored
from tests.support.burst import BurstPublisher, SessionObserver
from tests.support.disk import small_disk
from tests.support.helpers import Edge
from tests.support.mqtt import MqttProbe, envelope


def test_a_plain_secret_that_looks_encrypted_does_not_stop_start_up(
    broker, prefix, make_service, probe: MqttProbe
) -> None:
    service = make_service(**DURABLE)
    edge = Edge(probe, prefix)
    edge.insert("default/secret/x", "fernet:x")
    assert edge.stored("default/secret/x") == "fernet:x"
    assert service.stop() == 0
    service.start()
    assert edge.stored("default/secret/x") == "fernet:x"
    service.kill()
    service.start()
    assert edge.stored("default/secret/x") == "fernet:x"


def configmaps(count: int) -> list[dict]:
    return [
        envelope("insert", f"default/configmap/cm-{i:05d}", "edgecontroller", content={"n": i})
        for i in range(count)
    ]


def flip_a_bit(path: Path, fraction: float) -> bytes:
    """Flip one bit inside the first document record at or after ``fraction`` of the file."""
    data = bytearray(path.read_bytes())
    start = data.index(b"\n", int(len(data) * fraction)) + 1
    while data[start + 9 : start + 14] != b'["p",':
        start = data.index(b"\n", start) + 1
    end = data.index(b"\n", start)
    at = (start + end) // 2
    data[at] ^= 0x04
    path.write_bytes(bytes(data))
    return bytes(data[start:end])


def test_a_flipped_bit_in_the_journal_loses_one_record_and_reports_it(
    broker, prefix, make_service, probe: MqttProbe
) -> None:
    service = make_service(**DURABLE)
    inserts = configmaps(2000)
    ids = {m["header"]["msg_id"] for m in inserts}
    with SessionObserver(broker.host, broker.port, [f"{prefix}/hub"]) as answers:
        with BurstPublisher(broker.host, broker.port) as burst:
            assert burst.publish_all(f"{prefix}/meta", encode(inserts)) == 2000
        answers.collect(AllAnswered(ids), timeout=120)
    service.kill()
    journal = service.db_path.with_name(service.db_path.name + ".journal")
    flip_a_bit(journal, 0.10)

    probe.subscribe(f"{prefix}/meta/error")
    probe.drain()
    service.start()
    report = probe.expect(f"{prefix}/meta/error", timeout=10)
    reason = report.json["reason"]
    assert "journal record" in reason and "dropped" in reason, reason
    probe.expect_none(f"{prefix}/meta/error", within=1.0)
    assert service.stop() == 0
    values = stored(service.db_path)
    keys = {m["route"]["resource"] for m in inserts}
    present = keys & set(values)
    assert len(present) == 1999, f"{len(present)} of 2000 kept"
    (lost,) = keys - present
    assert lost in reason or "configmap" in reason, reason
    for message in inserts:
        key = message["route"]["resource"]
        if key in values:
            assert json.loads(values[key]) == message["content"]


def test_one_configmap_updated_500_times_on_a_2_mb_disk(
    broker, prefix, make_service, probe: MqttProbe, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        db_path = disk / "db" / "edgemeta.json"
        make_service(database={"path": str(db_path), "fsync": True})
        edge = Edge(probe, prefix, listen=("hub", "meta/error"))
        big = "x" * 16_000
        for i in range(500):
            request = edge.send("update", "default/configmap/big", "edgecontroller", f"{i} {big}")
            edge.ok(request, edge.hub, timeout=10)
        assert edge.query("default/configmap/big", source="edgecontroller") == [f"499 {big}"]
