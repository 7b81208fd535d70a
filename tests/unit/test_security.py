"""Secure by default, the edgemeta side: secrets in the config, TLS, data at rest."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemeta import cli
from edgemeta.bus import MqttBus
from edgemeta.cipher import MARKER, ValueCipher, new_key
from edgemeta.config import Config, MqttConfig, TlsConfig, parse_config
from edgemeta.errors import BusError, ConfigError, StoreError
from edgemeta.store import DurableStorage, MetaStore

NO_ENV: dict[str, str] = {}
PASSWORD = "b7e1c0ffee5ecret5ecret5ecret0123456789abcdef01"


def parse(data: Any) -> Config:
    return parse_config(yaml.safe_dump(data), NO_ENV)


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return str(info.value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_0() -> Iterator[None]:
    """No help from the umask: the modes must come from edgemeta itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- mqtt.passwordFile ------------------------------------------------------------------


def test_password_file_is_read_stripped_and_wins_over_password(tmp_path: Path) -> None:
    path = tmp_path / "edgemeta.password"
    path.write_text(f"  {PASSWORD}\n")
    config = parse({"mqtt": {"password": "inline", "passwordFile": str(path)}})
    assert config.mqtt.password == PASSWORD
    assert config.mqtt.passwordFile == str(path)


def test_password_is_never_in_the_config_repr(tmp_path: Path) -> None:
    path = tmp_path / "edgemeta.password"
    path.write_text(PASSWORD)
    config = parse({"mqtt": {"username": "edgemeta", "passwordFile": str(path)}})
    assert PASSWORD not in repr(config)
    assert PASSWORD not in repr(parse({"mqtt": {"password": PASSWORD}}))


@pytest.mark.parametrize("case", ["missing", "directory", "unreadable", "empty", "binary"])
def test_unusable_password_file_names_the_key(tmp_path: Path, case: str) -> None:
    path = tmp_path / "edgemeta.password"
    if case == "directory":
        path.mkdir()
    elif case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        path.write_text(PASSWORD)
        path.chmod(0)
    elif case == "empty":
        path.write_text(" \n")
    elif case == "binary":
        path.write_bytes(b"\xff\xfe" + PASSWORD.encode())
    message = error_of({"mqtt": {"passwordFile": str(path)}})
    assert message.startswith("mqtt.passwordFile: ")
    assert str(path) in message
    assert PASSWORD not in message


def test_password_of_a_wrong_type_is_not_shown() -> None:
    message = error_of({"mqtt": {"password": 734512998871}})
    assert message.startswith("mqtt.password: must be a string")
    assert "734512998871" not in message


def test_invalid_yaml_does_not_quote_the_file(tmp_path: Path) -> None:
    text = f'mqtt:\n  username: edgemeta\n  password: "{PASSWORD}\n  port: [1883\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, NO_ENV, "edge.yaml")
    message = str(info.value)
    assert message.startswith("edge.yaml: invalid YAML")
    assert "line" in message
    assert PASSWORD not in message


def test_cli_exits_2_naming_the_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(f"mqtt:\n  passwordFile: {tmp_path / 'absent.password'}\n")
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "configuration error: mqtt.passwordFile:" in err
    assert "absent.password" in err


# -- mqtt.tls -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["caFile", "certFile", "keyFile"])
def test_missing_tls_file_names_the_key(tmp_path: Path, name: str) -> None:
    files = {"caFile": "", "certFile": "", "keyFile": ""}
    for other in files:
        (tmp_path / other).write_text("x")
        files[other] = str(tmp_path / other)
    files[name] = str(tmp_path / "absent.pem")
    message = error_of({"mqtt": {"tls": {"enable": True, **files}}})
    assert message.startswith(f"mqtt.tls.{name}: cannot read ")


def test_tls_files_are_not_checked_when_tls_is_off(tmp_path: Path) -> None:
    config = parse({"mqtt": {"tls": {"enable": False, "caFile": str(tmp_path / "absent")}}})
    assert config.mqtt.tls.caFile.endswith("absent")


def test_tls_key_without_its_certificate_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("x")
    message = error_of({"mqtt": {"tls": {"enable": True, "keyFile": str(tmp_path / "k.pem")}}})
    assert message.startswith("mqtt.tls.keyFile: needs mqtt.tls.certFile")


