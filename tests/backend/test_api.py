"""HTTP API: authentication and scoping, idempotency, maintenance gate, validation."""

from __future__ import annotations

import pytest

from backend.errors import DependencyUnavailable
from tests.backend.conftest import VINS, World

pytestmark = pytest.mark.timeout(30)


async def test_no_token_is_401_and_unknown_token_too(world: World) -> None:
    """Every customer route needs a valid bearer token."""
    assert (await world.api.get("/v1/customers/me/expediente")).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert (await world.api.get("/v1/customers/me/notifications", headers=bad)).status_code == 401


async def test_customer_never_sees_another_customers_things(world: World) -> None:
    """Bob gets 404 for Alice's purchase and vehicle; a customer on ops routes gets 403."""
    p = (await world.buy()).json()
    bob = world.as_(world.bob)
    assert (await world.api.get(f"/v1/purchases/{p['id']}", headers=bob)).status_code == 404
    vid = world.alice.vehicles[VINS[0][0]]
    r = await world.api.get("/v1/catalog", params={"vehicle_id": vid}, headers=bob)
    assert r.status_code == 404
    body = {"vehicle_id": vid, "service_id": "climate_plus", "duration": {"model": "permanent"}}
    r = await world.api.post("/v1/purchases", json=body, headers={**bob, "Idempotency-Key": "k"})
    assert r.status_code == 404
    assert (await world.api.get("/v1/ops/tickets", headers=bob)).status_code == 403
    ops = world.as_(world.ops_token)
    assert (await world.api.get(f"/v1/purchases/{p['id']}", headers=ops)).status_code == 200


async def test_catalog_per_vehicle_never_shows_base_platform(world: World) -> None:
    """The catalog lists the optional services with every price option, not the base."""
    vid = world.alice.vehicles[VINS[0][0]]
    r = await world.api.get(
        "/v1/catalog", params={"vehicle_id": vid}, headers=world.as_(world.alice)
    )
    assert r.status_code == 200
    ids = [s["id"] for s in r.json()["services"]]
    assert "base_platform" not in ids
    assert set(ids) == {
        "autonomous_driving",
        "climate_plus",
        "entertainment_pack",
        "power_boost_50",
        "winter_traction",
    }
    boost = next(s for s in r.json()["services"] if s["id"] == "power_boost_50")
    assert {p["model"] for p in boost["prices"]} == {"temporary", "permanent", "subscription"}
    assert boost["maintenance_linked"] is True


async def test_same_key_same_body_same_answer_different_body_409(world: World) -> None:
    """Idempotency-Key: replay returns the same purchase; another body → 409."""
    first = await world.buy(key="key-1")
    again = await world.buy(key="key-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert world.provider.calls["authorize"] == 1
    other = await world.buy(
        key="key-1", service="entertainment_pack", duration={"model": "subscription"}
    )
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_key_reused"
    await world.finish()


async def test_missing_idempotency_key_is_422(world: World) -> None:
    """A money-moving write without Idempotency-Key is refused."""
    body = {
        "vehicle_id": world.alice.vehicles[VINS[0][0]],
        "service_id": "climate_plus",
        "duration": {"model": "permanent"},
    }
    r = await world.api.post("/v1/purchases", json=body, headers=world.as_(world.alice))
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"service_id": "base_platform", "duration": {"model": "permanent"}}, "unknown_service"),
        (
            {"service_id": "climate_plus", "duration": {"model": "temporary", "days": 3}},
            "unknown_price",
        ),
        ({"service_id": "entertainment_pack", "duration": {"model": "permanent"}}, "unknown_price"),
        (
            {
                "service_id": "climate_plus",
                "duration": {"model": "permanent"},
                "start_at": "2001-01-01T00:00:00Z",
            },
            "bad_start_at",
        ),
        ({"service_id": "Nope!", "duration": {"model": "permanent"}}, None),
        ({"service_id": "climate_plus", "duration": {"model": "lifetime"}}, None),
        (
            {
                "service_id": "climate_plus",
                "duration": {"model": "permanent"},
                "start_at": "2026-11-21T10:00:00",
            },
            None,
        ),
    ],
)
async def test_bad_purchase_input_is_a_clear_422(
    world: World, body: dict[str, object], code: str | None
) -> None:
    """Unknown services, prices, naive or past times: 422 with a reason, never 5xx."""
    payload = {"vehicle_id": world.alice.vehicles[VINS[0][0]], **body}
    r = await world.api.post(
        "/v1/purchases", json=payload, headers={**world.as_(world.alice), "Idempotency-Key": "x"}
    )
    assert r.status_code == 422, r.text
    if code:
        assert r.json()["error"] == code


async def test_second_purchase_of_an_active_service_is_409(world: World) -> None:
    """The same service cannot be bought twice while one is active or pending."""
    assert (await world.buy()).status_code == 202
    r = await world.buy()
    assert r.status_code == 409
    assert r.json()["error"] == "already_purchased"
    await world.finish()


