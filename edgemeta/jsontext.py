"""JSON text in and out: orjson where it is exact, the standard library where it is not."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# orjson reads an integer outside -2**63 .. 2**64-1 as a float, losing digits.
# Such a number token (20 digits, or a minus and 19, between JSON delimiters)
# sends the text to the standard parser; digits inside strings do not.
_BIG_INT = r"(?:^|[:\[,])\s*(?:-\d{19,}|\d{20,})\s*(?:[,\]}]|$)"
_LONG_DIGITS = re.compile(_BIG_INT)
_LONG_DIGITS_BYTES = re.compile(_BIG_INT.encode())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


def loads(data: bytes | str) -> Any:
    """Parse JSON text exactly: big integers and lone surrogates take the standard parser."""
    if isinstance(data, bytes):
        long_digits = _LONG_DIGITS_BYTES.search(data) is not None
    else:
        long_digits = _LONG_DIGITS.search(data) is not None
    if not long_digits:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def dumps(value: Any) -> bytes:
    """Compact JSON; big integers and lone surrogates take the standard encoder (ASCII)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()
