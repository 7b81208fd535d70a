"""`edgemeta send`: one message to edgemeta, and with --wait its answer (SPEC section 2)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ServiceFactory
from tests.support.cli import run_cli
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess

POD = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"containers": []}}


def test_send_wait_prints_ok_then_query_prints_stored_value(service: EdgemetaProcess) -> None:
    config = service.config_path
    inserted = run_cli(
        "send", "insert", "default/pod/web", "--source", "edgecontroller",
        "--content", json.dumps(POD), "--wait", "--config", config,
    )  # fmt: skip
    assert inserted.returncode == 0, inserted.stderr
    assert inserted.stdout.strip() == "OK"

    queried = run_cli("send", "query", "default/pod/web", "--wait", "--config", config)

    assert queried.returncode == 0, queried.stderr
    assert json.loads(queried.stdout) == [json.dumps(POD, separators=(",", ":"))]


def test_send_wait_output_json_is_the_whole_answer(service: EdgemetaProcess) -> None:
    done = run_cli(
        "send", "update", "default/podstatus/web", "--content", '{"phase":"Running"}',
        "--wait", "-o", "json", "--config", service.config_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["route"]["operation"] == "response"
    assert answer["route"]["source"] == "metaManager"
    assert answer["route"]["resource"] == "default/podstatus/web"
    assert answer["content"] == "OK"
    assert answer["header"]["parent_msg_id"]


def test_send_wait_exits_1_on_an_error_answer(service: EdgemetaProcess) -> None:
    done = run_cli(
        "send", "frobnicate", "default/pod/web", "--wait", "--config", service.config_path
    )
    assert done.returncode == 1
    assert "unknown operation 'frobnicate'" in done.stderr
    assert done.stdout == ""


def test_send_wait_times_out_with_status_3(make_service: ServiceFactory) -> None:
    stopped = make_service(start=False)
    done = run_cli(
        "send", "query", "default/pod/web", "--wait", "--timeout", "0.5",
        "--config", stopped.config_path,
    )  # fmt: skip
    assert done.returncode == 3
    assert "no answer within 0.5 s" in done.stderr


def test_send_without_wait_publishes_an_envelope_and_prints_its_id(
    service: EdgemetaProcess, probe: MqttProbe
) -> None:
    probe.subscribe(f"{service.prefix}/meta")
    done = run_cli(
        "send", "update", "default/podstatus/web", "--content", "[1, 2]",
        "--config", service.config_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    msg_id = done.stdout.strip()

    got = probe.expect(f"{service.prefix}/meta", lambda r: r.json["header"]["msg_id"] == msg_id)

    assert got.json["route"] == {
        "source": "edged",
        "group": "meta",
        "operation": "update",
        "resource": "default/podstatus/web",
    }
    assert got.json["content"] == [1, 2]
    assert got.json["header"]["sync"] is False
    assert got.properties.response_topic is None


def test_send_reads_content_from_a_file_and_from_stdin(
    service: EdgemetaProcess, tmp_path: Path
) -> None:
    path = tmp_path / "cm.json"
    path.write_text('{"data": {"k": "from-file"}}')
    config = service.config_path
    from_file = run_cli(
        "send", "insert", "default/configmap/a", "--source", "edgecontroller",
        "--content", f"@{path}", "--wait", "--config", config,
    )  # fmt: skip
    from_stdin = run_cli(
        "send", "insert", "default/configmap/b", "--source", "edgecontroller",
        "--content", "-", "--wait", "--config", config,
        input='{"data": {"k": "from-stdin"}}',
    )  # fmt: skip
    assert (from_file.returncode, from_stdin.returncode) == (0, 0), from_file.stderr

    listed = run_cli("list", "configmap", "-o", "json", "--config", config)

    assert [r["value"] for r in json.loads(listed.stdout)] == [
        {"data": {"k": "from-file"}},
        {"data": {"k": "from-stdin"}},
    ]


def test_send_refuses_content_that_is_not_json(tmp_path: Path) -> None:
    done = run_cli("send", "update", "default/podstatus/x", "--content", "{oops", cwd=tmp_path)
    assert done.returncode == 2
    assert "--content is not JSON" in done.stderr
