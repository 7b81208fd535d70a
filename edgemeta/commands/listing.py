"""How ``get`` and ``list`` print objects: kubectl-style tables, names, JSON, YAML (pure)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .mirror_reader import StateObject
from .state_events import preview, revision_text

OUTPUTS = ("table", "wide", "name", "json", "yaml")


def record(obj: StateObject) -> dict[str, Any]:
    """``{"key", "type", "revision", "value"}``; the value parsed when it is JSON text."""
    return {"key": obj.key, "type": obj.restype, "revision": obj.revision, "value": obj.value()}


def _size(n: int) -> str:
    return str(n) if n < 10_000 else f"{n / 1000:.0f}k"


def table(objects: list[StateObject], wide: bool = False, width: int = 0) -> str:
    """NAME (the key) and a VALUE preview; ``wide`` adds TYPE, REVISION and SIZE (bytes).

    ``width`` > 0 (a terminal's) cuts each line to it.
    """
    headers = ("NAME", "TYPE", "REVISION", "SIZE", "VALUE") if wide else ("NAME", "VALUE")
    rows = [
        (obj.key, obj.restype, revision_text(obj.revision), _size(len(obj.payload)))
        if wide
        else (obj.key,)
        for obj in objects
    ]
    rows = [(*row, preview(obj.text)) for row, obj in zip(rows, objects, strict=True)]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        line = "   ".join([*cells, row[-1]]).rstrip()
        if width and len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        lines.append(line)
    return "\n".join(lines)


def render(objects: list[StateObject], output: str, width: int = 0) -> str:
    """A list of objects in an ``-o`` format."""
    if output == "name":
        return "\n".join(obj.key for obj in objects)
    if output == "json":
        return json.dumps([record(obj) for obj in objects], indent=2, ensure_ascii=False)
    if output == "yaml":
        return yaml.safe_dump(
            [record(obj) for obj in objects], sort_keys=False, allow_unicode=True
        ).rstrip("\n")
    return table(objects, wide=output == "wide", width=width)


def render_value(obj: StateObject, output: str, width: int = 0) -> str:
    """One object: ``-o json``/``yaml`` print its value alone (for scripts), else ``render``."""
    if output == "json":
        return json.dumps(obj.value(), indent=2, ensure_ascii=False)
    if output == "yaml":
        return yaml.safe_dump(obj.value(), sort_keys=False, allow_unicode=True).rstrip("\n")
    return render([obj], output, width)
