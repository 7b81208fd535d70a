"""What a handler asks the service to do: publish, answer, report, call out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..message import Message, new_error, new_response


@dataclass(frozen=True, slots=True)
class Forward:
    """Publish ``message`` on ``topic``."""

    topic: str
    message: Message


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer ``request`` with ``message`` (destination chosen by the answer rules)."""

    request: Message
    message: Message


@dataclass(frozen=True, slots=True)
class Report:
    """Something that cannot be answered, for ``<prefix>/meta/error``."""

    reason: str
    payload: bytes


#: Kinds of call; each has its reply function (handlers.replies).
CALL_QUERY = "query"
CALL_VOLUME = "volume"


@dataclass(frozen=True, slots=True)
class Call:
    """A request edgemeta sends and waits for, without blocking the main loop.

    Plain data, so that it can be committed with the batch that made it and
    resumed after a restart. ``outbound`` is published on ``topic`` up to
    ``attempts`` times, each attempt waiting ``timeout`` seconds for a message
    whose parent_msg_id is ``outbound.msg_id``; the reply (or its absence) is
    turned into effects by the reply function of ``kind``, given ``request``
    (the message that asked) and ``base`` (the stored value when it started).
    """

    kind: str
    request: Message
    outbound: Message
    topic: str
    timeout: float
    attempts: int
    base: str | None = None


@dataclass(frozen=True, slots=True)
class CancelCalls:
    """End every call waiting on ``topic`` now: each is answered with ``reason``."""

    topic: str
    reason: str


Effect = Forward | Answer | Report | Call | CancelCalls


def ok(request: Message) -> Answer:
    return Answer(request, new_response(request))


def fail(request: Message, reason: str) -> Answer:
    return Answer(request, new_error(request, reason))


def respond(request: Message, content: Any) -> Answer:
    return Answer(request, new_response(request, content))
