"""Secure by default, edgemeta's side: device ingress, TLS and passwords, data at rest, logs.

The first part runs on the development broker (anyone may publish anywhere):
what edgemeta itself does with a message on a device topic. The second runs
edgemeta on the shipped production broker (mosquitto/production.conf and
mosquitto/acl, users and certificates made by the shipped scripts), as
tests/e2e/test_broker_security.py does, with only the broker's ports changed.
The last runs scripts/run-secure.sh itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgemeta.cipher import new_key
from tests.support.broker import REPO_ROOT, Broker, free_port
from tests.support.helpers import Edge, compact
from tests.support.mqtt import MqttProbe, Received, envelope
from tests.support.secure import NOT_AUTHORIZED, Message, SecureClient, SiteFiles, tls_context
from tests.support.service import EdgemetaProcess

MAX_PAYLOAD = 4096
MAX_DEPTH = 16
SHARED_CONFIG = {"limits": {"maxPayloadBytes": MAX_PAYLOAD, "maxDepth": MAX_DEPTH}}


def token() -> str:
    return uuid.uuid4().hex


def encode(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode()


# ===========================================================================
# Device ingress (development broker)
# ===========================================================================


@pytest.fixture
def device() -> str:
    """A device id no other test uses."""
    return f"dev-{uuid.uuid4().hex[:8]}"


def device_topic(edge: Edge, device: str) -> str:
    return edge.topic(f"meta/device/{device}")


def forwarded_to_cloud(edge: Edge, resource: str, timeout: float = 5.0) -> Received:
    return edge.probe.expect(
        edge.hub,
        lambda r: r.json["route"]["resource"] == resource and r.json["route"]["source"] != "edged",
        timeout=timeout,
    )


def never_answered(edge: Edge, msg_id: str) -> None:
    edge.probe.expect_none(
        f"{edge.prefix}/#", lambda r: r.json["header"]["parent_msg_id"] == msg_id, within=0.3
    )


def test_bare_object_is_stored_and_forwarded_to_the_cloud(shared: Edge, device: str) -> None:
    content = {"temperature": 21.5, "unit": "°C", "ok": True}

    shared.probe.publish(device_topic(shared, device), encode(content))

    got = forwarded_to_cloud(shared, f"default/device/{device}")
    assert got.json["route"] == {
        "source": device,
        "group": "meta",
        "operation": "update",
        "resource": f"default/device/{device}",
    }
    assert got.json["content"] == content
    header = got.json["header"]
    assert isinstance(header["msg_id"], str) and header["msg_id"]
    assert isinstance(header["timestamp"], int) and header["timestamp"] > 0
    never_answered(shared, header["msg_id"])
    assert shared.stored(f"default/device/{device}") == compact(content)


@pytest.mark.parametrize("operation", ["update", "insert"])
@pytest.mark.parametrize("claimed", ["sensor-firmware", ""])
def test_envelope_is_taken_as_from_the_device_whatever_it_claims(
    shared: Edge, device: str, operation: str, claimed: str
) -> None:
    resource = f"default/device/{device}"
    message = envelope(operation, resource, claimed or device, {"reading": 7})
    if not claimed:
        message["route"]["source"] = ""

    shared.probe.publish(
        device_topic(shared, device),
        encode(message),
        # A device is never answered, not even on a Response Topic of its choosing.
        response_topic=shared.topic(f"reply/{device}/r"),
    )

    got = forwarded_to_cloud(shared, resource)
    assert got.json["header"]["msg_id"] == message["header"]["msg_id"]
    assert got.json["route"] == {**message["route"], "source": device}
    assert got.json["content"] == {"reading": 7}
    never_answered(shared, message["header"]["msg_id"])
    assert shared.stored(resource) == '{"reading":7}'


REFUSED: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "delete": (
        lambda d: envelope("delete", f"default/device/{d}", d),
        "may not send 'delete'",
    ),
    "query": (lambda d: envelope("query", f"default/device/{d}", d), "may not send 'query'"),
    "another type": (
        lambda d: envelope("insert", f"default/pod/{d}", d, {"spec": {}}),
        "may not write type 'pod'",
    ),
    "a secret": (
        lambda d: envelope("update", f"default/secret/{d}", d, {"data": {}}),
        "may not write type 'secret'",
    ),
    "someone else's resid": (
        lambda d: envelope("update", "default/device/dev-other", d, {"t": 1}),
        "may write only its own resource",
    ),
    "another namespace": (
        lambda d: envelope("update", f"kube-system/device/{d}", d, {"t": 1}),
        "may write only its own resource",
    ),
    "claiming to be the cloud": (
        lambda d: envelope("update", f"default/device/{d}", "edgecontroller", {"t": 1}),
        "claims to be 'edgecontroller'",
    ),
    "claiming to be edged": (
        lambda d: envelope("update", f"default/device/{d}", "edged", {"t": 1}),
        "claims to be 'edged'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_a_device_may_not_send_is_reported(shared: Edge, device: str, case: str) -> None:
    make, words = REFUSED[case]
    message = make(device)
    marker = message["header"]["msg_id"]

    shared.probe.publish(
        device_topic(shared, device),
        encode(message),
        response_topic=shared.topic(f"reply/{device}/r"),
    )

    report = shared.report(lambda r: marker in r["payload"])
    assert report["reason"].startswith(f"device {device!r}: ")
    assert words in report["reason"]
    assert report["truncated"] is False
    never_answered(shared, marker)
    shared.not_forwarded(message, shared.hub)
    assert shared.stored(message["route"]["resource"]) is None


HOSTILE: dict[str, tuple[bytes, str]] = {
    "over the size limit": (b'{"a": "' + b"x" * (MAX_PAYLOAD + 10) + b'"}', "exceeds"),
    "too deep": (b'{"a": ' + b"[" * (MAX_DEPTH + 4) + b"]" * (MAX_DEPTH + 4) + b"}", "deeper"),
    "deeper than any parser goes": (
        b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        "deep",
    ),
    "not JSON": (b'{"t": 21.5', "not JSON"),
    "empty": (b"", "not JSON"),
    "invalid UTF-8": (b'{"t": "\xff\xfe"}', "not JSON"),
    "an array": (b'[{"t": 1}]', "not an object"),
    "NaN": (b'{"t": NaN}', "not JSON"),
    "a number too large": (b'{"t": 1e999}', "not JSON"),
    "route not an object": (b'{"route": ["edgecontroller"]}', "route must be an object"),
    "wildcard in the resource": (
        b'{"route": {"source": "x", "operation": "update", "resource": "default/device/#"}}',
        "must not contain '#'",
    ),
}


def test_hostile_device_payloads_are_reported_and_survived(shared: Edge, device: str) -> None:
    topic = device_topic(shared, device)
    for payload, _words in HOSTILE.values():
        shared.probe.publish(topic, payload)
    reasons = [shared.report()["reason"] for _ in HOSTILE]
    for (case, (_payload, words)), reason in zip(HOSTILE.items(), reasons, strict=True):
        assert reason.startswith(f"device {device!r}: "), (case, reason)
        assert words in reason, (case, reason)
    # Still served, devices included.
    shared.served()
    shared.probe.publish(topic, b'{"after": 1}')
    forwarded_to_cloud(shared, f"default/device/{device}")


@pytest.mark.parametrize("level", ["dev:1", "dév", "edgecontroller", "-dev", "d" * 65])
def test_device_topic_that_is_no_device_id_is_reported(shared: Edge, level: str) -> None:
    marker = token()
    shared.probe.publish(shared.topic(f"meta/device/{level}"), encode({"m": marker}))
    report = shared.report(lambda r: marker in r["payload"])
    assert report["reason"].startswith(f"device {level!r}: ")
    shared.probe.expect_none(shared.hub, lambda r: marker in r.text, within=0.3)


def test_devices_can_be_switched_off(
    make_service: Callable[..., EdgemetaProcess], probe: MqttProbe, prefix: str
) -> None:
    make_service(devices={"enable": False})
    edge = Edge(probe, prefix)
    marker = token()

    probe.publish(edge.topic("meta/device/dev-1"), encode({"m": marker}))

    probe.expect_none(f"{prefix}/#", lambda r: marker in r.text and "/device/" not in r.topic)
    edge.served()


# ===========================================================================
# The production broker
# ===========================================================================

PRODUCTION_CONF = REPO_ROOT / "mosquitto" / "production.conf"
SCRIPTS = REPO_ROOT / "scripts"
STATUS = "beehive/meta/status"


def run_script(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class Site(SiteFiles):
    """The production broker, for edgemeta's own security tests."""

    def client(self, user: str) -> SecureClient:
        """A TLS client of ``user`` (host "localhost": the host name is checked)."""
        return SecureClient(
            "localhost",
            self.tls_port,
            username=user,
            password=self.password(user),
            tls=tls_context(self.certs / "ca.crt"),
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("secure-edgemeta")
    (root / "mosquitto").mkdir()
    shutil.copy(REPO_ROOT / "mosquitto" / "acl", root / "mosquitto" / "acl")
    run_script(SCRIPTS / "make-secrets.sh", "--dir", root / "mosquitto" / "secrets")
    for dev in ("dev-1", "dev-2"):
        run_script(SCRIPTS / "add-device.sh", "--dir", root / "mosquitto" / "secrets", dev)
    run_script(SCRIPTS / "make-certs.sh", "--dir", root / "mosquitto" / "certs")
    run_script(SCRIPTS / "make-certs.sh", "--dir", root / "other-ca")
    with Broker(PRODUCTION_CONF, tmp_dir=root / "broker", cwd=root) as broker:
        yield Site(root, broker)


class Clients:
    """One connection per username (the broker allows no more), opened on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._open: dict[str, SecureClient] = {}

    def __call__(self, user: str, *subscriptions: str) -> SecureClient:
        if user not in self._open:
            client = self.site.client(user)
            code = client.connect()
            assert code.value == 0, f"{user} cannot log in: {code}"
            self._open[user] = client
        for topic in subscriptions:
            assert [c.value for c in self._open[user].subscribe(topic)] == [1]
        return self._open[user]

    def close_all(self) -> None:
        for client in self._open.values():
            client.close()
        self._open.clear()


@pytest.fixture
def clients(site: Site) -> Iterator[Clients]:
    pool = Clients(site)
    yield pool
    pool.close_all()


class DebugEdgemeta(EdgemetaProcess):
    """edgemeta logging everything it logs (`--log-level DEBUG`)."""

    def command(self) -> list[str]:
        return [*super().command(), "--log-level", "DEBUG"]


def secure_config(site: Site, tmp: Path, **mqtt: Any) -> dict[str, Any]:
    key = tmp / "keys" / "secret.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(new_key() + b"\n")
    key.chmod(0o600)
    return {
        "mqtt": {
            "host": "localhost",
            "port": site.tls_port,
            "clientId": "edgemeta",
            "username": "edgemeta",
            "passwordFile": str(site.password_file("edgemeta")),
            "tls": {"enable": True, "caFile": str(site.certs / "ca.crt")},
            **mqtt,
        },
        "database": {"path": str(tmp / "data" / "edgemeta.json"), "secretKeyFile": str(key)},
        "limits": {"maxPayloadBytes": MAX_PAYLOAD, "maxDepth": MAX_DEPTH},
    }


def new_edgemeta(site: Site, tmp: Path, **mqtt: Any) -> DebugEdgemeta:
    return DebugEdgemeta(
        "localhost", site.tls_port, tmp, overrides=secure_config(site, tmp, **mqtt)
    )


def start_secure(process: EdgemetaProcess, observer: SecureClient, timeout: float = 15.0) -> None:
    """Start edgemeta and wait for its `online` (the anonymous status probe cannot log in)."""
    process.start(wait_online=False)
    try:
        observer.receive_until(STATUS, b"online", timeout=timeout)
    except AssertionError:
        raise AssertionError(f"edgemeta not online\n{process.log_text()}") from None


@pytest.fixture
def edgemeta(site: Site, clients: Clients, tmp_path: Path) -> Iterator[DebugEdgemeta]:
    observer = clients("observer", STATUS, "beehive/meta/error")
    process = new_edgemeta(site, tmp_path / "edgemeta")
    start_secure(process, observer)
    yield process
    try:
        status = process.stop()
    finally:
        process.close()
    assert status == 0, process.log_text()


def as_json(message: Message) -> Any:
    try:
        return json.loads(message.payload)
    except ValueError:
        return None


def receive_until(
    client: SecureClient, found: Callable[[Message], bool], timeout: float = 5.0
) -> list[Message]:
    """Every message received up to and including the first one ``found`` accepts."""
    received: list[Message] = []
    deadline = time.monotonic() + timeout
    while True:
        message = client.expect(timeout=max(0.0, deadline - time.monotonic()))
        received.append(message)
        if found(message):
            return received


def answer_to(client: SecureClient, request: dict[str, Any]) -> Any:
    msg_id = request["header"]["msg_id"]

    def answers(m: Message) -> bool:
        data = as_json(m)
        return isinstance(data, dict) and data["header"]["parent_msg_id"] == msg_id

    return as_json(receive_until(client, answers)[-1])


def report_about(observer: SecureClient, marker: str) -> Any:
    """The report on beehive/meta/error whose payload holds ``marker``."""
    got = receive_until(
        observer, lambda m: m.topic == "beehive/meta/error" and marker.encode() in m.payload
    )
    return as_json(got[-1])


def forward_of(hub: SecureClient, match: Callable[[Any], bool]) -> Any:
    """The first message on the cloud's topic that ``match`` accepts (as JSON)."""

    def found(m: Message) -> bool:
        data = as_json(m)
        return isinstance(data, dict) and bool(match(data))

    return as_json(receive_until(hub, found)[-1])


def publish(client: SecureClient, topic: str, message: Any) -> int:
    payload = message if isinstance(message, bytes) else encode(message)
    return client.publish(topic, payload).value


ACCEPTED = (0x00, 0x10)  # PUBACK "Success", "No matching subscribers"


def test_edgemeta_over_tls_with_a_password_file_serves(
    clients: Clients, edgemeta: DebugEdgemeta
) -> None:
    edged = clients("edged", "beehive/edged")
    hub = clients("edgehub", "beehive/hub")
    request = envelope("update", "default/podstatus/web-1", "edged", {"phase": "Running"})

    assert publish(clients("edged"), "beehive/meta", request) in ACCEPTED

    answer = answer_to(edged, request)
    assert (answer["route"]["operation"], answer["content"]) == ("response", "OK")
    msg_id = request["header"]["msg_id"]
    assert forward_of(hub, lambda m: m["header"]["msg_id"] == msg_id) == request


def test_device_writes_only_its_own_topic_and_reaches_the_cloud(
    clients: Clients, edgemeta: DebugEdgemeta
) -> None:
    hub = clients("edgehub", "beehive/hub")
    observer = clients("observer")
    dev = clients("dev-1")
    reading = {"temperature": 19.25, "id": token()}

    assert publish(dev, "beehive/meta/device/dev-1", reading) in ACCEPTED

    got = forward_of(hub, lambda m: m["content"] == reading)
    assert got["route"] == {
        "source": "dev-1",
        "group": "meta",
        "operation": "update",
        "resource": "default/device/dev-1",
    }
    assert got["content"] == reading

    # The broker keeps a device to its own topic...
    assert publish(dev, "beehive/meta/device/dev-2", reading) == NOT_AUTHORIZED
    assert publish(dev, "beehive/meta", reading) == NOT_AUTHORIZED
    assert publish(dev, "beehive/hub", reading) == NOT_AUTHORIZED
    # ...and edgemeta to its own resources, whatever it writes there.
    refused = [
        envelope("update", "default/device/dev-2", "dev-1", {"t": 1}),
        envelope("insert", "default/pod/evil", "edgecontroller", {"spec": {}}),
        envelope("delete", "default/device/dev-1", "dev-1"),
    ]
    for bad in refused:
        assert publish(dev, "beehive/meta/device/dev-1", bad) in ACCEPTED
        report = report_about(observer, bad["header"]["msg_id"])
        assert report["reason"].startswith("device 'dev-1': ")
    fence = {"fence": token()}
    assert publish(dev, "beehive/meta/device/dev-1", fence) in ACCEPTED
    # None of the refused ones reached the cloud (the fence came after them).
    seen = [as_json(m) for m in receive_until(hub, lambda m: as_json(m)["content"] == fence)]
    refused_ids = {bad["header"]["msg_id"] for bad in refused}
    assert [m for m in seen if m["header"]["msg_id"] in refused_ids] == []
    assert seen[-1]["route"]["source"] == "dev-1"


def test_hostile_device_payloads_are_refused_and_survived(
    clients: Clients, edgemeta: DebugEdgemeta
) -> None:
    observer = clients("observer")
    edged = clients("edged", "beehive/edged")
    dev = clients("dev-2")
    for payload, _words in HOSTILE.values():
        assert publish(dev, "beehive/meta/device/dev-2", payload) in ACCEPTED
    # One report each, in the order sent.
    reports = [
        as_json(receive_until(observer, lambda m: m.topic == "beehive/meta/error")[-1])
        for _ in HOSTILE
    ]
    assert len(reports) == len(HOSTILE)
    for (case, (_payload, words)), report in zip(HOSTILE.items(), reports, strict=True):
        assert report["reason"].startswith("device 'dev-2': "), case
        assert words in report["reason"], (case, report)

    request = envelope("update", "default/podstatus/web-2", "edged", {"phase": "Pending"})
    assert publish(clients("edged"), "beehive/meta", request) in ACCEPTED
    assert answer_to(edged, request)["content"] == "OK"
    assert edgemeta.is_running()


def test_secrets_at_rest_and_in_the_log(
    site: Site, clients: Clients, tmp_path: Path, umask_0: None
) -> None:
    # A client certificate too, so that a TLS key is loaded: never logged either.
    process = new_edgemeta(
        site,
        tmp_path / "edgemeta",
        tls={
            "enable": True,
            "caFile": str(site.certs / "ca.crt"),
            "certFile": str(site.certs / "edgemeta.crt"),
            "keyFile": str(site.certs / "edgemeta.key"),
        },
    )
    observer = clients("observer", STATUS, "beehive/meta/error")
    hub = clients("edgehub", "beehive/hub")
    edged = clients("edged", "beehive/edged")
    secret = f"pw-{token()}"
    content = {"data": {"password": secret}, "type": "Opaque"}
    start_secure(process, observer)
    try:
        insert = envelope("insert", "default/secret/db", "edgecontroller", content)
        assert publish(clients("edgehub"), "beehive/meta", insert) in ACCEPTED
        assert answer_to(hub, insert)["content"] == "OK"
        query = envelope("query", "default/secret/db", "edged")
        assert publish(clients("edged"), "beehive/meta", query) in ACCEPTED
        answer = answer_to(edged, query)
        assert answer["content"] == [compact(content)]

        # Error paths with the secret in them: answers and reports, no log of it.
        bad = envelope("insert", "default/secret/db2", "edgecontroller", content)
        bad["header"]["sync"] = "yes"
        assert publish(clients("edgehub"), "beehive/meta", bad) in ACCEPTED
        assert answer_to(hub, bad)["route"]["operation"] == "error"
        leak = envelope("update", "default/secret/dev-1", "dev-1", content)
        assert publish(clients("dev-1"), "beehive/meta/device/dev-1", leak) in ACCEPTED
        report_about(observer, leak["header"]["msg_id"])

        data = process.db_path.parent
        on_disk = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
        assert secret.encode() not in on_disk
        assert b"fernet:" in on_disk
    finally:
        status = process.stop()
        process.close()
    assert status == 0, process.log_text()

    on_disk = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    assert secret.encode() not in on_disk and b"fernet:" in on_disk
    assert stat_mode(data) == 0o700
    assert {p.name: stat_mode(p) for p in data.iterdir()} == {p.name: 0o600 for p in data.iterdir()}

    log = process.log_text()
    assert "online: listening on" in log and "stopped" in log
    password = site.password_file("edgemeta").read_text().strip()
    tls_key = "".join(
        line
        for line in (site.certs / "edgemeta.key").read_text().splitlines()
        if not line.startswith("-----")
    )
    fernet_key = Path(process.config["database"]["secretKeyFile"]).read_text().strip()
    for what, text in {
        "the password": password,
        "the secret": secret,
        "the TLS key": tls_key[:40],
        "the secret key": fernet_key,
    }.items():
        assert text not in log, f"{what} is in the log:\n{log}"


@pytest.fixture
def umask_0() -> Iterator[None]:
    """edgemeta inherits it: the modes of its files must come from edgemeta itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_wrong_ca_ends_edgemeta_with_a_clear_message(site: Site, tmp_path: Path) -> None:
    process = new_edgemeta(
        site, tmp_path / "edgemeta", tls={"enable": True, "caFile": str(site.other_ca / "ca.crt")}
    )
    started = time.monotonic()
    process.start(wait_online=False)
    try:
        status = process.wait(timeout=15)
    finally:
        process.close()
    assert status == 1
    assert time.monotonic() - started < 10
    log = process.log_text()
    assert f"TLS certificate verification of the broker at localhost:{site.tls_port} failed" in log
    assert "mqtt.tls.caFile" in log
    assert "cannot continue" in log


def test_wrong_password_ends_edgemeta_with_a_clear_message(site: Site, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text(site.password_file("observer").read_text())
    process = new_edgemeta(site, tmp_path / "edgemeta", passwordFile=str(wrong))
    process.start(wait_online=False)
    try:
        status = process.wait(timeout=15)
    finally:
        process.close()
    assert status == 1
    log = process.log_text()
    assert "broker refused the connection: Not authorized" in log
    assert wrong.read_text().strip() not in log


def test_missing_password_file_is_a_config_error(site: Site, tmp_path: Path) -> None:
    absent = tmp_path / "absent.password"
    process = new_edgemeta(site, tmp_path / "edgemeta", passwordFile=str(absent))
    process.start(wait_online=False)
    try:
        status = process.wait(timeout=15)
    finally:
        process.close()
    assert status == 2
    assert f"configuration error: mqtt.passwordFile: cannot read {absent}" in process.log_text()


# ===========================================================================
# scripts/run-secure.sh (`make run-secure`)
# ===========================================================================

RUN_SECURE_FILES = (
    "scripts/run-secure.sh",
    "scripts/make-secrets.sh",
    "scripts/make-certs.sh",
    "scripts/lib.sh",
    "mosquitto/production.conf",
    "mosquitto/acl",
    "conf/edge-secure.yaml",
)


@pytest.fixture
def checkout() -> Iterator[Path]:
    """The files run-secure.sh uses, in a folder of their own.

    Not under pytest's private temp dir: as root the broker runs as the
    `mosquitto` user, which must reach the folder.
    """
    root = Path(tempfile.mkdtemp(prefix="edgemeta-run-secure-"))
    root.chmod(0o755)
    for name in RUN_SECURE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        pause.wait(0.05)


class RunSecure:
    """scripts/run-secure.sh running in ``root``; its output in a file."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.out = root / "run-secure.out"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGEMETA_")}
        environ.update(PYTHON=sys.executable, PYTHONPATH=str(REPO_ROOT), **env)
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "scripts/run-secure.sh"],
                cwd=root,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"run-secure.sh ignored SIGTERM\n{self.text()}") from None


