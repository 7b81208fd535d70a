"""`edgemeta get` and `edgemeta list`: the state mirror, printed as a table, JSON or YAML."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.cli import run_cli
from tests.support.service import EdgemetaProcess

WEB = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"image": "nginx"}}
DB = {"metadata": {"name": "db", "namespace": "default"}, "spec": {"image": "postgres"}}


@pytest.fixture
def pods(service: EdgemetaProcess) -> EdgemetaProcess:
    for name, pod in (("web", WEB), ("db", DB)):
        done = run_cli(
            "send", "insert", f"default/pod/{name}", "--source", "edgecontroller",
            "--content", json.dumps(pod), "--wait", "--config", service.config_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    done = run_cli(
        "send", "update", "default/podstatus/web", "--content", '"plain text"',
        "--wait", "--config", service.config_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return service


def test_get_prints_a_table_with_the_stored_json(pods: EdgemetaProcess) -> None:
    done = run_cli("get", "default/pod/web", "--config", pods.config_path)

    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["NAME", "VALUE"]
    key, value = row.split(maxsplit=1)
    assert key == "default/pod/web"
    # A preview: the start of the stored JSON, cut at 60 characters.
    assert len(value) == 60 and value.endswith("…")
    assert json.dumps(WEB, separators=(",", ":")).startswith(value[:-1])


def test_get_accepts_type_slash_name_with_a_namespace(pods: EdgemetaProcess) -> None:
    done = run_cli("get", "pod/db", "-n", "default", "-o", "json", "--config", pods.config_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == DB


def test_get_yaml_and_a_value_that_is_not_json(pods: EdgemetaProcess) -> None:
    pod = run_cli("get", "default/pod/web", "-o", "yaml", "--config", pods.config_path)
    status = run_cli("get", "default/podstatus/web", "-o", "json", "--config", pods.config_path)

    assert yaml.safe_load(pod.stdout) == WEB
    assert json.loads(status.stdout) == "plain text"


def test_get_of_a_missing_resource_exits_1(pods: EdgemetaProcess) -> None:
    done = run_cli("get", "default/pod/nope", "--config", pods.config_path)
    assert done.returncode == 1
    assert "default/pod/nope not found" in done.stderr


def test_list_prints_every_pod_ordered_by_key(pods: EdgemetaProcess) -> None:
    table = run_cli("list", "pod", "--config", pods.config_path)
    as_json = run_cli("list", "pod", "-n", "default", "-o", "json", "--config", pods.config_path)
    as_yaml = run_cli("list", "pod", "-o", "yaml", "--config", pods.config_path)

    assert table.returncode == 0, table.stderr
    rows = [line.split(maxsplit=1) for line in table.stdout.splitlines()[1:]]
    assert [k for k, _v in rows] == ["default/pod/db", "default/pod/web"]
    records = json.loads(as_json.stdout)
    assert [{k: r[k] for k in ("key", "type", "value")} for r in records] == [
        {"key": "default/pod/db", "type": "pod", "value": DB},
        {"key": "default/pod/web", "type": "pod", "value": WEB},
    ]
    assert all(isinstance(r["revision"], int) for r in records)
    assert [r["value"] for r in yaml.safe_load(as_yaml.stdout)] == [DB, WEB]


def test_list_of_an_empty_namespace(pods: EdgemetaProcess) -> None:
    table = run_cli("list", "pod", "-n", "elsewhere", "--config", pods.config_path)
    as_json = run_cli("list", "pod", "-n", "elsewhere", "-o", "json", "--config", pods.config_path)

    assert table.returncode == 0
    assert table.stdout == ""
    assert "no pod in namespace elsewhere" in table.stderr
    assert json.loads(as_json.stdout) == []