async def test_maintenance_overdue_blocks_linked_service_and_notifies(world: World) -> None:
    """Overdue VSS → 409 maintenance_overdue, BLOCKED_MAINTENANCE, workshop e-mail, no hold."""
    world.maintenance.overdue.add(VINS[0][0])
    r = await world.buy("power_boost_50")
    assert r.status_code == 409
    assert r.json()["error"] == "maintenance_overdue"
    assert r.json()["workshop_url"].startswith("https://")
    assert world.provider.calls["authorize"] == 0
    got = await world.purchase(r.json()["purchase_id"])
    assert got["state"] == "BLOCKED_MAINTENANCE" and got["payment"] is None
    await world.drain()
    assert any("workshop" in b.lower() for _, _, b in world.channels["email"].sent)
    # a service that is not maintenance-linked is still sold
    assert (await world.buy("climate_plus")).status_code == 202
    await world.finish()


async def test_maintenance_outage_is_503_and_nothing_held(world: World) -> None:
    """VSS not answering → 503 with Retry-After; no purchase, no hold."""
    world.maintenance.outage = True
    r = await world.buy("winter_traction", duration={"model": "temporary", "days": 90})
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "30"
    assert world.provider.calls["authorize"] == 0
    with pytest.raises(DependencyUnavailable):
        await world.maintenance.status(VINS[0][0])


async def test_expediente_and_notifications_show_the_whole_story(world: World) -> None:
    """The purchase file lists purchases, charges, notifications, tickets and a timeline."""
    from tests.backend.test_purchase_saga import event

    ok = (await world.buy()).json()
    bad = (await world.buy("entertainment_pack", duration={"model": "subscription"})).json()
    await event(world, "activation.succeeded", ok)
    await event(world, "activation.failed", bad, diagnostics={"dtcs": []})
    await world.drain()
    r = await world.api.get("/v1/customers/me/expediente", headers=world.as_(world.alice))
    assert r.status_code == 200
    file = r.json()
    assert {p["state"] for p in file["purchases"]} == {"ACTIVE", "FAILED_NO_CHARGE"}
    assert [c["amount_cents"] for c in file["charges"]] == [39000]
    assert file["refunds"] == []
    assert [t["kind"] for t in file["tickets"]] == ["activation_failed"]
    kinds = [e["kind"] for e in file["timeline"]]
    assert "purchase.created" in kinds and "payment.captured" in kinds
    n = await world.api.get("/v1/customers/me/notifications", headers=world.as_(world.alice))
    templates = {x["template"] for x in n.json()}
    assert {"activation_success", "activation_failed_initial", "ticket_created"} <= templates
    bob = await world.api.get("/v1/customers/me/expediente", headers=world.as_(world.bob))
    assert bob.json()["purchases"] == []
    await world.finish()


async def test_ops_tickets_and_metrics(world: World) -> None:
    """Ops see every ticket and the summary with its alert threshold."""
    from tests.backend.test_purchase_saga import event

    bad = (await world.buy()).json()
    await event(world, "activation.failed", bad)
    ops = world.as_(world.ops_token)
    tickets = (await world.api.get("/v1/ops/tickets", headers=ops)).json()
    assert [t["purchase_id"] for t in tickets] == [bad["id"]]
    summary = (await world.api.get("/v1/ops/metrics/summary", headers=ops)).json()
    assert summary["purchases_by_state"] == {"FAILED_NO_CHARGE": 1}
    assert summary["activation_failure_rate"]["alerting"] is True
    await world.finish()


async def test_openapi_is_served(world: World) -> None:
    """OpenAPI at /docs (and the schema at /openapi.json) lists the docs/spec.md §5 routes."""
    assert (await world.api.get("/docs")).status_code == 200
    paths = (await world.api.get("/openapi.json")).json()["paths"]
    assert {"/v1/purchases", "/v1/customers/me/expediente", "/v1/payments/webhooks"} <= set(paths)


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("GET", "/v1/purchases/%00", {}, None),
        ("GET", "/v1/purchases/a'b", {}, None),
        ("GET", "/v1/catalog?vehicle_id=%00", {}, None),
        (
            "POST",
            "/v1/purchases",
            {"Idempotency-Key": "has space"},
            {"vehicle_id": "v", "service_id": "climate_plus", "duration": {"model": "permanent"}},
        ),
        (
            "POST",
            "/v1/purchases",
            {"Idempotency-Key": "k"},
            {
                "vehicle_id": "v\u0000",
                "service_id": "climate_plus",
                "duration": {"model": "permanent"},
            },
        ),
        ("POST", "/v1/purchases", {"Idempotency-Key": "k"}, {"duration": None}),
        (
            "POST",
            "/v1/purchases",
            {"Idempotency-Key": "k"},
            {
                "vehicle_id": "v",
                "service_id": "climate_plus",
                "duration": {"model": "temporary", "days": 10**30},
            },
        ),
    ],
)
async def test_hostile_input_is_4xx_never_5xx(
    world: World, method: str, path: str, headers: dict[str, str], body: object
) -> None:
    """NUL bytes, quotes, huge numbers and nulls are refused with a 4xx (fuzzing safety)."""
    r = await world.api.request(
        method, path, json=body, headers={**world.as_(world.alice), **headers}
    )
    assert 400 <= r.status_code < 500, r.text


async def test_unparsable_body_is_400_in_the_error_shape(world: World) -> None:
    """A body that is not JSON → 400 with the documented {"error", "detail"} shape."""
    r = await world.api.post(
        "/v1/purchases",
        content=b"\xff{",
        headers={
            **world.as_(world.alice),
            "Idempotency-Key": "k",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"


async def test_undeclared_method_is_405_with_allow(world: World) -> None:
    """A method a route does not have → 405 carrying the Allow header."""
    r = await world.api.delete("/v1/purchases", headers=world.as_(world.alice))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
