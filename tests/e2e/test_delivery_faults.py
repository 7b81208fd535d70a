"""Delivery under faults (issue 10): a full disk, restarts, large payloads, signals, a dead
network thread."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.burst import BurstPublisher
from tests.support.delivery import Recorder
from tests.support.disk import fill, small_disk
from tests.support.helpers import read_db
from tests.support.mqtt import envelope

#: edgemeta's resident memory after 256 legal 1 MB inserts. Idle it is about
#: 50 MB; measured here on the code of issue 10: 918 MB (1.29 GB in the issue);
#: after the fix 289 MB, of which 256 MB are the stored values themselves.
RSS_BOUND_MB = 400
SETTLE_S = 15.0


def encode(messages: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(m).encode() for m in messages]


def ids_of(messages: list[dict[str, Any]]) -> set[str]:
    return {m["header"]["msg_id"] for m in messages}


def publish(broker: Broker, topic: str, messages: list[dict[str, Any]], window: int = 200) -> None:
    with BurstPublisher(broker.host, broker.port, window=window) as burst:
        assert burst.publish_all(topic, encode(messages), timeout=120) == len(messages)


def test_an_update_that_failed_on_a_full_disk_is_not_applied_after_a_later_delete(
    broker: Broker, prefix: str, make_service: Any, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        db_path = disk / "db" / "edgemeta.json"
        service = make_service(database={"path": str(db_path)})
        key = "default/configmap/x"
        with Recorder(broker.host, broker.port, [f"{prefix}/hub"]) as rec:
            first = envelope("insert", key, "edgecontroller", {"v": 1})
            publish(broker, f"{prefix}/meta", [first])
            rec.wait_ok(ids_of([first]), timeout=10)

            filler = fill(disk)
            update = envelope("update", key, "edgecontroller", {"v": 2, "pad": "x" * 4000})
            publish(broker, f"{prefix}/meta", [update])
            deadline = time.monotonic() + 10
            while update["header"]["msg_id"] not in rec.take().answer_ids():
                assert time.monotonic() < deadline, "no answer to the update on a full disk"
                time.sleep(0.05)
            failed = [a for a in rec.ledger.answers() if a.parent == update["header"]["msg_id"]]
            assert failed[0].operation == "error", failed[0].data
            assert "storage failure" in failed[0].data["content"]

            filler.unlink()
            delete = envelope("delete", key, "edgecontroller")
            publish(broker, f"{prefix}/meta", [delete])
            ledger = rec.wait_ok(ids_of([update, delete]), timeout=30)
        assert service.stop() == 0

        first_ok = ledger.first_ok()
        assert first_ok[update["header"]["msg_id"]] < first_ok[delete["header"]["msg_id"]], (
            "the update that had failed was applied after the delete sent later"
        )
        assert key not in read_db(db_path), "the delete was undone by the retried update"


def test_with_qos_0_an_answer_refused_while_offline_is_not_republished_at_every_start(
    private_broker: Broker, prefix: str, make_service: Any
) -> None:
    broker = private_broker
    service = make_service(
        broker=broker,
        mqtt={"qos": 0},
        database={"fsync": False},
        modules={"metaManager": {"remoteQueryTimeout": 1, "remoteQueryAttempts": 1}},
    )
    connect = envelope("publish", "node/connection", "edgehub", "cloud_connected")
    query = envelope("query", "default/configmap/asked-offline", "edged")
    with Recorder(broker.host, broker.port, [f"{prefix}/hub", f"{prefix}/edged"]) as rec:
        publish(broker, f"{prefix}/meta", [connect, query])
        deadline = time.monotonic() + 10
        while not any(s.operation == "query" and s.topic.endswith("/hub") for s in rec.take().seen):
            assert time.monotonic() < deadline, "no remote query"
            time.sleep(0.05)
        # The query times out while the broker is down: its error answer is
        # published at QoS 0 while offline, which the broker never confirms.
        broker.stop()
        time.sleep(2.0)  # past remoteQueryTimeout: the moment the answer is made
        broker.start()
        first_run = len(answered_again(broker, rec, prefix).seen)
        for _ in range(3):
            answered_again(broker, rec, prefix)
            assert service.stop() == 0
            service.close()  # its status probe may not have seen the broker restart
            service.start()
        ledger = answered_again(broker, rec, prefix)

    later = [s for s in ledger.seen[first_run:] if s.parent == query["header"]["msg_id"]]
    assert not later, (
        "the answer made while the broker was down was published again by a later run: "
        f"{[s.data for s in later]}"
    )


def answered_again(broker: Broker, rec: Recorder, prefix: str, timeout: float = 20) -> Any:
    """Insert markers until one is answered: edgemeta serves and the recorder listens.

    At QoS 0 an answer sent while the recorder reconnects is lost, so one
    marker is not enough.
    """
    deadline = time.monotonic() + timeout
    while True:
        marker = envelope("insert", "default/configmap/marker", "edgecontroller", {})
        publish(broker, f"{prefix}/meta", [marker])
        try:
            return rec.wait_ok(ids_of([marker]), timeout=1)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_256_inserts_of_1_mb_leave_memory_bounded(
    broker: Broker, prefix: str, make_service: Any
) -> None:
    service = make_service(database={"fsync": False})
    assert service.pid is not None
    pad = "x" * 999_700  # the whole message stays under limits.maxPayloadBytes (1 MiB)
    inserts = [
        envelope("insert", f"default/configmap/big-{i}", "edgecontroller", {"pad": pad})
        for i in range(256)
    ]
    assert all(len(p) < 1_000_000 for p in encode(inserts[:1]))
    with Recorder(broker.host, broker.port, [f"{prefix}/hub"]) as rec:
        publish(broker, f"{prefix}/meta", inserts, window=8)
        rec.wait_ok(ids_of(inserts), timeout=120)
    # Right after the last answer, paho may still hold forwards and mirror messages
    # whose PUBACK it has not handled yet (on a loaded machine, hundreds of MB): the
    # bound is on what stays once those are done. RSS has no event: it is polled.
    deadline = time.monotonic() + SETTLE_S
    while (rss := rss_mb(service.pid)) >= RSS_BOUND_MB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rss < RSS_BOUND_MB, (
        f"edgemeta's RSS is {rss:.0f} MB {SETTLE_S} s after 256 inserts of 1 MB were answered"
    )


def test_sigterm_during_start_up_exits_0_and_leaves_a_snapshot(make_service: Any) -> None:
    # The signal lands once edgemeta's own code runs (it has taken the database
    # lock: the store is being opened), at several moments of the start-up. A
    # signal before the interpreter has started cannot be caught by any Python
    # program; on the code of issue 10 each of these exited with -15.
    service = make_service(start=False, database={"fsync": False})
    lock = Path(f"{service.db_path}.lock")
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        service.db_path.unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
        service.start(wait_online=False)
        deadline = time.monotonic() + 15
        while not lock.exists():
            assert time.monotonic() < deadline, "edgemeta never opened its database"
            time.sleep(0.002)
        time.sleep(delay)  # the moment the signal lands, not a wait for a result
        status = service.stop(timeout=10)
        assert status == 0, f"SIGTERM {delay} s into start-up: exit status {status}"
        assert service.db_path.exists(), f"no snapshot after SIGTERM {delay} s into start-up"


def test_sigterm_at_random_moments_of_an_idle_service_always_exits_0(
    make_service: Any,
) -> None:
    # A short sync interval makes the main loop's wait end every few ms, so a
    # signal lands at the end of a wait in a few tries rather than one in forty
    # (on the code of issue 10 it hung within the first 3 attempts).
    service = make_service(
        start=False,
        database={"fsync": False},
        modules={"metaManager": {"podStatusSyncInterval": 0.005}},
    )
    rng = random.Random(10)
    for attempt in range(15):
        service.start()
        delay = rng.uniform(0.0, 0.4)
        time.sleep(delay)  # the moment the signal lands
        try:
            status = service.stop(timeout=10)
        except RuntimeError:
            raise AssertionError(
                f"attempt {attempt}: SIGTERM {delay:.3f} s after online ignored for 10 s"
            ) from None
        assert status == 0, f"attempt {attempt}: exit status {status}"


def test_a_host_paho_cannot_encode_stops_the_process_with_status_1(
    make_service: Any,
) -> None:
    # "label too long": socket.getaddrinfo raises UnicodeError (not an OSError)
    # on paho's network thread.
    host = "a" * 300
    service = make_service(start=False, mqtt={"host": host})
    service.start(wait_online=False)
    try:
        status = service.wait(timeout=15)
    except RuntimeError:
        raise AssertionError("edgemeta still runs 15 s after its network thread died") from None
    assert status == 1, f"exit status {status}\n{service.log_text()}"
    assert host in service.log_text()
