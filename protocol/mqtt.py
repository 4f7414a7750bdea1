"""paho-mqtt clients driven by the asyncio event loop.

Why not aiomqtt: measured here, it stalled on pipelined QoS 1 publishes; raw paho
with its socket callbacks does not (docs/architecture.md). So each ``MqttConnection`` registers
paho's socket with ``loop.add_reader`` / ``add_writer`` and one shared ticker calls
``loop_misc`` (keepalive, retries) for every connection of the loop: no thread per
connection, so one process can hold thousands of them.

Message handlers run synchronously inside the read callback: keep them short, or
hand the work to a task.

What survives what (paho-mqtt 2.2, mosquitto 2.0; pinned by test_mqtt_driver.py):

- A QoS > 0 ``publish`` survives a lost connection and a broker restart, kill included.
  paho keeps it in memory until its PUBACK, whether it was made with the connection up
  or down, and resends it after the next CONNACK (with the DUP flag if it had been
  sent). That holds with ``clean_start=True`` (the gateway) as with a persistent
  session (the simulator): a clean start discards the broker's state for this client,
  never the client's own outgoing queue. At least once: a message whose PUBACK was lost
  with the connection arrives twice. ``publish`` therefore never raises for an outage;
  ``flush`` and ``publish_and_wait`` wait through the reconnect (up to their timeout).
- Nothing survives a restart of this process: there is no client-side persistence.
- QoS 0 made with no connection is dropped and counted (``dropped_qos0``); one queued
  on a connection that then breaks is lost without a count.
- ``MqttPublishRefused`` is the only publish error: paho would not queue the message
  (a queue limit, which the driver does not set, or all 65535 message ids in use).
- Order: publishes leave in the order they were made. The connect hook runs after paho
  has resent what it kept, so what the hook publishes (the simulator's presence and
  state) goes out behind, and a retained message queued during the outage cannot
  overwrite it. Only a publish made while a reconnect waits for its CONNACK can
  overtake older queued ones.
- At the broker, retained messages and persistent sessions (their subscriptions and
  queued QoS > 0 messages) survive a clean stop, which saves them; after a SIGKILL
  only as of the last autosave (``autosave_interval``), if any. Subscriptions are
  remade after every reconnect and the connect hook runs after every reconnect, so a
  client that republishes its retained messages there (the simulator) restores what
  the broker lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocol.errors import MqttConnectError, MqttPublishRefused, MqttTimeout
from protocol.paho_fast import FastProperties
from protocol.paho_writes import CoalescingClient

log = logging.getLogger(__name__)

MessageHandler = Callable[[paho.MQTTMessage], None]
ConnectHook = Callable[["MqttConnection", bool], None]
MISC_INTERVAL_S = 1.0
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
DEFAULT_MAX_INFLIGHT = 64  # paho scans every in-flight message on each PUBACK
SUBSCRIBE_BATCH = 500  # filters per SUBSCRIBE packet: keeps packets well under the size limit


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """``mqtt://user:pass@host:port`` (docs/spec.md §6 ``CAAS_MQTT_URL``)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise ValueError(f"expected mqtt://user:pass@host:port, got {url!r}")
        return cls(
            host=parsed.hostname,
            port=parsed.port or 1883,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
        )

    def with_credentials(self, username: str, password: str) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password)

    def url(self) -> str:
        auth = f"{self.username}:{self.password}@" if self.username else ""
        return f"mqtt://{auth}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class ConnectionOptions:
    client_id: str
    clean_start: bool = True
    session_expiry_s: int = 0
    keepalive_s: int = 30
    will: Will | None = None
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    auto_reconnect: bool = True
    subscriptions: list[tuple[str, int]] = field(default_factory=list)


def namespaced_client_id(username: str | None, client_id: str) -> str:
    """The client id a connection of ``username`` uses: ``<username>-<client_id>``
    unless ``client_id`` already is ``<username>`` or starts with ``<username>-``.

    The broker's service listener refuses any other client id (mosquitto/plugin/
    caas_auth.c), so that no identity can take over another identity's session by
    reusing its client id; every caller gets that for free here. The vehicle listener
    forces client id = username (the VIN) anyway."""
    if not username or client_id == username or client_id.startswith(f"{username}-"):
        return client_id
    return f"{username}-{client_id}"


class _Ticker:
    """One periodic ``loop_misc`` for every connection of an event loop."""

    def __init__(self) -> None:
        self.clients: weakref.WeakSet[MqttConnection] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None

    def add(self, conn: MqttConnection) -> None:
        self.clients.add(conn)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-misc")

    async def _run(self) -> None:
        while self.clients:
            await asyncio.sleep(MISC_INTERVAL_S)
            for conn in list(self.clients):
                conn._misc()


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker] = (
    weakref.WeakKeyDictionary()
)


def _ticker() -> _Ticker:
    loop = asyncio.get_running_loop()
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _Ticker()
    return ticker


