"""The MQTT side: the only module that imports paho.

paho callbacks only decode and hand over, inside try/except (an exception
there kills paho's network thread). The network loop is our own thread so
reconnects use capped exponential back-off with jitter.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .config import MqttConfig
from .errors import BusError
from .wire import GatheringSocket

log = logging.getLogger(__name__)

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


class _WakeSink:
    """Stands in for paho's wake-up socket while a batch is queued."""

    def send(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass


_WAKE_SINK = _WakeSink()


def _no_write_hook(client: Any, userdata: Any, sock: Any) -> None:
    """paho's on_socket_register_write: nothing to do, the network loop writes."""


@dataclass(slots=True)
class Inbound:
    """One received MQTT message, as handed to the main loop."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    response_topic: str | None
    correlation: bytes | None
    session: int


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential back-off with full jitter on the upper half."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.initial * (2 ** max(0, failures - 1)))
        return random.uniform(base / 2, base)


class MqttBus:
    """Persistent-session MQTT 5 client with manual acknowledgements.

    ``deliver`` receives every message of the subscriptions (on paho's thread);
    ``on_published`` receives the mid of every publish the broker confirmed.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        subscriptions: list[str],
        status_topic: str,
        deliver: Callable[[Inbound], None],
        on_published: Callable[[int], None] = lambda mid: None,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.config = config
        self._subscriptions = subscriptions
        self._status_topic = status_topic
        self._deliver = deliver
        self._on_published = on_published
        self._backoff = backoff
        self._stopping = threading.Event()
        self._online = threading.Event()
        self._fatal: BaseException | None = None
        self._session = 0
        self._sub_mid: int | None = None
        self._thread: threading.Thread | None = None
        self._wire: GatheringSocket | None = None
        self._client = self._make_client()

    # -- set-up ---------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
            if cfg.password and not cfg.tls.enable and not _is_loopback(cfg.host):
                log.warning("the MQTT password goes to %s in clear: enable mqtt.tls", cfg.host)
        if cfg.tls.enable:
            # The broker's certificate is verified (CERT_REQUIRED) and so is its
            # host name: paho's context checks it; never tls_insecure_set(True).
            try:
                client.tls_set(
                    ca_certs=cfg.tls.caFile or None,
                    certfile=cfg.tls.certFile or None,
                    keyfile=cfg.tls.keyFile or None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise BusError(f"mqtt.tls: cannot load the CA, certificate or key: {exc}") from exc
        client.will_set(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
        # No client-side window: with one, paho walks every unacknowledged message on
        # each PUBACK while holding the lock publish() needs.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        # With this hook set, paho never writes from the thread that publishes: only
        # the network thread writes, so packets cannot be reordered or interleaved.
        client.on_socket_register_write = _no_write_hook
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.sessionExpiry
        props.ReceiveMaximum = 1000
        return props

    # -- callbacks (paho's thread: never raise) ---------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            if rc.is_failure:
                log.error("broker refused the connection: %s", rc)
                if rc.value in (0x86, 0x87, 0x8C):  # bad credentials, not authorised, bad auth
                    self._fatal = BusError(f"broker refused the connection: {rc}")
                return
            self._session += 1
            log.info(
                "connected to %s:%d (session present: %s)",
                self.config.host,
                self.config.port,
                flags.session_present,
            )
            _result, mid = client.subscribe(
                [(topic, SubscribeOptions(qos=1)) for topic in self._subscriptions]
            )
            self._sub_mid = mid
        except Exception:
            log.exception("on_connect failed")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        try:
            if mid != self._sub_mid:
                return
            failed = [
                topic
                for topic, code in zip(self._subscriptions, codes, strict=False)
                if code.is_failure
            ]
            if failed:
                log.error("broker refused the subscription to %s", ", ".join(failed))
                self._fatal = BusError(f"broker refused the subscription to {', '.join(failed)}")
                return
            client.publish(self._status_topic, STATUS_ONLINE, qos=1, retain=True)
            self._online.set()
            log.info("online: listening on %s", ", ".join(self._subscriptions))
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            self._online.clear()
            if not self._stopping.is_set():
                log.warning("disconnected from the broker: %s", rc)
        except Exception:
            log.exception("on_disconnect failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            props = getattr(msg, "properties", None)
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            self._deliver(
                Inbound(
                    msg.topic,
                    bytes(msg.payload),
                    msg.mid,
                    msg.qos,
                    bool(msg.dup),
                    response_topic,
                    correlation,
                    self._session,
                )
            )
        except Exception:
            log.exception("cannot take a message from %r", getattr(msg, "topic", "?"))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        try:
            self._on_published(mid)
        except Exception:
            log.exception("on_publish failed")

    # -- the network loop -------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="edgemeta-mqtt", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        cfg = self.config
        self._client.connect(
            cfg.host,
            cfg.port,
            keepalive=cfg.keepalive,
            clean_start=False,
            properties=self._connect_properties(),
        )
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # paho keeps the socket in a private attribute; wrapping it there is the
            # one place edgemeta reaches into paho (see wire.py for why).
            self._wire = GatheringSocket(sock)
            self._client._sock = self._wire

    def _loop(self) -> None:
        failures = 0
        connected = False
        while not self._stopping.is_set():
            if not connected:
                try:
                    self._connect()
                    connected = True
                except ssl.SSLCertVerificationError as exc:
                    # Retrying cannot help: the broker is not the one configured.
                    tls = self.config.tls
                    self._fatal = BusError(
                        f"TLS certificate verification of the broker at {self.config.host}:"
                        f"{self.config.port} failed: {exc.verify_message}; is "
                        f"mqtt.tls.caFile ({tls.caFile or 'the system CAs'}) the CA that "
                        f"signed the broker's certificate, and mqtt.host a name in it?"
                    )
                    log.error("%s", self._fatal)
                    return
                except (OSError, ssl.SSLError) as exc:
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.warning(
                        "broker %s:%d unreachable (%s); retrying in %.1f s",
                        self.config.host,
                        self.config.port,
                        exc,
                        delay,
                    )
                    self._stopping.wait(delay)
                    continue
            wire = self._wire
            if wire is None:
                rc = self._client.loop(timeout=0.5)
            else:
                with wire.corked():  # everything written in one pass leaves together
                    rc = self._client.loop(timeout=0.5)
            if self._online.is_set():
                failures = 0
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping.is_set():
                connected = False
                self._online.clear()
                if self._fatal is not None:
                    return
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("connection lost (%s); reconnecting in %.1f s", rc, delay)
                self._stopping.wait(delay)

    # -- API --------------------------------------------------------------
    @property
    def session(self) -> int:
        """Increases with every accepted connection; acks of an older one are void."""
        return self._session

    @property
    def fatal(self) -> BaseException | None:
        return self._fatal

    def wait_online(self, timeout: float | None = None) -> bool:
        return self._online.wait(timeout)

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        correlation: bytes | None = None,
    ) -> int:
        """Queue a publish (paho keeps QoS>0 messages across reconnects); returns its mid."""
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except ValueError as exc:
            raise BusError(f"cannot publish to {topic!r}: {exc}") from exc
        return info.mid

    def ack(self, mid: int, qos: int, session: int) -> None:
        """PUBACK a message of the current connection; older ones are redelivered anyway."""
        if qos and session == self._session and self._online.is_set():
            self._client.ack(mid, qos)

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Publishes and acks queued in this block wake the network thread once, at its end.

        paho writes one wake-up byte per queued packet; during the block it
        writes to a sink instead, and one byte is sent when the block ends.
        """
        client = self._client
        real = client._sockpairW
        if real is None:
            yield
            return
        client._sockpairW = _WAKE_SINK  # type: ignore[assignment]
        try:
            yield
        finally:
            if client._sockpairW is _WAKE_SINK:
                client._sockpairW = real
                with suppress(OSError):
                    real.send(b"0")
            else:
                # paho replaced its socket pair meanwhile (a reconnect): the old one is ours.
                with suppress(OSError):
                    real.close()

    def request_redelivery(self) -> None:
        """Drop the connection so the broker resends what was not acknowledged."""
        log.warning("reconnecting to have unacknowledged messages redelivered")
        self._client.disconnect()

    def stop(self, timeout: float = 2.0) -> None:
        """Publish ``offline``, disconnect cleanly (the session is kept), end the loop."""
        if self._online.is_set():
            info = self._client.publish(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not confirm the offline status: %s", exc)
        self._stopping.set()
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
