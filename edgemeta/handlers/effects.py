"""What a handler asks the service to do: publish, answer, report, call out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class Call:
    """A request edgemeta sends and waits for, without blocking the main loop.

    ``outbound`` is published on ``topic`` up to ``attempts`` times, each
    attempt waiting ``timeout`` seconds for a message whose parent_msg_id is
    ``outbound.msg_id``. ``on_reply`` runs on the main loop with the reply (or
    None when none came) and returns the effects to apply.
    """

    outbound: Message
    topic: str
    timeout: float
    attempts: int
    on_reply: Callable[[Message | None, str], list[Any]] = field(repr=False)


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
