"""The beehive message envelope: decoding, encoding, answers (pure, no I/O)."""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import MessageError
from .jsontext import dumps as _dumps
from .jsontext import loads

OP_INSERT = "insert"
OP_UPDATE = "update"
OP_DELETE = "delete"
OP_QUERY = "query"
OP_RESPONSE = "response"
OP_ERROR = "error"
OP_PUBLISH = "publish"
OP_SYNC = "meta-internal-sync"
OP_ACTION = "action"
OP_ACTION_RESULT = "action_result"
OP_KEEPALIVE = "keepalive"
VOLUME_OPS = frozenset(
    {"createvolume", "deletevolume", "controllerpublishvolume", "controllerunpublishvolume"}
)

OK_CONTENT = "OK"
MAX_RESOURCE_LENGTH = 1024
_FORBIDDEN_IN_RESOURCE = ("+", "#", "\x00")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to untrusted input."""

    max_payload: int = 1024 * 1024
    max_depth: int = 64


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Message:
    """One beehive message. ``raw`` is the received text when it can be forwarded unchanged."""

    msg_id: str
    operation: str
    resource: str
    source: str
    group: str = ""
    parent_msg_id: str = ""
    timestamp: int = 0
    sync: bool = False
    content: Any = None
    raw: bytes | None = field(default=None, repr=False, compare=False)
    _value: str | None = field(default=None, repr=False, compare=False)
    # Transport details of a received message (MQTT 5 properties), never encoded.
    response_topic: str | None = field(default=None, repr=False, compare=False)
    correlation: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def namespace(self) -> str:
        return self.resource.split("/", 1)[0]

    @property
    def restype(self) -> str:
        parts = self.resource.split("/", 2)
        return parts[1] if len(parts) > 1 else ""

    @property
    def resid(self) -> str:
        parts = self.resource.split("/", 2)
        return parts[2] if len(parts) > 2 else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": {
                "msg_id": self.msg_id,
                "parent_msg_id": self.parent_msg_id,
                "timestamp": self.timestamp,
                "sync": self.sync,
            },
            "route": {
                "source": self.source,
                "group": self.group,
                "operation": self.operation,
                "resource": self.resource,
            },
            "content": self.content,
        }

    def value(self) -> str:
        """The stored form of this message's content (computed once)."""
        if self._value is None:
            self._value = value_text(self.content)
        return self._value

    def encode(self) -> bytes:
        """The JSON text of this message; the received text when unchanged."""
        if self.raw is not None:
            return self.raw
        return dumps(self.to_dict())

    def replace(self, **changes: Any) -> Message:
        """A copy with some fields changed (and no longer the received text)."""
        keep = ("raw", "response_topic", "correlation", "_value")
        values = {name: getattr(self, name) for name in self.__slots__ if name not in keep}
        values.update(changes)
        return Message(**values)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    """A version-4 UUID; from the random module, which needs no system call per id."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; falls back to the standard encoder for what orjson refuses."""
    return _dumps(value)


# orjson writes exponents as 1e16 where Python writes 1e+16; either way a digit
# is followed by an "e", and such text takes the standard encoder. (Mapping the
# digits to "0" and searching with bytes.find is much faster than a regex.)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _has_exponent(text: bytes) -> bool:
    zeros = text.translate(_DIGITS_AS_ZERO)
    return zeros.find(b"0e") != -1 or zeros.find(b"0E") != -1


def value_text(content: Any) -> str:
    """The stored form of a content: compact JSON text, or a JSON string's own text.

    Exactly ``json.dumps(content, separators=(",", ":"), ensure_ascii=False)``.
    """
    if isinstance(content, str):
        return content
    try:
        text = orjson.dumps(content)
    except TypeError:
        pass
    else:
        if not _has_exponent(text):
            return text.decode()
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False)


def text_value(text: str) -> Any:
    """A stored value as a JSON value: parsed when it is JSON text, else the string itself."""
    try:
        return loads(text)
    except ValueError:
        return text


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _is_blank(value: Any) -> bool:
    return value is None or value == "" or (value == 0 and not isinstance(value, bool))


def validate_resource(resource: str) -> str | None:
    """Why a resource string is unusable, or None when it is fine."""
    if len(resource) > MAX_RESOURCE_LENGTH:
        return f"route.resource is longer than {MAX_RESOURCE_LENGTH} characters"
    for bad in _FORBIDDEN_IN_RESOURCE:
        if bad in resource:
            shown = "NUL" if bad == "\x00" else repr(bad)
            return f"route.resource must not contain {shown}"
    if resource and "" in resource.split("/"):
        return "route.resource has an empty segment"
    return None


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse and validate an inbound payload (SPEC section 1, lenient ingest).

    Raises MessageError carrying whatever identifying fields could be read.
    """
    return from_dict(load_object(payload, limits), payload)


def load_object(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The JSON object of an untrusted payload, within ``limits``; else MessageError.

    Data only: JSON is parsed, never evaluated, and nothing in it names code.
    """
    if len(payload) > limits.max_payload:
        raise MessageError(f"payload of {len(payload)} bytes exceeds {limits.max_payload}")
    try:
        data = loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"payload is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise MessageError("payload nests too deeply") from exc
    if not isinstance(data, dict):
        raise MessageError(f"payload is a JSON {type(data).__name__}, not an object")
    if payload.count(b"{") + payload.count(b"[") > limits.max_depth and _depth_exceeds(
        data, limits.max_depth + 1
    ):
        raise MessageError(f"payload nests deeper than {limits.max_depth} levels")
    return data


