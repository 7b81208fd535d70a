"""Object events of the state mirror, kubectl-watch style: ADDED, MODIFIED, DELETED (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .mirror_reader import StateObject

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

PREVIEW = 60


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    obj: StateObject


class EventStream:
    """Classifies the mirror messages of one watch, in the order they arrive.

    A key seen for the first time is ADDED, a later value of it MODIFIED, an
    empty payload DELETED. A message whose revision is not newer than the
    last one seen for its key (the snapshot sent again after a reconnect) is
    no event. With ``since``, events at or below that revision are not
    returned, but their keys are remembered, so their next change is MODIFIED.
    """

    def __init__(self, since: int | None = None) -> None:
        self.since = since
        self._seen: dict[str, tuple[int | None, bytes]] = {}

    def classify(self, obj: StateObject) -> Event | None:
        last = self._seen.get(obj.key)
        if last is not None and _stale(last, obj):
            return None
        if obj.deleted:
            if obj.retained:
                return None
            self._seen.pop(obj.key, None)
            kind = DELETED
        else:
            self._seen[obj.key] = (obj.revision, obj.payload)
            kind = ADDED if last is None else MODIFIED
        if self.since is not None and obj.revision is not None and obj.revision <= self.since:
            return None
        return Event(kind, obj)


def _stale(last: tuple[int | None, bytes], obj: StateObject) -> bool:
    revision, payload = last
    if revision is not None and obj.revision is not None:
        return obj.revision <= revision
    # MQTT 3.1.1: no revisions; a retained copy of what was shown is no change.
    return obj.retained and obj.payload == payload


def preview(text: str, width: int = PREVIEW) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def revision_text(revision: int | None) -> str:
    return "-" if revision is None else str(revision)


class EventColumns:
    """Widths that only grow, so the lines of a watch stay aligned."""

    def __init__(self) -> None:
        self.revision = 8
        self.name = 24

    def line(self, event: Event) -> str:
        """REVISION EVENT NAME [value preview]."""
        obj = event.obj
        revision = revision_text(obj.revision)
        self.revision = max(self.revision, len(revision))
        self.name = max(self.name, len(obj.key))
        text = "" if obj.deleted else preview(obj.text)
        line = f"{revision:>{self.revision}}  {event.kind:<8}  {obj.key:<{self.name}}  {text}"
        return line.rstrip()


def event_json(event: Event) -> str:
    """``-o json``: one object per line."""
    obj = event.obj
    record = {
        "type": event.kind,
        "revision": obj.revision,
        "key": obj.key,
        "restype": obj.restype,
        "value": obj.value(),
    }
    return json.dumps(record, ensure_ascii=False)