def test_bus_verifies_the_broker_certificate_and_host_name() -> None:
    config = MqttConfig(host="broker.example", tls=TlsConfig(enable=True))
    bus = MqttBus(config, subscriptions=["beehive/meta"], status_topic="s", events=print)
    client: Any = bus._client
    context: ssl.SSLContext = client._ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert client._tls_insecure is False
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_bus_turns_an_unusable_ca_file_into_a_bus_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    config = MqttConfig(tls=TlsConfig(enable=True, caFile=str(bad)))
    with pytest.raises(BusError, match=r"^mqtt\.tls: "):
        MqttBus(config, subscriptions=["beehive/meta"], status_topic="s", events=print)


# -- devices config -------------------------------------------------------------------


def test_devices_defaults() -> None:
    devices = parse({}).devices
    assert devices.enable is True
    assert set(devices.operations) == {"update", "insert"}
    assert devices.types == ("device",)
    assert devices.namespace == "default"


def test_devices_section_is_read() -> None:
    devices = parse(
        {"devices": {"operations": ["insert"], "types": ["device", "reading"], "namespace": "iot"}}
    ).devices
    assert (devices.operations, devices.types, devices.namespace) == (
        ("insert",),
        ("device", "reading"),
        "iot",
    )


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("devices.enable", "yes"),
        ("devices.operations", "update"),
        ("devices.operations", ["update", 1]),
        ("devices.operations", ["delete"]),
        ("devices.operations", ["query"]),
        ("devices.types", []),
        ("devices.types", "device"),
        ("devices.types", ["a/b"]),
        ("devices.types", ["+"]),
        ("devices.types", [""]),
        ("devices.namespace", ""),
        ("devices.namespace", "a/b"),
        ("devices.namespace", "#"),
        ("devices.extra", 1),
    ],
)
def test_bad_devices_value_names_the_key(dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    assert error_of({section: {key: value}}).startswith(dotted + ":")


# -- database.secretKeyFile ------------------------------------------------------------


def key_file(tmp_path: Path, name: str = "secret.key") -> Path:
    path = tmp_path / name
    path.write_bytes(new_key() + b"\n")
    path.chmod(0o600)
    return path


def test_secret_key_file_is_checked_at_load(tmp_path: Path) -> None:
    good = key_file(tmp_path)
    assert parse({"database": {"secretKeyFile": str(good)}}).database.secretKeyFile == str(good)
    message = error_of({"database": {"secretKeyFile": str(tmp_path / "absent.key")}})
    assert message.startswith("database.secretKeyFile: cannot read ")
    (tmp_path / "bad.key").write_text("hunter2\n")
    message = error_of({"database": {"secretKeyFile": str(tmp_path / "bad.key")}})
    assert message.startswith("database.secretKeyFile: ")
    assert "hunter2" not in message


def test_keygen_writes_a_private_key_and_keeps_an_existing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask_0: None
) -> None:
    path = tmp_path / "secret.key"
    assert cli.main(["keygen", str(path)]) == 0
    first = path.read_bytes()
    assert mode(path) == 0o600
    ValueCipher(first)  # a usable key
    assert cli.main(["keygen", str(path)]) == 1
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == first
    path.chmod(0o644)
    assert cli.main(["keygen", "--force", str(path)]) == 0
    assert path.read_bytes() != first
    assert mode(path) == 0o600
    capsys.readouterr()
    assert cli.main(["keygen", "-"]) == 0
    ValueCipher(capsys.readouterr().out.encode())


# -- encryption of secret values at rest --------------------------------------------------

SECRET = '{"data":{"password":"s3cr3t-ZX81-Ünïcode"}}'


def test_cipher_round_trip_and_marker() -> None:
    cipher = ValueCipher(new_key())
    for text in (SECRET, "", "plain text", "lone \ud800 surrogate", "fernet:looks-like-one"):
        stored = cipher.encrypt(text)
        assert stored.startswith(MARKER)
        assert text not in stored or text == ""
        assert cipher.decrypt(stored) == text
    # Written before encryption was on: read as it is.
    assert cipher.decrypt(SECRET) == SECRET
    with pytest.raises(StoreError, match="cannot decrypt"):
        ValueCipher(new_key()).decrypt(cipher.encrypt(SECRET))
    assert "key" in repr(cipher) and new_key().decode() not in repr(cipher)


