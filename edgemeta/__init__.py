"""edgemeta: the metadata manager of an edge node, on MQTT."""

__version__ = "0.1.0"
