"""The running gateway worker: Redis + MQTT connections and the background loops.

``async with Gateway(settings).running():`` connects, starts the loops in a
``TaskGroup`` (timer worker, inbound consumers, twin bootstrap, gauge exporter, events
trimmer; on a Redis Cluster the events forwarder) and stops them on exit. The FastAPI
lifespan owns exactly this (``api.create_app``). The worker is ready (``/readyz``) once
the bootstrap is done.

MQTT 5 (§4.8.2) lets a broker keep retained messages from shared subscriptions, so
at start a short-lived plain subscription reads the retained state/presence once into
the twins ("bootstrap"); from then on the shared subscriptions carry the live changes.
mosquitto 2.0 does deliver retained messages to shared subscriptions as well, so there
each twin is loaded more than once at start (harmless: updates are ordered by ``seq``
and vehicle time; see docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import paho.mqtt.client as paho
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from gateway.activation import Action, Activation, State
from gateway.config import ResolvedSettings
from gateway.dispatcher import Dispatcher
from gateway.engine import Engine
from gateway.errors import GatewayError
from gateway.exporter import GaugeExporter
from gateway.forwarder import EventsForwarder
from gateway.inbound import InboundHandler
from gateway.keys import Keys, layout
from gateway.metrics import GatewayMetrics
from gateway.queries import INBOX_BLOCK_S, LiveQueries
from gateway.reconcile import Reconciler
from gateway.rejections import Rejections
from gateway.retry import TRANSIENT, with_redis
from gateway.store import Store
from gateway.timers import TimerWorker
from gateway.trimming import EventsTrimmer
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.redis_connect import AnyRedis, open_redis
from protocol.signing import Signer, load_private_key, public_pem
from protocol.tasks import cancel_requested
from protocol.timeutil import Clock, SystemClock
from protocol.topics import Topics

log = logging.getLogger(__name__)
CONSUMERS = 16
API_CONNECTIONS = 32  # API routes' reads (live queries wait in memory, holding none)
REDIS_SOCKET_TIMEOUT_S = 5.0  # no command of ours blocks in Redis (the inbox BLPOP has its own)
REDIS_POOL_WAIT_S = 5.0  # an exhausted pool answers 503 after this, rather than hang
BOOTSTRAP_QUIET_S = 0.5
BOOTSTRAP_MAX_S = 10.0


class Gateway:
    def __init__(
        self, cfg: ResolvedSettings, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.rng = rng
        self.metrics = GatewayMetrics()
        self.keys = Keys(cfg.base.gateway_key_prefix, cfg.base.events_stream)
        self.topics = Topics(cfg.base.topic_root)
        key = load_private_key(cfg.signing_key)
        self.signer = Signer(key)
        self.public_pem = public_pem(key.public_key())
        self.broker = BrokerAddress.from_url(cfg.mqtt_url)
        self.worker_id = f"{cfg.base.gateway_worker_id}-{uuid.uuid4().hex[:6]}"
        self._redis: AnyRedis | None = None
        self._inbox_redis: AnyRedis | None = None
        self._queries: LiveQueries | None = None
        self._dispatcher: Dispatcher | None = None
        self._engine: Engine | None = None
        self._store: Store | None = None
        self._exporter: GaugeExporter | None = None
        self._trimmer: EventsTrimmer | None = None
        self._forwarder: EventsForwarder | None = None
        self.bootstrapped = asyncio.Event()

    # the parts, available inside ``running()``
    @property
    def store(self) -> Store:
        assert self._store is not None, "gateway not running"
        return self._store

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "gateway not running"
        return self._engine

    @property
    def queries(self) -> LiveQueries:
        assert self._queries is not None, "gateway not running"
        return self._queries

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "gateway not running"
        return self._dispatcher

    @property
    def exporter(self) -> GaugeExporter:
        assert self._exporter is not None, "gateway not running"
        return self._exporter

    @property
    def trimmer(self) -> EventsTrimmer:
        assert self._trimmer is not None, "gateway not running"
        return self._trimmer

    @property
    def forwarder(self) -> EventsForwarder | None:
        """The events forwarder (cluster mode only)."""
        return self._forwarder

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        await self._connect()
        inbound, timers = self._wire()
        assert self._redis is not None
        assert self._inbox_redis is not None
        try:
            await with_redis(self._redis.ping, "ping", 15.0)
            await self.dispatcher.start()
            log.info("gateway.started worker=%s topic_root=%s", self.worker_id, self.topics.root)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(timers.run(), name="timers")]
                tasks += [
                    tg.create_task(self._consume(inbound), name=f"inbound-{i}")
                    for i in range(CONSUMERS)
                ]
                tasks.append(tg.create_task(self._bootstrap(), name="twin-bootstrap"))
                tasks.append(
                    tg.create_task(self.queries.run(self._inbox_redis, self.keys), name="inbox")
                )
                tasks.append(tg.create_task(self.exporter.run(), name="gauge-exporter"))
                tasks.append(tg.create_task(self.trimmer.run(), name="events-trimmer"))
                if self._forwarder is not None:
                    forwarding = self._forwarder.run()
                    tasks.append(tg.create_task(forwarding, name="events-forwarder"))
                try:
                    yield self
                finally:
                    timers.stop()
                    for task in tasks:
                        task.cancel()
        finally:
            await self.exporter.release()
            if self._forwarder is not None:
                await self._forwarder.release()
            await self.engine.aclose()
            await self.store.aclose()
            await self.dispatcher.stop()
            await self._redis.aclose()
            await self._inbox_redis.aclose()
            log.info("gateway.stopped worker=%s", self.worker_id)

    async def _connect(self) -> None:
        """Open Redis: a single node, or a cluster when CAAS_REDIS_URL names a node of
        one (then the keys are sharded: ``keys.Keys``)."""
        base = self.cfg.base
        self._redis = await open_redis(
            self.cfg.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            max_connections=base.gateway_concurrency + CONSUMERS + API_CONNECTIONS,
            pool_timeout=REDIS_POOL_WAIT_S,
        )
        # the inbox loop's BLPOP gets a connection of its own, never one of the pool's
        self._inbox_redis = await open_redis(
            self.cfg.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=INBOX_BLOCK_S + REDIS_SOCKET_TIMEOUT_S,
        )
        if isinstance(self._redis, RedisCluster):
            self.keys = layout(base.gateway_key_prefix, base.events_stream, cluster=True)
            log.info("gateway.redis_cluster shards=%d", self.keys.shards)

    def _wire(self) -> tuple[InboundHandler, TimerWorker]:
        """Build the parts that use the connections."""
        base = self.cfg.base
        assert self._redis is not None
        store = self._store = Store(self._redis, self.keys)
        if self.keys.cluster:
            forwarder = self._forwarder = EventsForwarder(store, self.worker_id)
            store.events_written = forwarder.poke
        rejections = Rejections(self.metrics)
        dispatcher = self._dispatcher = Dispatcher(
            self.broker, self.topics, self.signer, self.clock, self.worker_id,
            share_group=self.cfg.share_group, rejections=rejections,
            inbound_max_bytes=base.gateway_inbound_max_bytes,
            keepalive_s=base.gateway_mqtt_keepalive_s,
        )  # fmt: skip
        queries = self._queries = LiveQueries(
            store, dispatcher, self.clock, self.metrics, self.worker_id
        )
        engine = self._engine = Engine(store, dispatcher, self.clock, self.metrics, self.rng)
        reconciler = Reconciler(store, self.cfg.policy, self.clock, self.metrics)
        engine.after_terminal = self._after_terminal(reconciler)
        timers = TimerWorker(
            store, engine, self.clock, lease_s=base.gateway_lease_s,
            poll_s=base.gateway_timer_poll_s, batch=base.gateway_timer_batch,
            concurrency=base.gateway_concurrency,
        )  # fmt: skip
        engine.waker = timers
        self._exporter = GaugeExporter(store, self.worker_id, base.gateway_gauge_lease_s)
        self._trimmer = EventsTrimmer(
            store, self.clock, base.events_keep_s, base.gateway_events_trim_s, self.rng
        )
        self.metrics.watch_reconnects(lambda: dispatcher.conn.reconnects)
        self.metrics.watch_connected(lambda: dispatcher.connected)
        self.metrics.watch_send_failures(lambda: dispatcher.send_failures + engine.send_failures)
        self.metrics.watch_pipeline(lambda: store.pipeline.calls, lambda: store.pipeline.batches)
        backlog = dispatcher.inbound
        self.metrics.watch_backlog(lambda: backlog.bytes, lambda: backlog.pauses)
        handler = InboundHandler(
            store, engine, reconciler, self.metrics, rejections, queries.deliver
        )
        return handler, timers

    def _after_terminal(self, reconciler: Reconciler) -> Callable[[Activation], Awaitable[None]]:
        """An activate that ended without SUCCEEDED may still have landed: reconcile."""

        async def check(act: Activation) -> None:
            if act.action is Action.ACTIVATE and act.state is not State.SUCCEEDED:
                twin = await self.store.twin(act.vin)
                await reconciler.check(act.vin, twin.state if twin else None)

        return check

    async def _consume(self, inbound: InboundHandler) -> None:
        queue = self.dispatcher.inbound
        while True:
            number, item = await queue.take()
            try:
                await with_redis(partial(inbound.handle, item), "inbound", 120.0)
            except (GatewayError, *TRANSIENT) as exc:  # the activation's timers cover it
                log.warning("inbound.failed leaf=%s vin=%s error=%r", item.leaf, item.vin, exc)
            except Exception:  # a bug: keep the traceback
                log.exception("inbound.crashed leaf=%s vin=%s", item.leaf, item.vin)
            finally:
                queue.done(number)  # or the bootstrap would wait on it for good
            if cancel_requested():
                raise asyncio.CancelledError

    async def _bootstrap(self) -> None:
        """Load the twins from the retained state/presence; then the worker is ready.

        Ready means the retained messages are in Redis, not only read: an activation
        accepted right after ``/readyz`` says 200 then finds its vehicle's twin. The
        whole wait is bounded (``BOOTSTRAP_MAX_S`` each for reading and for handling):
        a twin still missing then is filled by live traffic or a status probe, and a
        worker that never became ready would help nobody.
        """
        try:
            await self._read_retained()
            backlog = self.dispatcher.inbound
            mark = backlog.accepted  # the retained messages are the items before this
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BOOTSTRAP_MAX_S):
                    await backlog.wait_handled(mark)
        finally:
            self.bootstrapped.set()
            log.info("twin.bootstrap_done worker=%s", self.worker_id)

    async def _read_retained(self) -> None:
        """Read the retained state/presence once through a plain subscription."""
        arrived = asyncio.Event()

        def on_message(message: paho.MQTTMessage) -> None:
            if message.retain:
                arrived.set()
                self.dispatcher.accept(message)

        filters = [(self.topics.all_of(leaf), 1) for leaf in ("state", "presence")]
        conn = MqttConnection(
            self.broker,
            ConnectionOptions(client_id=f"{self.worker_id}-boot", subscriptions=filters),
            on_message=on_message,
        )
        try:
            await conn.connect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BOOTSTRAP_MAX_S):
                    await _until_quiet(arrived, BOOTSTRAP_QUIET_S)
        except Exception as exc:  # twins then fill from live traffic and status probes
            log.warning("twin.bootstrap_failed error=%r", exc)
        finally:
            await conn.disconnect()

    async def not_ready(self) -> str | None:
        """Why this worker should not take work now (None: ready)."""
        connected = self._dispatcher is not None and self.dispatcher.connected
        return readiness_problem(
            broker_connected=connected,
            redis_answers=connected and await self._redis_answers(),
            bootstrapped=self.bootstrapped.is_set(),
        )

    async def _redis_answers(self) -> bool:
        if self._redis is None:
            return False
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.ping())
        except Exception:
            return False


def readiness_problem(
    *, broker_connected: bool, redis_answers: bool, bootstrapped: bool
) -> str | None:
    """The first thing that keeps a worker from taking work, in the order an operator
    fixes them (a worker without its broker cannot bootstrap either); None: ready."""
    if not broker_connected:
        return "broker_disconnected"
    if not redis_answers:
        return "redis_unavailable"
    if not bootstrapped:
        return "twin_bootstrap_running"
    return None


async def _until_quiet(arrived: asyncio.Event, quiet_s: float) -> None:
    """Return once ``arrived`` has not been set for ``quiet_s``."""
    while True:
        arrived.clear()
        try:
            async with asyncio.timeout(quiet_s):
                await arrived.wait()
        except TimeoutError:
            return
