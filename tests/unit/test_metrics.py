"""ServiceMetrics: bounded labels, its own registry, the JSON snapshot."""

from __future__ import annotations

from prometheus_client import generate_latest

from edgemeta.metrics import ServiceMetrics, stats_topic
from edgemeta.topics import Topics

TOPICS = Topics("beehive/n1")


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_labels_stay_bounded() -> None:
    metrics = ServiceMetrics(TOPICS)
    assert metrics.topic_label("beehive/n1/meta") == "meta"
    assert metrics.topic_label("beehive/n1/hub") == "hub"
    assert metrics.topic_label("beehive/n1/meta/error") == "meta/error"
    assert metrics.topic_label("beehive/n1/reply/cli/0f3a") == "response_topic"
    assert metrics.topic_label("anywhere/else") == "response_topic"
    assert metrics.operation_label("update") == "update"
    assert metrics.operation_label("createvolume") == "createvolume"
    assert metrics.operation_label("made-up-by-a-client") == "other"


def test_each_instance_has_its_own_registry() -> None:
    first, second = ServiceMetrics(TOPICS), ServiceMetrics(TOPICS)
    first.received("beehive/n1/meta", "insert")
    assert b'operation="insert"' in generate_latest(first.registry)
    assert b'operation="insert"' not in generate_latest(second.registry)


def test_snapshot_has_the_counters() -> None:
    clock = Clock()
    metrics = ServiceMetrics(TOPICS, clock=clock)
    metrics.received("beehive/n1/meta", "insert")
    metrics.received("beehive/n1/meta", "insert")
    metrics.sent("beehive/n1/edged", "insert")
    metrics.error("invalid_message")
    metrics.set_records(7)
    metrics.commit_seconds.observe(0.002)
    metrics.call_attempt("q1", "query")
    clock.now += 1.5
    metrics.call_attempt("q1", "query")
    metrics.call_ended("q1", "query", "response")
    metrics.call_ended("v1", "createvolume", "no_reply")

    snap = metrics.snapshot(cloud=True)

    assert snap["messages_received"] == {"meta": {"insert": 2}}
    assert snap["messages_sent"] == {"edged": {"insert": 1}}
    assert snap["errors"] == {"invalid_message": 1}
    assert snap["store"] == {"records": 7, "commits": 1, "commit_seconds_sum": 0.002}
    assert snap["remote"]["calls"] == {"query": {"response": 1}, "volume": {"no_reply": 1}}
    assert snap["remote"]["retries"] == {"query": 1}
    assert snap["remote"]["seconds"] == {"query": {"count": 1, "sum": 1.5}}
    assert snap["cloud"] == "connected"
    assert snap["uptime_seconds"] == 1.5
    assert stats_topic(TOPICS) == "beehive/n1/meta/stats"