class MqttConnection:
    """One MQTT 5 connection. ``await connect()``, then publish / subscribe.

    Subscriptions given in the options are (re)made after every connect that does not
    resume a session, so a broker restart does not silently drop them.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        options: ConnectionOptions,
        on_message: MessageHandler | None = None,
        on_connect: ConnectHook | None = None,
    ) -> None:
        self.broker = broker
        self.options = options
        self.client_id = namespaced_client_id(broker.username, options.client_id)
        self.connected = asyncio.Event()
        self.ready = asyncio.Event()  # connected and every subscription acknowledged
        self.reconnects = 0
        self._on_message = on_message
        self._on_connect_hook = on_connect
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._subscribed_once = False
        self._connect_result: asyncio.Future[ReasonCode] | None = None
        self._pending_subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._pending_pubacks: dict[int, asyncio.Future[None]] = {}
        self._unacked: set[int] = set()  # QoS > 0 message ids not yet acknowledged
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped_qos0 = 0  # QoS 0 publishes made with no connection (not sent)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._resubscribe_task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._client = self._make_client()

    # ----------------------------------------------------------------- set-up
    def _make_client(self) -> paho.Client:
        opts = self.options
        client = CoalescingClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        client.max_inflight_messages_set(opts.max_inflight)
        client.max_queued_messages_set(0)
        if opts.will is not None:
            client.will_set(opts.will.topic, opts.will.payload, opts.will.qos, opts.will.retain)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._dispatch
        return client

    def _connect_properties(self) -> Properties:
        props = FastProperties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.options.session_expiry_s
        props.ReceiveMaximum = min(65535, max(1, self.options.max_inflight))
        return props

    # ----------------------------------------------------------------- connect
    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (retrying refused TCP connects) until CONNACK or ``timeout_s``."""
        self._closing = False
        try:
            async with asyncio.timeout(timeout_s):
                await self._connect_until_acked()
        except TimeoutError as exc:
            raise MqttTimeout(f"connect of {self.client_id}", timeout_s) from exc
        await asyncio.sleep(0)  # the connect hook, scheduled by the CONNACK, has run on return
        if self.options.subscriptions:
            await self.subscribe(self.options.subscriptions, timeout_s)
            self._subscribed_once = True
        self.ready.set()
        _ticker().add(self)

    async def _connect_until_acked(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            self._connect_result = self._loop.create_future()
            try:
                self._client.connect(
                    self.broker.host,
                    self.broker.port,
                    keepalive=self.options.keepalive_s,
                    clean_start=self.options.clean_start,
                    properties=self._connect_properties(),
                )
            except OSError as exc:
                log.debug("mqtt.connect_retry client=%s error=%s", self.client_id, exc)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            reason = await self._connect_result
            if reason.is_failure:
                raise MqttConnectError(self.client_id, str(reason))
            return

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connect_result is not None and not self._connect_result.done():
            self._connect_result.set_result(reason)
        if reason.is_failure:
            return
        self.connected.set()
        resumed = bool(flags.session_present)
        log.debug("mqtt.connected client=%s resumed=%s", self.client_id, resumed)
        if self._subscribed_once:
            # Subscribe again even when the broker says it kept our session: one restored
            # from an older autosave can hold stale subscriptions. SUBSCRIBE is idempotent.
            self._resubscribe_task = self._loop.create_task(
                self._resubscribe(), name=f"mqtt-resubscribe-{self.client_id}"
            )
        if self._on_connect_hook is not None:
            # paho resends what it kept queued only after this callback returns: run the
            # hook after that, so what it publishes goes out behind the older messages
            # (a retained state queued during an outage must not overwrite a newer one)
            self._loop.call_soon(self._run_connect_hook, resumed)

    def _run_connect_hook(self, resumed: bool) -> None:
        if self._on_connect_hook is None:
            return
        try:
            self._on_connect_hook(self, resumed)
        except Exception:  # a bad hook must not kill the connection
            log.exception("mqtt.connect_hook_failed client=%s", self.client_id)

    async def _resubscribe(self) -> None:
        try:
            await self.subscribe(self.options.subscriptions)
        except (MqttTimeout, MqttConnectError, asyncio.CancelledError) as exc:
            log.warning("mqtt.resubscribe_failed client=%s error=%s", self.client_id, exc)
            return
        self.ready.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.ready.clear()
        if self._connect_result is not None and not self._connect_result.done():
            self._connect_result.set_result(reason)
        # A SUBSCRIBE is not resent by paho: its waiter fails. A QoS > 0 PUBLISH is (after
        # the next CONNACK), so its PUBACK waiter keeps waiting, up to its own timeout.
        for waiter in self._pending_subacks.values():
            if not waiter.done():
                waiter.set_exception(
                    MqttConnectError(self.client_id, f"connection lost before SUBACK: {reason}")
                )
        self._pending_subacks.clear()
        if not self._closing and self.options.auto_reconnect:
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._loop.create_task(
                self._reconnect_forever(), name=f"mqtt-reconnect-{self.client_id}"
            )

    async def _reconnect_forever(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closing and not self.connected.is_set():
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)
            try:
                self._connect_result = self._loop.create_future()
                self._client.reconnect()
                reason = await asyncio.wait_for(self._connect_result, RECONNECT_MAX_S)
            except (OSError, TimeoutError) as exc:
                log.debug("mqtt.reconnect_failed client=%s error=%s", self.client_id, exc)
                continue
            if not reason.is_failure:
                self.reconnects += 1
                log.info("mqtt.reconnected client=%s", self.client_id)

    # ----------------------------------------------------------------- traffic
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Queue a publish; returns its message id. Never raises for a broker outage.

        QoS > 0: paho keeps the message until its PUBACK and resends it after the next
        CONNACK, so it is taken whether the connection is up or not, and counted as
        unacknowledged (``flush``) until then. QoS 0 with no connection is dropped and
        counted in ``dropped_qos0``. ``MqttPublishRefused``: paho would not queue it.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            # max_queued_messages (the driver sets none) or all 65535 message ids in use
            raise MqttPublishRefused(self.client_id, topic, "client queue full")
        if qos == 0:
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.dropped_qos0 += 1
            return info.mid
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttPublishRefused(self.client_id, topic, paho.error_string(rc))
        # NO_CONN: paho left it in its queue (state "publish") for the next CONNACK
        self._unacked.add(info.mid)
        self._drained.clear()
        return info.mid

    async def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every QoS > 0 publish made so far has been acknowledged (across
        reconnects: a message queued while the connection is down counts too)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError as exc:
            raise MqttTimeout(f"{len(self._unacked)} unacknowledged publishes", timeout_s) from exc

    async def publish_and_wait(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1), through reconnects: one made
        while the connection is down completes after the reconnect's PUBACK."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        mid = self.publish(topic, payload, qos, retain, properties)
        if mid not in self._unacked:
            return
        self._pending_pubacks[mid] = waiter
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError as exc:
            raise MqttTimeout(f"PUBACK for {topic}", timeout_s) from exc
        finally:
            self._pending_pubacks.pop(mid, None)

    async def subscribe(self, filters: list[tuple[str, int]], timeout_s: float = 10.0) -> None:
        """Subscribe in batches and wait for every SUBACK; raise on a refused filter."""
        for start in range(0, len(filters), SUBSCRIBE_BATCH):
            batch = filters[start : start + SUBSCRIBE_BATCH]
            waiter: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
            result, mid = self._client.subscribe(batch)
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise MqttConnectError(self.client_id, f"subscribe failed: {result}")
            self._pending_subacks[mid] = waiter
            try:
                async with asyncio.timeout(timeout_s):
                    codes = await waiter
            except TimeoutError as exc:
                raise MqttTimeout(f"SUBACK for {len(batch)} filters", timeout_s) from exc
            finally:
                self._pending_subacks.pop(mid, None)
            refused = [f for (f, _), code in zip(batch, codes, strict=False) if code.is_failure]
            if refused:
                raise MqttConnectError(self.client_id, f"subscription refused: {refused[:3]}")

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        waiter = self._pending_subacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(codes)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._unacked.discard(mid)
        if not self._unacked:
            self._drained.set()
        waiter = self._pending_pubacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _dispatch(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(message)
        except Exception:  # a bad handler must not kill the connection
            log.exception("mqtt.handler_failed client=%s topic=%s", self.client_id, message.topic)

    # ----------------------------------------------------------------- close
    async def disconnect(self) -> None:
        """Clean DISCONNECT: the broker does not publish the Will."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.connected.is_set():
            self._client.disconnect()
            # give the event loop a moment to flush the DISCONNECT packet
            for _ in range(50):
                if self._client.socket() is None:
                    break
                await asyncio.sleep(0.01)
        self._close_socket()

    def drop(self) -> None:
        """Cut the TCP connection without DISCONNECT: the broker publishes the Will."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _close_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            self._forget(sock)
            # through paho, so that it forgets the socket too: a publish made afterwards
            # is queued for the next connect instead of failing on a closed descriptor
            with contextlib.suppress(OSError):
                self._client._sock_close()
        self.connected.clear()
        self.ready.clear()

    # ----------------------------------------------------------------- paho socket callbacks
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle on; with delayed ACKs that costs ~40 ms per round trip.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._reading_paused:
            self._loop.add_reader(sock, self._read)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._forget(sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _forget(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _read(self) -> None:
        self._client.loop_read()

    def _misc(self) -> None:
        if self._client.socket() is not None:
            self._client.loop_misc()

    # ----------------------------------------------------------------- backpressure
    def pause_reading(self) -> None:
        """Stop reading the socket: the broker and TCP hold what comes meanwhile.
        Keepalive answers are not read either, so a pause longer than about the
        keepalive ends in a reconnect."""
        self._reading_paused = True
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)

    def resume_reading(self) -> None:
        self._reading_paused = False
        sock = self._client.socket()
        if sock is not None:
            self._loop.add_reader(sock, self._read)
