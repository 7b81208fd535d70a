"""What the service counts: Prometheus metrics in a registry of its own, and their JSON form.

The only module that imports prometheus_client. Each ServiceMetrics has its
own CollectorRegistry, so several services (tests) never share counters.
Label values are bounded: topics are named by their group (a requester's own
Response Topic counts as ``response_topic``), unknown operations as ``other``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from .message import (
    OP_ACTION,
    OP_ACTION_RESULT,
    OP_DELETE,
    OP_ERROR,
    OP_INSERT,
    OP_KEEPALIVE,
    OP_PUBLISH,
    OP_QUERY,
    OP_RESPONSE,
    OP_SYNC,
    OP_UPDATE,
    VOLUME_OPS,
    now_ms,
)
from .topics import Topics

KNOWN_OPERATIONS = frozenset(
    {
        OP_ACTION,
        OP_ACTION_RESULT,
        OP_DELETE,
        OP_ERROR,
        OP_INSERT,
        OP_KEEPALIVE,
        OP_PUBLISH,
        OP_QUERY,
        OP_RESPONSE,
        OP_SYNC,
        OP_UPDATE,
        *VOLUME_OPS,
    }
)
#: Pseudo-operations: a payload that is no message, a report, a bridge state line.
INVALID = "invalid"
REPORT = "report"
BRIDGE_STATE = "bridge_state"
HEARTBEAT = "bridge_heartbeat"

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REMOTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CLOUD_STATES = {True: "connected", False: "disconnected", None: "unknown"}


def stats_topic(topics: Topics) -> str:
    """Where the counters are published (retained JSON)."""
    return f"{topics.meta}/stats"


class MetricsServer:
    """The Prometheus HTTP endpoint of one registry; ``close`` stops it."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=address, registry=registry)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


