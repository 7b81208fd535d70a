"""`edgemeta check-config`, `print-config`, `--version` and every command's `--help`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemeta import __version__
from edgemeta.config import Config, parse_config
from tests.support.broker import REPO_ROOT
from tests.support.cli import run_cli

COMMANDS = [
    ["run"],
    ["send"],
    ["get"],
    ["list"],
    ["watch"],
    ["db"],
    ["db", "export"],
    ["db", "import"],
    ["db", "stats"],
    ["db", "compact"],
    ["health"],
    ["doctor"],
    ["completion"],
    ["check-config"],
    ["print-config"],
    ["sim"],
    ["sim", "cloud"],
    ["sim", "edged"],
    ["sim", "device"],
]


def test_print_config_is_the_shipped_default_and_conf_edge_yaml() -> None:
    done = run_cli("print-config")

    assert done.returncode == 0
    shipped = (REPO_ROOT / "edgemeta" / "default.yaml").read_text(encoding="utf-8")
    assert done.stdout == shipped
    assert (REPO_ROOT / "conf" / "edge.yaml").read_text(encoding="utf-8") == shipped, (
        "conf/edge.yaml and edgemeta/default.yaml must stay identical: "
        "cp conf/edge.yaml edgemeta/default.yaml"
    )
    # Every key it shows is the default.
    assert parse_config(shipped, environ={}) == Config()


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("mqtt:\n  port: 1884\nmetrics:\n  port: 9100\n  statsInterval: 30\n")

    done = run_cli("check-config", path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("mqtt:\n  qos: 3\n", "mqtt.qos"),
        ("metrics:\n  port: -1\n", "metrics.port"),
        ("metrics:\n  statsInterval: -1\n", "metrics.statsInterval"),
        ("metrics:\n  bogus: 1\n", "metrics.bogus: unknown key"),
        ("mqtt: [\n", "invalid YAML"),
    ],
)
def test_check_config_names_what_is_wrong(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(text)

    done = run_cli("check-config", path)

    assert done.returncode == 2
    assert named in done.stderr
    assert done.stdout == ""


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    done = run_cli("check-config", tmp_path / "none.yaml")
    assert done.returncode == 2
    assert "config file not found" in done.stderr


def test_check_config_applies_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("")
    done = run_cli("check-config", path, env={"EDGEMETA_MQTT_PORT": "70000"})
    assert done.returncode == 2
    assert "EDGEMETA_MQTT_PORT" in done.stderr


def test_version() -> None:
    done = run_cli("--version")
    assert done.stdout.strip() == f"edgemeta {__version__}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: edgemeta {' '.join(command)}")
