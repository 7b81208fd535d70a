"""Disk faults for storage tests, injected by replacing os.write."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any


def half_then_enospc() -> Callable[[int, Any], int]:
    """An os.write that writes half of its first buffer, then fails with ENOSPC."""
    real_write = os.write
    calls: list[int] = []

    def fake(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return fake