class ServiceMetrics:
    """Counters of one service. Thread-safe: remote calls report from pool threads."""

    def __init__(self, topics: Topics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.topics = topics
        self.registry = CollectorRegistry()
        self._clock = clock
        self._started = clock()
        reg = self.registry
        self.messages_received = Counter(
            "edgemeta_messages_received",
            "Messages received, by topic (group) and operation",
            ["topic", "operation"],
            registry=reg,
        )
        self.messages_sent = Counter(
            "edgemeta_messages_sent",
            "Messages sent (forwards, answers, reports, calls), by topic (group) and operation",
            ["topic", "operation"],
            registry=reg,
        )
        self.errors = Counter(
            "edgemeta_errors",
            "Errors, by kind: invalid_message, error_answer, report, storage, internal",
            ["kind"],
            registry=reg,
        )
        self.store_records = Gauge(
            "edgemeta_store_records", "Records in the metadata store", registry=reg
        )
        self.commit_seconds = Histogram(
            "edgemeta_store_commit_seconds",
            "Time of one store commit (one batch, one fsync)",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self.remote_calls = Counter(
            "edgemeta_remote_calls",
            "Remote queries and volume calls ended, by kind and outcome",
            ["kind", "outcome"],
            registry=reg,
        )
        self.remote_retries = Counter(
            "edgemeta_remote_retries",
            "Attempts of remote calls after the first one",
            ["kind"],
            registry=reg,
        )
        self.remote_seconds = Histogram(
            "edgemeta_remote_call_seconds",
            "Time from the first attempt of a remote call to its end",
            ["kind"],
            buckets=REMOTE_BUCKETS,
            registry=reg,
        )
        self.cloud_connected = Gauge(
            "edgemeta_cloud_connected",
            "Cloud connection state: 1 connected, 0 disconnected, -1 unknown",
            registry=reg,
        )
        self.cloud_connected.set(-1)
        self.heartbeat_rtt = Gauge(
            "edgemeta_cloud_heartbeat_rtt_seconds",
            "Round trip of the last heartbeat echoed through the bridge (-1: none yet)",
            registry=reg,
        )
        self.heartbeat_rtt.set(-1)
        self._lock = threading.Lock()
        self._calls: dict[str, tuple[str, float]] = {}
        self._received: dict[tuple[str, str], Any] = {}
        self._sent: dict[tuple[str, str], Any] = {}

    # -- labels -----------------------------------------------------------
    def topic_label(self, topic: str) -> str:
        head = self.topics.prefix + "/"
        if topic.startswith(head):
            rest = topic[len(head) :]
            if "/" not in rest or rest.startswith("meta/"):
                return rest if rest.count("/") <= 1 else "other"
        return "response_topic"

    @staticmethod
    def operation_label(operation: str) -> str:
        if operation in KNOWN_OPERATIONS or operation in (INVALID, REPORT, BRIDGE_STATE, HEARTBEAT):
            return operation
        return "other"

    @staticmethod
    def call_kind(operation: str) -> str:
        return "query" if operation == OP_QUERY else "volume"

    # -- hooks --------------------------------------------------------------
    def _child(
        self, metric: Counter, cache: dict[tuple[str, str], Any], topic: str, op: str
    ) -> Any:
        # labels() costs more than the increment; the children are looked up once.
        child = cache.get((topic, op))
        if child is None:
            child = metric.labels(self.topic_label(topic), self.operation_label(op))
            if len(cache) < 1024:
                cache[(topic, op)] = child
        return child

    def received(self, topic: str, operation: str) -> None:
        self._child(self.messages_received, self._received, topic, operation).inc()

    def sent(self, topic: str, operation: str) -> None:
        self._child(self.messages_sent, self._sent, topic, operation).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def set_records(self, count: int) -> None:
        self.store_records.set(count)

    def set_cloud(self, state: bool | None) -> None:
        self.cloud_connected.set(-1 if state is None else int(state))

    def set_heartbeat_rtt(self, seconds: float | None) -> None:
        self.heartbeat_rtt.set(-1 if seconds is None else seconds)

    def call_attempt(self, msg_id: str, operation: str) -> None:
        """A remote call is published (again): the first attempt starts its clock."""
        kind = self.call_kind(operation)
        with self._lock:
            if msg_id in self._calls:
                retry = True
            else:
                self._calls[msg_id] = (kind, self._clock())
                retry = False
        if retry:
            self.remote_retries.labels(kind).inc()

    def call_ended(self, msg_id: str, operation: str, outcome: str) -> None:
        """A remote call ended: ``response``, ``error`` or ``no_reply``."""
        with self._lock:
            started = self._calls.pop(msg_id, None)
        kind = self.call_kind(operation)
        self.remote_calls.labels(kind, outcome).inc()
        if started is not None:
            self.remote_seconds.labels(kind).observe(self._clock() - started[1])

    def serve(self, address: str, port: int) -> MetricsServer:
        """Start the Prometheus endpoint (raises OSError when the port is taken)."""
        return MetricsServer(self.registry, address, port)

    # -- the JSON form ------------------------------------------------------
    def snapshot(self, cloud: bool | None = None) -> dict[str, Any]:
        """The counters as one JSON object (published on ``<prefix>/meta/stats``)."""
        commit = _histogram(self.commit_seconds)
        return {
            "timestamp": now_ms(),
            "uptime_seconds": round(self._clock() - self._started, 3),
            "messages_received": _nested(self.messages_received, "_total"),
            "messages_sent": _nested(self.messages_sent, "_total"),
            "errors": _nested(self.errors, "_total"),
            "store": {
                "records": int(_value(self.store_records)),
                "commits": commit.get("count", 0),
                "commit_seconds_sum": commit.get("sum", 0.0),
            },
            "remote": {
                "calls": _nested(self.remote_calls, "_total"),
                "retries": _nested(self.remote_retries, "_total"),
                "seconds": _histograms(self.remote_seconds),
            },
            "cloud": CLOUD_STATES[cloud],
            "cloud_heartbeat_rtt_seconds": _rtt(self.heartbeat_rtt),
        }


def _rtt(gauge: Gauge) -> float | None:
    value = _value(gauge)
    return None if value < 0 else round(value, 4)


def _samples(metric: Collector) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples]


def _nested(metric: Collector, suffix: str) -> dict[str, Any]:
    """Samples ending in ``suffix`` as nested dicts by label value, in label order."""
    out: dict[str, Any] = {}
    for sample in _samples(metric):
        if not sample.name.endswith(suffix):
            continue
        labels = list(sample.labels.values())
        if not labels:
            return {"total": int(sample.value)}
        node = out
        for label in labels[:-1]:
            node = node.setdefault(label, {})
        node[labels[-1]] = int(sample.value)
    return out


def _value(metric: Collector) -> float:
    samples = _samples(metric)
    return float(samples[0].value) if samples else 0.0


def _histogram(metric: Collector) -> dict[str, Any]:
    """Count and sum of a histogram without labels."""
    return _histograms(metric).get("", {})


def _histograms(metric: Collector) -> dict[str, Any]:
    """Count and sum by the value of the first label ("" without labels)."""
    out: dict[str, dict[str, Any]] = {}
    for sample in _samples(metric):
        kind = next(iter(sample.labels.values()), "")
        if sample.name.endswith("_count"):
            out.setdefault(kind, {})["count"] = int(sample.value)
        elif sample.name.endswith("_sum"):
            out.setdefault(kind, {})["sum"] = round(float(sample.value), 6)
    return out
