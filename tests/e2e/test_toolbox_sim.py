"""The simulators, each in a short scripted scenario against a running edgemeta."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import yaml

from tests.support.cli import CliProcess, run_cli
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess

OBJECTS = [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}},
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": "default"},
        "data": {"t": "c2VjcmV0"},
    },
]


def _objects(tmp_path: Path) -> Path:
    folder = tmp_path / "objects"
    folder.mkdir()
    (folder / "objects.yaml").write_text(yaml.safe_dump_all(OBJECTS[:2]))
    (folder / "secret.json").write_text(json.dumps({"kind": "List", "items": OBJECTS[2:]}))
    (folder / "README.txt").write_text("not an object file")
    return folder


def test_sim_cloud_pushes_answers_remote_queries_and_logs_pod_statuses(
    service: EdgemetaProcess, tmp_path: Path
) -> None:
    config = service.config_path
    with CliProcess("sim", "cloud", "--objects", _objects(tmp_path), "--push", "-c", config) as sim:
        sim.expect_stderr("3 object(s)")
        sim.expect_stdout("connected: told edgemeta cloud_connected")
        sim.expect_stdout("pushed insert default/configmap/cfg")
        sim.expect_stdout("pushed insert default/pod/web")

        # Not pushed, not stored: with the cloud connected the query goes to the cloud.
        secret = run_cli("get", "default/secret/token", "-o", "json", "-c", config)
        assert secret.returncode == 0, secret.stderr
        assert json.loads(secret.stdout) == OBJECTS[2]
        sim.expect_stdout("query default/secret/token: found")
        missing = run_cli("get", "default/secret/none", "-c", config)
        assert missing.returncode == 1
        assert "not found" in missing.stderr

        pods = run_cli("list", "pod", "-o", "json", "-c", config)
        assert [r["value"] for r in json.loads(pods.stdout)] == [OBJECTS[0]]

        status = run_cli(
            "send", "update", "default/podstatus/web", "--content",
            '{"name": "web", "status": {"phase": "Pending"}}', "--wait", "-c", config,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        sim.expect_stdout("pod status default/podstatus/web: Pending (from edged)")

        assert sim.stop(signal.SIGINT) == 0
    assert "disconnected: told edgemeta cloud_disconnected" in sim.stdout_lines


def test_sim_edged_answers_volume_requests_and_reports_pod_statuses(
    service: EdgemetaProcess, probe: MqttProbe
) -> None:
    config = service.config_path
    probe.subscribe(f"{service.prefix}/hub")
    with CliProcess("sim", "edged", "--pod", "default/web", "--rate", "20", "-c", config) as sim:
        sim.expect_stderr("1 pod(s); listening")
        answer = run_cli(
            "send", "createvolume", "default/volume/v1", "--source", "edgecontroller",
            "--content", '{"size": "1Gi"}', "--wait", "-c", config,
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {
            "operation": "createvolume",
            "resource": "default/volume/v1",
            "result": "ok",
        }
        sim.expect_stdout("volume createvolume default/volume/v1: response")

        # Its statuses reach edgemeta, which stores them and forwards them to the cloud.
        forwarded = probe.expect(
            f"{service.prefix}/hub",
            lambda r: r.json["route"]["resource"] == "default/podstatus/web",
        )
        assert forwarded.json["route"]["source"] == "edged"
        assert forwarded.json["content"]["status"]["phase"] == "Running"

        # A pod edgemeta sends to edged joins the reported pods.
        added = run_cli(
            "send", "insert", "default/pod/db", "--source", "edgecontroller",
            "--content", "{}", "--wait", "-c", config,
        )  # fmt: skip
        assert added.returncode == 0
        sim.expect_stdout("pod added default/pod/db")
        sim.expect_stdout("status default/podstatus/db: Running")
        assert sim.stop() == 0


def test_sim_edged_stops_after_its_messages(service: EdgemetaProcess) -> None:
    done = run_cli(
        "sim", "edged", "--pod", "ns1/a", "--rate", "50", "--messages", "3",
        "-c", service.config_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["status ns1/podstatus/a: Running"] * 3


def test_sim_device_updates_are_stored_and_answered(service: EdgemetaProcess) -> None:
    config = service.config_path
    done = run_cli(
        "sim", "device", "--count", "3", "--rate", "20", "--messages", "9",
        "--namespace", "iot", "-q", "-c", config,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "sent 9 update(s) from 3 device(s)" in done.stdout
    assert "9 OK, 0 error(s), 0 unanswered" in done.stdout
    listed = run_cli("list", "device", "-n", "iot", "-o", "json", "-c", config)
    devices = [r["value"] for r in json.loads(listed.stdout)]
    assert [d["device"] for d in devices] == ["device-0", "device-1", "device-2"]
    assert all(d["sequence"] == 2 for d in devices)


def test_sim_device_reports_unanswered_updates(service: EdgemetaProcess) -> None:
    service.stop()
    done = run_cli(
        "sim", "device", "--rate", "50", "--messages", "2", "--timeout", "0.3",
        "-c", service.config_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "0 OK, 0 error(s), 2 unanswered" in done.stdout


def test_sim_device_on_device_topics_sends_bare_readings_that_reach_the_cloud(
    service: EdgemetaProcess,
) -> None:
    config = service.config_path
    prefix = service.config["mqtt"]["topicPrefix"]
    with MqttProbe(service.host, service.port) as cloud:
        cloud.subscribe(f"{prefix}/hub")
        done = run_cli(
            "sim", "device", "--count", "2", "--rate", "20", "--messages", "4", "-q",
            "--topic", "{prefix}/meta/device/{id}", "-c", config,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "sent 4 reading(s) from 2 device(s)" in done.stdout
        forwarded = [cloud.expect(f"{prefix}/hub", timeout=5).json for _ in range(4)]
    assert {m["route"]["source"] for m in forwarded} == {"device-0", "device-1"}
    assert {m["route"]["resource"] for m in forwarded} == {
        "default/device/device-0",
        "default/device/device-1",
    }
    devices = [
        r["value"] for r in json.loads(run_cli("list", "device", "-o", "json", "-c", config).stdout)
    ]
    assert [d["device"] for d in devices] == ["device-0", "device-1"]
