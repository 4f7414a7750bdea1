"""The running gateway worker: Redis + MQTT connections and the background loops.

``async with Gateway(settings).running():`` connects, starts the loops in a
``TaskGroup`` (timer worker, inbound consumers, twin bootstrap) and stops them on
exit. The FastAPI lifespan owns exactly this (``api.create_app``).

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
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from gateway.activation import Action, Activation, State
from gateway.config import ResolvedSettings
from gateway.dispatcher import INBOUND_LEAVES, Dispatcher, Inbound
from gateway.engine import Engine
from gateway.inbound import InboundHandler
from gateway.keys import Keys
from gateway.metrics import GatewayMetrics
from gateway.reconcile import Reconciler
from gateway.retry import cancel_requested, with_redis
from gateway.store import Store
from gateway.timers import TimerWorker
from protocol.mqtt import BrokerAddress, ConnectionOptions, MqttConnection
from protocol.signing import Signer, load_private_key, public_pem
from protocol.timeutil import Clock, SystemClock
from protocol.topics import Topics

log = logging.getLogger(__name__)
CONSUMERS = 16
API_CONNECTIONS = 64  # live queries hold one each while they BLPOP
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
        self._redis: aioredis.Redis | None = None
        self._dispatcher: Dispatcher | None = None
        self._engine: Engine | None = None
        self._store: Store | None = None
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
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "gateway not running"
        return self._dispatcher

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        inbound, timers = self._wire()
        assert self._redis is not None
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
                try:
                    yield self
                finally:
                    timers.stop()
                    for task in tasks:
                        task.cancel()
        finally:
            await self.engine.aclose()
            await self.store.aclose()
            await self.dispatcher.stop()
            await self._redis.aclose()
            log.info("gateway.stopped worker=%s", self.worker_id)

    def _wire(self) -> tuple[InboundHandler, TimerWorker]:
        """Build the connections and the parts that use them."""
        base = self.cfg.base
        pool = aioredis.BlockingConnectionPool.from_url(
            self.cfg.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            max_connections=base.gateway_concurrency + CONSUMERS + API_CONNECTIONS,
            timeout=30,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        store = self._store = Store(self._redis, self.keys)
        dispatcher = self._dispatcher = Dispatcher(
            self.broker, self.topics, self.signer, self.clock, self.worker_id, self.cfg.share_group
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
        self.metrics.watch_reconnects(lambda: dispatcher.conn.reconnects)
        self.metrics.watch_pipeline(lambda: store.pipeline.calls, lambda: store.pipeline.batches)
        return InboundHandler(store, engine, reconciler, self.metrics), timers

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
            item = await queue.get()
            try:
                await with_redis(partial(inbound.handle, item), "inbound", 120.0)
            except Exception:
                log.exception("inbound.failed leaf=%s vin=%s", item.leaf, item.vin)
            if cancel_requested():
                raise asyncio.CancelledError

    async def _bootstrap(self) -> None:
        """Read the retained state/presence once through a plain subscription."""
        queue = self.dispatcher.inbound
        arrived = asyncio.Event()

        def on_message(message: paho.MQTTMessage) -> None:
            parsed = self.topics.parse(message.topic)
            if parsed is None or parsed[1] not in INBOUND_LEAVES or not message.retain:
                return
            arrived.set()
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(
                    Inbound(parsed[1], parsed[0], bytes(message.payload), None, self.clock.now())
                )

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
            self.bootstrapped.set()

    async def ready(self) -> bool:
        if self._redis is None or self._dispatcher is None or not self.dispatcher.connected:
            return False
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.ping())
        except Exception:
            return False


async def _until_quiet(arrived: asyncio.Event, quiet_s: float) -> None:
    """Return once ``arrived`` has not been set for ``quiet_s``."""
    while True:
        arrived.clear()
        try:
            async with asyncio.timeout(quiet_s):
                await arrived.wait()
        except TimeoutError:
            return
