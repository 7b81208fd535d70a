"""Configuration: YAML file plus environment overrides, validated into frozen dataclasses."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "conf/edge.yaml"
#: Where a command looks for its config when none is named, in this order.
CONFIG_ENV = "EDGEMETA_CONFIG"
CONFIG_SEARCH = (DEFAULT_CONFIG_PATH, "/etc/edgemeta/edge.yaml")


@dataclass(frozen=True)
class TlsConfig:
    enable: bool = False
    caFile: str = ""
    certFile: str = ""
    keyFile: str = ""


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    clientId: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    # Read at load time into ``password`` (stripped); takes precedence over it.
    passwordFile: str = ""
    tls: TlsConfig = field(default_factory=TlsConfig)
    qos: int = 1
    keepalive: int = 30
    topicPrefix: str = "beehive"
    sessionExpiry: int = 7 * 24 * 3600

    @property
    def client_id(self) -> str:
        return self.clientId or "edgemeta-" + self.topicPrefix.replace("/", "-")


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "data/edgemeta.json"
    fsync: bool = True
    compactAfter: int = 100_000
    compactBytes: int = 64 * 1024 * 1024
    dedupWindow: int = 20_000
    # A Fernet key (``edgemeta keygen``): ``secret`` values are encrypted at rest.
    secretKeyFile: str = ""


@dataclass(frozen=True)
class MetaManagerConfig:
    contextSendGroup: str = "hub"
    contextSendModule: str = "websocket"
    podStatusSyncInterval: float = 60
    remoteQueryTimeout: float = 60
    remoteQueryAttempts: int = 3
    volumeTimeout: float = 60
    edgeSite: bool = False
    bridgeStateTopic: str = "meta/bridge/state"
    #: Seconds between heartbeats through the bridge (0 = off); edgemeta.heartbeat.
    cloudHeartbeatInterval: float = 2
    #: Seconds without an echo before the cloud counts as disconnected (> the interval).
    cloudHeartbeatTimeout: float = 6


@dataclass(frozen=True)
class ModulesConfig:
    metaManager: MetaManagerConfig = field(default_factory=MetaManagerConfig)


@dataclass(frozen=True)
class LimitsConfig:
    maxPayloadBytes: int = 1024 * 1024
    maxDepth: int = 64


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0
    address: str = "127.0.0.1"
    statsInterval: float = 0


#: Operations a device may send on its own topic (each one stores).
DEVICE_OPERATIONS = ("insert", "update")


@dataclass(frozen=True)
class DevicesConfig:
    """Device ingress on ``<prefix>/meta/device/<deviceId>`` (see edgemeta.devices)."""

    enable: bool = True
    operations: tuple[str, ...] = ("update", "insert")
    types: tuple[str, ...] = ("device",)
    namespace: str = "default"


@dataclass(frozen=True)
class MirrorConfig:
    """The state mirror: each stored object retained on ``<prefix>/state/...`` (edgemeta.mirror)."""

    enable: bool = True
    #: () = every type except secret; otherwise exactly these ("*" = every type, secrets too).
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    mirror: MirrorConfig = field(default_factory=MirrorConfig)


def _is_level(value: str) -> bool:
    """A non-empty name usable as one topic level and one resource segment."""
    return bool(value) and not any(c in value for c in "/+#\x00")


# Range checks: dotted key -> (predicate, what the value must be).
_RULES: dict[str, tuple[Any, str]] = {
    "mqtt.port": (lambda v: 1 <= v <= 65535, "between 1 and 65535"),
    "mqtt.qos": (lambda v: 0 <= v <= 2, "0, 1 or 2"),
    "mqtt.keepalive": (lambda v: v >= 0, ">= 0"),
    "mqtt.sessionExpiry": (lambda v: v >= 86400, ">= 86400 (one day)"),
    "mqtt.topicPrefix": (
        lambda v: bool(v) and not any(c in v for c in "+#\x00") and "" not in v.split("/"),
        "a non-empty topic without wildcards or empty levels",
    ),
    "database.path": (bool, "a non-empty path"),
    "database.compactAfter": (lambda v: v >= 1, ">= 1"),
    "database.compactBytes": (lambda v: v >= 1, "> 0"),
    "database.dedupWindow": (lambda v: v >= 0, ">= 0"),
    "modules.metaManager.contextSendGroup": (
        lambda v: bool(v) and not any(c in v for c in "+#/\x00"),
        "a non-empty group name without '/', '+' or '#'",
    ),
    "modules.metaManager.podStatusSyncInterval": (lambda v: v > 0, "> 0"),
    "modules.metaManager.bridgeStateTopic": (
        lambda v: not v or (not any(c in v for c in "+#\x00") and "" not in v.split("/")),
        'a topic below topicPrefix without wildcards or empty levels, or ""',
    ),
    "modules.metaManager.cloudHeartbeatInterval": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "modules.metaManager.cloudHeartbeatTimeout": (lambda v: v > 0, "> 0"),
    "modules.metaManager.remoteQueryTimeout": (lambda v: v > 0, "> 0"),
    "modules.metaManager.remoteQueryAttempts": (lambda v: v >= 1, ">= 1"),
    "modules.metaManager.volumeTimeout": (lambda v: v > 0, "> 0"),
    "limits.maxPayloadBytes": (lambda v: v >= 1024, ">= 1024"),
    "limits.maxDepth": (lambda v: v >= 2, ">= 2"),
    "metrics.port": (lambda v: 0 <= v <= 65535, "between 0 (off) and 65535"),
    "metrics.address": (bool, "a non-empty address"),
    "metrics.statsInterval": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "devices.operations": (
        lambda v: all(op in DEVICE_OPERATIONS for op in v),
        "a list of " + " and ".join(DEVICE_OPERATIONS),
    ),
    "devices.types": (
        lambda v: bool(v) and all(_is_level(t) for t in v),
        "a non-empty list of resource types without '/', '+' or '#'",
    ),
    "devices.namespace": (_is_level, "a namespace without '/', '+' or '#'"),
    "mirror.types": (
        lambda v: all(_is_level(t) for t in v),
        "a list of resource types without '/', '+' or '#' (\"*\" = every type)",
    ),
}

#: Keys whose value is never shown in an error message.
_SECRET_KEYS = frozenset({"mqtt.password"})
_STRINGS = tuple[str, ...]

_ENV_OVERRIDES = (
    ("EDGEMETA_MQTT_HOST", ("mqtt", "host"), str),
    ("EDGEMETA_MQTT_PORT", ("mqtt", "port"), int),
    ("EDGEMETA_DB_PATH", ("database", "path"), str),
)


def _type_ok(expected: Any, value: Any) -> bool:
    if expected == _STRINGS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return False


def _type_name(expected: Any) -> str:
    if expected == _STRINGS:
        return "a list of strings"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[expected]


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix or "the file"
        raise ConfigError(f"{where}: must be a mapping, not {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{dotted}: unknown key")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        expected = hints[f.name]
        value = data[f.name]
        if is_dataclass(expected):
            values[f.name] = _build(expected, value, dotted)
            continue
        if not _type_ok(expected, value):
            shown = "a value not shown" if dotted in _SECRET_KEYS else repr(value)
            raise ConfigError(f"{dotted}: must be {_type_name(expected)}, got {shown}")
        values[f.name] = tuple(value) if expected == _STRINGS else value
    return cls(**values)


def _check_ranges(config: Config) -> None:
    for dotted, (ok, wanted) in _RULES.items():
        value: Any = config
        for part in dotted.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise ConfigError(f"{dotted}: must be {wanted}, got {value!r}")
    meta = config.modules.metaManager
    if meta.cloudHeartbeatInterval and meta.cloudHeartbeatTimeout <= meta.cloudHeartbeatInterval:
        raise ConfigError(
            "modules.metaManager.cloudHeartbeatTimeout: must be greater than "
            f"cloudHeartbeatInterval ({meta.cloudHeartbeatInterval!r}), "
            f"got {meta.cloudHeartbeatTimeout!r}"
        )


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> None:
    for var, (section, key), kind in _ENV_OVERRIDES:
        text = environ.get(var, "")
        if text == "":
            continue
        if kind is int:
            try:
                value: Any = int(text)
            except ValueError:
                raise ConfigError(f"{var}: must be an integer, got {text!r}") from None
            port_ok, wanted = _RULES["mqtt.port"]
            if not port_ok(value):
                raise ConfigError(f"{var}: must be {wanted}, got {value!r}")
        else:
            value = text
        sect = raw.get(section)
        if sect is None:  # "mqtt:" with nothing under it is an empty section
            sect = raw[section] = {}
        if not isinstance(sect, dict):
            raise ConfigError(f"{section}: must be a mapping, not {type(sect).__name__}")
        sect[key] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def find_config(
    explicit: str | Path | None = None, environ: dict[str, str] | None = None
) -> Path | None:
    """The config file to use: ``explicit``, else $EDGEMETA_CONFIG, else the first of
    CONFIG_SEARCH that exists; None when there is none (the caller decides)."""
    if explicit:
        return Path(explicit)
    env = (dict(os.environ) if environ is None else environ).get(CONFIG_ENV, "")
    if env:
        return Path(env)
    for candidate in CONFIG_SEARCH:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def parse_config(text: str, environ: dict[str, str] | None = None, source: str = "") -> Config:
    """Validate YAML text into a Config; environment overrides applied on top."""
    loader = _UniqueKeyLoader(text)  # a SafeLoader: data only
    try:
        raw = loader.get_single_data()
    except ConfigError as exc:
        raise ConfigError(f"{source or 'config'}: {exc}") from None
    except yaml.YAMLError as exc:
        # Not str(exc): PyYAML quotes the offending line, which may hold a password.
        raise ConfigError(f"{source or 'config'}: invalid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: must be a mapping at the top level")
    _apply_env(raw, dict(os.environ) if environ is None else environ)
    config: Config = _build(Config, raw, "")
    _check_ranges(config)
    return _check_files(config)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong and where, without the text around it."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def _read_file(dotted: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{dotted}: cannot read {path}: {exc.strerror or exc}") from None


def _check_files(config: Config) -> Config:
    """Read the password file, check that the TLS and key files can be read."""
    mqtt = config.mqtt
    if mqtt.passwordFile:
        try:
            password = _read_file("mqtt.passwordFile", mqtt.passwordFile).decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"mqtt.passwordFile: {mqtt.passwordFile} is not UTF-8 text") from None
        if not password:
            raise ConfigError(f"mqtt.passwordFile: {mqtt.passwordFile} is empty")
        config = replace(config, mqtt=replace(mqtt, password=password))
    tls = mqtt.tls
    if tls.enable:
        for name in ("caFile", "certFile", "keyFile"):
            path = getattr(tls, name)
            if path:
                _read_file(f"mqtt.tls.{name}", path)
        if tls.keyFile and not tls.certFile:
            raise ConfigError("mqtt.tls.keyFile: needs mqtt.tls.certFile (the key's certificate)")
    key_file = config.database.secretKeyFile
    if key_file and not _is_fernet_key(_read_file("database.secretKeyFile", key_file)):
        raise ConfigError(
            f"database.secretKeyFile: {key_file} does not hold a key (make one with "
            "`edgemeta keygen FILE`)"
        )
    return config


def _is_fernet_key(data: bytes) -> bool:
    """A Fernet key: 32 bytes in URL-safe base64 (44 characters), surrounding blanks allowed."""
    text = data.strip()
    if len(text) != 44:
        return False
    try:
        return len(base64.urlsafe_b64decode(text)) == 32
    except (binascii.Error, ValueError):
        return False


def load_config(
    path: str | Path = DEFAULT_CONFIG_PATH, environ: dict[str, str] | None = None
) -> Config:
    """Read and validate a config file (SPEC section 5)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    return parse_config(text, environ, str(path))
