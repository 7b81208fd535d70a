"""The exceptions edgemeta raises; every one is an EdgemetaError."""

from __future__ import annotations


class EdgemetaError(Exception):
    """Base of every error edgemeta raises on purpose."""


class ConfigError(EdgemetaError):
    """The configuration is missing, unreadable or invalid; names the dotted key."""


class MessageError(EdgemetaError):
    """An inbound payload is not a valid message.

    Carries what could still be read of it so the caller can answer the
    requester instead of only reporting.
    """

    def __init__(
        self,
        reason: str,
        *,
        msg_id: str = "",
        source: str = "",
        group: str = "",
        resource: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.msg_id = msg_id
        self.source = source
        self.group = group
        self.resource = resource


class RequestError(EdgemetaError):
    """A well-formed message asks for something that cannot be done."""


class StoreError(EdgemetaError):
    """The store could not read or durably write."""


class BusError(EdgemetaError):
    """The MQTT connection failed in a way the caller must see."""


class CloudUnavailable(EdgemetaError):
    """A remote request got no usable answer."""
