"""The secure broker: mosquitto/production.conf, mosquitto/acl and the secrets scripts.

A real Mosquitto runs the shipped production.conf; the test harness changes
only its ports (free loopback ports), persistence folder, pid file and log.
Its relative paths (mosquitto/secrets, mosquitto/certs, mosquitto/acl)
resolve in a temporary folder where scripts/make-secrets.sh,
scripts/make-certs.sh and scripts/add-device.sh wrote their files.

Whether a message was refused or delivered is decided without waiting for
nothing to happen: Mosquitto answers a refused QoS 1 PUBLISH with PUBACK
0x87, and it delivers to a subscriber in the order it accepted the messages,
so a "fence" message published after the one under test marks the point by
which that one would have arrived.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.broker import REPO_ROOT, Broker
from tests.support.secure import (
    NOT_AUTHORIZED,
    ROLES,
    SecureClient,
    SiteFiles,
    Will,
    tls_context,
)

PRODUCTION_CONF = REPO_ROOT / "mosquitto" / "production.conf"
ACL = REPO_ROOT / "mosquitto" / "acl"
MAKE_SECRETS = REPO_ROOT / "scripts" / "make-secrets.sh"
MAKE_CERTS = REPO_ROOT / "scripts" / "make-certs.sh"
ADD_DEVICE = REPO_ROOT / "scripts" / "add-device.sh"

DEVICES = ("dev-1", "dev-2")
SUCCESS = 0x00
GRANTED_QOS_1 = 0x01


def run_script(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a script, fail the test with its output if it fails; its stdout."""
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def script_status(*args: str | Path) -> int:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=60
    ).returncode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@dataclass(frozen=True)
