"""The operator's first day (issue 11): options where operators put them, keys in lists,
errors that say why, exit codes, the config search, connection flags, online backups."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ServiceFactory
from tests.support.broker import REPO_ROOT, Broker, free_port
from tests.support.cli import CliProcess, cli_env, command, run_cli
from tests.support.service import EdgemetaProcess

CM = '{"data":{"mode":"edge"}}'


def _insert(config: Path, key: str, content: str, source: str = "edgecontroller") -> None:
    op = "update" if "/podstatus/" in key else "insert"
    done = run_cli("send", op, key, "--source", source, "--content", content, "--wait",
                   "--config", config)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK"


# -- bug 1: options before the sub-command ---------------------------------


def test_db_option_before_the_action_is_the_database_used(tmp_path: Path) -> None:
    db = tmp_path / "node" / "edgemeta.json"
    record = {"key": "default/pod/a", "type": "pod", "value": "{}"}

    imported = run_cli("db", "--db", db, "import", "-", input=json.dumps(record), cwd=tmp_path)
    exported = run_cli("db", "--db", db, "export", cwd=tmp_path)
    stats = run_cli("db", "--db", db, "stats", "-o", "json", cwd=tmp_path)

    assert imported.returncode == 0, imported.stderr
    assert db.is_file()
    assert not (tmp_path / "data").exists(), "db --db PATH import wrote ./data/edgemeta.json"
    assert [json.loads(line) for line in exported.stdout.splitlines()] == [record]
    assert json.loads(stats.stdout)["database"] == str(db)


def test_config_option_before_the_command(service: EdgemetaProcess, tmp_path: Path) -> None:
    _insert(service.config_path, "default/configmap/before", CM)

    listed = run_cli("-c", service.config_path, "list", "configmap", "-o", "json", cwd=tmp_path)
    exported = run_cli("--config", service.config_path, "db", "export", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert [r["key"] for r in json.loads(listed.stdout)] == ["default/configmap/before"]
    assert exported.returncode == 0, exported.stderr
    assert "default/configmap/before" in exported.stdout


# -- bug 2: list shows the stored keys -------------------------------------


def test_list_shows_the_stored_key_of_objects_without_metadata_name(
    service: EdgemetaProcess,
) -> None:
    config = service.config_path
    _insert(config, "default/configmap/app-cfg", CM)
    _insert(config, "default/podstatus/nginx-1", '{"phase":"Running"}', source="edged")

    table = run_cli("list", "configmap", "--config", config)
    statuses = run_cli("list", "podstatus", "-o", "json", "--config", config)

    assert table.returncode == 0, table.stderr
    assert "default/configmap/app-cfg" in table.stdout
    assert "/-" not in table.stdout
    (status,) = json.loads(statuses.stdout)
    assert status["key"] == "default/podstatus/nginx-1"
    assert (status["type"], status["value"]) == ("podstatus", {"phase": "Running"})


# -- bug 4: send --wait shows edgemeta's own error answer ------------------


def test_send_wait_shows_the_reason_of_an_error_answer_to_a_bad_resource(
    service: EdgemetaProcess,
) -> None:
    done = run_cli("send", "update", "default//x", "--wait", "--config", service.config_path)

    assert done.returncode == 1
    assert "route.resource has an empty segment" in done.stderr
    assert "not a beehive message" not in done.stderr


# -- bug 5: oversize content -----------------------------------------------


def test_send_refuses_content_over_the_configured_limit(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    edge = make_service(start=False, limits={"maxPayloadBytes": 2048})
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * 4000}))

    done = run_cli("send", "update", "default/podstatus/big", "--content", f"@{big}", "--wait",
                   "--config", edge.config_path)  # fmt: skip

    assert done.returncode == 2
    assert "limits.maxPayloadBytes = 2048" in done.stderr


def test_send_wait_shows_a_refusal_reported_on_meta_error(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    edge = make_service(limits={"maxPayloadBytes": 2048})
    # The operator's config allows more than the node does.
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"mqtt": edge.config["mqtt"]}))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * 4000}))

    done = run_cli("send", "update", "default/podstatus/big", "--content", f"@{big}", "--wait",
                   "--timeout", "5", "--config", mine)  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert "refused" in done.stderr
    assert "exceeds 2048" in done.stderr
    assert "no answer within" not in done.stderr


# -- bug 6: the sync drops statuses of pods that do not exist --------------


def test_a_pod_status_without_its_pod_is_removed_by_the_sync(
    make_service: ServiceFactory,
) -> None:
    edge = make_service(modules={"metaManager": {"podStatusSyncInterval": 0.5}})
    _insert(edge.config_path, "default/podstatus/nginx-1", '{"phase":"Running"}', source="edged")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = run_cli("list", "podstatus", "-o", "json", "--config", edge.config_path)
        if json.loads(listed.stdout) == []:
            break
        time.sleep(0.3)
    assert json.loads(listed.stdout) == []


def test_the_sync_logs_each_pod_status_it_removes(make_service: ServiceFactory) -> None:
    edge = make_service(modules={"metaManager": {"podStatusSyncInterval": 0.5}})
    _insert(edge.config_path, "default/podstatus/nginx-1", '{"phase":"Running"}', source="edged")
    deadline = time.monotonic() + 5
    while "default/podstatus/nginx-1" not in edge.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "default/podstatus/nginx-1" in edge.log_text()
    assert "default/pod/nginx-1" in edge.log_text()


# -- bug 7: make run beside a busy 1883 ------------------------------------


def _repo_copy(tmp_path: Path) -> Path:
    """The files `make run` uses, in a folder of their own (data/ is made there)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        (repo / name).write_bytes((REPO_ROOT / name).read_bytes())
    # Older than the venv's stamp: make must not reinstall into the shared .venv.
    os.utime(repo / "pyproject.toml", (0, 0))
    subprocess.run(["cp", "-a", REPO_ROOT / "scripts", REPO_ROOT / "conf", repo], check=True)
    (repo / "mosquitto").mkdir()
    conf = REPO_ROOT / "mosquitto" / "mosquitto.conf"
    (repo / "mosquitto" / "mosquitto.conf").write_bytes(conf.read_bytes())
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    return repo


