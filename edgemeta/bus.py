"""The MQTT side: the only module that imports paho.

paho callbacks only decode and hand over, inside try/except (an exception
there kills paho's network thread). The network loop is our own thread so
reconnects use capped exponential back-off with jitter.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .backoff import Backoff
from .config import MqttConfig
from .errors import BusError
from .mqtt5props import pack_publish_properties
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
    retain: bool = False
    #: MQTT 5 user properties, in the order sent (empty on MQTT 3.1.1).
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Published:
    """The broker confirmed a publish (PUBACK), or refused it (``refused`` is its reason)."""

    mid: int
    refused: str = ""


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection was accepted (CONNACK); ``session`` numbers it, acks of older ones are void."""

    session: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The subscriptions of ``session`` were confirmed; ``online`` is published."""

    session: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection of ``session`` ended; the bus reconnects by itself."""

    session: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The bus cannot go on (refused credentials, a session taken over, a dead thread)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SubscribeDone:
    """The SUBACK of a subscription made with ``MqttBus.subscribe`` (``refused``: why not)."""

    mid: int
    refused: str = ""


BusEvent = Inbound | Published | Connected | Subscribed | SubscribeDone | Disconnected | Failed


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter; ``retained`` False asks the broker never to send retained messages;
    ``no_local``: not the messages this client publishes itself."""

    topic: str
    retained: bool = False
    no_local: bool = False


# Reason codes of a DISCONNECT from the broker after which reconnecting cannot help.
_TAKEN_OVER = 0x8E
_FATAL_CONNACK = (0x86, 0x87, 0x8C)  # bad credentials, not authorised, bad authentication


def _reason_text(rc: Any) -> str:
    value = getattr(rc, "value", rc)
    if value == _TAKEN_OVER:
        return "session taken over by another client with the same client id"
    if isinstance(rc, MQTTErrorCode):
        return {
            MQTTErrorCode.MQTT_ERR_CONN_LOST: "connection lost",
            MQTTErrorCode.MQTT_ERR_KEEPALIVE: "keepalive timeout: the broker stopped answering",
            MQTTErrorCode.MQTT_ERR_NO_CONN: "not connected",
        }.get(rc, mqtt.error_string(rc))
    text = str(rc)
    if text == "Unspecified error":
        return "connection closed by the broker or the network"
    return text


class _Packed(Properties):
    """PUBLISH properties packed once (``mqtt5props``): what paho sends, without
    building its ``Properties`` field by field for every message."""

    _packed: bytes

    def __init__(self, packed: bytes) -> None:
        # Not Properties.__init__: its tables are the cost this class avoids.
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)

    def pack(self) -> bytes:
        return self._packed


class MqttBus:
    """Persistent-session MQTT 5 client with manual acknowledgements.

    Every paho callback turns into one event handed to ``events`` (on paho's
    thread, never raising): ``Inbound`` for each message, ``Published`` for
    each confirmed or refused publish, ``Connected``, ``Subscribed``,
    ``Disconnected`` and, when the bus gives up, ``Failed``.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        subscriptions: Sequence[str | Subscription],
        status_topic: str | None,
        events: Callable[[BusEvent], None],
        backoff: Backoff | None = None,
        max_unread_bytes: int = 64 << 20,
        client_id: str | None = None,
        persistent: bool = True,
        mqtt311: bool = False,
    ) -> None:
        """``persistent`` False is a tool's connection: a clean session of its own
        (``client_id``), automatic acknowledgements, no status and no Last Will.
        ``mqtt311`` speaks MQTT 3.1.1 (a tool on a broker without MQTT 5, such
        as the MQTT listener of a NATS cluster): no properties, no retain handling."""
        self.config = config
        self._client_id = client_id or config.client_id
        self._persistent = persistent
        self._v5 = not mqtt311
        self._subscriptions = [
            s if isinstance(s, Subscription) else Subscription(s) for s in subscriptions
        ]
        self._status_topic = status_topic
        self._events = events
        self._backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._online = threading.Event()
        self._fatal: str | None = None
        self._session = 0
        self._sub_mid: int | None = None
        self._thread: threading.Thread | None = None
        self._wire: GatheringSocket | None = None
        # Bytes handed over and not yet taken by the main loop: above the bound the
        # network loop stops reading, so a burst of large messages waits in the
        # socket and the broker instead of in memory.
        self._unread = 0
        self._unread_lock = threading.Lock()
        self._max_unread = max_unread_bytes
        self._client = self._make_client()

    # -- set-up ---------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else not self._persistent,
            manual_ack=self._persistent,
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
        if self._status_topic:
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
        if self._persistent:
            props.SessionExpiryInterval = self.config.sessionExpiry
        props.ReceiveMaximum = 1000
        return props

    def _fail(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            if self._persistent:  # a tool says it itself, in its own words
                log.error("%s", reason)
            self._events(Failed(reason))

    # -- callbacks (paho's thread: never raise) ---------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            if rc.is_failure:
                if self._persistent:
                    log.error("broker refused the connection: %s", rc)
                if rc.value in _FATAL_CONNACK or not self._persistent:
                    self._fail(f"broker refused the connection: {rc}")
                return
            self._session += 1
            log.log(
                logging.INFO if self._persistent else logging.DEBUG,
                "connected to %s:%d (session present: %s)",
                self.config.host,
                self.config.port,
                flags.session_present,
            )
            # Before SUBSCRIBE: a resumed session's queued messages follow CONNACK at
            # once, and they may be acknowledged as soon as they are applied.
            self._events(Connected(self._session, bool(flags.session_present)))
            if not self._subscriptions:
                self._online.set()
                self._events(Subscribed(self._session))
                return
            _result, mid = client.subscribe(
                [(s.topic, self._options(s, 1)) for s in self._subscriptions]
            )
            self._sub_mid = mid
        except Exception:
            log.exception("on_connect failed")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        try:
            if mid != self._sub_mid:
                refused = [str(c) for c in codes if getattr(c, "is_failure", False)]
                self._events(SubscribeDone(mid, ", ".join(refused)))
                return
            failed = [
                s.topic
                for s, code in zip(self._subscriptions, codes, strict=False)
                if code.is_failure
            ]
            if failed:
                self._fail(f"broker refused the subscription to {', '.join(failed)}")
                return
            if self._status_topic:
                client.publish(self._status_topic, STATUS_ONLINE, qos=1, retain=True)
            self._online.set()
            log.log(
                logging.INFO if self._persistent else logging.DEBUG,
                "online: listening on %s",
                ", ".join(s.topic for s in self._subscriptions),
            )
            self._events(Subscribed(self._session))
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        try:
            self._online.clear()
            if self._stopping.is_set():
                return
            if getattr(rc, "value", None) == _TAKEN_OVER:
                self._fail(
                    f"another client connected with client id {self._client_id!r} "
                    f"and took over the session: two edgemetas share a client id (give "
                    f"each node its own mqtt.clientId or mqtt.topicPrefix)"
                )
                return
            if getattr(flags, "is_disconnect_packet_from_server", False):
                reason = f"the broker disconnected edgemeta: {_reason_text(rc)}"
            else:
                reason = "the connection to the broker was closed (broker stopped or network down)"
            log.log(
                logging.WARNING if self._persistent else logging.DEBUG,
                "disconnected from the broker: %s",
                reason,
            )
            self._events(Disconnected(self._session, reason))
        except Exception:
            log.exception("on_disconnect failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            props = getattr(msg, "properties", None)
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            user_properties = tuple(
                (str(k), str(v)) for k, v in (getattr(props, "UserProperty", None) or ())
            )
            payload = bytes(msg.payload)
            if self._persistent:  # a tool's messages are acknowledged by paho itself
                with self._unread_lock:
                    self._unread += len(payload)
            self._events(
                Inbound(
                    msg.topic,
                    payload,
                    msg.mid,
                    msg.qos,
                    bool(msg.dup),
                    response_topic,
                    correlation,
                    self._session,
                    bool(msg.retain),
                    user_properties,
                )
            )
        except Exception:
            log.exception("cannot take a message from %r", getattr(msg, "topic", "?"))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        try:
            refused = str(rc) if getattr(rc, "is_failure", False) else ""
            self._events(Published(mid, refused))
        except Exception:
            log.exception("on_publish failed")

    # -- the network loop -------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgemeta-mqtt", daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        cfg = self.config
        if self._v5:
            self._client.connect(
                cfg.host,
                cfg.port,
                keepalive=cfg.keepalive,
                clean_start=not self._persistent,
                properties=self._connect_properties(),
            )
        else:
            self._client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # paho keeps the socket in a private attribute; wrapping it there is the
            # one place edgemeta reaches into paho (see wire.py for why).
            self._wire = GatheringSocket(sock)
            self._client._sock = self._wire

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread must never end unnoticed
            self._fail(
                f"the MQTT connection to {self.config.host!r}:{self.config.port} failed: "
                f"{type(exc).__name__}: {exc}"
            )

    def taken(self, nbytes: int) -> None:
        """The main loop took ``nbytes`` of received payload: reading may go on."""
        with self._unread_lock:
            self._unread -= nbytes

    def _reading_paused(self) -> bool:
        with self._unread_lock:
            return self._unread > self._max_unread

    def _loop_once(self) -> MQTTErrorCode:
        if not self._reading_paused():
            return self._client.loop(timeout=0.5)
        # Writes, pings and timeouts go on; reading waits for the main loop.
        client = self._client
        sock = client.socket()
        if sock is not None and client.want_write():
            select.select([], [sock], [], 0.05)
            rc = client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        else:
            self._stopping.wait(0.01)
        return client.loop_misc()

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
                    self._fail(
                        f"TLS certificate verification of the broker at {self.config.host}:"
                        f"{self.config.port} failed: {exc.verify_message}; is "
                        f"mqtt.tls.caFile ({tls.caFile or 'the system CAs'}) the CA that "
                        f"signed the broker's certificate, and mqtt.host a name in it?"
                    )
                    return
                except (OSError, ssl.SSLError) as exc:
                    if not self._persistent and self._session == 0:
                        self._fail(
                            f"cannot reach the MQTT broker at {self.config.host}:"
                            f"{self.config.port}: {exc}"
                        )
                        return
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.log(
                        logging.WARNING if self._persistent else logging.DEBUG,
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
                rc = self._loop_once()
            else:
                with wire.corked():  # everything written in one pass leaves together
                    rc = self._loop_once()
            if self._online.is_set():
                failures = 0
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping.is_set():
                connected = False
                self._online.clear()
                if self._fatal is not None:
                    return
                failures += 1
                delay = self._backoff.delay(failures)
                log.log(
                    logging.WARNING if self._persistent else logging.DEBUG,
                    "connection to %s:%d lost (%s); reconnecting in %.1f s",
                    self.config.host,
                    self.config.port,
                    _reason_text(rc),
                    delay,
                )
                self._stopping.wait(delay)

    # -- API --------------------------------------------------------------
    @property
    def session(self) -> int:
        """Increases with every accepted connection; acks of an older one are void."""
        return self._session

    @property
    def mqtt5(self) -> bool:
        return self._v5

    @property
    def fatal(self) -> str | None:
        """Why the bus gave up, or None while it goes on."""
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
        response_topic: str | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Queue a publish (paho keeps QoS>0 messages across reconnects); returns its mid."""
        try:
            props = None
            if self._v5 and (
                correlation is not None or response_topic is not None or user_properties
            ):
                props = _Packed(
                    pack_publish_properties(correlation, response_topic, user_properties)
                )
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except ValueError as exc:
            raise BusError(f"cannot publish to {topic!r}: {exc}") from exc
        rc = info.rc
        # QoS 1 and 2 while disconnected: paho keeps the message and sends it after
        # reconnecting. QoS 0 is dropped then, and anything else is a refusal.
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (
            qos and rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            raise BusError(f"cannot publish to {topic!r}: {_reason_text(rc)}")
        return info.mid

    def _options(self, subscription: Subscription, qos: int) -> Any:
        if not self._v5:
            return qos
        return SubscribeOptions(
            qos=qos,
            noLocal=subscription.no_local,
            retainHandling=0 if subscription.retained else 2,
        )

    def subscribe(self, subscription: Subscription, qos: int = 1) -> int:
        """Subscribe now and after every reconnect; the SUBACK comes as ``SubscribeDone``."""
        self._subscriptions.append(subscription)
        try:
            result, mid = self._client.subscribe(
                [(subscription.topic, self._options(subscription, qos))]
            )
        except ValueError as exc:
            raise BusError(f"cannot subscribe to {subscription.topic!r}: {exc}") from exc
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"cannot subscribe to {subscription.topic!r}: {_reason_text(result)}")
        return mid

    def unsubscribe(self, topic: str) -> None:
        """Stop a subscription made with ``subscribe`` (also after the next reconnect)."""
        self._subscriptions = [s for s in self._subscriptions if s.topic != topic]
        try:
            result, _mid = self._client.unsubscribe(topic)
        except ValueError as exc:
            raise BusError(f"cannot unsubscribe from {topic!r}: {exc}") from exc
        if result not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BusError(f"cannot unsubscribe from {topic!r}: {_reason_text(result)}")

    def ack(self, mid: int, qos: int, session: int) -> None:
        """PUBACK a message of the current connection; older ones are redelivered anyway.

        Not held back until SUBACK: a resumed session's queued messages arrive
        before it, and acks held back would leave them unacknowledged.
        """
        if qos and session == self._session:
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

    def stop(self, timeout: float = 2.0) -> None:
        """Publish ``offline``, disconnect cleanly (the session is kept), end the loop."""
        if self._online.is_set() and self._status_topic:
            info = self._client.publish(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not confirm the offline status: %s", exc)
        self._stopping.set()
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
