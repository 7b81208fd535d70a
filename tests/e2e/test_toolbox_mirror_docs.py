"""The get / list / watch commands of README.md and docs/toolbox.md, run as written
(the config found through $EDGEMETA_CONFIG, as docs/toolbox.md says)."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path

import yaml

from tests.support.broker import REPO_ROOT
from tests.support.cli import CliProcess, run_cli
from tests.support.docs import documented_command
from tests.support.helpers import Edge
from tests.support.service import EdgemetaProcess

README = REPO_ROOT / "README.md"
TOOLBOX = REPO_ROOT / "docs" / "toolbox.md"


def written(path: Path, starts: str) -> list[str]:
    """The documented command line, without its `edgemeta` and its comment."""
    words = shlex.split(documented_command(path, starts), comments=True)
    assert words[0] == "edgemeta", words
    return words[1:]


def env_of(service: EdgemetaProcess) -> dict[str, str]:
    return {"EDGEMETA_CONFIG": str(service.config_path)}


def test_the_readme_state_mirror_session(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/configmap/app-cfg", {"data": {"mode": "edge"}})
    env = env_of(service)

    wide = run_cli(*written(README, "edgemeta list configmap -o wide"), env=env)
    got = run_cli(*written(README, "edgemeta get default/configmap/app-cfg"), env=env)
    with CliProcess(*written(README, "edgemeta watch configmap --count 2"), env=env) as watch:
        watch.expect_stdout("ADDED")
        edge.send("delete", "default/configmap/app-cfg", "edgecontroller")
        assert watch.wait() == 0

    header, row = wide.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "REVISION", "SIZE", "VALUE"]
    assert row.split() == [
        "default/configmap/app-cfg",
        "configmap",
        "1",
        "24",
        '{"data":{"mode":"edge"}}',
    ]
    assert json.loads(got.stdout) == {"data": {"mode": "edge"}}
    added, deleted = (line.split() for line in watch.stdout_lines)
    assert added == ["1", "ADDED", "default/configmap/app-cfg", '{"data":{"mode":"edge"}}']
    assert deleted[1:] == ["DELETED", "default/configmap/app-cfg"]


def test_the_toolbox_examples(service: EdgemetaProcess, edge: Edge) -> None:
    nginx = {"metadata": {"name": "nginx"}}
    edge.insert("default/pod/nginx", nginx)
    edge.insert("default/pod/other", {})
    edge.insert("kube-system/pod/dns", {})
    env = env_of(service)

    wide = run_cli(*written(TOOLBOX, "edgemeta list pod -A -o wide"), env=env)
    got = run_cli(*written(TOOLBOX, "edgemeta get default/pod/nginx -o json"), env=env)
    with CliProcess(*written(TOOLBOX, "edgemeta watch pod --since 2"), env=env) as watch:
        watch.expect_stderr("watching")
        edge.insert("default/pod/nginx", {"metadata": {"name": "nginx"}, "spec": {}})
        assert watch.wait() == 0

    assert [line.split()[0] for line in wide.stdout.splitlines()] == [
        "NAME", "default/pod/nginx", "default/pod/other", "kube-system/pod/dns",
    ]  # fmt: skip
    assert json.loads(got.stdout) == nginx
    (event,) = [json.loads(line) for line in watch.stdout_lines]
    assert (event["type"], event["key"], event["revision"]) == ("MODIFIED", "default/pod/nginx", 4)


def test_the_tour(service: EdgemetaProcess) -> None:
    env = env_of(service)
    sim = ("sim", "cloud", "--objects", "examples/objects", "--push")
    with CliProcess(*sim, env=env) as cloud:
        cloud.expect_stdout("pushed insert default/pod/nginx")
        cloud.expect_stdout("pushed insert default/pod/sensor-gateway")

        pods = run_cli(*written(TOOLBOX, "edgemeta list pod "), env=env)
        nginx = run_cli(*written(TOOLBOX, "edgemeta get default/pod/nginx -o yaml"), env=env)
        with CliProcess(*written(TOOLBOX, "edgemeta watch pod "), env=env) as watch:
            watch.expect_stdout("default/pod/sensor-gateway")
            watch.proc.send_signal(signal.SIGINT)
            assert watch.wait() == 0
        secret = run_cli(*written(TOOLBOX, "edgemeta get default/secret/gateway-token"), env=env)
        cloud.expect_stdout("query default/secret/gateway-token: found")
        assert cloud.stop(signal.SIGINT) == 0

    assert [line.split()[0] for line in pods.stdout.splitlines()] == [
        "NAME", "default/pod/nginx", "default/pod/sensor-gateway",
    ]  # fmt: skip
    assert yaml.safe_load(nginx.stdout)["metadata"]["name"] == "nginx"
    assert [line.split()[1] for line in watch.stdout_lines] == ["ADDED", "ADDED"]
    assert secret.returncode == 0, secret.stderr
    assert "secret is not mirrored" in secret.stderr
    assert yaml.safe_load(secret.stdout)
