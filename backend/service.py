"""The backend process: wiring, the background loops, and one-shot steps for tests.

``Backend.running()`` owns a ``TaskGroup`` with one named task per job: ``backend.money``
(money intents), ``backend.relay`` (outbox), ``backend.notify``, ``backend.scheduler``,
``backend.watchdog`` (deadlines), ``backend.reconciler`` (settlement),
``backend.charges`` (subscription months) and ``backend.consumer`` (``caas:events``).
The first three are woken by the commit that gives them work (``wakeups``); every job
also polls every ``backend_poll_s``. The payment provider is another service, reached
over HTTP (``provider_http``); its webhooks arrive at ``receive_webhook``. The metrics
(``backend/metrics.py``) are one registry per ``Backend``, exported by
``export_metrics``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from backend.adapters.channels import Channel, LogChannel, SmtpChannel
from backend.adapters.gateway_client import GatewayClient, HttpGatewayClient
from backend.adapters.maintenance import MaintenanceClient, SimulatedMaintenance
from backend.adapters.payments import PaymentProvider, verify
from backend.adapters.provider_http import HttpPaymentProvider
from backend.config import BackendSettings
from backend.domain.events import Policy
from backend.domain.months import month_bounds, previous_month
from backend.errors import InvalidRequest
from backend.logs import log
from backend.metrics import BackendMetrics, SettlementFailed, StoreSnapshot, TicketOpened
from backend.services.purchases import PurchaseService
from backend.store import catalog, gauges, inbox, wakeups
from backend.store.db import make_engine, make_sessions, make_statement_sessions, migrate
from backend.store.unit_of_work import Units
from backend.store.wakeups import Wakeups
from backend.workers import jobs
from backend.workers.charges import ChargeExecutor
from backend.workers.consumer import EventConsumer
from backend.workers.loops import Step, run_loop
from backend.workers.money import MoneyExecutor
from backend.workers.notify import Dispatcher
from backend.workers.reconcile import Reconciler, Watchdog
from backend.workers.relay import OutboxRelay
from backend.workers.scheduler import Scheduler, ensure
from protocol.codec import loads_object
from protocol.errors import PayloadRejected
from protocol.redis_connect import AnyRedis, open_redis
from protocol.timeutil import Clock, SystemClock


def default_channels(settings: BackendSettings) -> dict[str, Channel]:
    email: Channel = (
        SmtpChannel(settings.backend_smtp_url, settings.backend_mail_from)
        if settings.backend_smtp_url
        else LogChannel("email")
    )
    return {"email": email, "push": LogChannel("push"), "sms": LogChannel("sms")}


class Backend:
    def __init__(
        self,
        settings: BackendSettings,
        *,
        clock: Clock | None = None,
        provider: PaymentProvider | None = None,
        maintenance: MaintenanceClient | None = None,
        gateway: GatewayClient | None = None,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        # settings first: a ConfigError (one line naming the variable) leaves nothing open
        self.webhook_secret = settings.resolved_webhook_secret()
        self._own_provider: HttpPaymentProvider | None = None  # close only what we created
        if provider is None:
            provider = self._own_provider = HttpPaymentProvider.connect(
                *settings.resolved_provider()
            )
        self.provider: PaymentProvider = provider
        self.metrics = BackendMetrics()
        # who holds the metrics lease: this process, among the others on the database
        self.instance = f"{settings.backend_consumer_name}/{uuid.uuid4().hex[:12]}"
        self._exporting = False  # whether this process held the metrics lease last time
        self.engine = make_engine(settings.resolved_database_url())
        self.wakeups = Wakeups()
        self.sessions = make_sessions(self.engine)
        self.statements = make_statement_sessions(self.engine)  # claims, notices' outcomes
        self.policy = Policy(settings.backend_expiry_notice_lead_s, settings.backend_apology_offer)
        self.units = Units(self.sessions, self.wakeups, self.clock, self.policy, self.metrics)
        self.maintenance = maintenance or SimulatedMaintenance(
            settings.backend_workshop_url,
            {v.strip() for v in settings.backend_maintenance_overdue_vins.split(",") if v.strip()},
        )
        self._owns_gateway = gateway is None  # close only what we created
        self.gateway = gateway or HttpGatewayClient.connect(
            settings.gateway_url, settings.resolved_gateway_token()
        )
        self._watch_dependencies()
        self.executor = MoneyExecutor(
            self.units,
            self.provider,
            settings.backend_money_concurrency,
            settings.backend_claim_lease_s,
            claims=self.statements,
        )
        self.dispatcher = Dispatcher(
            self.statements,
            channels or default_channels(settings),
            self.clock,
            settings.backend_claim_lease_s,
            self.metrics,
        )
        self.relay = OutboxRelay(
            self.units,
            self.gateway,
            settings.backend_outbox_initial_backoff_s,
            settings.backend_outbox_max_backoff_s,
            settings.backend_relay_concurrency,
            settings.backend_claim_lease_s,
            claims=self.statements,
        )
        self.watchdog = Watchdog(self.units, self.gateway)
        self.reconciler = Reconciler(
            self.sessions,
            self.provider,
            self.clock,
            settings.backend_settlement_grace_s,
            self.metrics,
        )
        excluded = {s.strip() for s in settings.backend_exclude_after_cancel.split(",")}
        self.catalog = catalog.CatalogCache(frozenset(excluded - {""}), self.metrics.expect)
        self.purchases = PurchaseService(
            self.units,
            self.catalog,
            self.maintenance,
            self.executor,
            settings.backend_activation_deadline_s,
        )
        self.charges = ChargeExecutor(self.units, self.provider)
        self.scheduler = Scheduler(self.units, jobs.HANDLERS, self._ensure_month_end_billing)
        self.redis: AnyRedis | None = None
        self.consumer: EventConsumer | None = None

    def _watch_dependencies(self) -> None:
        """Our HTTP adapters report whether the provider and the gateway answer (a test's
        fake does not)."""
        if isinstance(self.provider, HttpPaymentProvider):
            self.provider.on_health = self.metrics.dependency("provider")
        if isinstance(self.gateway, HttpGatewayClient):
            self.gateway.on_health = self.metrics.dependency("gateway")

    async def _ensure_month_end_billing(self, now: float) -> None:
        """The job that bills the month that just ended (one per month: unique key)."""
        month = previous_month(now)
        _, end = month_bounds(month)
        await ensure(self.sessions, "billing_month", f"billing:{month}", end, now)

    async def start(self) -> None:
        """Migrate, seed the catalog, connect to Redis (when configured)."""
        await migrate(self.engine)
        async with self.sessions.begin() as session:
            await catalog.seed_catalog(session, self.clock.now())
            await self.catalog.reload(session)  # and the metrics' series: on_load
        redis_url = self.settings.resolved_redis_url()
        if redis_url and self.redis is None:
            s = self.settings
            # any node of a Redis Cluster works too; the timeout outlasts the consumer's
            # 1 s blocking reads and ends a call to a node that vanished
            self.redis = await open_redis(
                redis_url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=10.0
            )
            self.consumer = EventConsumer(
                self.redis,
                s.events_stream,
                s.backend_consumer_group,
                s.backend_consumer_name,
                self.units,
            )
            await self.consumer.ensure_group()
        log("backend.started", redis=bool(redis_url))

    async def settle(self) -> None:
        """Run the money intents and send the queued notifications (after a commit)."""
        await self.executor.run_pending()
        await self.dispatcher.dispatch_pending()

    async def work_once(self) -> None:
        """One pass of every periodic job (tests drive the backend with this)."""
        await self.settle()
        await self.scheduler.run_once()
        await self.relay.run_once()
        await self.watchdog.run_once()
        await self.reconciler.run_once()
        await self.charges.run_pending()
        await self.settle()

    async def receive_webhook(self, body: bytes, headers: dict[str, str]) -> str:
        """Verify, then apply a provider webhook exactly once (inbox on ``event_id``)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        verify(self.webhook_secret, lowered.get("caas-signature"), body, self.clock.now())
        try:
            payload = loads_object(body)  # size and depth bounded before parsing
        except PayloadRejected as exc:
            raise InvalidRequest("bad_webhook", f"body refused: {exc.reason}") from None
        problem = inbox.provider_event_problem(payload)
        if problem is not None:  # before any SQL: no value the database cannot hold
            raise InvalidRequest("bad_webhook", problem)
        now = self.clock.now()
        try:
            async with self.sessions.begin() as session:
                outcome = await inbox.consume_provider_event(
                    session, payload["event_id"], payload, now
                )
        except IntegrityError:
            return "duplicate"
        log("webhook.received", type=payload.get("type"), outcome=outcome)
        if outcome == "applied" and inbox.SETTLEMENT_OF.get(payload["type"]) == "FAILED":
            # committed: the failed settlement and its ticket (``inbox._settle``)
            self.metrics.observe([SettlementFailed(), TicketOpened("settlement_failed")])
        return outcome

    async def export_metrics(self) -> bytes:
        """The Prometheus text: this process's counters, and the gauges read from the
        database and Redis if this process holds the metrics lease. A database that does
        not answer costs the gauges, never the scrape."""
        now, snapshot = self.clock.now(), None
        try:
            async with self.sessions.begin() as session:
                ttl_s = self.settings.backend_metrics_lease_s
                self._exporting = await gauges.hold_lease(session, self.instance, now, ttl_s)
                if self._exporting:
                    snapshot = await gauges.read_snapshot(session, now)
            if snapshot is not None and self.consumer is not None:
                snapshot = await self._with_lag(snapshot)
        except Exception as exc:
            log("metrics.gauges_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        return self.metrics.render(snapshot)

    async def _with_lag(self, snapshot: StoreSnapshot) -> StoreSnapshot:
        assert self.consumer is not None
        try:
            lag = await self.consumer.lag()
        except Exception as exc:  # Redis away: the other gauges still go out
            log("metrics.lag_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            return snapshot
        return replace(snapshot, consumer_lag=lag)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Backend]:
        await self.start()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(job, name=f"backend.{name}") for name, job in self._jobs()]
            if self.consumer is not None:
                tasks.append(tg.create_task(self.consumer.run(), name="backend.consumer"))
            try:
                yield self
            finally:
                for task in tasks:
                    task.cancel()
        await self.close()

    def _jobs(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """One loop per job. Money, relay and notify run again at once after a pass that
        did work; the others (rare, time-driven work) only poll."""
        poll_s = self.settings.backend_poll_s

        def woken(name: str, step: Step) -> tuple[str, Coroutine[Any, Any, None]]:
            return name, run_loop(name, step, self.wakeups.event(name), poll_s)

        def polled(name: str, step: Step) -> tuple[str, Coroutine[Any, Any, None]]:
            async def quiet() -> None:  # no count: never "busy"
                await step()

            return name, run_loop(name, quiet, asyncio.Event(), poll_s)

        return [
            woken(wakeups.MONEY, self.executor.run_pending),
            woken(wakeups.RELAY, self.relay.run_once),
            woken(wakeups.NOTIFY, self.dispatcher.dispatch_pending),
            polled("scheduler", self.scheduler.run_once),
            polled("watchdog", self.watchdog.run_once),
            polled("reconciler", self.reconciler.run_once),
            polled("charges", self.charges.run_pending),
        ]

    async def close(self) -> None:
        if self._exporting:  # another process may export the gauges at once
            with suppress(Exception):
                async with self.sessions.begin() as session:
                    await gauges.release_lease(session, self.instance)
            self._exporting = False
        if self.redis is not None:
            with suppress(Exception):
                await self.redis.aclose()
            self.redis = None
        if self._owns_gateway and isinstance(self.gateway, HttpGatewayClient):
            await self.gateway.aclose()
        if self._own_provider is not None:
            await self._own_provider.aclose()
        await self.engine.dispose()