def _usable_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def from_dict(data: dict[str, Any], raw: bytes | None = None) -> Message:
    """Build a Message from a decoded envelope; ``raw`` is kept when nothing was filled in."""
    header = data.get("header")
    route = data.get("route")
    # Identify the sender as far as possible first, so a bad message can be answered.
    hdr = header if isinstance(header, dict) else {}
    rte = route if isinstance(route, dict) else {}
    # A response or an error is never answered (SPEC section 3): without its
    # msg_id, a bad one is reported instead.
    answerable = rte.get("operation") not in (OP_RESPONSE, OP_ERROR)
    ident = {
        "msg_id": _usable_str(hdr.get("msg_id")) if answerable else "",
        "source": _usable_str(rte.get("source")),
        "group": _usable_str(rte.get("group")),
        "resource": _usable_str(rte.get("resource")),
    }

    def fail(reason: str) -> MessageError:
        return MessageError(reason, **ident)

    filled = False
    if header is None:
        filled = True
    elif not isinstance(header, dict):
        raise fail(f"header must be an object, not {type(header).__name__}")

    msg_id = hdr.get("msg_id")
    if _is_blank(msg_id):
        msg_id = new_id()
        filled = True
    elif not isinstance(msg_id, str):
        raise fail(f"header.msg_id must be a string, not {type(msg_id).__name__}")

    parent = hdr.get("parent_msg_id")
    if parent is None:
        parent = ""
    elif not isinstance(parent, str):
        raise fail(f"header.parent_msg_id must be a string, not {type(parent).__name__}")

    timestamp = hdr.get("timestamp")
    if _is_blank(timestamp):
        timestamp = now_ms()
        filled = True
    elif not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise fail(f"header.timestamp must be an integer, not {type(timestamp).__name__}")

    sync = hdr.get("sync")
    if sync is None:
        sync = False
    elif not isinstance(sync, bool):
        raise fail(f"header.sync must be a boolean, not {type(sync).__name__}")

    if route is None:
        raise fail("route is missing")
    if not isinstance(route, dict):
        raise fail(f"route must be an object, not {type(route).__name__}")

    source = route.get("source")
    if source is None:
        raise fail("route.source is missing")
    if not isinstance(source, str):
        raise fail(f"route.source must be a string, not {type(source).__name__}")
    operation = route.get("operation")
    if operation is None:
        raise fail("route.operation is missing")
    if not isinstance(operation, str):
        raise fail(f"route.operation must be a string, not {type(operation).__name__}")
    group = route.get("group")
    if group is None:
        group = ""
    elif not isinstance(group, str):
        raise fail(f"route.group must be a string, not {type(group).__name__}")
    resource = route.get("resource")
    if resource is None:
        if operation != OP_SYNC:
            raise fail("route.resource is missing")
        resource = ""
    elif not isinstance(resource, str):
        raise fail(f"route.resource must be a string, not {type(resource).__name__}")
    problem = validate_resource(resource)
    if problem:
        raise fail(problem)

    return Message(
        msg_id=msg_id,
        operation=operation,
        resource=resource,
        source=source,
        group=group,
        parent_msg_id=parent,
        timestamp=timestamp,
        sync=sync,
        content=data.get("content"),
        raw=None if filled else raw,
    )


def new_message(
    operation: str,
    resource: str,
    content: Any,
    *,
    source: str,
    group: str = "",
    parent_msg_id: str = "",
    sync: bool = False,
) -> Message:
    """A fresh message with a new msg_id and the current time."""
    return Message(
        msg_id=new_id(),
        operation=operation,
        resource=resource,
        source=source,
        group=group,
        parent_msg_id=parent_msg_id,
        timestamp=now_ms(),
        sync=sync,
        content=content,
    )


def new_response(
    request: Message, content: Any = OK_CONTENT, source: str = "metaManager"
) -> Message:
    """An answer to ``request`` (SPEC section 2): parent_msg_id is the request's msg_id."""
    return new_message(
        OP_RESPONSE,
        request.resource,
        content,
        source=source,
        group=request.group,
        parent_msg_id=request.msg_id,
    )


def new_error(request: Message, reason: str, source: str = "metaManager") -> Message:
    """An error answer to ``request``; the content is a non-empty string."""
    message = new_response(request, reason or "error", source)
    message.operation = OP_ERROR
    return message
