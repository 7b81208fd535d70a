"""What handlers work with: the store, the topics, the settings, the cloud link."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MetaManagerConfig
from ..store import MetaStore
from ..topics import Topics


@dataclass(slots=True)
class CloudLink:
    """What edgemeta knows of its cloud connection: None until told (SPEC section 3)."""

    state: bool | None = None
    edge_site: bool = False

    @property
    def connected(self) -> bool:
        return self.edge_site or self.state is True

    @property
    def known_disconnected(self) -> bool:
        return not self.edge_site and self.state is False

    def set(self, connected: bool) -> bool:
        """Record a state; True when it changed to connected."""
        changed = connected and self.state is not True and not self.edge_site
        self.state = connected
        return changed


@dataclass(slots=True)
class Context:
    store: MetaStore
    topics: Topics
    settings: MetaManagerConfig
    link: CloudLink = field(default_factory=CloudLink)