class Site(SiteFiles):
    """The production broker, as the broker's own tests use it."""

    def client(
        self,
        user: str | None,
        *,
        tls: bool | ssl.SSLContext = False,
        client_id: str = "",
        clean_start: bool = True,
        session_expiry: int = 0,
        will: Will | None = None,
    ) -> SecureClient:
        """A client of `user` (None: anonymous), on the plain or the TLS listener.

        `tls=True` trusts the site's CA; over TLS the host is "localhost", so
        the host name check has something to check.
        """
        context: ssl.SSLContext | None = None
        if isinstance(tls, ssl.SSLContext):
            context = tls
        elif tls:
            context = tls_context(self.certs / "ca.crt")
        return SecureClient(
            "localhost" if context else self.broker.host,
            self.tls_port if context else self.broker.port,
            username=user,
            password=self.password(user) if user is not None else None,
            tls=context,
            client_id=client_id,
            clean_start=clean_start,
            session_expiry=session_expiry,
            will=will,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("secure-site")
    (root / "mosquitto").mkdir()
    shutil.copy(ACL, root / "mosquitto" / "acl")
    run_script(MAKE_SECRETS, "--dir", root / "mosquitto" / "secrets")
    for device in DEVICES:
        run_script(ADD_DEVICE, "--dir", root / "mosquitto" / "secrets", device)
    run_script(MAKE_CERTS, "--dir", root / "mosquitto" / "certs")
    run_script(MAKE_CERTS, "--dir", root / "other-ca")
    with Broker(PRODUCTION_CONF, tmp_dir=root / "broker", cwd=root) as broker:
        assert broker.extra_ports, "production.conf must have a second (TLS) listener"
        yield Site(root, broker)


class Clients:
    """One logged-in connection per username: the broker allows no more.

    production.conf sets use_username_as_clientid, so a second connection of
    a username would take the first one's place.
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self._open: dict[str, SecureClient] = {}

    def __call__(self, user: str) -> SecureClient:
        if user not in self._open:
            client = self.site.client(user)
            code = client.connect()
            assert code.value == SUCCESS, f"{user} cannot log in: {code}"
            self._open[user] = client
        return self._open[user]

    def close(self, user: str) -> None:
        self._open.pop(user).close()

    def close_all(self) -> None:
        for client in self._open.values():
            client.close()
        self._open.clear()


@pytest.fixture
def clients(site: Site) -> Iterator[Clients]:
    pool = Clients(site)
    yield pool
    pool.close_all()


def accepted(code: ReasonCode) -> bool:
    """A PUBACK that says the broker took the message.

    Mosquitto 2.0.11 answers 0x00 "Success" when someone subscribed and 0x10
    "No matching subscribers" when nobody did; 0x80 and above are refusals.
    """
    return not code.is_failure


def token() -> bytes:
    return uuid.uuid4().hex.encode()


# ---------------------------------------------------------------------------
# Logging in
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_anonymous_client_is_refused(site: Site, tls: bool) -> None:
    # Mosquitto 2.0.11 answers an MQTT 5 CONNECT without a username with
    # CONNACK 0x87 "Not authorized" (not 0x86 "Bad user name or password").
    code = site.client(None, tls=tls).connect()
    assert code.value == NOT_AUTHORIZED


@pytest.mark.parametrize("user", ["edged", "no-such-user"])
def test_wrong_password_is_refused(site: Site, user: str) -> None:
    client = SecureClient(site.broker.host, site.broker.port, username=user, password="x" * 48)
    assert client.connect().value == NOT_AUTHORIZED


@pytest.mark.parametrize("user", [*ROLES, *DEVICES])
def test_every_role_and_device_logs_in_with_its_password(site: Site, user: str) -> None:
    with site.client(user) as client:
        assert client.connect().value == SUCCESS


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

# (user, topic, may write). Prefix "beehive": the shipped ACL's.
WRITES = [
    ("edgemeta", "beehive/edged", True),
    ("edgemeta", "beehive/mesh", True),
    ("edgemeta", "beehive/func", True),
    ("edgemeta", "beehive/hub", True),
    ("edgemeta", "beehive/meta/status", True),
    ("edgemeta", "beehive/meta/error", True),
    ("edgemeta", "beehive/meta/stats", True),
    ("edgemeta", "beehive/reply/edged/q-1", True),
    ("edgemeta", "beehive/reply/dev-1/q-1", True),
    ("edgemeta", "beehive/meta", False),
    ("edgemeta", "beehive/meta/device/dev-1", False),
    ("edgemeta", "beehive/meta/device/edgemeta", False),
    ("edgemeta", "beehive/meta/bridge/state", False),
    ("edgemeta", "beehive/meta/bridge/heartbeat", True),
    ("edgemeta", "beehive/meta/bridge/echo/heartbeat", False),
    ("edged", "beehive/meta/bridge/heartbeat", False),
    ("observer", "beehive/meta/bridge/echo/heartbeat", False),
    ("edgemeta", "beehive/state/default/pod/p", True),
    ("edgemeta", "beehive/state/$reconcile/r-1", True),
    ("edged", "beehive/state/default/pod/p", False),
    ("edgemesh", "beehive/state/default/service/s", False),
    ("edgehub", "beehive/state/default/pod/p", False),
    ("observer", "beehive/state/default/pod/p", False),
    ("dev-1", "beehive/state/default/pod/p", False),
    ("dev-1", "beehive/state/default/device/dev-1", False),
    ("edged", "beehive/meta", True),
    ("edged", "beehive/hub", False),
    ("edged", "beehive/edged", False),
    ("edged", "beehive/mesh", False),
    ("edged", "beehive/meta/status", False),
    ("edged", "beehive/meta/error", False),
    ("edged", "beehive/meta/device/edged", False),
    ("edged", "beehive/reply/edged/q-1", False),
    ("edgemesh", "beehive/meta", True),
    ("edgemesh", "beehive/mesh", False),
    ("edgemesh", "beehive/hub", False),
    ("edgefunction", "beehive/meta", True),
    ("edgefunction", "beehive/func", False),
    ("edgefunction", "beehive/hub", False),
    ("edgehub", "beehive/meta", True),
    ("edgehub", "beehive/hub", False),
    ("edgehub", "beehive/edged", False),
    ("observer", "beehive/meta", False),
    ("observer", "beehive/hub", False),
    ("observer", "beehive/meta/status", False),
    ("observer", "beehive/meta/device/observer", False),
    ("observer", "beehive/reply/observer/q-1", False),
    ("dev-1", "beehive/meta/device/dev-1", True),
    ("dev-1", "beehive/meta/device/dev-2", False),
    ("dev-1", "beehive/meta/device/dev-1/more", False),
    ("dev-1", "beehive/meta", False),
    ("dev-1", "beehive/meta/status", False),
    ("dev-1", "beehive/hub", False),
    ("dev-1", "beehive/reply/dev-1/q-1", False),
    ("observer", "beehive/tool/observer/end-1", True),
    ("observer", "beehive/tool/edged/end-1", False),
    ("edged", "beehive/tool/edged/end-1", True),
    ("dev-1", "beehive/tool/dev-1/end-1", True),
    ("dev-1", "beehive/tool/dev-2/end-1", False),
]


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [pytest.param(u, t, a, id=f"{u} {'may' if a else 'may not'} write {t}") for u, t, a in WRITES],
)
def test_write_access(clients: Clients, user: str, topic: str, allowed: bool) -> None:
    # The observer reads the whole prefix: it sees whatever the broker accepts.
    witness = clients("observer")
    assert [c.value for c in witness.subscribe("beehive/#")] == [GRANTED_QOS_1]
    payload = token()

    code = clients(user).publish(topic, payload)

    # A refused QoS 1 PUBLISH is answered PUBACK 0x87 "Not authorized".
    assert code.value == (SUCCESS if allowed else NOT_AUTHORIZED), code
    fence = token()
    assert accepted(clients("edged").publish("beehive/meta", fence))
    seen = witness.receive_until("beehive/meta", fence)
    delivered = [m.topic for m in seen if m.payload == payload]
    assert delivered == ([topic] if allowed else [])


def test_refused_qos0_publish_is_dropped_silently(clients: Clients) -> None:
    witness = clients("observer")
    witness.subscribe("beehive/#")
    payload = token()

    # QoS 0 has no acknowledgement to carry a refusal: the message just vanishes.
    clients("dev-1").publish_qos0("beehive/meta", payload)

    fence = token()
    assert accepted(clients("dev-1").publish("beehive/meta/device/dev-1", fence))
    seen = witness.receive_until("beehive/meta/device/dev-1", fence)
    assert [m for m in seen if m.payload == payload] == []


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

# (user, topic, may read). Who writes a topic is `writer_of(topic)`.
READS = [
    ("edgemeta", "beehive/meta", True),
    ("edgemeta", "beehive/meta/device/dev-1", True),
    ("edgemeta", "beehive/meta/status", True),
    ("edgemeta", "beehive/hub", False),
    ("edgemeta", "beehive/edged", False),
    ("edgemeta", "beehive/meta/error", False),
    ("edgemeta", "beehive/reply/edged/q-1", False),
    ("edged", "beehive/edged", True),
    ("edged", "beehive/meta/status", True),
    ("edged", "beehive/reply/edged/q-1", True),
    ("edged", "beehive/meta", False),
    ("edged", "beehive/hub", False),
    ("edged", "beehive/mesh", False),
    ("edged", "beehive/meta/error", False),
    ("edged", "beehive/meta/device/dev-1", False),
    ("edged", "beehive/reply/edgemesh/q-1", False),
    ("edgemesh", "beehive/mesh", True),
    ("edgemesh", "beehive/meta/status", True),
    ("edgemesh", "beehive/edged", False),
    ("edgemesh", "beehive/meta", False),
    ("edgefunction", "beehive/func", True),
    ("edgefunction", "beehive/hub", False),
    ("edgehub", "beehive/hub", True),
    ("edgehub", "beehive/meta", False),
    ("edgehub", "beehive/edged", False),
    ("observer", "beehive/meta", True),
    ("observer", "beehive/hub", True),
    ("observer", "beehive/meta/error", True),
    ("observer", "beehive/meta/device/dev-1", True),
    ("observer", "beehive/reply/edged/q-1", True),
    ("dev-1", "beehive/meta/status", True),
    ("dev-1", "beehive/reply/dev-1/q-1", True),
    ("dev-1", "beehive/meta", False),
    ("dev-1", "beehive/meta/device/dev-2", False),
    ("dev-1", "beehive/hub", False),
    ("dev-1", "beehive/edged", False),
    ("dev-1", "beehive/reply/dev-2/q-1", False),
    ("edgemeta", "beehive/state/default/pod/p", True),
    ("edged", "beehive/state/default/pod/p", True),
    ("edgemesh", "beehive/state/default/service/s", True),
    ("edgefunction", "beehive/state/default/configmap/c", True),
    ("observer", "beehive/state/default/pod/p", True),
    ("edgehub", "beehive/state/default/pod/p", False),
    ("dev-1", "beehive/state/default/pod/p", False),
    ("dev-1", "beehive/state/default/device/dev-1", False),
    ("observer", "beehive/tool/observer/end-1", True),
    ("edged", "beehive/tool/edged/end-1", True),
    ("edged", "beehive/tool/edgemesh/end-1", False),
    ("dev-1", "beehive/tool/dev-2/end-1", False),
]


def writer_of(topic: str) -> str:
    if topic == "beehive/meta":
        return "edged"
    if topic.startswith("beehive/meta/device/"):
        return topic.rsplit("/", 1)[1]
    if topic.startswith("beehive/tool/"):
        return topic.split("/")[2]
    return "edgemeta"


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [pytest.param(u, t, a, id=f"{u} {'may' if a else 'may not'} read {t}") for u, t, a in READS],
)
def test_read_access(clients: Clients, user: str, topic: str, allowed: bool) -> None:
    reader = clients(user)
    fence_topic = f"beehive/reply/{user}/fence"
    # Mosquitto 2.0.11 grants every subscription (SUBACK: the QoS asked
    # for), readable or not; "read" is checked per message on delivery.
    assert [c.value for c in reader.subscribe(topic)] == [GRANTED_QOS_1]
    assert [c.value for c in reader.subscribe(fence_topic)] == [GRANTED_QOS_1]
    payload = token()

    assert accepted(clients(writer_of(topic)).publish(topic, payload))

    fence = token()
    assert accepted(clients("edgemeta").publish(fence_topic, fence))
    seen = reader.receive_until(fence_topic, fence)
    delivered = [m.topic for m in seen if m.payload == payload]
    assert delivered == ([topic] if allowed else [])


def test_wildcard_subscription_delivers_only_readable_topics(clients: Clients) -> None:
    device = clients("dev-1")
    assert [c.value for c in device.subscribe("#")] == [GRANTED_QOS_1]
    for_device = [("beehive/meta/status", token()), ("beehive/reply/dev-1/q-7", token())]
    not_for_device = [
        ("edged", "beehive/meta", token()),
        ("edgemeta", "beehive/hub", token()),
        ("edgemeta", "beehive/reply/dev-2/q-7", token()),
        ("dev-2", "beehive/meta/device/dev-2", token()),
        ("edgemeta", "beehive/state/default/pod/p", token()),
    ]
    for writer, topic, payload in not_for_device:
        assert accepted(clients(writer).publish(topic, payload))
    for topic, payload in for_device:
        assert accepted(clients("edgemeta").publish(topic, payload))

    fence = token()
    assert accepted(clients("edgemeta").publish("beehive/reply/dev-1/fence", fence))
    seen = device.receive_until("beehive/reply/dev-1/fence", fence)
    # Leave out a retained status another test may have left behind.
    received = [(m.topic, m.payload) for m in seen if not m.retain]
    assert received == [*for_device, ("beehive/reply/dev-1/fence", fence)]


# ---------------------------------------------------------------------------
# Sessions, client ids and wills
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_cannot_take_over_another_users_session(
    site: Site, clients: Clients, tls: bool
) -> None:
    client_id = "edgemeta-beehive"
    with site.client("dev-1") as device:
        # Clean start: the device has no session of its own left from before.
        assert device.connect().value == SUCCESS
    edgemeta = site.client("edgemeta", client_id=client_id, clean_start=False, session_expiry=600)
    try:
        assert edgemeta.connect().value == SUCCESS
        edgemeta.subscribe("beehive/meta")

        # A device sends edgemeta's client id: the broker uses its username
        # instead, so the device gets a session of its own...
        intruder = site.client(
            "dev-1", tls=tls, client_id=client_id, clean_start=False, session_expiry=600
        )
        with intruder:
            assert intruder.connect().value == SUCCESS
            assert intruder.session_present is False

            # ...and edgemeta stays connected with its subscription.
            payload = token()
            assert accepted(clients("edged").publish("beehive/meta", payload))
            assert edgemeta.expect().payload == payload
    finally:
        edgemeta.close()

    # edgemeta's persistent session is keyed by its username: whatever
    # client id it sends, it finds the session and what was queued meanwhile.
    queued = token()
    assert accepted(clients("edged").publish("beehive/meta", queued))
    again = site.client("edgemeta", client_id="any-id", clean_start=False, session_expiry=600)
    with again:
        assert again.connect().value == SUCCESS
        assert again.session_present is True
        assert again.expect().payload == queued
    with site.client("edgemeta") as clean:
        # Clean start: drop the session for the tests that follow.
        assert clean.connect().value == SUCCESS


def test_edgemeta_last_will_reaches_devices(site: Site, clients: Clients) -> None:
    device = clients("dev-1")
    device.subscribe("beehive/meta/status")
    edgemeta = site.client("edgemeta", will=Will("beehive/meta/status", b"offline"))
    assert edgemeta.connect().value == SUCCESS
    try:
        assert accepted(edgemeta.publish("beehive/meta/status", b"online", retain=True))
        assert device.expect().payload == b"online"

        edgemeta.disconnect_with_will()

        will = device.expect()
        assert (will.topic, will.payload) == ("beehive/meta/status", b"offline")
    finally:
        # Clear the retained status for the tests that follow.
        clients("edgemeta").publish("beehive/meta/status", b"", retain=True)


def test_will_on_a_topic_the_user_may_not_write_is_dropped(site: Site, clients: Clients) -> None:
    witness = clients("observer")
    witness.subscribe("beehive/#")
    payload = token()
    edged = site.client("edged", will=Will("beehive/hub", payload, retain=False))
    # Mosquitto 2.0.11 accepts the CONNECT: the will is checked when it is due.
    assert edged.connect().value == SUCCESS
    edged.disconnect_with_will()
    # The same username again: the broker is done with the first connection
    # (its will sent or dropped) before it answers this one.
    fence = token()
    assert accepted(clients("edged").publish("beehive/meta", fence))

    seen = witness.receive_until("beehive/meta", fence)
    assert [m for m in seen if m.payload == payload] == []


# ---------------------------------------------------------------------------
# TLS listener
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_with_the_local_ca_and_host_name_check(site: Site, host: str) -> None:
    context = tls_context(site.certs / "ca.crt")
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    client = SecureClient(
        host,
        site.tls_port,
        username="edgemeta",
        password=site.password("edgemeta"),
        tls=context,
    )
    with client:
        assert client.connect().value == SUCCESS
        assert accepted(client.publish("beehive/meta/stats", b"{}"))


def test_tls_with_another_ca_fails_certificate_verification(site: Site) -> None:
    client = site.client("edgemeta", tls=tls_context(site.other_ca / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        client.connect()
    assert failure.value.reason == "CERTIFICATE_VERIFY_FAILED"


def test_plain_mqtt_on_the_tls_listener_is_refused(site: Site) -> None:
    client = SecureClient(
        site.broker.host,
        site.tls_port,
        username="edgemeta",
        password=site.password("edgemeta"),
    )
    with pytest.raises(ConnectionError):
        client.connect()


def test_tls_client_certificate_is_optional_and_not_a_login(site: Site) -> None:
    mine = tls_context(
        site.certs / "ca.crt", site.certs / "edgemeta.crt", site.certs / "edgemeta.key"
    )
    with site.client("edgemeta", tls=mine) as client:
        assert client.connect().value == SUCCESS

    # With require_certificate false Mosquitto does not ask for a client
    # certificate at all: one from another CA goes unchecked, and none
    # replaces the password.
    foreign = tls_context(
        site.certs / "ca.crt", site.other_ca / "edgemeta.crt", site.other_ca / "edgemeta.key"
    )
    with site.client("edgemeta", tls=foreign) as client:
        assert client.connect().value == SUCCESS
    nameless = SecureClient("localhost", site.tls_port, tls=mine)
    assert nameless.connect().value == NOT_AUTHORIZED


# ---------------------------------------------------------------------------
# Secrets and certificates on disk
# ---------------------------------------------------------------------------


def test_secret_files_are_private(site: Site) -> None:
    assert mode(site.secrets) == 0o700
    assert mode(site.secrets / "devices") == 0o700
    private = [site.secrets / "passwd"]
    private += [site.secrets / f"{role}.password" for role in ROLES]
    private += [site.secrets / "devices" / f"{device}.password" for device in DEVICES]
    assert {p.name: oct(mode(p)) for p in private} == {p.name: "0o600" for p in private}


def test_role_passwords_are_long_random_and_distinct(site: Site) -> None:
    passwords = [site.password(user) for user in (*ROLES, *DEVICES)]
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords)
    assert len(set(passwords)) == len(passwords)
    users = [line.split(":", 1)[0] for line in (site.secrets / "passwd").read_text().splitlines()]
    assert sorted(users) == sorted((*ROLES, *DEVICES))
    # Hashed (Mosquitto 2.0: PBKDF2-SHA512, "$7$"), never in clear.
    assert all(p not in (site.secrets / "passwd").read_text() for p in passwords)


def test_certificate_files_are_private(site: Site) -> None:
    assert mode(site.certs) == 0o700
    modes = {p.name: oct(mode(p)) for p in site.certs.iterdir()}
    assert modes == {
        "ca.crt": "0o644",
        "ca.key": "0o600",
        "server.crt": "0o644",
        "server.key": "0o600",
        "edgemeta.crt": "0o644",
        "edgemeta.key": "0o600",
    }


def test_server_certificate_names_localhost_and_is_signed_by_the_ca(site: Site) -> None:
    text = subprocess.run(
        ["openssl", "x509", "-in", str(site.certs / "server.crt"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:localhost, IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    for name in ("server", "edgemeta"):
        run_script(
            "openssl", "verify", "-CAfile", site.certs / "ca.crt", site.certs / f"{name}.crt"
        )


def test_make_secrets_keeps_what_exists_unless_forced(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    # The folder may also come from the environment.
    run_script(MAKE_SECRETS, env={"EDGEMETA_SECRETS_DIR": str(secrets)})
    first = files_in(secrets)
    assert sorted(first) == sorted(["passwd", *(f"{role}.password" for role in ROLES)])

    run_script(MAKE_SECRETS, "--dir", secrets)
    assert files_in(secrets) == first

    run_script(MAKE_SECRETS, "--dir", secrets, "--force")
    forced = files_in(secrets)
    assert all(forced[f"{role}.password"] != first[f"{role}.password"] for role in ROLES)
    assert forced["passwd"] != first["passwd"]
    assert mode(secrets / "passwd") == 0o600


def test_make_secrets_does_not_replace_a_password_it_cannot_show(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    run_script(MAKE_SECRETS, "--dir", secrets)
    (secrets / "observer.password").unlink()
    before = (secrets / "passwd").read_bytes()

    assert script_status(MAKE_SECRETS, "--dir", secrets) == 1

    assert (secrets / "passwd").read_bytes() == before
    assert not (secrets / "observer.password").exists()


def test_make_certs_keeps_what_exists_unless_forced(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    run_script(MAKE_CERTS, env={"EDGEMETA_CERTS_DIR": str(certs)})
    first = files_in(certs)

    run_script(MAKE_CERTS, "--dir", certs)
    assert files_in(certs) == first

    run_script(MAKE_CERTS, "--dir", certs, "--force")
    forced = files_in(certs)
    assert sorted(forced) == sorted(first)
    assert all(forced[name] != first[name] for name in first)
    run_script("openssl", "verify", "-CAfile", certs / "ca.crt", certs / "server.crt")


@pytest.mark.parametrize(
    "device",
    ["a/b", "+", "#", "dev:1", "-dev", ".dev", "dev 1", "x" * 65, *ROLES],
)
def test_add_device_refuses_ids_that_are_not_one_topic_level(site: Site, device: str) -> None:
    before = (site.secrets / "passwd").read_bytes()
    assert script_status(ADD_DEVICE, "--dir", site.secrets, device) != 0
    assert (site.secrets / "passwd").read_bytes() == before


def test_device_added_to_a_running_broker_logs_in_after_sighup(site: Site) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    run_script(ADD_DEVICE, device, env={"EDGEMETA_SECRETS_DIR": str(site.secrets)})
    assert mode(site.secrets / "devices" / f"{device}.password") == 0o600
    # Not yet: the broker still has the password file it read at start.
    assert site.client(device).connect().value == NOT_AUTHORIZED

    # Running it again changes nothing.
    before = (site.secrets / "passwd").read_bytes()
    run_script(ADD_DEVICE, "--dir", site.secrets, device)
    assert (site.secrets / "passwd").read_bytes() == before

    assert site.broker.pid is not None
    os.kill(site.broker.pid, signal.SIGHUP)

    # The broker reloads in its main loop: try until it lets the device in.
    deadline = time.monotonic() + 10
    pause = threading.Event()
    while True:
        with site.client(device) as client:
            code = client.connect()
            if code.value == SUCCESS:
                break
        assert code.value == NOT_AUTHORIZED
        assert time.monotonic() < deadline, "the new device was not let in after SIGHUP"
        pause.wait(0.05)
    with site.client(device) as client:
        assert client.connect().value == SUCCESS
        assert accepted(client.publish(f"beehive/meta/device/{device}", b"{}"))
        assert client.publish("beehive/meta/device/dev-1", b"{}").value == NOT_AUTHORIZED


# ---------------------------------------------------------------------------
# production.conf itself
# ---------------------------------------------------------------------------


def conf_options(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_production_conf_is_locked_down() -> None:
    options = conf_options(PRODUCTION_CONF)
    first = {words[0]: words[1:] for words in reversed(options)}
    assert first["allow_anonymous"] == ["false"]
    assert first["per_listener_settings"] == ["false"]
    assert first["password_file"] == ["mosquitto/secrets/passwd"]
    assert first["acl_file"] == ["mosquitto/acl"]
    listeners = [words[1:] for words in options if words[0] == "listener"]
    assert listeners == [["1883", "127.0.0.1"], ["8883"]]
    assert first["require_certificate"] == ["false"]
    assert first["set_tcp_nodelay"] == ["true"]
    assert first["persistence"] == ["true"]
    # SPEC §2: at least 100000 queued messages per session, no byte limit.
    assert int(first["max_queued_messages"][0]) >= 100000
    assert first["max_queued_bytes"] == ["0"]
    assert [w for w in options if w[0] == "use_username_as_clientid"] == [
        ["use_username_as_clientid", "true"]
    ] * 2
