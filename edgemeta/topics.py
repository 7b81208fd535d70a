"""Module, group and topic names for one topic prefix (pure)."""

from __future__ import annotations

from dataclasses import dataclass

META_GROUP = "meta"
META_MODULE = "metaManager"
EDGED_GROUP = "edged"
MESH_GROUP = "mesh"
FUNC_GROUP = "func"
HUB_GROUP = "hub"

#: route.source -> beehive group (SPEC section 2).
MODULE_GROUPS: dict[str, str] = {
    META_MODULE: META_GROUP,
    "edged": EDGED_GROUP,
    "edgemesh": MESH_GROUP,
    "edgefunction": FUNC_GROUP,
    "websocket": HUB_GROUP,
    "edgehub": HUB_GROUP,
    "edgecontroller": HUB_GROUP,
    "funcmgr": HUB_GROUP,
    "controller": HUB_GROUP,
}

#: Sources that speak for the cloud.
CLOUD_SOURCES = frozenset(m for m, g in MODULE_GROUPS.items() if g == HUB_GROUP)


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic edgemeta uses, computed once for a prefix."""

    prefix: str
    cloud_group: str = HUB_GROUP

    @property
    def meta(self) -> str:
        return f"{self.prefix}/{META_GROUP}"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{META_GROUP}/status"

    @property
    def error(self) -> str:
        return f"{self.prefix}/{META_GROUP}/error"

    @property
    def edged(self) -> str:
        return f"{self.prefix}/{EDGED_GROUP}"

    @property
    def mesh(self) -> str:
        return f"{self.prefix}/{MESH_GROUP}"

    @property
    def func(self) -> str:
        return f"{self.prefix}/{FUNC_GROUP}"

    @property
    def cloud(self) -> str:
        return f"{self.prefix}/{self.cloud_group}"

    def group(self, group: str) -> str:
        """The topic of a beehive group."""
        return f"{self.prefix}/{group}"

    def module(self, source: str) -> str | None:
        """The topic of the group a module belongs to, or None for an unknown module."""
        group = group_of(source, self.cloud_group)
        return None if group is None else self.group(group)


def group_of(source: str, cloud_group: str = HUB_GROUP) -> str | None:
    """The beehive group of a module name, None when the module is unknown."""
    group = MODULE_GROUPS.get(source)
    if group == HUB_GROUP:
        return cloud_group
    return group


def is_cloud_source(source: str) -> bool:
    return source in CLOUD_SOURCES
