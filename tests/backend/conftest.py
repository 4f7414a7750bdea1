"""Backend fixtures: a Backend wired to fakes (injected clock, simulated VSS, fake
gateway, recording channels) and to the real payment provider service logic over HTTP
(``tests.paysim.kit``: the paysim app in this process, its SQLite file in the test's
folder, the same clock), on SQLite, or on PostgreSQL (one private cluster per session, a
fresh database per test), and real Redis (a distinct db per test) for the consumer.
``finish()`` drains the loops and asserts the money invariants: every integration test
ends with it."""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from backend.adapters.maintenance import SimulatedMaintenance
from backend.audit import money as invariants
from backend.config import BackendSettings
from backend.http.app import create_app
from backend.service import Backend
from backend.services.auth import issue_token
from backend.services.seed import SeededCustomer, create_customer
from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.stack import LocalStack
from paysim.modes import FailureModes
from protocol.timeutil import ManualClock
from tests.backend.fakes import FakeGateway, RecordingChannel
from tests.paysim.kit import InProcessProvider

SECRET = "test-webhook-secret"
# models of the fleet (vehicle_sim/fleet.py MODELS), which the catalog's rules name:
# a Tourer runs every feature, an Urbano all but autonomous driving
VINS = [
    ("WVWZZZ1JZ3W386752", "Tourer"),
    ("WVWZZZ1JZ3W386753", "Tourer"),
    ("WVWZZZ1JZ3W386754", "Urbano"),
]
OPERATOR = "Test Operator"
_redis_dbs = itertools.count(0)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PostgresSettings(port=free_port(), password=secrets.token_hex(8)))
    server.start()
    try:
        yield server
    finally:
        server.remove()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'backend.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Integration tests run once per database engine."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def redis_url(stack: LocalStack) -> str:
    """A Redis db of its own, flushed per test (61..63: the gateway tests use 1..60)."""
    assert stack.redis is not None
    return stack.redis.url(61 + next(_redis_dbs) % 3)


@dataclass
class World:
    backend: Backend
    clock: ManualClock
    provider: InProcessProvider
    maintenance: SimulatedMaintenance
    gateway: FakeGateway
    channels: dict[str, RecordingChannel]
    api: httpx.AsyncClient
    alice: SeededCustomer
    bob: SeededCustomer
    ops_token: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_(self, who: SeededCustomer | str) -> dict[str, str]:
        token = who if isinstance(who, str) else who.token
        return {"Authorization": f"Bearer {token}"}

    async def buy(
        self,
        service: str = "climate_plus",
        key: str | None = None,
        vin: str = VINS[0][0],
        **body: Any,
    ) -> httpx.Response:
        payload = {
            "vehicle_id": self.alice.vehicles[vin],
            "service_id": service,
            "duration": {"model": "permanent"},
            **body,
        }
        headers = {**self.as_(self.alice), "Idempotency-Key": key or str(uuid.uuid4())}
        return await self.api.post("/v1/purchases", json=payload, headers=headers)

    async def purchase(self, purchase_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/purchases/{purchase_id}", headers=self.as_(self.alice))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def drain(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            await self.backend.work_once()
            await self.provider.deliver_due()

    async def finish(self) -> None:
        """Drain, then the money invariants must hold."""
        await self.drain()
        async with self.backend.sessions() as session:
            found = await invariants.check(session, self.clock.now())
        assert found == [], found


WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture
def make_world(tmp_path: Path) -> WorldFactory:
    """``async with make_world(db_url, redis_url=…, sim=FailureModes(…)) as w``.

    The provider's state lives in the test's folder: a world made again in the same
    test (``restart_of``, a second process) finds the same authorizations, captures and
    stored answers. ``wrap_provider`` wraps what the backend calls (a crash, a width)."""

    @asynccontextmanager
    async def factory(
        url: str | None = None,
        redis_url: str | None = None,
        sim: FailureModes | None = None,
        wrap_provider: Callable[[Any], Any] | None = None,
        restart_of: World | None = None,
        gateway: Any = None,
        vins: list[tuple[str, str]] | None = None,
        **settings: Any,
    ) -> AsyncIterator[World]:
        clock = ManualClock(1_795_000_000.0)
        env = {
            "database_url": url or sqlite_url(tmp_path),
            "redis_url": redis_url,
            "payment_webhook_secret": SECRET,
            "backend_activation_deadline_s": 3600.0,
            "backend_outbox_initial_backoff_s": 1.0,
            "backend_settlement_grace_s": 60.0,
            "backend_poll_s": 0.02,
            **settings,
        }
        channels = {n: RecordingChannel(n) for n in ("email", "push", "sms")}
        fake = FakeGateway()
        maintenance = SimulatedMaintenance(timeout_s=0.2)
        modes = sim or FailureModes(settle_delay_s=5.0)
        paysim = InProcessProvider(tmp_path / "paysim.sqlite3", clock, modes, SECRET)
        backend = Backend(
            BackendSettings(**env),
            clock=clock,
            maintenance=maintenance,
            gateway=gateway or fake,
            channels=dict(channels),
            provider=wrap_provider(paysim.client) if wrap_provider else paysim.client,
        )
        await backend.start()
        if restart_of is not None:  # same database: the people are already there
            alice, bob, ops = restart_of.alice, restart_of.bob, restart_of.ops_token
        else:
            alice, bob, ops = await _people(backend, clock, vins or VINS[:2])
        app = create_app(backend, manage_lifespan=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as api:
            paysim.sink = api  # the provider's webhooks reach the backend's public route
            yield World(backend, clock, paysim, maintenance, fake, channels, api, alice, bob, ops)
        await backend.close()
        await paysim.aclose()

    return factory


async def _people(
    backend: Backend, clock: ManualClock, alice_vins: list[tuple[str, str]]
) -> tuple[SeededCustomer, SeededCustomer, str]:
    async with backend.sessions.begin() as session:
        alice = await create_customer(
            session,
            "Alice",
            "alice@example.com",
            alice_vins,
            clock.now(),
            phone="+34600000001",
            has_app=True,
        )
        bob = await create_customer(session, "Bob", "bob@example.com", VINS[2:], clock.now())
        ops = await issue_token(session, "ops", None, clock.now(), name=OPERATOR)
    return alice, bob, ops


@pytest.fixture
async def world(make_world: WorldFactory) -> AsyncIterator[World]:
    """A unit-test world on SQLite with fakes everywhere."""
    async with make_world() as w:
        yield w


@pytest.fixture
async def plain_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()
