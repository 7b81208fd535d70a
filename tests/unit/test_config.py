"""Configuration loading and validation (SPEC section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemeta.config import Config, load_config, parse_config
from edgemeta.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NO_ENV: dict[str, str] = {}


def nest(dotted: str, value: Any) -> dict[str, Any]:
    """``nest("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``."""
    data: Any = value
    for part in reversed(dotted.split(".")):
        data = {part: data}
    return data


def parse(data: Any, environ: dict[str, str] | None = None) -> Config:
    return parse_config(yaml.safe_dump(data), NO_ENV if environ is None else environ)


def error_of(data: Any, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, environ)
    return str(info.value)


def get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# -- defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "mqtt:\nmodules:\n"])
def test_empty_file_and_empty_sections_take_the_defaults(text: str) -> None:
    assert parse_config(text, NO_ENV) == Config()


def test_documented_defaults() -> None:
    config = parse_config("", NO_ENV)
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883
    assert config.mqtt.clientId == ""
    assert config.mqtt.client_id == "edgemeta-beehive"
    assert config.mqtt.username == ""
    assert config.mqtt.password == ""
    assert config.mqtt.tls.enable is False
    assert (config.mqtt.tls.caFile, config.mqtt.tls.certFile, config.mqtt.tls.keyFile) == (
        "",
        "",
        "",
    )
    assert config.mqtt.qos == 1
    assert config.mqtt.keepalive == 30
    assert config.mqtt.topicPrefix == "beehive"
    assert config.mqtt.sessionExpiry >= 86400
    assert config.database.path == "data/edgemeta.json"
    assert config.database.compactBytes == 64 * 1024 * 1024
    mm = config.modules.metaManager
    assert mm.contextSendGroup == "hub"
    assert mm.contextSendModule == "websocket"
    assert mm.podStatusSyncInterval == 60
    assert mm.remoteQueryTimeout == 60
    assert mm.remoteQueryAttempts == 3
    assert mm.volumeTimeout == 60
    assert mm.edgeSite is False
    assert (mm.cloudHeartbeatInterval, mm.cloudHeartbeatTimeout) == (2, 6)


def test_client_id_default_follows_the_prefix() -> None:
    config = parse({"mqtt": {"topicPrefix": "beehive/node-a"}})
    assert config.mqtt.client_id == "edgemeta-beehive-node-a"
    config = parse({"mqtt": {"topicPrefix": "beehive/node-a", "clientId": "mine"}})
    assert config.mqtt.client_id == "mine"


def test_given_values_are_kept_and_the_rest_defaults() -> None:
    config = parse(
        {
            "mqtt": {"host": "broker.local", "port": 8883, "tls": {"enable": True}},
            "modules": {"metaManager": {"remoteQueryAttempts": 5, "edgeSite": True}},
        }
    )
    assert config.mqtt.host == "broker.local"
    assert config.mqtt.port == 8883
    assert config.mqtt.tls.enable is True
    assert config.mqtt.tls.caFile == ""
    assert config.mqtt.qos == 1
    assert config.modules.metaManager.remoteQueryAttempts == 5
    assert config.modules.metaManager.edgeSite is True
    assert config.modules.metaManager.remoteQueryTimeout == 60
    assert config.database == Config().database


def test_the_shipped_config_file_loads_and_equals_the_defaults() -> None:
    assert load_config(REPO / "conf" / "edge.yaml", NO_ENV) == Config()


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.mqtt.port = 1  # type: ignore[misc]


# -- wrong types --------------------------------------------------------------------

STRINGS = [
    "mqtt.host",
    "mqtt.clientId",
    "mqtt.username",
    "mqtt.password",
    "mqtt.tls.caFile",
    "mqtt.tls.certFile",
    "mqtt.tls.keyFile",
    "mqtt.topicPrefix",
    "database.path",
    "modules.metaManager.contextSendGroup",
    "modules.metaManager.contextSendModule",
    "metrics.address",
]
INTEGERS = [
    "mqtt.port",
    "mqtt.qos",
    "mqtt.keepalive",
    "modules.metaManager.remoteQueryAttempts",
    "metrics.port",
    "database.compactBytes",
]
SECONDS = [
    "modules.metaManager.podStatusSyncInterval",
    "modules.metaManager.remoteQueryTimeout",
    "modules.metaManager.volumeTimeout",
]
BOOLEANS = ["mqtt.tls.enable", "modules.metaManager.edgeSite"]


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        *[(k, v) for k in STRINGS for v in (5, True, ["x"], {"a": 1})],
        *[(k, v) for k in INTEGERS for v in ("1", True, [1], None)],
        *[(k, v) for k in SECONDS for v in ("60", False, [1])],
        *[(k, v) for k in BOOLEANS for v in ("yes", "true", 1, 0)],
    ],
)
def test_wrong_type_names_the_dotted_key(dotted: str, value: Any) -> None:
    message = error_of(nest(dotted, value))
    assert message.startswith(dotted + ":")


