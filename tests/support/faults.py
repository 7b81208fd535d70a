"""Disk faults for storage tests, injected by replacing os.write."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
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


def enospc_writing(path: Path, times: int) -> Callable[[int, Any], int]:
    """An os.write that fails with ENOSPC for the first ``times`` writes to ``path``."""
    real_write = os.write
    left = [times]

    def fake(fd: int, data: Any) -> int:
        if left[0] > 0 and os.readlink(f"/proc/self/fd/{fd}") == str(path):
            left[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    return fake
