"""Applied once, never stale: delivery across broker restarts and retained requests (issue 10).

Each test watches edgemeta from outside with a persistent-session recorder,
so it misses nothing while the broker restarts, and counts answers by the
msg_id of the request they answer (`tests/support/delivery.py`).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.burst import BurstPublisher
from tests.support.delivery import Ledger, PacedPublisher, Recorder
from tests.support.helpers import read_db
from tests.support.mqtt import MqttProbe, envelope

# A small duplicate window: a message redelivered after it has left the
# window is applied again, so a missing acknowledgement shows as a second answer.
SMALL_WINDOW = {"database": {"fsync": False, "dedupWindow": 10}}


def configmap_inserts(count: int, version: int, tag: str) -> list[dict[str, Any]]:
    return [
        envelope(
            "insert",
            f"default/configmap/{tag}-{i}",
            "edgecontroller",
            content={"n": i, "version": version},
        )
        for i in range(count)
    ]


def encode(messages: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(m).encode() for m in messages]


def ids_of(messages: list[dict[str, Any]]) -> set[str]:
    return {m["header"]["msg_id"] for m in messages}


def version_stored(db_path: Path) -> dict[str, int]:
    return {key: json.loads(doc["value"])["version"] for key, doc in read_db(db_path).items()}


def restart_later(broker: Broker, after: float) -> threading.Thread:
    """Restart the broker `after` seconds from now, from another thread."""
    thread = threading.Thread(target=lambda: (threading.Event().wait(after), broker.restart()))
    thread.start()
    return thread


def test_broker_restarts_during_a_stream_leave_nothing_stale_or_applied_twice(
    private_broker: Broker, prefix: str, make_service: Any
) -> None:
    broker = private_broker
    service = make_service(broker=broker, database={"fsync": False, "dedupWindow": 1000})
    count = 3000
    v1 = configmap_inserts(count, 1, "cm")
    v2 = configmap_inserts(count, 2, "cm")
    edged = f"{prefix}/edged"
    with Recorder(broker.host, broker.port, [f"{prefix}/hub", edged]) as rec:
        with PacedPublisher(broker.host, broker.port) as pub:
            restart = restart_later(broker, 1.5)
            pub.publish_paced(f"{prefix}/meta", encode(v1), rate=1000)
            restart.join()
            rec.wait_ok(ids_of(v1), timeout=60)
            restart = restart_later(broker, 1.5)
            pub.publish_paced(f"{prefix}/meta", encode(v2), rate=1000)
            restart.join()
        ledger = rec.wait_ok(ids_of(v2), timeout=60)
        # What the last reconnect brought back is answered by now: a marker
        # published after it is answered after everything queued before it.
        marker = envelope("insert", "default/configmap/marker", "edgecontroller", {"version": 0})
        with PacedPublisher(broker.host, broker.port) as pub:
            pub.publish_paced(f"{prefix}/meta", encode([marker]), rate=1)
        ledger = rec.wait_ok(ids_of([marker]), timeout=30)
    assert service.stop() == 0

    twice = ledger.applied_twice(ids_of(v1) | ids_of(v2))
    stored = version_stored(service.db_path)
    stale = [m["route"]["resource"] for m in v2 if stored.get(m["route"]["resource"]) != 2]
    first_ok = ledger.first_ok()
    forwards = ledger.forwards(edged)
    v2_of = {a["route"]["resource"]: b["header"]["msg_id"] for a, b in zip(v1, v2, strict=True)}
    late_forwards = [
        m["header"]["msg_id"]
        for m in v1
        if any(i > first_ok[v2_of[m["route"]["resource"]]] for i in forwards[m["header"]["msg_id"]])
    ]
    assert (len(twice), len(stale), len(late_forwards)) == (0, 0, 0), (
        f"{len(twice)} applied twice, {len(stale)} stale (e.g. {stale[:3]}), "
        f"{len(late_forwards)} v1 inserts forwarded to edged again after their v2 was answered"
    )


def test_messages_queued_while_disconnected_are_not_applied_again_after_a_reconnect(
    private_broker: Broker, prefix: str, make_service: Any
) -> None:
    broker = private_broker
    make_service(broker=broker, **SMALL_WINDOW)
    queued = configmap_inserts(50, 1, "queued")
    with Recorder(broker.host, broker.port, [f"{prefix}/hub", f"{prefix}/edged"]) as rec:
        # Down long enough for edgemeta to back off to a retry more than a
        # second away: the broker comes back and the burst is queued in its
        # session, to be sent right after the CONNACK of the resumed session.
        broker.stop()
        threading.Event().wait(2.5)
        broker.start()
        with BurstPublisher(broker.host, broker.port) as burst:
            assert burst.publish_all(f"{prefix}/meta", encode(queued)) == len(queued)
        first = rec.wait_ok(ids_of(queued), timeout=30)
        assert not first.applied_twice(ids_of(queued))

        broker.restart()
        marker = envelope("insert", "default/configmap/marker", "edgecontroller", {"version": 0})
        with BurstPublisher(broker.host, broker.port) as burst:
            burst.publish_all(f"{prefix}/meta", encode([marker]))
        ledger = rec.wait_ok(ids_of([marker]), timeout=30)

    again = ledger.applied_twice(ids_of(queued))
    assert not again, (
        f"{len(again)} of {len(queued)} messages queued for edgemeta's session while it was "
        "disconnected were answered again with a new msg_id after the broker restarted"
    )


def retained_insert(probe: MqttProbe, prefix: str, resource: str) -> dict[str, Any]:
    message = envelope("insert", resource, "edgecontroller", {"retained": True})
    probe.publish(f"{prefix}/meta", json.dumps(message).encode(), retain=True)
    return message


def test_a_retained_insert_is_applied_at_most_once_and_stays_deleted(
    private_broker: Broker, prefix: str, make_service: Any
) -> None:
    broker = private_broker
    service = make_service(broker=broker, database={"fsync": False})
    key = "default/configmap/retained"
    with (
        MqttProbe(broker.host, broker.port) as probe,
        Recorder(broker.host, broker.port, [f"{prefix}/hub", f"{prefix}/edged"]) as rec,
    ):
        insert = retained_insert(probe, prefix, key)
        delete = envelope("delete", key, "edgecontroller")
        probe.publish(f"{prefix}/meta", json.dumps(delete).encode())
        rec.wait_ok(ids_of([delete]), timeout=15)

        assert service.stop() == 0
        service.close()  # its status probe would not see the broker restart
        broker.restart()
        probe.wait_reconnected()
        service.start()
        assert service.stop() == 0
        service.start()
        # Answered in order: once the marker is answered, a replayed insert would be too.
        marker = envelope("insert", "default/configmap/marker", "edgecontroller", {"v": 0})
        probe.publish(f"{prefix}/meta", json.dumps(marker).encode())
        ledger = rec.wait_ok(ids_of([marker]), timeout=15)
    assert service.stop() == 0

    answers = ledger.answer_ids().get(insert["header"]["msg_id"], set())
    assert len(answers) <= 1, f"the retained insert was answered {len(answers)} times"
    assert key not in read_db(service.db_path), "the deleted key came back from a retained insert"


def test_a_retained_insert_from_before_edgemeta_subscribed_is_never_applied(
    broker: Broker, prefix: str, make_service: Any, probe: MqttProbe
) -> None:
    key = "default/configmap/retained-early"
    retained = retained_insert(probe, prefix, key)
    try:
        service = make_service(database={"fsync": False})
        with Recorder(broker.host, broker.port, [f"{prefix}/hub", f"{prefix}/edged"]) as rec:
            marker = envelope("insert", "default/configmap/marker", "edgecontroller", {"v": 0})
            with BurstPublisher(broker.host, broker.port) as burst:
                burst.publish_all(f"{prefix}/meta", encode([marker]))
            ledger = rec.wait_ok(ids_of([marker]), timeout=15)
        assert service.stop() == 0
    finally:
        probe.publish(f"{prefix}/meta", b"", retain=True)

    answered = ledger.answer_ids()
    assert retained["header"]["msg_id"] not in answered, "the retained insert was answered"
    assert key not in read_db(service.db_path), "the retained insert was applied"


def forwarded_readings(ledger: Ledger, hub: str) -> dict[int, set[str]]:
    """Reading number -> msg_ids of its forwards to the cloud."""
    forwarded: dict[int, set[str]] = {}
    for seen in ledger.seen:
        content = seen.data.get("content")
        if seen.topic == hub and isinstance(content, dict) and "reading" in content:
            forwarded.setdefault(content["reading"], set()).add(seen.msg_id)
    return forwarded


def test_a_redelivered_device_reading_is_forwarded_once(
    private_broker: Broker, prefix: str, make_service: Any
) -> None:
    broker = private_broker
    # The default duplicate window: a module's redelivered message is dropped by it.
    make_service(broker=broker, database={"fsync": False}, devices={"enable": True})
    per_round, rounds = 50, 3
    hub = f"{prefix}/hub"
    with Recorder(broker.host, broker.port, [hub]) as rec:
        # Each round queues readings in edgemeta's session while it is
        # disconnected, as in the test above (sent right after the CONNACK of
        # the resumed session), then restarts the broker. Whether a reading
        # lands before the SUBACK is a race: three rounds make it near certain.
        for n in range(rounds):
            readings = [{"reading": n * per_round + i} for i in range(per_round)]
            broker.stop()
            threading.Event().wait(2.5)
            broker.start()
            with BurstPublisher(broker.host, broker.port) as burst:
                device_topic = f"{prefix}/meta/device/sensor-1"
                payloads = [json.dumps(r).encode() for r in readings]
                assert burst.publish_all(device_topic, payloads) == per_round
            deadline = time.monotonic() + 30
            while len(forwarded_readings(rec.take(), hub)) < (n + 1) * per_round:
                assert time.monotonic() < deadline, "the readings were not forwarded"
                time.sleep(0.05)
            broker.restart()
            marker = envelope("insert", "default/configmap/marker", "edgecontroller", {"n": n})
            with BurstPublisher(broker.host, broker.port) as burst:
                burst.publish_all(f"{prefix}/meta", encode([marker]))
            ledger = rec.wait_ok(ids_of([marker]), timeout=30)

    forwarded = forwarded_readings(ledger, hub)
    total = rounds * per_round
    assert set(forwarded) == set(range(total)), sorted(forwarded)
    twice = {n: ids for n, ids in forwarded.items() if len(ids) > 1}
    assert not twice, (
        f"{len(twice)} of {total} device readings were forwarded to the cloud again "
        "under a new msg_id after a redelivery"
    )