@pytest.mark.parametrize("dotted", INTEGERS)
def test_float_where_an_integer_is_due_is_wrong(dotted: str) -> None:
    message = error_of(nest(dotted, 2.0))
    assert message.startswith(dotted + ":")
    assert "integer" in message


@pytest.mark.parametrize("dotted", SECONDS)
def test_integer_or_float_seconds_are_fine(dotted: str) -> None:
    assert get(parse(nest(dotted, 5)), dotted) == 5
    assert get(parse(nest(dotted, 0.25)), dotted) == 0.25


@pytest.mark.parametrize(
    "section", ["mqtt", "mqtt.tls", "database", "modules", "modules.metaManager"]
)
@pytest.mark.parametrize("value", [5, "text", [1, 2]])
def test_section_that_is_not_a_mapping_names_the_section(section: str, value: Any) -> None:
    message = error_of(nest(section, value))
    assert message.startswith(section + ":")


def test_top_level_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError):
        parse_config("- a\n- b\n", NO_ENV)
    with pytest.raises(ConfigError):
        parse_config("just text\n", NO_ENV)


# -- out of range ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("mqtt.qos", -1),
        ("mqtt.qos", 3),
        ("mqtt.port", 0),
        ("mqtt.port", -1),
        ("mqtt.port", 65536),
        ("mqtt.keepalive", -1),
        ("modules.metaManager.remoteQueryAttempts", 0),
        ("modules.metaManager.remoteQueryAttempts", -3),
        *[(k, v) for k in SECONDS for v in (0, 0.0, -1, -0.5)],
        ("mqtt.topicPrefix", ""),
        ("mqtt.topicPrefix", "beehive/+"),
        ("mqtt.topicPrefix", "beehive/#"),
        ("mqtt.topicPrefix", "beehive//a"),
        ("mqtt.topicPrefix", "beehive/"),
        ("database.path", ""),
        ("modules.metaManager.contextSendGroup", ""),
        ("modules.metaManager.contextSendGroup", "hub/x"),
        ("modules.metaManager.contextSendGroup", "+"),
        ("metrics.port", 65536),
        ("metrics.port", -1),
        ("database.compactBytes", 0),
        ("database.compactBytes", -1),
        ("modules.metaManager.cloudHeartbeatInterval", -1),
        ("modules.metaManager.cloudHeartbeatTimeout", 0),
        ("modules.metaManager.cloudHeartbeatTimeout", 2),
    ],
)
def test_out_of_range_value_names_the_dotted_key(dotted: str, value: Any) -> None:
    message = error_of(nest(dotted, value))
    assert message.startswith(dotted + ":")


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("mqtt.qos", 0),
        ("mqtt.qos", 2),
        ("mqtt.port", 1),
        ("mqtt.port", 65535),
        ("mqtt.keepalive", 0),
        ("modules.metaManager.remoteQueryAttempts", 1),
        ("modules.metaManager.remoteQueryTimeout", 0.001),
        ("database.compactBytes", 1),
        ("modules.metaManager.cloudHeartbeatInterval", 0),
        ("modules.metaManager.cloudHeartbeatTimeout", 2.001),
    ],
)
def test_range_boundaries_are_accepted(dotted: str, value: Any) -> None:
    assert get(parse(nest(dotted, value)), dotted) == value


def test_heartbeat_timeout_must_exceed_the_interval_unless_it_is_off() -> None:
    meta = "modules.metaManager"
    message = error_of(
        {"modules": {"metaManager": {"cloudHeartbeatInterval": 5, "cloudHeartbeatTimeout": 5}}}
    )
    assert message.startswith(f"{meta}.cloudHeartbeatTimeout: must be greater than")
    off = parse(
        {"modules": {"metaManager": {"cloudHeartbeatInterval": 0, "cloudHeartbeatTimeout": 1}}}
    )
    assert off.modules.metaManager.cloudHeartbeatInterval == 0


# -- unknown keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "dotted",
    [
        "extra",
        "mqtt.extra",
        "mqtt.tls.extra",
        "database.extra",
        "modules.extra",
        "modules.metaManager.extra",
        "limits.extra",
        "metrics.extra",
        "mqtt.Host",
    ],
)
def test_unknown_key_at_every_level_is_named(dotted: str) -> None:
    message = error_of(nest(dotted, 1))
    assert message.startswith(dotted + ":")
    assert "unknown" in message


