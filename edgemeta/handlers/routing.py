"""Routing decisions shared by handlers (pure)."""

from __future__ import annotations

from ..topics import Topics

#: Types whose insert is forwarded to edgemesh.
MESH_TYPES = frozenset({"service", "servicelist", "endpoints", "endpointslist", "podlist"})
#: Types whose update, delete and cloud response go to edgemesh.
MESH_OBJECT_TYPES = frozenset({"service", "endpoints"})


def insert_target(restype: str, topics: Topics) -> str:
    return topics.mesh if restype in MESH_TYPES else topics.edged


def object_target(restype: str, topics: Topics) -> str:
    return topics.mesh if restype in MESH_OBJECT_TYPES else topics.edged