def test_make_run_starts_a_private_broker_on_another_port(broker: Broker, tmp_path: Path) -> None:
    repo = _repo_copy(tmp_path)
    port = free_port()
    # As the README says: EDGEMETA_MQTT_PORT=18999 make run (here a free port).
    env = cli_env({"EDGEMETA_MQTT_PORT": str(port), "EDGEMETA_MQTT_HOST": ""})
    proc = subprocess.Popen(
        ["make", "run"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            health = run_cli("health", "-p", str(port), "--timeout", "1", cwd=tmp_path)
            if health.returncode == 0:
                status = health.stdout.strip()
                break
            time.sleep(0.3)
        assert status == "online", proc.stdout.read() if proc.poll() is not None else "running"
        assert oct((repo / "data").stat().st_mode & 0o777) == oct(0o700)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert run_cli("health", "-p", str(port), "--timeout", "1").returncode == 3


# -- bug 8: exit codes and messages ----------------------------------------


def test_every_client_command_exits_3_without_a_broker(tmp_path: Path) -> None:
    port = str(free_port())
    for args in (["health"], ["list", "pod"], ["get", "pod/x"], ["send", "query", "a/pod/x"],
                 ["doctor"]):  # fmt: skip
        done = run_cli(*args, "-p", port, "--timeout", "1", cwd=tmp_path)
        assert done.returncode == 3, (args, done.stderr)
        assert "cannot reach the MQTT broker" in done.stderr + done.stdout


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_timeout_must_be_positive(value: str, tmp_path: Path) -> None:
    for args in (["health"], ["send", "query", "a/pod/x", "--wait"], ["list", "pod"]):
        done = run_cli(*args, f"--timeout={value}", cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert "--timeout" in done.stderr


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("mqtt:\n  port: 1884\n  port: 1885\n")

    done = run_cli("check-config", path)

    assert done.returncode == 2
    assert "duplicate key 'port' (line 3" in done.stderr


def _watch_on_a_terminal(config: Path, env: dict[str, str], send: list[str]) -> str:
    """`edgemeta watch --count 2` with stdout on a pseudo-terminal; its output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        command("watch", "--count", "2", "--no-retained", "--config", str(config)),
        stdout=slave, stderr=subprocess.PIPE, env=cli_env(env), cwd=REPO_ROOT,
    )  # fmt: skip
    os.close(slave)
    try:
        proc.stderr.readline()  # type: ignore[union-attr]  # "watching ..." once subscribed
        for key in send:
            _insert(config, key, CM)
        out = b""
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        proc.wait(timeout=10)
        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        proc.stderr.close()  # type: ignore[union-attr]
    return out.decode()


def test_watch_honours_no_color(service: EdgemetaProcess) -> None:
    plain = _watch_on_a_terminal(service.config_path, {"NO_COLOR": "1"}, ["default/configmap/a"])
    coloured = _watch_on_a_terminal(service.config_path, {}, ["default/configmap/b"])

    assert "default/configmap/a" in plain
    assert "\x1b[" not in plain
    assert "\x1b[" in coloured


def test_watch_columns_line_up(service: EdgemetaProcess) -> None:
    config = service.config_path
    with CliProcess("watch", f"{service.prefix}/meta", "--count", "2", "--no-retained",
                    "--config", config) as watch:  # fmt: skip
        watch.expect_stderr("watching")
        _insert(config, "default/configmap/a-long-name-here", CM)
        run_cli("send", "query", "default/pod/x", "--wait", "--config", config)
        assert watch.wait() == 0
    first, second = watch.stdout_lines
    assert first.index(" edgecontroller") == second.index(" edged")
    assert first.index("default/") == second.index("default/")


def test_watch_says_when_the_broker_is_lost(private_broker: Broker, tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"mqtt:\n  port: {private_broker.port}\n  topicPrefix: beehive/lost\n")
    with CliProcess("watch", "--config", config, cwd=tmp_path) as watch:
        watch.expect_stderr("watching")
        private_broker.stop()
        line = watch.expect_stderr("reconnecting", timeout=15)
        assert "connection to the broker was closed" in line
        assert "Unspecified error" not in line
        watch.stop()


# -- what operators expect -------------------------------------------------


def test_the_config_is_found_without_c(service: EdgemetaProcess, tmp_path: Path) -> None:
    _insert(service.config_path, "default/configmap/found", CM)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "edge.yaml").write_text(service.config_path.read_text())

    from_env = run_cli("list", "configmap", "-o", "json", cwd=tmp_path.parent,
                       env={"EDGEMETA_CONFIG": str(service.config_path)})  # fmt: skip
    from_cwd = run_cli("list", "configmap", "-o", "json", cwd=tmp_path)

    for done in (from_env, from_cwd):
        assert done.returncode == 0, done.stderr
        assert [r["key"] for r in json.loads(done.stdout)] == ["default/configmap/found"]
    checked = run_cli("check-config", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "OK"


def test_mosquitto_style_connection_flags_override_the_config(
    service: EdgemetaProcess, broker: Broker, tmp_path: Path
) -> None:
    _insert(service.config_path, "default/configmap/flags", CM)
    # No config file here: the flags say everything.
    done = run_cli("list", "configmap", "-o", "json", "-h", broker.host, "-p", str(broker.port),
                   "--prefix", service.prefix, "-i", "operator-1", cwd=tmp_path)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert [r["value"] for r in json.loads(done.stdout)] == [json.loads(CM)]


def test_db_export_and_stats_work_against_a_running_node(
    service: EdgemetaProcess, tmp_path: Path
) -> None:
    config = service.config_path
    _insert(config, "default/configmap/online", CM)

    backup = tmp_path / "backup.jsonl"
    exported = run_cli("db", "export", "-o", backup, "--config", config)
    stats = run_cli("db", "stats", "-o", "json", "--config", config)
    compact = run_cli("db", "compact", "--config", config)

    assert exported.returncode == 0, exported.stderr
    assert "reading a consistent copy" in exported.stderr
    assert {"key": "default/configmap/online", "type": "configmap", "value": CM} in [
        json.loads(line) for line in backup.read_text().splitlines()
    ]
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["types"] == {"configmap": 1}
    assert compact.returncode == 1
    assert "stop edgemeta first" in compact.stderr
    assert service.is_running()


def test_health_output_json(service: EdgemetaProcess) -> None:
    done = run_cli("health", "-o", "json", "--config", service.config_path)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "online"
    assert report["prefix"] == service.prefix


def test_watch_output_json_lines(service: EdgemetaProcess) -> None:
    config = service.config_path
    with CliProcess("watch", "-o", "json", "--count", "1", "--no-retained",
                    "--config", config) as watch:  # fmt: skip
        watch.expect_stderr("watching")
        _insert(config, "default/configmap/jl", CM)
        assert watch.wait() == 0
    record = json.loads(watch.stdout_lines[0])
    assert record["topic"] == f"{service.prefix}/meta"
    assert record["message"]["operation"] == "insert"
    assert record["message"]["resource"] == "default/configmap/jl"


def test_help_lists_exit_codes_and_v_prints_the_version() -> None:
    helped = run_cli("--help")
    version = run_cli("-V")

    assert "Exit status" in helped.stdout
    for line in ("  0 ", "  1 ", "  2 ", "  3 "):
        assert line in helped.stdout
    assert version.stdout.startswith("edgemeta ")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(shell: str) -> None:
    done = run_cli("completion", shell)

    assert done.returncode == 0, done.stderr
    for word in ("doctor", "export", "--namespace"):
        assert word in done.stdout
    if shell == "bash":
        # As docs/toolbox.md says: source <(edgemeta completion bash)
        env = cli_env({"PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"})
        loaded = subprocess.run(
            ["bash", "-c", "source <(edgemeta completion bash) && complete -p edgemeta"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert loaded.returncode == 0, loaded.stderr
        assert "edgemeta" in loaded.stdout


def test_print_config_minimal_is_short_and_means_the_defaults(tmp_path: Path) -> None:
    done = run_cli("print-config", "--minimal")
    path = tmp_path / "edge.yaml"
    path.write_text(done.stdout)

    assert done.returncode == 0
    assert len(done.stdout.splitlines()) < 15
    assert run_cli("check-config", path).returncode == 0


def test_doctor_on_a_healthy_node(service: EdgemetaProcess) -> None:
    done = run_cli("doctor", "--config", service.config_path)
    as_json = run_cli("doctor", "-o", "json", "--config", service.config_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    checks = {c["check"]: c for c in json.loads(as_json.stdout)}
    assert checks["broker"]["status"] == "ok"
    assert checks["instance"]["status"] == "ok"
    assert checks["session"]["status"] == "ok"
    assert checks["database"]["status"] == "ok"
    assert service.is_running()


def test_doctor_sees_another_instance_on_the_prefix(
    service: EdgemetaProcess, tmp_path: Path
) -> None:
    # Same broker and prefix, another machine's database: the one online is not ours.
    other = tmp_path / "other.yaml"
    settings = dict(service.config)
    settings["database"] = {"path": str(tmp_path / "other" / "edgemeta.json")}
    other.write_text(yaml.safe_dump(settings))

    done = run_cli("doctor", "-o", "json", "--config", other)

    checks = {c["check"]: c for c in json.loads(done.stdout)}
    assert checks["instance"]["status"] == "warn"
    assert service.client_id in checks["instance"]["detail"]
    assert service.is_running()
