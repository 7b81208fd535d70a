"""The delivery protocol on a recording bus: what is published and acknowledged, and when.

The bus here records instead of talking MQTT (the end-to-end tests use a
real broker); the store is a real MetaStore on TinyDB's MemoryStorage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tinydb.storages import MemoryStorage

from edgemeta import handlers
from edgemeta.bus import Inbound
from edgemeta.calls import CallTable
from edgemeta.config import MetaManagerConfig
from edgemeta.delivery import Delivery
from edgemeta.errors import StoreError
from edgemeta.handlers import CloudLink, Context
from edgemeta.intake import Intake
from edgemeta.message import Limits, dumps, loads
from edgemeta.metrics import ServiceMetrics
from edgemeta.store import MetaStore
from edgemeta.topics import Topics


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked: list[int] = []
        self.mid = 0

    def publish(self, topic: str, payload: bytes, qos: int, **_: Any) -> int:
        self.published.append((topic, payload))
        self.mid += 1
        return self.mid

    def ack(self, mid: int, qos: int, session: int) -> None:
        self.acked.append(mid)

    @contextmanager
    def gathered(self) -> Iterator[None]:
        yield

    def taken(self, nbytes: int) -> None:
        pass


class Rig:
    def __init__(self) -> None:
        self.topics = Topics("beehive")
        self.store = MetaStore(MemoryStorage())
        self.context = Context(self.store, self.topics, MetaManagerConfig(), CloudLink())
        self.bus = RecordingBus()
        metrics = ServiceMetrics(self.topics)
        self.delivery = Delivery(
            store=self.store,
            bus=self.bus,  # type: ignore[arg-type]
            intake=Intake(self.context, Limits(), metrics),
            context=self.context,
            calls=CallTable(),
            metrics=metrics,
            qos=1,
        )

    def inbound(self, mid: int, operation: str, resource: str, content: Any = None) -> Inbound:
        payload = dumps(
            {
                "header": {"msg_id": f"m-{mid}"},
                "route": {"source": "edgecontroller", "operation": operation, "resource": resource},
                "content": content,
            }
        )
        return Inbound(self.topics.meta, payload, mid, 1, False, None, None, 1)

    def answers(self) -> list[tuple[str, Any]]:
        found = []
        for topic, payload in self.bus.published:
            msg = loads(payload)
            if topic == self.topics.cloud and msg["route"]["source"] == "metaManager":
                found.append((msg["header"]["parent_msg_id"], msg["content"]))
        return found


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_batch_is_committed_published_then_acknowledged(rig: Rig) -> None:
    batch = [rig.inbound(i, "insert", f"ns/configmap/c{i}", {"v": i}) for i in (1, 2)]
    assert rig.delivery.apply(list(batch))
    assert rig.bus.acked == [1, 2]
    assert rig.answers() == [("m-1", "OK"), ("m-2", "OK")]
    assert rig.store.get("ns/configmap/c2") == '{"v":2}'


def test_a_handler_failure_undoes_its_writes_and_answers_an_error(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = handlers.HANDLERS["insert"]

    def half_then_crash(msg: Any, ctx: Context) -> Any:
        ctx.store.put(msg.resource, msg.restype, "half")
        if msg.msg_id == "m-2":
            raise RuntimeError("boom")
        return real(msg, ctx)

    monkeypatch.setitem(handlers.HANDLERS, "insert", half_then_crash)
    batch = [rig.inbound(i, "insert", f"ns/configmap/c{i}", {"v": i}) for i in (1, 2, 3)]
    assert rig.delivery.apply(list(batch))
    assert rig.store.get("ns/configmap/c1") == '{"v":1}'
    assert rig.store.get("ns/configmap/c2") is None
    assert rig.store.get("ns/configmap/c3") == '{"v":3}'
    answers = dict(rig.answers())
    assert answers["m-1"] == "OK" and answers["m-3"] == "OK"
    assert "RuntimeError: boom" in answers["m-2"]
    assert rig.bus.acked == [1, 2, 3]


def test_a_batch_that_cannot_be_committed_is_held_and_not_acknowledged(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: Any) -> None:
        raise StoreError("No space left on device")

    monkeypatch.setattr(rig.store, "commit", full)
    batch = [rig.inbound(1, "insert", "ns/configmap/x", {"v": 1})]
    assert not rig.delivery.apply(list(batch))
    assert rig.delivery.failed == batch
    assert rig.delivery.retry_at is not None
    assert rig.bus.acked == []
    assert rig.store.get("ns/configmap/x") is None
    [(parent, content)] = rig.answers()
    assert parent == "m-1" and "storage failure" in content
    monkeypatch.undo()
    assert rig.delivery.retry_failed()
    assert rig.delivery.failed is None
    assert rig.bus.acked == [1]
    assert rig.store.get("ns/configmap/x") == '{"v":1}'
    assert rig.answers()[-1] == ("m-1", "OK")