def open_store(path: Path, cipher: ValueCipher | None) -> MetaStore:
    return MetaStore(DurableStorage(path, sync=False, lock=True), cipher=cipher)


def files_of(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file())


def test_secret_values_are_encrypted_on_disk_and_read_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "db" / "edgemeta.json"
    cipher = ValueCipher(new_key())
    store = open_store(path, cipher)
    store.put("ns/secret/db", "secret", SECRET)
    store.put("ns/configmap/cm", "configmap", '{"data":{"k":"visible"}}')
    # What is published carries the secret too (forwards, answers): the
    # outbox of messages not yet confirmed by the broker is on disk.
    outbox = [["beehive/edged", '{"content":' + SECRET + "}", None], ["beehive/hub", "x", "ab"]]
    seq = store.add_outbox(outbox)
    store.commit()

    on_disk = files_of(path)  # the journal
    assert b"s3cr3t" not in on_disk and b"visible" in on_disk and MARKER.encode() in on_disk
    assert store.get("ns/secret/db") == SECRET
    assert store.values("secret", "ns") == [SECRET]
    assert store.items_of_type("secret") == [("ns/secret/db", SECRET)]
    assert ("ns/secret/db", "secret", SECRET) in store.items()
    store.close()  # the unconfirmed outbox goes on in the new journal

    on_disk = files_of(path)  # the snapshot
    assert b"s3cr3t" not in on_disk and b"visible" in on_disk
    again = open_store(path, cipher)
    assert again.get("ns/secret/db") == SECRET
    assert again.check_secrets() == 0
    assert again.outbox() == [(seq, outbox)]
    again.outbox_sent([seq])
    again.close()

    # Without the key the value is what is stored, and the service refuses to start.
    keyless = open_store(path, None)
    stored = keyless.get("ns/secret/db")
    assert stored is not None and stored.startswith(MARKER)
    with pytest.raises(StoreError, match=r"no database\.secretKeyFile"):
        keyless.check_secrets()
    keyless.close()

    other = open_store(path, ValueCipher(new_key()))
    with pytest.raises(StoreError, match="does not decrypt 1 of 1"):
        other.check_secrets()
    with pytest.raises(StoreError, match="ns/secret/db"):
        other.get("ns/secret/db")
    other.close()


def test_encrypted_outbox_needs_the_key(tmp_path: Path) -> None:
    path = tmp_path / "db" / "edgemeta.json"
    cipher = ValueCipher(new_key())
    store = open_store(path, cipher)
    seq = store.add_outbox([["beehive/edged", SECRET, None]])
    store.commit()
    store.abandon()  # a crash: nothing more is written
    assert b"s3cr3t" not in files_of(path)
    # The db tools open it as it is; the service (check_secrets) refuses.
    keyless = open_store(path, None)
    with pytest.raises(StoreError, match="encrypted messages"):
        keyless.check_secrets()
    keyless.close()
    again = open_store(path, cipher)
    assert again.outbox() == [(seq, [["beehive/edged", SECRET, None]])]
    again.close()


def test_secrets_stored_in_plain_text_before_are_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "db" / "edgemeta.json"
    legacy = open_store(path, None)
    legacy.put("ns/secret/old", "secret", SECRET)
    legacy.close()
    assert b"s3cr3t" in files_of(path)

    store = open_store(path, ValueCipher(new_key()))
    assert store.get("ns/secret/old") == SECRET  # legacy plain text still reads
    assert store.check_secrets() == 1
    store.commit()
    store.compact()
    assert b"s3cr3t" not in files_of(path)
    assert store.get("ns/secret/old") == SECRET
    assert store.check_secrets() == 0
    store.close()


# -- files at rest ------------------------------------------------------------------------