def test_unknown_module_is_named() -> None:
    message = error_of({"modules": {"edged": {"x": 1}}})
    assert message.startswith("modules.edged:")


# -- files ------------------------------------------------------------------------------


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("mqtt:\n  host: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, NO_ENV)
    assert str(path) in str(info.value)
    assert "YAML" in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, NO_ENV)
    assert str(path) in str(info.value)


def test_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"mqtt:\n  host: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, NO_ENV)
    assert str(path) in str(info.value)


def test_directory_instead_of_a_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, NO_ENV)
    assert str(tmp_path) in str(info.value)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("mqtt:\n  port: 1884\ndatabase:\n  path: /var/lib/e.json\n", "utf-8")
    config = load_config(path, NO_ENV)
    assert config.mqtt.port == 1884
    assert config.database.path == "/var/lib/e.json"


# -- environment overrides --------------------------------------------------------------


def test_environment_overrides_the_file() -> None:
    environ = {
        "EDGEMETA_MQTT_HOST": "10.0.0.9",
        "EDGEMETA_MQTT_PORT": "2883",
        "EDGEMETA_DB_PATH": "/tmp/x/db.json",
    }
    config = parse(
        {"mqtt": {"host": "file-host", "port": 1884}, "database": {"path": "file.json"}},
        environ,
    )
    assert config.mqtt.host == "10.0.0.9"
    assert config.mqtt.port == 2883
    assert config.database.path == "/tmp/x/db.json"


def test_environment_overrides_without_the_sections_in_the_file() -> None:
    environ = {"EDGEMETA_MQTT_PORT": "2883", "EDGEMETA_DB_PATH": "db.json"}
    config = parse_config("", environ)
    assert config.mqtt.port == 2883
    assert config.database.path == "db.json"


def test_environment_overrides_an_empty_section() -> None:
    # "mqtt:" with nothing under it is an empty section, as without overrides.
    environ = {"EDGEMETA_MQTT_HOST": "10.0.0.9", "EDGEMETA_DB_PATH": "db.json"}
    config = parse_config("mqtt:\ndatabase:\n", environ)
    assert config.mqtt.host == "10.0.0.9"
    assert config.database.path == "db.json"


def test_empty_environment_variables_count_as_unset() -> None:
    environ = {"EDGEMETA_MQTT_HOST": "", "EDGEMETA_MQTT_PORT": "", "EDGEMETA_DB_PATH": ""}
    config = parse({"mqtt": {"host": "file-host", "port": 1884}}, environ)
    assert config.mqtt.host == "file-host"
    assert config.mqtt.port == 1884
    assert config.database.path == "data/edgemeta.json"


@pytest.mark.parametrize("value", ["abc", "1883.0", "0", "65536", "-1", "0x50"])
def test_bad_port_variable_is_named(value: str) -> None:
    message = error_of({}, {"EDGEMETA_MQTT_PORT": value})
    assert message.startswith("EDGEMETA_MQTT_PORT:")


def test_environment_is_read_from_the_process_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEMETA_MQTT_HOST", "from-env")
    monkeypatch.setenv("EDGEMETA_MQTT_PORT", "")
    monkeypatch.delenv("EDGEMETA_DB_PATH", raising=False)
    path = tmp_path / "edge.yaml"
    path.write_text("mqtt:\n  host: file-host\n  port: 1884\n", "utf-8")
    config = load_config(path)
    assert config.mqtt.host == "from-env"
    assert config.mqtt.port == 1884
    monkeypatch.setenv("EDGEMETA_MQTT_PORT", "nope")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("EDGEMETA_MQTT_PORT:")


def test_environment_override_does_not_hide_other_errors() -> None:
    message = error_of({"mqtt": {"qos": 7}}, {"EDGEMETA_MQTT_HOST": "h"})
    assert message.startswith("mqtt.qos:")


# -- mirror -------------------------------------------------------------------------


def test_mirror_defaults_and_values() -> None:
    assert parse({}).mirror.enable is True
    assert parse({}).mirror.types == ()
    config = parse({"mirror": {"enable": False, "types": ["pod", "*"]}})
    assert config.mirror.enable is False
    assert config.mirror.types == ("pod", "*")


@pytest.mark.parametrize(
    ("dotted", "value"),
    [("mirror.enable", "yes"), ("mirror.types", "pod"), ("mirror.types", ["a/b"])],
)
def test_bad_mirror_values_name_the_dotted_key(dotted: str, value: Any) -> None:
    assert dotted in error_of(nest(dotted, value))
