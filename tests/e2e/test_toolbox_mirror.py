"""Issue 12 item 4: `edgemeta get`, `list` and `watch TYPE` read the state mirror."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ServiceFactory
from tests.support.cli import CliProcess, run_cli
from tests.support.helpers import Edge
from tests.support.mqtt import MqttProbe
from tests.support.service import EdgemetaProcess

WEB = {"metadata": {"name": "web"}, "spec": {"image": "nginx"}}
DB = {"metadata": {"name": "db"}, "spec": {"image": "postgres"}}
CM = {"data": {"mode": "edge"}}


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    done = run_cli("list", *args, "-o", "json", "--config", config)
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def test_list_shows_the_keys_in_every_output_format(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/pod/web", WEB)
    edge.insert("default/pod/db", DB)
    edge.insert("other/pod/far", {"x": 1})
    edge.insert("default/configmap/cm", CM)
    config = service.config_path

    table = run_cli("list", "pod", "--config", config)
    wide = run_cli("list", "pod", "-o", "wide", "--config", config)
    names = run_cli("list", "pod", "-o", "name", "--config", config)
    as_yaml = run_cli("list", "pod", "-o", "yaml", "--config", config)
    records = listed(config, "pod", "-n", "default")

    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "VALUE"]
    assert [r.split(maxsplit=1) for r in rows] == [
        ["default/pod/db", json.dumps(DB, separators=(",", ":"))],
        ["default/pod/web", json.dumps(WEB, separators=(",", ":"))],
    ]
    header, *rows = wide.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "REVISION", "SIZE", "VALUE"]
    db_row = rows[0].split(maxsplit=4)
    assert db_row[:2] == ["default/pod/db", "pod"]
    assert int(db_row[3]) == len(json.dumps(DB, separators=(",", ":")))
    assert names.stdout.splitlines() == ["default/pod/db", "default/pod/web"]
    assert [{k: r[k] for k in ("key", "type", "value")} for r in records] == [
        {"key": "default/pod/db", "type": "pod", "value": DB},
        {"key": "default/pod/web", "type": "pod", "value": WEB},
    ]
    web_revision, db_revision = records[1]["revision"], records[0]["revision"]
    assert isinstance(web_revision, int) and isinstance(db_revision, int)
    assert web_revision < db_revision  # web was inserted first
    assert db_row[2] == str(db_revision)
    assert yaml.safe_load(as_yaml.stdout) == records


def test_list_all_namespaces_and_every_type(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/pod/web", WEB)
    edge.insert("other/pod/far", {"x": 1})
    edge.insert("other/configmap/cm", CM)
    edge.insert("other/node", "a key without a name")
    config = service.config_path

    every_pod = run_cli("list", "pod", "-A", "-o", "name", "--config", config)
    in_other = run_cli("list", "all", "-n", "other", "-o", "name", "--config", config)
    nameless = listed(config, "node", "-n", "other")
    empty = run_cli("list", "pod", "-n", "nowhere", "--config", config)

    assert every_pod.stdout.splitlines() == ["default/pod/web", "other/pod/far"]
    assert in_other.stdout.splitlines() == ["other/configmap/cm", "other/node", "other/pod/far"]
    assert [(r["key"], r["value"]) for r in nameless] == [("other/node", "a key without a name")]
    assert empty.returncode == 0
    assert empty.stdout == ""
    assert "no pod in namespace nowhere" in empty.stderr
    assert listed(config, "pod", "-n", "nowhere") == []


def test_get_and_list_read_the_mirror_without_a_query_nor_the_database(
    service: EdgemetaProcess, edge: Edge, probe: MqttProbe, prefix: str
) -> None:
    edge.insert("default/pod/web", WEB)
    config = service.config_path
    probe.drain()

    got = run_cli("get", "default/pod/web", "-o", "json", "--config", config)
    names = run_cli("list", "pod", "-o", "name", "--config", config)

    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == WEB
    assert got.stderr == ""
    assert names.stdout.splitlines() == ["default/pod/web"]
    probe.expect_none(f"{prefix}/meta", within=0.5)

    # edgemeta stopped and its database gone: the broker still holds the mirror.
    assert service.stop() == 0
    moved = service.tmp_dir / "moved"
    moved.mkdir()
    for path in service.tmp_dir.glob("edgemeta.json*"):
        shutil.move(path, moved / path.name)
    assert not list(service.tmp_dir.glob("edgemeta.json*"))

    table = run_cli("get", "default/pod/web", "--config", config)
    wide = run_cli("list", "pod", "-o", "wide", "--config", config)

    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "VALUE"]
    assert row.split(maxsplit=1) == ["default/pod/web", json.dumps(WEB, separators=(",", ":"))]
    assert wide.stdout.splitlines()[1].split()[:2] == ["default/pod/web", "pod"]
    assert not list(service.tmp_dir.glob("edgemeta.json*"))


def test_get_of_a_type_not_mirrored_falls_back_to_a_query(
    service: EdgemetaProcess, edge: Edge, probe: MqttProbe, prefix: str
) -> None:
    edge.insert("default/secret/token", {"data": {"t": "s3cret"}})
    config = service.config_path
    probe.drain()

    auto = run_cli("get", "default/secret/token", "-o", "json", "--config", config)
    query = probe.expect(f"{prefix}/meta", timeout=5)
    from_mirror = run_cli("get", "default/secret/token", "--from", "mirror", "--config", config)
    listed_secrets = run_cli("list", "secret", "-o", "json", "--config", config)

    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout) == {"data": {"t": "s3cret"}}
    assert "secret is not mirrored" in auto.stderr
    assert query.json["route"]["operation"] == "query"
    assert query.json["route"]["resource"] == "default/secret/token"
    assert from_mirror.returncode == 1
    assert "default/secret/token not found" in from_mirror.stderr
    assert "not mirrored" in listed_secrets.stderr
    assert [r["key"] for r in json.loads(listed_secrets.stdout)] == ["default/secret/token"]
    assert json.loads(listed_secrets.stdout)[0]["revision"] is None


def test_get_of_a_key_not_in_the_mirror_asks_edgemeta(
    service: EdgemetaProcess, probe: MqttProbe, prefix: str
) -> None:
    probe.subscribe(f"{prefix}/meta")
    probe.drain()

    missing = run_cli("get", "default/pod/nope", "--config", service.config_path)
    query = probe.expect(f"{prefix}/meta", timeout=5)
    forced = run_cli("get", "default/pod/nope", "--from", "query", "--config", service.config_path)

    assert missing.returncode == 1
    assert "default/pod/nope is not in the mirror; asking edgemeta" in missing.stderr
    assert "default/pod/nope not found" in missing.stderr
    assert query.json["route"]["operation"] == "query"
    assert forced.returncode == 1
    assert "not in the mirror" not in forced.stderr


def test_a_disabled_mirror_makes_get_and_list_query(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    service = make_service(mirror={"enable": False})
    edge = Edge(probe, prefix)
    edge.insert("default/pod/web", WEB)

    got = run_cli("get", "default/pod/web", "-o", "json", "--config", service.config_path)
    names = run_cli("list", "pod", "-o", "name", "--config", service.config_path)

    assert json.loads(got.stdout) == WEB
    assert "pod is not mirrored" in got.stderr
    assert names.stdout.splitlines() == ["default/pod/web"]


def events(watch: CliProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in watch.stdout_lines]


def test_watch_shows_added_modified_deleted_with_growing_revisions(
    service: EdgemetaProcess, edge: Edge
) -> None:
    edge.insert("default/configmap/a", {"v": 1})
    edge.insert("default/pod/elsewhere", WEB)
    config = service.config_path
    with CliProcess("watch", "configmap", "-o", "json", "--count", "4", "--config", config) as w:
        w.expect_stdout('"ADDED"')
        w.expect_stderr("watching configmap in namespace default")
        edge.insert("default/configmap/b", {"v": 2})
        edge.insert("default/configmap/a", {"v": 3})
        edge.send("delete", "default/configmap/b", "edgecontroller")
        assert w.wait() == 0

    seen = events(w)
    assert [(e["type"], e["key"]) for e in seen] == [
        ("ADDED", "default/configmap/a"),
        ("ADDED", "default/configmap/b"),
        ("MODIFIED", "default/configmap/a"),
        ("DELETED", "default/configmap/b"),
    ]
    revisions = [e["revision"] for e in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    assert [e["value"] for e in seen] == [{"v": 1}, {"v": 2}, {"v": 3}, None]
    assert {e["restype"] for e in seen} == {"configmap"}


def test_watch_text_lines_are_aligned(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/configmap/a", {"v": 1})
    config = service.config_path
    with CliProcess("watch", "--state", "--count", "2", "--config", config) as w:
        w.expect_stdout("ADDED")
        edge.send("delete", "default/configmap/a", "edgecontroller")
        assert w.wait() == 0

    added, deleted = w.stdout_lines
    assert added.split() == [added.split()[0], "ADDED", "default/configmap/a", '{"v":1}']
    assert deleted.split()[1:] == ["DELETED", "default/configmap/a"]
    assert int(deleted.split()[0]) > int(added.split()[0])
    assert added.index("ADDED") == deleted.index("DELETED")
    assert added.index("default/") == deleted.index("default/")


def test_watch_since_leaves_out_what_it_has_seen(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/configmap/a", {"v": 1})
    edge.insert("default/configmap/b", {"v": 2})
    config = service.config_path
    since = max(r["revision"] for r in listed(config, "configmap"))
    args = ("watch", "configmap", "--since", str(since), "-o", "json", "--count", "2")
    with CliProcess(*args, "--config", config) as w:
        w.expect_stderr("watching")
        edge.insert("default/configmap/a", {"v": 3})
        edge.insert("default/configmap/c", {"v": 4})
        assert w.wait() == 0

    assert [(e["type"], e["key"], e["value"]) for e in events(w)] == [
        ("MODIFIED", "default/configmap/a", {"v": 3}),
        ("ADDED", "default/configmap/c", {"v": 4}),
    ]
    assert all(e["revision"] > since for e in events(w))


def test_watch_never_shows_the_reconcile_marker(service: EdgemetaProcess, edge: Edge) -> None:
    edge.insert("default/configmap/a", {"v": 1})
    config = service.config_path
    with CliProcess("watch", "all", "-A", "--count", "2", "--config", config) as w:
        w.expect_stdout("default/configmap/a")
        # A restart publishes a non-retained marker under <prefix>/state/$reconcile/.
        assert service.stop() == 0
        service.start()
        deadline = time.monotonic() + 15
        while "mirror reconciled" not in service.log_text():
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.05)
        edge.insert("default/pod/after", WEB)
        assert w.wait() == 0

    assert [line.split()[1:3] for line in w.stdout_lines] == [
        ["ADDED", "default/configmap/a"],
        ["ADDED", "default/pod/after"],
    ]
    assert "$reconcile" not in "\n".join(w.stdout_lines + w.stderr_lines)


def test_watch_keeps_the_traffic_view_for_a_topic_filter(
    make_service: ServiceFactory, probe: MqttProbe, prefix: str
) -> None:
    config = make_service(start=False).config_path
    with CliProcess("watch", f"{prefix}/state/#", "--count", "1", "--config", config) as w:
        w.expect_stderr(f"watching {prefix}/state/#")
        probe.publish(f"{prefix}/state/$reconcile/x", b"")
        assert w.wait() == 0
    assert f"{prefix}/state/$reconcile/x" in w.stdout_lines[0]


def test_watch_refuses_object_options_with_a_topic_filter(service: EdgemetaProcess) -> None:
    done = run_cli("watch", "beehive/#", "--since", "3", "--config", service.config_path)
    state = run_cli("watch", "beehive/#", "--state", "--config", service.config_path)
    assert done.returncode == 2
    assert "go with a TYPE" in done.stderr
    assert state.returncode == 2