def test_database_files_are_private_whatever_the_umask(tmp_path: Path, umask_0: None) -> None:
    path = tmp_path / "data" / "db" / "edgemeta.json"
    journal = path.with_name(path.name + ".journal")
    lock = path.with_name(path.name + ".lock")
    store = open_store(path, None)
    store.put("ns/pod/a", "pod", "{}")
    store.commit()
    store.compact()
    store.put("ns/pod/b", "pod", "{}")
    store.commit()
    store.close()
    assert mode(path.parent) == 0o700
    assert {p.name: oct(mode(p)) for p in path.parent.iterdir()} == {
        path.name: "0o600",
        path.name + ".sums": "0o600",
        journal.name: "0o600",
        lock.name: "0o600",
    }

    # A corrupt record in the journal and a damaged snapshot: both set aside.
    store = open_store(path, None)
    store.put("ns/pod/c", "pod", "{}")
    store.commit()
    store.put("ns/pod/d", "pod", "{}")
    store.commit()
    store.abandon()  # a crash: nothing more is written
    with journal.open("r+b") as f:
        f.seek(12)
        f.write(b"#")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 5)
    open_store(path, None).close()

    asides = sorted(p.name for p in path.parent.iterdir() if ".corrupt-" in p.name)
    assert len(asides) == 2, asides
    assert {p.name: oct(mode(p)) for p in path.parent.iterdir()} == {
        p.name: "0o600" for p in path.parent.iterdir()
    }


# -- untrusted input is data only ---------------------------------------------------------


def test_nothing_in_edgemeta_turns_data_into_code() -> None:
    package = Path(__file__).resolve().parents[2] / "edgemeta"
    forbidden = ("eval(", "exec(", "pickle", "marshal", "shelve", "yaml.load(", "yaml.unsafe_load")
    found = [
        f"{path.name}: {word}"
        for path in sorted(package.rglob("*.py"))
        for word in forbidden
        if word in path.read_text(encoding="utf-8")
    ]
    assert found == []


def test_a_plain_secret_that_looks_encrypted_stays_plain(tmp_path: Path) -> None:
    # Whether a value is encrypted is recorded, not read from its text: the
    # cloud chooses the text.
    path = tmp_path / "db" / "edgemeta.json"
    keyless = open_store(path, None)
    keyless.put("ns/secret/x", "secret", "fernet:x")
    keyless.commit()
    keyless.abandon()  # a crash: the journal holds it
    again = open_store(path, None)
    assert again.check_secrets() == 0
    assert again.get("ns/secret/x") == "fernet:x"
    again.close()  # and after a compaction
    again = open_store(path, None)
    assert again.check_secrets() == 0
    again.close()

    cipher = ValueCipher(new_key())
    keyed = open_store(path, cipher)
    assert keyed.check_secrets() == 1  # encrypted now, as any plain secret
    keyed.commit()
    keyed.close()
    assert b'"fernet:x"' not in files_of(path)
    keyed = open_store(path, cipher)
    assert keyed.check_secrets() == 0
    assert keyed.get("ns/secret/x") == "fernet:x"
    keyed.close()
    with pytest.raises(StoreError, match=r"no database\.secretKeyFile"):
        open_store(path, None).check_secrets()


def test_pending_calls_are_encrypted_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "db" / "edgemeta.json"
    cipher = ValueCipher(new_key())
    store = open_store(path, cipher)
    store.open_call("c-1", {"request": {"content": SECRET}})
    store.commit()
    assert b"s3cr3t" not in files_of(path)
    store.close()
    assert b"s3cr3t" not in files_of(path)
    again = open_store(path, cipher)
    assert again.calls() == {"c-1": {"request": {"content": SECRET}}}
    again.close()
    with pytest.raises(StoreError, match="encrypted messages"):
        open_store(path, None).check_secrets()


def test_a_database_from_before_the_encrypted_record_is_read_by_the_prefix_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db" / "edgemeta.json"
    cipher = ValueCipher(new_key())
    store = open_store(path, cipher)
    store.put("ns/secret/db", "secret", SECRET)
    store.close()
    journal = path.with_name(path.name + ".journal")
    lines = journal.read_bytes().splitlines(keepends=True)
    legacy = [line for line in lines if b'["enc' not in line]
    assert len(legacy) < len(lines)
    journal.write_bytes(b"".join(legacy))  # as the releases before wrote it

    with pytest.raises(StoreError, match=r"no database\.secretKeyFile"):
        keyless = open_store(path, None)
        try:
            keyless.check_secrets()
        finally:
            keyless.abandon()
    again = open_store(path, cipher)
    assert again.check_secrets() == 0
    assert again.get("ns/secret/db") == SECRET
    again.put("ns/secret/new", "secret", "fernet:plain? no: encrypted by the store")
    again.close()
    keyed = open_store(path, cipher)
    assert keyed.get("ns/secret/new") == "fernet:plain? no: encrypted by the store"
    keyed.close()
