"""Test support: a real Mosquitto broker, an MQTT 5 probe, the service as a process."""

from tests.support.broker import REPO_ROOT, Broker, free_port
from tests.support.mqtt import MqttProbe, Received, ReceivedProperties, envelope
from tests.support.service import EdgemetaProcess

__all__ = [
    "REPO_ROOT",
    "Broker",
    "EdgemetaProcess",
    "MqttProbe",
    "Received",
    "ReceivedProperties",
    "envelope",
    "free_port",
]
