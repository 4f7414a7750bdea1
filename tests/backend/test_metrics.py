"""The handbook's six metrics and the breakdowns over a window
(``GET /v1/ops/metrics/summary?window=``) and the backend's Prometheus metrics
(``GET /metrics``), after purchases driven through success, success after retries,
failure with retries, a direct-debit failure (money taken: customer impact) and a
permanent failure closed by support; on SQLite and PostgreSQL (real Redis where the
consumer's lag is read). Two backends on one database export the gauges read from it
exactly once between them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from backend.domain.events import ActivationFailed
from backend.http.app import create_app
from backend.service import Backend
from backend.store.models import Customer, Purchase, Ticket
from backend.workers.consumer import Event, consume_batch
from launcher import demo_report
from tests.backend.conftest import VINS, World, WorldFactory
from tests.backend.fakes import emit
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STORE_GAUGES = (
    "caas_backend_purchases",
    "caas_backend_payments",
    "caas_backend_tickets",
    "caas_backend_outbox_pending",
    "caas_backend_outbox_oldest_age_seconds",
    "caas_backend_notifications_queued",
)


async def scrape(api: httpx.AsyncClient) -> Samples:
    answer = await api.get("/metrics")  # no token
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def summary(w: World, window: str | None = "24h") -> dict[str, Any]:
    params = {"window": window} if window else {}
    answer = await w.api.get("/v1/ops/metrics/summary", params=params, headers=w.as_(w.ops_token))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def handbook(found: dict[str, Any]) -> dict[str, tuple[Any, int, bool]]:
    return {m["key"]: (m["value"], m["samples"], m["alerting"]) for m in found["handbook"]}


async def bob_pays_by_direct_debit(w: World) -> dict[str, Any]:
    async with w.backend.sessions.begin() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == w.bob.customer_id)
            .values(payment_method="direct_debit")
        )
    body = {
        "vehicle_id": w.bob.vehicles[VINS[2][0]],
        "service_id": "climate_plus",
        "duration": {"model": "permanent"},
    }
    headers = {**w.as_(w.bob), "Idempotency-Key": str(uuid.uuid4())}
    answer = await w.api.post("/v1/purchases", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    p = dict(answer.json())
    assert (p["payment"]["method"], p["payment"]["captured_cents"]) == ("direct_debit", 39000)
    return p


async def four_outcomes(w: World) -> dict[str, dict[str, Any]]:
    """At 11:06 UTC: a first-try success 30 s after its hold, a third-try success 120 s
    after its hold, a failure after 5 attempts (card: the hold released), a direct-debit
    failure after 2 (the money was taken: refunded, customer impact)."""
    first = await bought(w)
    w.clock.advance(30)
    assert await event(w, "activation.succeeded", first, attempts=1) == "applied"
    third = await bought(w, service="winter_traction")
    w.clock.advance(120)
    batch = [  # through the batch path too (rows loaded up front)
        Event("1-0", "ev-acc", "activation.accepted", body(third)),
        Event("2-0", "ev-ok", "activation.succeeded", {**body(third), "attempts": 3}),
    ]
    assert await consume_batch(w.backend.units, batch) == ["applied", "applied"]
    failed = await bought(
        w, service="entertainment_pack", vin=VINS[1][0], duration={"model": "temporary", "days": 7}
    )
    await event(
        w, "activation.failed", failed, attempts=5, failure_category="transient_connectivity"
    )
    taken = await bob_pays_by_direct_debit(w)
    await event(
        w, "activation.failed", taken, attempts=2, failure_category="configuration_conflict"
    )
    await w.drain()
    return {"first": first, "third": third, "failed": failed, "taken": taken}


def body(p: dict[str, Any]) -> dict[str, Any]:
    return {"activation_id": p["activation_id"], "vin": "", "action": "activate"}


async def close_as_permanent_failure(w: World, purchase_id: str) -> None:
    async with w.backend.sessions() as session:
        ticket = await session.scalar(select(Ticket.id).where(Ticket.purchase_id == purchase_id))
    w.clock.advance(600)
    answer = await w.api.post(
        f"/v1/ops/tickets/{ticket}/permanent-failure", headers=w.as_(w.ops_token)
    )
    assert answer.status_code == 200, answer.text


async def test_summary_and_metrics_after_every_kind_of_outcome(
    db_url: str, make_world: WorldFactory
) -> None:
    """The six metrics, the breakdowns and the Prometheus counters agree with what
    happened; a later window leaves the old activations out."""
    async with make_world(db_url) as w:
        p = await four_outcomes(w)
        await close_as_permanent_failure(w, p["failed"]["id"])
        found = await summary(w)
        assert found["window"]["seconds"] == 86_400
        assert handbook(found) == {
            "activation_failure_rate": (0.5, 4, True),
            "first_attempt_success_rate": (0.25, 4, True),
            "average_attempts_to_success": (2.0, 2, False),  # (1 + 3) / 2: not above 2
            "payment_to_activation_seconds": (75.0, 2, False),  # (30 + 120) / 2
            "permanent_failure_rate": (0.25, 4, True),
            "customer_impact_rate": (0.25, 4, True),
        }
        b = found["breakdowns"]
        assert b["failures_by_reason"] == [
            {"key": "configuration_conflict", "count": 1, "total": 2, "rate": 0.5},
            {"key": "transient_connectivity", "count": 1, "total": 2, "rate": 0.5},
        ]
        assert b["failures_by_model"] == [
            {"key": "Tourer", "count": 1, "total": 3, "rate": 0.3333},
            {"key": "Urbano", "count": 1, "total": 1, "rate": 1.0},
        ]
        assert {r["key"]: (r["count"], r["total"]) for r in b["failures_by_service"]} == {
            "climate_plus": (1, 2), "entertainment_pack": (1, 1), "winter_traction": (0, 1),
        }  # fmt: skip
        hours = {r["key"]: (r["count"], r["total"]) for r in b["failures_by_hour"]}
        assert len(hours) == 24 and hours["11"] == (2, 4) and hours["12"] == (0, 0)
        assert b["successes_by_attempt"] == [
            {"key": "1", "count": 1, "total": 1, "rate": 1.0},
            {"key": "2", "count": 0, "total": 1, "rate": 0.0},
            {"key": "3", "count": 1, "total": 1, "rate": 1.0},
            {"key": "5", "count": 0, "total": 1, "rate": 0.0},
        ]
        assert b["support_resolution"] == {
            "open": 1, "resolved": 1, "mean_s": 600.0, "p50_s": 600.0, "p95_s": 600.0,
        }  # fmt: skip

        got = await scrape(w.api)
        outcomes = "caas_backend_activation_outcomes_total"
        assert value(got, outcomes, outcome="succeeded", reason="none", model="Tourer",
                     service="winter_traction") == 1  # fmt: skip
        assert value(got, outcomes, outcome="failed", reason="configuration_conflict",
                     model="Urbano", service="climate_plus") == 1  # fmt: skip
        assert value(got, "caas_backend_activation_failures_by_hour_total", hour="11") == 2
        by_attempt = "caas_backend_activation_successes_by_attempt_total"
        assert [value(got, by_attempt, attempt=a) for a in ("1", "2", "3")] == [1, 0, 1]
        assert value(got, "caas_backend_attempts_to_success_sum") == 4
        assert value(got, "caas_backend_payment_to_activation_seconds_sum") == 150
        assert value(got, "caas_backend_payment_to_activation_seconds_bucket", le="60.0") == 1
        assert value(got, "caas_backend_customer_impact_total") == 1
        assert value(got, "caas_backend_permanent_failures_total") == 1
        assert value(got, "caas_backend_tickets_opened_total", kind="activation_failed") == 2
        resolved = "caas_backend_tickets_resolved_total"
        assert value(got, resolved, resolution="permanent_failure") == 1
        assert value(got, "caas_backend_ticket_resolution_seconds_sum") == 600
        money = "caas_backend_money_operations_total"
        assert {
            kind: value(got, money, kind=kind, outcome="succeeded")
            for kind in ("authorize", "charge", "capture", "cancel", "refund")
        } == {"authorize": 3, "charge": 1, "capture": 2, "cancel": 1, "refund": 1}
        assert value(got, money, kind="capture", outcome="failed") == 0
        notices = "caas_backend_notifications_total"
        assert (value(got, notices, channel="email", outcome="sent") or 0) >= 4
        assert value(got, "caas_backend_dependency_up", dependency="provider") == 1
        # the gauges read from the database (this backend is the only one: it holds them)
        assert value(got, "caas_backend_purchases", state="ACTIVE") == 2
        assert value(got, "caas_backend_purchases", state="FAILED_NO_CHARGE") == 2
        assert value(got, "caas_backend_purchases", state="ESCALATED") == 0
        assert value(got, "caas_backend_payments", state="REFUNDED", method="direct_debit") == 1
        assert value(got, "caas_backend_tickets", status="OPEN") == 1
        assert value(got, "caas_backend_notifications_queued") == 0
        assert value(got, "caas_backend_outbox_pending") == 0
        labels = {v for _, ls in got for _, v in ls}
        ids = {x["id"] for x in p.values()} | {x["activation_id"] for x in p.values()}
        assert not labels & (ids | {vin for vin, _ in VINS} | {w.alice.customer_id})

        w.clock.advance(2 * 86_400)  # two days later: one more, first try
        later = await bought(w, service="power_boost_50", duration={"model": "permanent"})
        w.clock.advance(45)  # its request waits: the relay does not run
        got = await scrape(w.api)
        assert value(got, "caas_backend_outbox_pending") == 1
        assert value(got, "caas_backend_outbox_oldest_age_seconds") == 45
        await event(w, "activation.succeeded", later, attempts=1)
        recent = handbook(await summary(w, "1d"))
        assert recent["activation_failure_rate"] == (0.0, 1, False)
        assert recent["first_attempt_success_rate"] == (1.0, 1, False)
        assert recent["permanent_failure_rate"] == (0.0, 1, False)
        assert handbook(await summary(w, None))["activation_failure_rate"] == (0.4, 5, True)
        everything = await summary(w, None)
        assert everything["window"] == {"from": None, "to": everything["window"]["to"],
                                        "seconds": None}  # fmt: skip
        await w.finish()


async def test_a_bad_window_is_a_422_with_the_error_body(world: World) -> None:
    ops = world.as_(world.ops_token)
    for bad, code in (("24", "bad_window"), ("0h", "bad_window"), ("1w", "bad_window"),
                      ("9" * 40, "invalid_request")):  # fmt: skip
        answer = await world.api.get("/v1/ops/metrics/summary", params={"window": bad}, headers=ops)
        assert (answer.status_code, answer.json()["error"]) == (422, code), bad
        assert isinstance(answer.json()["detail"], list)
    empty = await summary(world, "15m")
    assert [m["value"] for m in empty["handbook"]] == [None] * 6
    assert empty["breakdowns"]["failures_by_reason"] == []
    assert len(empty["breakdowns"]["failures_by_hour"]) == 24
    customer = await world.api.get("/v1/ops/metrics/summary", headers=world.as_(world.alice))
    assert customer.status_code == 403


async def fail_after_deciding(w: World, activation_id: str) -> None:
    async with w.backend.units.begin() as work:
        purchase = await work.purchase_by_activation(activation_id)
        assert purchase is not None
        payment = await work.payment_of(purchase.id)
        await work.decide(purchase, payment, ActivationFailed("timeout", None, 3))
        raise RuntimeError("the transaction fails after the decision")


async def test_a_rolled_back_decision_is_not_counted(db_url: str, make_world: WorldFactory) -> None:
    """An outcome decided in a transaction that then fails leaves no trace: not in the
    table, not in the counters; applied again, it counts once."""
    async with make_world(db_url) as w:
        p = await bought(w)
        with pytest.raises(RuntimeError):
            await fail_after_deciding(w, p["activation_id"])
        outcomes = "caas_backend_activation_outcomes_total"
        counted = {key: v for key, v in (await scrape(w.api)).items() if key[0] == outcomes}
        assert counted and not any(counted.values())  # every series there from the start, at 0
        async with w.backend.sessions() as session:
            row = await session.get(Purchase, p["id"])
            assert row is not None and row.activation_outcome is None
        await event(w, "activation.failed", p, attempts=3, failure_category="timeout")
        await event(w, "activation.failed", p, "again", attempts=3, failure_category="timeout")
        got = await scrape(w.api)
        assert value(got, outcomes, outcome="failed", reason="timeout", model="Tourer",
                     service="climate_plus") == 1  # fmt: skip
        await w.finish()


def second_backend(w: World) -> Backend:
    settings = w.backend.settings.model_copy(update={"backend_consumer_name": "backend-2"})
    return Backend(
        settings, clock=w.clock, provider=w.backend.provider, maintenance=w.maintenance,
        gateway=w.gateway,
    )  # fmt: skip


def store_gauges(found: Samples) -> Samples:
    return {k: v for k, v in found.items() if k[0] in STORE_GAUGES}


async def test_two_backends_export_the_store_gauges_once(
    db_url: str, make_world: WorldFactory
) -> None:
    """Two backends on one database: at every scrape exactly one of them exports the
    gauges read from it (so their sum is right); the holder keeps them while scraped; a
    holder that stops being scraped loses them after the lease, one that shuts down at
    once; its counters stay its own."""
    async with make_world(db_url, backend_metrics_lease_s=60.0) as w:
        await four_outcomes(w)
        other = second_backend(w)
        await other.start()
        transport = httpx.ASGITransport(app=create_app(other, manage_lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://backend-2") as api2:
            holders = []
            for _ in range(4):  # both scraped every 15 s
                ours, theirs = store_gauges(await scrape(w.api)), store_gauges(await scrape(api2))
                assert bool(ours) != bool(theirs), (ours, theirs)
                holders.append("first" if ours else "second")
                exported = ours or theirs
                assert exported[("caas_backend_purchases", frozenset({("state", "ACTIVE")}))] == 2
                w.clock.advance(15)
            assert holders == ["first"] * 4  # the first to scrape keeps it
            w.clock.advance(61)  # the first is not scraped for over a minute
            assert store_gauges(await scrape(api2))
            assert not store_gauges(await scrape(w.api))  # it lost the lease
            theirs = await scrape(api2)
            assert value(theirs, "caas_backend_activation_outcomes_total", outcome="failed",
                         reason="transient_connectivity", model="Tourer",
                         service="entertainment_pack") == 0  # fmt: skip
            await other.close()  # shutting down gives the lease up at once
            assert store_gauges(await scrape(w.api))
        await w.finish()


async def test_consumer_lag_and_redis_from_the_stream(
    db_url: str, make_world: WorldFactory, redis_url: str, plain_redis: aioredis.Redis
) -> None:
    """The lag is the stream entries the backend's group has not read yet; reading them
    brings it to 0; Redis is up."""
    async with make_world(db_url, redis_url=redis_url) as w:
        p = await bought(w)
        for type_ in ("activation.accepted", "activation.attempt_failed", "activation.succeeded"):
            await emit(plain_redis, "caas:events", type_, body(p), attempts=2)
        got = await scrape(w.api)
        assert value(got, "caas_backend_event_consumer_lag") == 3
        assert value(got, "caas_backend_dependency_up", dependency="redis") == 1
        assert w.backend.consumer is not None
        assert await w.backend.consumer.poll(pending=False, block_ms=None) == 3
        got = await scrape(w.api)
        assert value(got, "caas_backend_event_consumer_lag") == 0
        assert value(got, "caas_backend_activation_successes_by_attempt_total", attempt="2") == 1
        await w.finish()


async def test_the_demo_summary_shows_the_six_against_their_thresholds(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher's closing summary prints the handbook's six with their thresholds
    and status from the backend's summary; none of them is merely informational."""
    monkeypatch.setenv("COLUMNS", "200")
    await four_outcomes(world)
    demo_report.render(demo_report.Outcomes(), await summary(world, None), "0 violations", True)
    shown = capsys.readouterr().out
    assert "informational" not in shown
    lines = {line.split("│")[1].strip(): line for line in shown.splitlines() if "│" in line}
    expected = {
        "Activation failure rate": ("50.0%", "> 5.0%", "ALERT"),
        "First-attempt success rate": ("25.0%", "< 95.0%", "ALERT"),
        "Average attempts to success": ("2.00", "> 2.00", "ok"),
        "Time from payment to activation": ("75.0 s", "> 900.0 s", "ok"),
        "Permanent failure rate": ("0.0%", "> 1.0%", "ok"),
        "Customer impact rate": ("25.0%", "> 0.5%", "ALERT"),
    }
    for name, cells in expected.items():
        assert all(cell in lines[name] for cell in cells), lines[name]
    assert "configuration_conflict" in shown
    await world.finish()
