"""Nothing acknowledged is lost: crashes, backlogs, broker restarts, bad disks."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from tests.support.broker import Broker
from tests.support.burst import BurstPublisher, SessionObserver
from tests.support.disk import fill, small_disk
from tests.support.mqtt import MqttProbe, envelope

DURABLE = {"database": {"fsync": True}}


def podstatus_updates(count: int, tag: str = "") -> list[dict[str, Any]]:
    return [
        envelope(
            "update",
            f"default/podstatus/pod-{i}",
            "edged",
            content={"phase": "Running", "n": i, "tag": tag},
        )
        for i in range(count)
    ]


def encode(messages: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(m).encode() for m in messages]


def answers_by_parent(messages: list[Any]) -> dict[str, set[str]]:
    """parent_msg_id -> the distinct msg_ids answering it (OK answers only)."""
    found: dict[str, set[str]] = defaultdict(set)
    for msg in messages:
        data = json.loads(msg.payload)
        if data["route"]["operation"] == "response" and data["content"] == "OK":
            found[data["header"]["parent_msg_id"]].add(data["header"]["msg_id"])
    return found


def stored(db_path: Path) -> dict[str, str]:
    db = TinyDB(db_path)
    try:
        return {doc["key"]: doc["value"] for doc in db.table("meta").all()}
    finally:
        db.close()


class AllAnswered:
    """Predicate for SessionObserver.collect: every id in ``ids`` has an OK answer."""

    def __init__(self, ids: set[str]) -> None:
        self.missing = set(ids)
        self.seen = 0

    def __call__(self, messages: list[Any]) -> bool:
        for msg in messages[self.seen :]:
            data = json.loads(msg.payload)
            if data["route"]["operation"] == "response" and data["content"] == "OK":
                self.missing.discard(data["header"]["parent_msg_id"])
        self.seen = len(messages)
        return not self.missing


def test_backlog_published_while_down_is_processed_after_return(broker, prefix, make_service):
    service = make_service(**DURABLE)
    service.stop()
    updates = podstatus_updates(5000)
    ids = {m["header"]["msg_id"] for m in updates}
    with SessionObserver(broker.host, broker.port, [f"{prefix}/edged"]) as answers:
        with BurstPublisher(broker.host, broker.port) as burst:
            assert burst.publish_all(f"{prefix}/meta", encode(updates)) == 5000
        service.start()
        got = answers.collect(AllAnswered(ids), timeout=120)
    by_parent = answers_by_parent(got)
    assert all(len(by_parent[i]) == 1 for i in ids), "a message was answered twice"
    assert service.stop() == 0
    values = stored(service.db_path)
    for update in updates:
        key = update["route"]["resource"]
        assert json.loads(values[key]) == update["content"]


def test_kill_9_mid_burst_loses_nothing_and_applies_once(broker, prefix, make_service):
    service = make_service(**DURABLE)
    updates = podstatus_updates(3000, tag="burst")
    ids = {m["header"]["msg_id"] for m in updates}
    with SessionObserver(broker.host, broker.port, [f"{prefix}/edged"]) as answers:
        with BurstPublisher(broker.host, broker.port) as burst:
            burst.publish_all(f"{prefix}/meta", encode(updates[:1500]))
            before = answers.collect(lambda got: len(got) >= 300, timeout=60)
            service.kill()
            burst.publish_all(f"{prefix}/meta", encode(updates[1500:]))
        acked_before_kill = set(answers_by_parent(before))
        service.start()
        after = answers.collect(AllAnswered(ids - acked_before_kill), timeout=120)
    by_parent = answers_by_parent(before + after)
    assert ids <= set(by_parent)
    twice = [i for i in ids if len(by_parent[i]) != 1]
    assert not twice, f"{len(twice)} updates were answered by more than one distinct answer"
    assert service.stop() == 0
    values = stored(service.db_path)
    for update in updates:
        assert json.loads(values[update["route"]["resource"]]) == update["content"]


def test_stopped_service_processes_the_100_published_meanwhile_once(broker, prefix, make_service):
    service = make_service(**DURABLE)
    assert service.stop() == 0
    updates = podstatus_updates(100, tag="while-down")
    ids = {m["header"]["msg_id"] for m in updates}
    with SessionObserver(broker.host, broker.port, [f"{prefix}/edged", f"{prefix}/hub"]) as seen:
        with BurstPublisher(broker.host, broker.port) as burst:
            burst.publish_all(f"{prefix}/meta", encode(updates))
        service.start()
        got = seen.collect(AllAnswered(ids), timeout=60)
        forwards = [m for m in got if m.topic == f"{prefix}/hub"]
        rest = seen.collect(lambda extra: len(forwards) + len(extra) >= 100, timeout=30)
    hub = [json.loads(m.payload) for m in forwards + rest if m.topic == f"{prefix}/hub"]
    assert sorted(m["header"]["msg_id"] for m in hub) == sorted(ids)
    by_parent = answers_by_parent(got)
    assert all(len(by_parent[i]) == 1 for i in ids)


def test_broker_restart_loses_nothing_in_flight(private_broker: Broker, prefix, make_service):
    service = make_service(broker=private_broker, **DURABLE)
    updates = podstatus_updates(1000, tag="restart")
    ids = {m["header"]["msg_id"] for m in updates}
    with SessionObserver(private_broker.host, private_broker.port, [f"{prefix}/edged"]) as answers:
        with BurstPublisher(private_broker.host, private_broker.port) as burst:
            burst.publish_all(f"{prefix}/meta", encode(updates))
        private_broker.restart()
        got = answers.collect(AllAnswered(ids), timeout=90)
    by_parent = answers_by_parent(got)
    assert all(len(by_parent[i]) == 1 for i in ids)
    assert "connected to" in service.log_text()
    assert service.stop() == 0
    values = stored(service.db_path)
    assert all(u["route"]["resource"] in values for u in updates)


def test_torn_journal_tail_is_cut_and_the_rest_kept(broker, prefix, make_service, probe):
    service = make_service(**DURABLE)
    probe.subscribe(f"{prefix}/edged")
    first = envelope("update", "default/podstatus/a", "edged", content={"v": 1})
    probe.publish(f"{prefix}/meta", first)
    probe.expect(
        f"{prefix}/edged", lambda m: m.json["header"]["parent_msg_id"] == first["header"]["msg_id"]
    )
    service.kill()
    journal = service.db_path.with_name(service.db_path.name + ".journal")
    with open(journal, "ab") as f:
        f.write(b'0badc0de ["p","meta","99",{"key":"torn')
    service.start()
    query = envelope("query", "default/podstatus/a", "edged")
    probe.publish(f"{prefix}/meta", query)
    answer = probe.expect(
        f"{prefix}/edged", lambda m: m.json["header"]["parent_msg_id"] == query["header"]["msg_id"]
    )
    assert answer.json["content"] == ['{"v":1}']
    assert "torn last record" in service.log_text()
    assert service.stop() == 0
    assert stored(service.db_path) == {"default/podstatus/a": '{"v":1}'}


def test_corrupt_snapshot_is_salvaged_set_aside_and_reported(broker, prefix, make_service, probe):
    service = make_service(**DURABLE)
    probe.subscribe(f"{prefix}/edged")
    for name in ("a", "b", "c"):
        msg = envelope("insert", f"default/pod/{name}", "edgecontroller", content={"name": name})
        probe.publish(f"{prefix}/meta", msg)
    probe.subscribe(f"{prefix}/hub")
    for _ in range(3):
        probe.expect(f"{prefix}/hub", lambda m: m.json["content"] == "OK")
    assert service.stop() == 0
    lines = service.db_path.read_bytes().splitlines(keepends=True)
    damaged = [line for line in lines if b'"default/pod/b"' not in line]
    damaged.insert(3, b'"2": {"key":"default/pod/b","ty\n')
    service.db_path.write_bytes(b"".join(damaged[:-1]))  # also cut the closing brace
    probe.subscribe(f"{prefix}/meta/error")
    service.start()
    report = probe.expect(f"{prefix}/meta/error", timeout=10)
    assert "damaged" in report.json["reason"]
    query = envelope("query", "default/pod", "edged")
    probe.publish(f"{prefix}/meta", query)
    answer = probe.expect(
        f"{prefix}/edged", lambda m: m.json["header"]["parent_msg_id"] == query["header"]["msg_id"]
    )
    assert answer.json["content"] == ['{"name":"a"}', '{"name":"c"}']
    assert "DATABASE DAMAGED" in service.log_text()
    aside = list(service.db_path.parent.glob(service.db_path.name + ".corrupt-*"))
    assert len(aside) == 1


def _wait_answer(probe: MqttProbe, topic: str, msg_id: str, timeout: float = 10) -> Any:
    return probe.expect(
        topic, lambda m: m.json["header"]["parent_msg_id"] == msg_id, timeout=timeout
    )


def test_disk_full_answers_error_keeps_store_and_retries(
    broker, prefix, make_service, probe, tmp_path
):
    with small_disk(tmp_path / "disk") as disk:
        db_path = disk / "db" / "edgemeta.json"
        service = make_service(database={"path": str(db_path)})
        probe.subscribe(f"{prefix}/edged")
        probe.subscribe(f"{prefix}/meta/error")
        good = envelope("update", "default/podstatus/ok", "edged", content={"v": "before"})
        probe.publish(f"{prefix}/meta", good)
        assert (
            _wait_answer(probe, f"{prefix}/edged", good["header"]["msg_id"]).json["content"] == "OK"
        )

        filler = fill(disk)
        bad = envelope("update", "default/podstatus/later", "edged", content={"v": "x" * 4000})
        probe.publish(f"{prefix}/meta", bad)
        error = _wait_answer(probe, f"{prefix}/edged", bad["header"]["msg_id"])
        assert error.json["route"]["operation"] == "error"
        assert "storage failure" in error.json["content"]
        report = probe.expect(f"{prefix}/meta/error", timeout=5)
        assert "storage failure" in report.json["reason"]
        assert "No space left" in service.log_text()

        filler.unlink()
        retried = probe.expect(
            f"{prefix}/edged",
            lambda m: (
                m.json["header"]["parent_msg_id"] == bad["header"]["msg_id"]
                and m.json["content"] == "OK"
            ),
            timeout=30,
        )
        assert retried.json["route"]["operation"] == "response"
        assert service.stop() == 0
        values = stored(db_path)
        assert json.loads(values["default/podstatus/ok"]) == {"v": "before"}
        assert json.loads(values["default/podstatus/later"]) == {"v": "x" * 4000}


def test_read_only_database_serves_reads_refuses_writes_then_recovers(
    broker, prefix, make_service, probe, tmp_path
):
    with small_disk(tmp_path / "disk") as disk:
        db_path = disk / "db" / "edgemeta.json"
        service = make_service(database={"path": str(db_path)})
        probe.subscribe(f"{prefix}/edged")
        probe.subscribe(f"{prefix}/meta/error")
        first = envelope("update", "default/podstatus/a", "edged", content={"v": 1})
        probe.publish(f"{prefix}/meta", first)
        assert (
            _wait_answer(probe, f"{prefix}/edged", first["header"]["msg_id"]).json["content"]
            == "OK"
        )
        assert service.stop() == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

        service.start()
        assert "read-only" in service.log_text()
        query = envelope("query", "default/podstatus/a", "edged")
        probe.publish(f"{prefix}/meta", query)
        answer = _wait_answer(probe, f"{prefix}/edged", query["header"]["msg_id"])
        assert answer.json["content"] == ['{"v":1}']

        write = envelope("update", "default/podstatus/b", "edged", content={"v": 2})
        probe.publish(f"{prefix}/meta", write)
        error = _wait_answer(probe, f"{prefix}/edged", write["header"]["msg_id"])
        assert error.json["route"]["operation"] == "error"
        assert "storage failure" in error.json["content"]
        assert "storage failure" in probe.expect(f"{prefix}/meta/error", timeout=5).json["reason"]

        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        probe.expect(
            f"{prefix}/edged",
            lambda m: (
                m.json["header"]["parent_msg_id"] == write["header"]["msg_id"]
                and m.json["content"] == "OK"
            ),
            timeout=30,
        )
        assert service.stop() == 0
        assert stored(db_path) == {
            "default/podstatus/a": '{"v":1}',
            "default/podstatus/b": '{"v":2}',
        }
