"""Two backend processes on one PostgreSQL (two ``Backend``s, each with its own engine,
loops, API and channels, one Redis consumer group): the purchases they take, the money
intents, the outbox, the events and the notifications are shared between them, and
every effect happens once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from backend.http.app import create_app
from backend.service import Backend
from backend.store.models import Notification, Purchase
from launcher.postgres import PostgresServer
from tests.backend.conftest import VINS, World, WorldFactory
from tests.backend.fakes import RecordingChannel
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)
OFFERS = {
    "climate_plus": {"model": "permanent"},
    "winter_traction": {"model": "permanent"},
    "power_boost_50": {"model": "temporary", "days": 7},
    "entertainment_pack": {"model": "temporary", "days": 7},
}


def second_backend(w: World, channels: dict[str, RecordingChannel]) -> Backend:
    settings = w.backend.settings.model_copy(update={"backend_consumer_name": "backend-2"})
    return Backend(
        settings,
        clock=w.clock,
        provider=w.backend.provider,  # the same provider, reached over HTTP
        maintenance=w.maintenance,
        gateway=w.gateway,
        channels=dict(channels),
    )


async def buy(api: httpx.AsyncClient, w: World, vin: str, service: str) -> dict[str, Any]:
    body = {"vehicle_id": w.alice.vehicles[vin], "service_id": service, "duration": OFFERS[service]}
    headers = {**w.as_(w.alice), "Idempotency-Key": str(uuid.uuid4())}
    answer = await api.post("/v1/purchases", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def test_two_backends_share_all_work_with_no_double_effect(
    make_world: WorldFactory,
    postgres: PostgresServer,
    redis_url: str,
    plain_redis: aioredis.Redis,
) -> None:
    db_url = postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
    async with make_world(db_url, redis_url=redis_url) as w:
        w.gateway.redis = plain_redis
        w.gateway.outcome = {VINS[0][0]: "succeeded", VINS[1][0]: "failed"}
        theirs = {n: RecordingChannel(n) for n in ("email", "push", "sms")}
        other = second_backend(w, theirs)
        transport = httpx.ASGITransport(app=create_app(other, manage_lifespan=False))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://backend-2") as other_api,
            w.backend.running(),
            other.running(),
        ):
            apis = [w.api, other_api]
            placed = [
                await buy(apis[n % 2], w, vin, service)
                for n, (vin, service) in enumerate(
                    (vin, service) for vin, _ in VINS[:2] for service in OFFERS
                )
            ]

            async def all_settled() -> bool:
                async with w.backend.sessions() as session:
                    states = Counter((await session.scalars(select(Purchase.state))).all())
                    queued = await session.scalar(
                        select(func.count())
                        .select_from(Notification)
                        .where(Notification.status == "QUEUED")
                    )
                return states == {"ACTIVE": 4, "FAILED_NO_CHARGE": 4} and queued == 0

            await eventually(all_settled, 60)
            await w.provider.deliver_due()
        sent = [m for channels in (w.channels, theirs) for c in channels.values() for m in c.sent]
        async with w.backend.sessions() as session:
            rows = await session.scalar(select(func.count()).select_from(Notification))
        assert len(sent) == len(set(sent)) == rows  # every notice once, by one of them
        assert sorted(w.provider.real_captures.values()) == [1, 1, 1, 1]
        requested = Counter(r["activation_id"] for r in w.gateway.requests)
        assert set(requested) == {p["activation_id"] for p in placed}
        await other.close()
        await w.finish()


async def test_one_key_sent_to_both_backends_at_once_makes_one_purchase(
    make_world: WorldFactory, postgres: PostgresServer
) -> None:
    """The same Idempotency-Key posted to both backends at the same moment: one
    purchase, one hold, the same answer twice (the loser's insert of the key fails as
    one statement, and it answers with the winner's purchase)."""
    db_url = postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
    async with make_world(db_url) as w:
        other = second_backend(w, {n: RecordingChannel(n) for n in ("email", "push", "sms")})
        transport = httpx.ASGITransport(app=create_app(other, manage_lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://backend-2") as api:
            body = {
                "vehicle_id": w.alice.vehicles[VINS[0][0]],
                "service_id": "climate_plus",
                "duration": {"model": "permanent"},
            }
            headers = {**w.as_(w.alice), "Idempotency-Key": "same-key"}
            answers = await asyncio.gather(
                *(c.post("/v1/purchases", json=body, headers=headers) for c in (w.api, api))
            )
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        assert answers[0].json()["id"] == answers[1].json()["id"]
        assert w.provider.calls["authorize"] == 1
        async with w.backend.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Purchase)) == 1
        await other.close()
        await w.finish()
