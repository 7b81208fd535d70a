"""Pure parts of the command line: argument parsing, the config search, colour choice."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgemeta.cli import build_parser
from edgemeta.commands.common import positive_seconds, tool_config
from edgemeta.commands.watch import use_colour
from edgemeta.config import find_config


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_db_option_before_or_after_the_action() -> None:
    assert parse("db", "--db", "a.json", "export").db == "a.json"
    assert parse("db", "export", "--db", "a.json").db == "a.json"
    assert parse("db", "export").db is None


def test_config_option_before_or_after_the_command() -> None:
    assert parse("-c", "x.yaml", "list", "pod").config == "x.yaml"
    assert parse("list", "pod", "-c", "x.yaml").config == "x.yaml"
    assert parse("-c", "x.yaml", "run").config == "x.yaml"
    assert parse("run").config is None


def test_connection_flags_override_the_config(tmp_path: Path) -> None:
    args = parse(
        "list", "pod", "-h", "broker.example", "-p", "8883", "-u", "op", "-P", "pw",
        "--cafile", "/etc/ssl/ca.pem", "--prefix", "beehive/node-a", "-i", "me",
    )  # fmt: skip
    args.config = None
    mqtt = tool_config(args).mqtt
    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.password) == (
        "broker.example",
        8883,
        "op",
        "pw",
    )
    assert mqtt.tls.enable and mqtt.tls.caFile == "/etc/ssl/ca.pem"
    assert mqtt.topicPrefix == "beehive/node-a"
    assert args.client_id == "me"


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "x"])
def test_positive_seconds_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_seconds(text)


def test_positive_seconds_accepts() -> None:
    assert positive_seconds("0.5") == 0.5


def test_config_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None, environ={}) in (None, Path("/etc/edgemeta/edge.yaml"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "edge.yaml").write_text("")
    assert find_config(None, environ={}) == Path("conf/edge.yaml")
    assert find_config(None, environ={"EDGEMETA_CONFIG": "/x.yaml"}) == Path("/x.yaml")
    assert find_config(None, environ={"EDGEMETA_CONFIG": ""}) == Path("conf/edge.yaml")
    assert find_config("given.yaml", environ={"EDGEMETA_CONFIG": "/x.yaml"}) == Path("given.yaml")


@pytest.mark.parametrize(
    ("choice", "tty", "env", "expected"),
    [
        ("auto", True, {}, True),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),
        ("auto", False, {}, False),
        ("always", False, {"NO_COLOR": "1"}, True),
        ("never", True, {}, False),
    ],
)
def test_use_colour(choice: str, tty: bool, env: dict[str, str], expected: bool) -> None:
    assert use_colour(choice, tty, env) is expected
