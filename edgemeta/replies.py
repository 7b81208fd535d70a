"""Where answers go and what a report looks like (SPEC section 2; pure)."""

from __future__ import annotations

from dataclasses import dataclass

from .message import Message, dumps, now_ms
from .topics import Topics

REPORT_PAYLOAD_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Destination:
    topic: str
    correlation: bytes | None = None


def answer_destination(request: Message, topics: Topics) -> Destination | str:
    """The destination of an answer to ``request``, or why it cannot be answered."""
    if request.response_topic:
        topic = request.response_topic
        if any(c in topic for c in "+#\x00"):
            return f"response topic {topic!r} contains a wildcard or NUL"
        if topic == topics.meta:
            return f"an answer would go to {topics.meta}"
        return Destination(topic, request.correlation)
    group_topic = topics.module(request.source)
    if group_topic is None:
        return f"cannot answer: source {request.source!r} belongs to no known group"
    if group_topic == topics.meta:
        return f"cannot answer: an answer to {request.source!r} would go to {topics.meta}"
    return Destination(group_topic)


def report_payload(reason: str, payload: bytes) -> bytes:
    """The JSON of a report on ``<prefix>/meta/error``."""
    head = payload[:REPORT_PAYLOAD_LIMIT]
    return dumps(
        {
            "reason": reason,
            "payload": head.decode("utf-8", errors="replace"),
            "truncated": len(payload) > REPORT_PAYLOAD_LIMIT,
            "timestamp": now_ms(),
        }
    )
