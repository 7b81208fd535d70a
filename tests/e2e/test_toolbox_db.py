"""`edgemeta db export|import|stats|compact` on the database file, with edgemeta stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemeta.store import DatabaseInUse, open_storage
from tests.conftest import ServiceFactory
from tests.support.cli import run_cli
from tests.support.mqtt import MqttProbe, envelope
from tests.support.service import EdgemetaProcess

RECORDS = [
    ("default/pod/web", "pod", {"metadata": {"name": "web"}, "note": "ünïcode ✓"}),
    ("default/configmap/cfg", "configmap", {"data": {"a": "1"}}),
    ("kube-system/secret/token", "secret", "a plain string\nwith a newline"),
    ("default/podstatus/web", "podstatus", {"phase": "Running"}),
]


@pytest.fixture
def filled(service: EdgemetaProcess, probe: MqttProbe) -> EdgemetaProcess:
    """A service that stored RECORDS, then stopped cleanly."""
    answers = f"{service.prefix}/reply/db-test"
    probe.subscribe(answers)
    for key, _restype, content in RECORDS:
        source = "edged" if "podstatus" in key else "edgecontroller"
        op = "update" if "podstatus" in key else "insert"
        message = envelope(op, key, source, content)
        probe.publish(f"{service.prefix}/meta", message, response_topic=answers)
        got = probe.expect(answers)
        assert got.json["content"] == "OK"
    assert service.stop() == 0
    return service


def _export(db: Path) -> str:
    done = run_cli("db", "export", "--db", db)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_writes_json_lines_ordered_by_key(filled: EdgemetaProcess) -> None:
    lines = _export(filled.db_path).splitlines()

    records = [json.loads(line) for line in lines]
    assert [r["key"] for r in records] == sorted(k for k, _t, _c in RECORDS)
    by_key = {r["key"]: r for r in records}
    for key, restype, content in RECORDS:
        stored = (
            content
            if isinstance(content, str)
            else json.dumps(content, separators=(",", ":"), ensure_ascii=False)
        )
        assert by_key[key] == {"key": key, "type": restype, "value": stored}


def test_export_import_round_trips_exactly_and_import_is_idempotent(
    filled: EdgemetaProcess, tmp_path: Path
) -> None:
    exported = _export(filled.db_path)
    copy = tmp_path / "copy" / "edgemeta.json"

    first = run_cli("db", "import", "--db", copy, input=exported)
    again = run_cli("db", "import", "-", "--db", copy, input=exported)

    assert first.returncode == 0, first.stderr
    assert f"{len(RECORDS)} written, 0 unchanged" in first.stderr
    assert again.returncode == 0, again.stderr
    assert f"0 written, {len(RECORDS)} unchanged" in again.stderr
    assert _export(copy) == exported
    # The import is a real database: edgemeta serves it.
    assert copy.is_file()


def test_import_replaces_the_same_key_and_keeps_the_others(
    filled: EdgemetaProcess, tmp_path: Path
) -> None:
    changed = {"key": "default/pod/web", "type": "pod", "value": '{"new":true}'}
    patch = tmp_path / "patch.jsonl"
    patch.write_text(json.dumps(changed) + "\n\n")

    done = run_cli("db", "import", patch, "--db", filled.db_path)

    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in _export(filled.db_path).splitlines()]
    assert len(records) == len(RECORDS)
    assert changed in records


def test_a_bad_line_imports_nothing(filled: EdgemetaProcess) -> None:
    before = _export(filled.db_path)
    good = json.dumps({"key": "default/pod/new", "type": "pod", "value": "{}"})

    done = run_cli("db", "import", "--db", filled.db_path, input=f'{good}\n{{"key": 5}}\n')

    assert done.returncode == 2
    assert "line 2" in done.stderr
    assert _export(filled.db_path) == before


def test_db_commands_that_write_refuse_while_edgemeta_runs(service: EdgemetaProcess) -> None:
    for args in (["compact"], ["import", "-"]):
        done = run_cli("db", *args, "--config", service.config_path, input="")
        assert done.returncode == 1, args
        assert "in use by another process" in done.stderr
        assert "stop edgemeta first" in done.stderr


def test_edgemeta_refuses_a_database_another_process_holds(
    make_service: ServiceFactory,
) -> None:
    edge = make_service(start=False)
    held = open_storage(edge.db_path, lock=True)
    try:
        with pytest.raises(DatabaseInUse):
            open_storage(edge.db_path, lock=True)
        edge.start(wait_online=False)
        assert edge.wait() == 2
        assert "in use by another process" in edge.log_text()
    finally:
        held.close()
    edge.start()


def test_stats_and_compact(filled: EdgemetaProcess) -> None:
    db = filled.db_path
    journal = db.with_name(db.name + ".journal")
    # A change made offline lands in the journal first.
    patch = json.dumps({"key": "default/pod/extra", "type": "pod", "value": "{}"})
    assert run_cli("db", "import", "--db", db, input=patch).returncode == 0

    stats = run_cli("db", "stats", "-o", "json", "--db", db)
    compacted = run_cli("db", "compact", "--db", db)
    after = run_cli("db", "stats", "--db", db)

    assert stats.returncode == 0, stats.stderr
    numbers = json.loads(stats.stdout)
    assert numbers["records"] == len(RECORDS) + 1
    assert numbers["types"] == {"configmap": 1, "pod": 2, "podstatus": 1, "secret": 1}
    assert numbers["snapshot_bytes"] == db.stat().st_size or numbers["snapshot_bytes"] > 0
    assert compacted.returncode == 0, compacted.stderr
    assert f"{len(RECORDS) + 1} records" in compacted.stdout
    assert after.returncode == 0
    assert f"records         {len(RECORDS) + 1}" in after.stdout
    assert "pod        2" in after.stdout
    assert journal.stat().st_size <= numbers["journal_bytes"]


def test_export_of_a_missing_database_says_so(tmp_path: Path) -> None:
    done = run_cli("db", "export", "--db", tmp_path / "none.json")
    assert done.returncode == 1
    assert "no database at" in done.stderr
