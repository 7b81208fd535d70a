"""Small helpers for end-to-end tests: act as the other modules, read the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from tests.support.mqtt import MqttProbe, Received, envelope

Message = dict[str, Any]


def msg_id(message: Message | Received) -> str:
    data = message.json if isinstance(message, Received) else message
    return str(data["header"]["msg_id"])


def compact(value: Any) -> str:
    """SPEC §1 stored form of a content that is not a JSON string."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Edge:
    """One edgemeta seen from the broker: the other modules' side of its topics.

    By default the probe listens on `<prefix>/#`, so it sees what edgemeta
    publishes to every group, the error reports and (as an echo) what the test
    publishes; `listen` names other topics under the prefix instead.
    """

    def __init__(self, probe: MqttProbe, prefix: str, *, listen: tuple[str, ...] = ("#",)) -> None:
        self.probe = probe
        self.prefix = prefix
        for topic in listen:
            probe.subscribe(f"{prefix}/{topic}", qos=1)
        # Anything older is not what a test waits for (the retained status may
        # still arrive: tests that watch every topic leave `meta/status` out).
        probe.drain()

    # -- topics ---------------------------------------------------------
    def topic(self, group: str) -> str:
        return f"{self.prefix}/{group}"

    @property
    def meta(self) -> str:
        return self.topic("meta")

    @property
    def hub(self) -> str:
        return self.topic("hub")

    @property
    def edged(self) -> str:
        return self.topic("edged")

    @property
    def mesh(self) -> str:
        return self.topic("mesh")

    @property
    def func(self) -> str:
        return self.topic("func")

    @property
    def error_topic(self) -> str:
        return self.topic("meta/error")

    # -- sending --------------------------------------------------------
    def send(
        self,
        operation: str,
        resource: str,
        source: str,
        content: Any = None,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        **fields: Any,
    ) -> Message:
        """Publish a well-formed message to `<prefix>/meta`; returns it."""
        message = envelope(operation, resource, source, content, **fields)
        self.probe.publish(
            self.meta,
            json.dumps(message, ensure_ascii=False).encode(),
            response_topic=response_topic,
            correlation_data=correlation_data,
        )
        return message

    def send_raw(self, payload: bytes | str | Message, **kwargs: Any) -> None:
        self.probe.publish(self.meta, payload, **kwargs)

    # -- waiting --------------------------------------------------------
    def answer(
        self, request: Message, topic: str, *, operation: str = "response", timeout: float = 5.0
    ) -> Received:
        """The answer to `request` on `topic`, checked against SPEC §2."""
        rid = msg_id(request)
        got = self.probe.expect(
            topic,
            lambda r: (
                r.json["header"]["parent_msg_id"] == rid
                and r.json["route"]["source"] == "metaManager"
            ),
            timeout=timeout,
        )
        route = got.json["route"]
        assert route["operation"] == operation, got.json
        assert route["resource"] == request["route"].get("resource", ""), got.json
        assert route["group"] == request["route"].get("group", ""), got.json
        if operation == "error":
            assert isinstance(got.json["content"], str) and got.json["content"], got.json
        return got

    def ok(self, request: Message, topic: str, timeout: float = 5.0) -> Received:
        got = self.answer(request, topic, timeout=timeout)
        assert got.json["content"] == "OK", got.json
        return got

    def error(self, request: Message, topic: str, timeout: float = 5.0) -> Received:
        return self.answer(request, topic, operation="error", timeout=timeout)

    def no_answer(self, request: Message, within: float = 0.3) -> None:
        rid = msg_id(request)
        self.probe.expect_none(
            f"{self.prefix}/#",
            lambda r: r.json["header"]["parent_msg_id"] == rid,
            within=within,
        )

    def forwarded(self, request: Message, topic: str, timeout: float = 5.0) -> Received:
        """`request` forwarded unchanged on `topic`."""
        rid = msg_id(request)
        got = self.probe.expect(topic, lambda r: r.json["header"]["msg_id"] == rid, timeout=timeout)
        assert got.json == request, got.json
        return got

    def not_forwarded(self, request: Message, topic: str, within: float = 0.3) -> None:
        rid = msg_id(request)
        self.probe.expect_none(topic, lambda r: r.json["header"]["msg_id"] == rid, within=within)

    def report(self, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        """The next report on `<prefix>/meta/error`, checked against SPEC §2."""

        def match(r: Received) -> bool:
            return predicate is None or predicate(r.json)

        got = self.probe.expect(self.error_topic, match, timeout=timeout)
        report = got.json
        assert isinstance(report, dict), got.payload
        assert set(report) == {"reason", "payload", "truncated", "timestamp"}, report
        assert isinstance(report["reason"], str) and report["reason"], report
        assert isinstance(report["payload"], str), report
        assert isinstance(report["truncated"], bool), report
        assert isinstance(report["timestamp"], int) and report["timestamp"] > 0, report
        return report

    def no_report(self, within: float = 0.3) -> None:
        self.probe.expect_none(self.error_topic, within=within)

    # -- the store, read over MQTT --------------------------------------
    def query(self, resource: str, source: str = "edged", timeout: float = 5.0) -> list[Any]:
        """Ask edgemeta for `resource` as `source` and return the answer's content."""
        request = self.send("query", resource, source)
        got = self.answer(request, self.topic(_GROUPS[source]), timeout=timeout)
        content = got.json["content"]
        assert isinstance(content, list), got.json
        return content

    def stored(self, key: str) -> str | None:
        """The stored value of `key` (answered from the store: no remote type)."""
        values = self.query(key)
        assert len(values) <= 1, values
        return values[0] if values else None

    def insert(self, resource: str, content: Any, source: str = "edgecontroller") -> Message:
        """Insert from the cloud and wait for its OK."""
        request = self.send("insert", resource, source, content)
        self.ok(request, self.topic(_GROUPS[source]))
        return request

    def connect(self, state: str = "cloud_connected") -> Message:
        """Set the cloud link state; a following message is applied after it."""
        return self.send("publish", "node/connection", "edgehub", state)

    def served(self) -> None:
        """Prove edgemeta still serves: a store round trip answers."""
        assert self.query("health/probe/none") == []


_GROUPS = {
    "edged": "edged",
    "edgemesh": "mesh",
    "edgefunction": "func",
    "websocket": "hub",
    "edgehub": "hub",
    "edgecontroller": "hub",
    "funcmgr": "hub",
    "controller": "hub",
}


def read_db(path: Path) -> dict[str, dict[str, Any]]:
    """Every document of table `meta` of a stopped edgemeta's TinyDB file, by key."""
    assert path.is_file(), f"no database at {path}"
    db = TinyDB(path)
    try:
        docs = db.table("meta").all()
    finally:
        db.close()
    by_key: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert set(doc) == {"key", "type", "value"}, doc
        assert doc["key"] not in by_key, f"key {doc['key']!r} stored twice"
        by_key[doc["key"]] = dict(doc)
    return by_key


def remote_query(edge: Edge, request: dict[str, Any], timeout: float = 5.0) -> Received:
    """The (next attempt of the) remote query edgemeta sends the cloud for `request`."""
    return edge.probe.expect(
        edge.hub,
        lambda r: (
            r.json["route"]["operation"] == "query"
            and r.json["route"]["resource"] == request["route"]["resource"]
            and r.json["header"]["msg_id"] != msg_id(request)
        ),
        timeout=timeout,
    )