def test_run_secure_brings_up_the_broker_and_edgemeta(checkout: Path) -> None:
    tls_port = free_port()
    env = {"RUN_SECURE_TLS_PORT": str(tls_port)}
    plain_taken = listening(1883)
    if not plain_taken:
        # Leave 1883 alone on a machine where it is free; with it taken (the
        # machine's own Mosquitto) the script must move the plain listener.
        env["RUN_SECURE_PLAIN_PORT"] = str(free_port())
    run = RunSecure(checkout, env)
    try:
        ca = checkout / "mosquitto" / "certs" / "ca.crt"
        wait_until(
            lambda: run.proc.poll() is None and "running edgemeta" in run.text(),
            60,
            "run-secure.sh starts edgemeta\n" + run.text(),
        )
        secrets = checkout / "mosquitto" / "secrets"

        def client(user: str) -> SecureClient:
            password = (secrets / f"{user}.password").read_text().strip()
            return SecureClient(
                "localhost", tls_port, username=user, password=password, tls=tls_context(ca)
            )

        observer, edged = client("observer"), client("edged")
        try:
            assert observer.connect().value == 0
            observer.subscribe(STATUS)
            receive_until(observer, lambda m: m.payload == b"online", timeout=20)
            assert edged.connect().value == 0
            edged.subscribe("beehive/edged")
            request = envelope("update", "default/podstatus/p", "edged", {"phase": "Running"})
            assert publish(edged, "beehive/meta", request) in ACCEPTED
            assert answer_to(edged, request)["content"] == "OK"
        finally:
            observer.close()
            edged.close()
    finally:
        status = run.stop()
    output = run.text()
    assert status == 0, output
    assert "stopping mosquitto" in output
    assert not listening(tls_port), "the broker still runs"
    if plain_taken:
        assert "127.0.0.1:1883 is taken" in output
    # What it made: private secrets, certificates and key.
    assert stat_mode(checkout / "mosquitto" / "secrets") == 0o700
    assert stat_mode(checkout / "mosquitto" / "certs") == 0o700
    assert stat_mode(checkout / "data" / "keys" / "secret.key") == 0o600
    assert stat_mode(checkout / "data" / "secure") == 0o700


def test_run_secure_reports_a_port_that_is_taken(checkout: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        run = RunSecure(checkout, {"RUN_SECURE_TLS_PORT": str(taken)})
        status = run.proc.wait(timeout=60)
        assert status == 1
        assert f"port {taken} (the TLS listener) is taken" in run.text()

        run = RunSecure(
            checkout,
            {"RUN_SECURE_TLS_PORT": str(free_port()), "RUN_SECURE_PLAIN_PORT": str(taken)},
        )
        status = run.proc.wait(timeout=60)
        assert status == 1
        assert f"127.0.0.1:{taken} is taken" in run.text()
