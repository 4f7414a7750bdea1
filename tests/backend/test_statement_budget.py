"""What one purchase costs in SQL, phase by phase, and the shortcuts that keep it low.

The backend is CPU-bound on its statements and transactions (docs/performance.md):
these budgets make a change that adds round trips to the hot path fail here. Counted
with fakes on SQLite (``sql`` includes each transaction's ``BEGIN IMMEDIATE``) and on
PostgreSQL (where asyncpg sends ``BEGIN`` itself, claims and notices' outcomes run in
autocommit and a purchase's rows are one ``INSERT``: its own budget)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from backend.store.models import MoneyOp, Purchase, Service
from backend.workers.consumer import Event, consume_batch
from launcher.postgres import PostgresServer
from tests.backend.conftest import VINS, World, WorldFactory

pytestmark = pytest.mark.timeout(30)

BUDGET = {  # phase: (statements, transactions)
    "catalog": (4, 1),  # token, vehicle (+ the catalog's version), cancelled services
    "purchase": (17, 2),  # checks + inserts in one transaction, the hold's answer in another
    "relay": (6, 2),
    "events": (9, 1),  # accepted + succeeded in one batch
    "capture": (9, 2),  # with the success notice, queued once the capture is confirmed
    "webhooks": (10, 2),  # pending + settled
    "notify": (6, 3),
}
BUDGET_PG = {  # the same on PostgreSQL: no BEGIN among the statements (asyncpg sends it);
    # claims and notices' outcomes without a transaction; a purchase's rows in one INSERT
    "catalog": (3, 1),
    "purchase": (11, 2),  # 5 inserts in one statement
    "relay": (4, 1),  # the claim in autocommit
    "events": (7, 1),
    "capture": (7, 1),  # the claim in autocommit
    "webhooks": (8, 2),
    "notify": (3, 0),  # claim and outcome: one guarded UPDATE each, in autocommit
}


@contextmanager
def counted(w: World) -> Iterator[Counter[str]]:
    """Statements (``sql``, their text in ``seen.texts``) and transactions (``begin``)."""
    seen: Counter[str] = Counter()
    engine = w.backend.engine.sync_engine

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen["sql"] += 1
        seen[statement.split(" WHERE ")[0]] += 1

    def on_begin(conn: Any) -> None:
        # a session in autocommit (PostgreSQL's claims, store/db.py) sends no BEGIN
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            seen["begin"] += 1

    event.listen(engine, "before_cursor_execute", on_sql)
    event.listen(engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_sql)
        event.remove(engine, "begin", on_begin)


async def test_one_purchase_stays_within_its_statement_budget(world: World) -> None:
    await within_budget(world, BUDGET)


async def test_one_purchase_on_postgresql_stays_within_its_budget(
    make_world: WorldFactory, postgres: PostgresServer
) -> None:
    async with make_world(postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")) as w:
        await within_budget(w, BUDGET_PG)


async def within_budget(w: World, budget: dict[str, tuple[int, int]]) -> None:
    vehicle = w.alice.vehicles[VINS[0][0]]
    phases: dict[str, Counter[str]] = {}
    with counted(w) as phases["catalog"]:
        got = await w.api.get("/v1/catalog", params={"vehicle_id": vehicle}, headers=w.as_(w.alice))
        assert got.status_code == 200
    with counted(w) as phases["purchase"]:
        response = await w.buy()
        assert response.status_code == 202
    p = response.json()
    with counted(w) as phases["relay"]:
        assert await w.backend.relay.run_once() == 1
    body = {"activation_id": p["activation_id"], "vin": VINS[0][0], "action": "activate"}
    events = [
        Event("1-0", "ev-a", "activation.accepted", body),
        Event("2-0", "ev-s", "activation.succeeded", body),
    ]
    with counted(w) as phases["events"]:
        assert await consume_batch(w.backend.units, events) == ["applied"] * 2
    with counted(w) as phases["capture"]:
        assert await w.backend.executor.run_pending() == 1
    w.clock.advance(10)
    with counted(w) as phases["webhooks"]:
        assert await w.provider.deliver_due() == 2
    with counted(w) as phases["notify"]:
        await w.backend.dispatcher.dispatch_pending()
    spent = {name: (c["sql"], c["begin"]) for name, c in phases.items()}
    over = {
        name: (got, budget[name])
        for name, got in spent.items()
        if got[0] > budget[name][0] or got[1] > budget[name][1]
    }
    assert not over, f"over budget (got, budget): {over}"
    # the catalog and prices come from the process's cache, never from SQL
    assert not any(
        table in text
        for c in phases.values()
        for text in c
        for table in ("services", "service_prices")
    ), phases
    got = await w.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "CHARGED")
    await w.finish()


async def test_purchase_answer_is_the_stored_purchase(world: World) -> None:
    """The 202 is built from the rows the hold's transaction committed, not re-read:
    it must equal what a later read returns."""
    response = await world.buy(service="power_boost_50", duration={"model": "temporary", "days": 7})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer == await world.purchase(answer["id"])
    assert answer["payment"]["state"] == "HELD_FOR_ACTIVATION"
    assert answer["price_cents"] == 4900
    await world.finish()


async def test_catalog_is_read_once_per_process(world: World) -> None:
    """The catalog is cached per process: a change in SQL that does not move the stored
    catalog's version is not seen until a reload. What changes it (a seed that changed
    something, a rules update) moves the version, which every catalog read and purchase
    fetches with its vehicle (``test_compatibility.py``)."""
    vehicle = world.alice.vehicles[VINS[0][0]]
    async with world.backend.sessions.begin() as session:
        service = await session.get(Service, "climate_plus")
        assert service is not None
        service.name = "Renamed behind the cache"
    got = await world.api.get(
        "/v1/catalog", params={"vehicle_id": vehicle}, headers=world.as_(world.alice)
    )
    names = {s["id"]: s["name"] for s in got.json()["services"]}
    assert names["climate_plus"] != "Renamed behind the cache"
    async with world.backend.sessions() as session:
        reloaded = await world.backend.catalog.reload(session)
    entry = reloaded.service("climate_plus")
    assert entry is not None and entry.name == "Renamed behind the cache"


async def test_single_session_still_refuses_bad_tokens(world: World) -> None:
    """The token check shares the handler's session: a bad or missing token is still
    401 before anything is read or written, an ops token on a customer route 404."""
    vehicle = world.alice.vehicles[VINS[0][0]]
    bad = {"Authorization": "Bearer caas_cus_not-a-token"}
    ops = {"Authorization": f"Bearer {world.ops_token}"}
    body = {"vehicle_id": vehicle, "service_id": "climate_plus", "duration": {"model": "permanent"}}
    for headers in (bad, {}):
        got = await world.api.get("/v1/catalog", params={"vehicle_id": vehicle}, headers=headers)
        assert got.status_code == 401
        got = await world.api.post(
            "/v1/purchases", json=body, headers={**headers, "Idempotency-Key": "k1"}
        )
        assert (got.status_code, got.json()["error"]) == (401, "unauthorized")
    got = await world.api.post("/v1/purchases", json=body, headers={**ops, "Idempotency-Key": "k2"})
    assert got.status_code == 404
    async with world.backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Purchase)) == 0
    assert (await world.buy(key="k1")).status_code == 202  # the key was never used


async def test_batch_preload_applies_each_event_once(world: World) -> None:
    """One batch with two purchases' events, a duplicate, and an event whose purchase
    the preload does not know: each applied once, one capture per success."""
    first, second = (await world.buy()).json(), (await world.buy(vin=VINS[1][0])).json()
    await world.backend.relay.run_once()

    def body(p: dict[str, Any]) -> dict[str, Any]:
        return {"activation_id": p["activation_id"], "vin": "", "action": "activate"}

    events = [
        Event("1-0", "e1", "activation.succeeded", body(first)),
        Event("2-0", "e1", "activation.succeeded", body(first)),
        Event("3-0", "e2", "activation.failed", body(second)),
        Event("4-0", "e3", "activation.succeeded", body(second)),
        Event("5-0", "e4", "activation.succeeded", {**body(first), "activation_id": "nobody"}),
    ]
    outcomes = await consume_batch(world.backend.units, events)
    assert outcomes == ["applied", "duplicate", "applied", "stale", "ignored"]
    async with world.backend.sessions() as session:
        kinds = sorted((await session.scalars(select(MoneyOp.kind))).all())
    assert kinds == ["authorize", "authorize", "cancel", "capture"]
    await world.finish()
    assert (await world.purchase(first["id"]))["payment"]["state"] == "CHARGED"
    assert (await world.purchase(second["id"]))["payment"]["state"] == "CANCELLED"
