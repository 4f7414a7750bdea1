"""The ops list routes page by keyset: walking the ``Link`` headers (or ``cursor=`` the
``X-Next-Cursor``) visits every matching row exactly once, in order, with the filters
kept; ``X-Total-Count`` counts every matching row; a bad cursor, limit or filter is a
422. Rows share creation times on purpose (the id breaks the tie)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from backend.services.seed import create_customer
from backend.store.models import Purchase, Ticket
from tests.backend.conftest import World, WorldFactory

pytestmark = pytest.mark.timeout(60)

T0 = 1_795_000_000.0
STATES = ("ACTIVE", "FAILED_NO_CHARGE", "CANCELLED")
SERVICES = ("climate_plus", "power_boost_50")
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


@dataclass
class Data:
    customers: list[str] = field(default_factory=list)
    vehicles: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → customer, model
    purchases: list[Purchase] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)


async def populate(w: World, customers: int = 7) -> Data:
    """Customers with a Tourer or a Cargo each; three purchases per vehicle in mixed
    states and services; a ticket for every failed one, open or resolved. Three rows
    share each creation time: a page of 2 or 4 ends inside a group of equal times."""
    data = Data()
    async with w.backend.sessions.begin() as s:
        for n in range(customers):
            model = "Tourer" if n % 2 else "Cargo"
            vin = f"WVWZZZ1JZ4W{n:06d}"
            seeded = await create_customer(
                s, f"Person {n}", f"person{n}@Fleet.example", [(vin, model, "4.2.1")],
                T0 + n // 3,
            )  # fmt: skip
            data.customers.append(seeded.customer_id)
            data.vehicles[seeded.vehicles[vin]] = (seeded.customer_id, model)
        for k, (vehicle_id, (customer_id, _)) in enumerate(sorted(data.vehicles.items()) * 3):
            state = STATES[k % 3]
            p = Purchase(
                id=str(uuid.uuid4()), customer_id=customer_id, vehicle_id=vehicle_id,
                service_id=SERVICES[k % 2], duration_model="permanent", duration_days=None,
                price_cents=100, state=state, activation_id=str(uuid.uuid4()),
                failure_category="persistent_iot_failure" if state == "FAILED_NO_CHARGE" else None,
                start_at=T0, deadline_at=T0 + 3600, created_at=T0 + k // 3, updated_at=T0,
            )  # fmt: skip
            s.add(p)
            data.purchases.append(p)
        await s.flush()
        for k, p in enumerate(x for x in data.purchases if x.state == "FAILED_NO_CHARGE"):
            t = Ticket(
                id=str(uuid.uuid4()), number=f"T-{k:06d}", customer_id=p.customer_id,
                purchase_id=p.id, kind="activation_failed" if k % 3 else "capture_failed",
                status="OPEN" if k % 2 else "RESOLVED", details={}, created_at=T0 + k // 3,
                resolved_at=None if k % 2 else T0 + 100,
            )  # fmt: skip
            s.add(t)
            data.tickets.append(t)
    return data


@dataclass
class Walk:
    rows: list[dict[str, Any]]
    pages: int
    totals: set[int]


async def walk(w: World, path: str, limit: int, **params: Any) -> Walk:
    """Every page of a list, following its ``Link`` header from the first page."""
    headers = w.as_(w.ops_token)
    got = await w.api.get(path, params={**params, "limit": limit}, headers=headers)
    rows: list[dict[str, Any]] = []
    pages, totals = 0, set()
    while True:
        assert got.status_code == 200, got.text
        body = got.json()
        assert isinstance(body, list) and len(body) <= limit
        rows += body
        pages += 1
        totals.add(int(got.headers["X-Total-Count"]))
        link, cursor = got.headers.get("Link"), got.headers.get("X-Next-Cursor")
        if cursor is None:
            assert link is None
            return Walk(rows, pages, totals)
        assert len(body) == limit
        found = LINK.match(link or "")
        assert found is not None, link
        url = found["url"]
        assert url.startswith(path + "?") and f"cursor={cursor}" in url
        for key, value in params.items():  # the filters travel with the link
            assert f"{key}={value}" in url, (key, url)
        got = await w.api.get(url, headers=headers)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


async def assert_walks_once(
    w: World, path: str, expected: set[str], limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Oldest first and newest first, every expected row exactly once; the pages agree
    with one page holding everything; the count is the number of rows."""
    whole = await w.api.get(path, params={**params, "limit": 500}, headers=w.as_(w.ops_token))
    assert "X-Next-Cursor" not in whole.headers and "Link" not in whole.headers
    forward = await walk(w, path, limit, **params)
    assert ids(forward.rows) == ids(whole.json())
    assert len(ids(forward.rows)) == len(expected) and set(ids(forward.rows)) == expected
    assert forward.totals == {len(expected)}
    assert forward.pages == max(1, -(-len(expected) // limit))
    backward = await walk(w, path, limit, order="desc", **params)
    assert ids(backward.rows) == ids(forward.rows)[::-1]
    return forward.rows


async def test_tickets_walk_every_row_once_with_filters(
    make_world: WorldFactory, db_url: str
) -> None:
    """Tickets: unfiltered and by status, kind, customer and purchase, at page sizes
    that divide the count and that do not."""
    async with make_world(db_url) as w:
        data = await populate(w)
        everything = {t.id for t in data.tickets}
        rows = await assert_walks_once(w, "/v1/ops/tickets", everything, limit=2)
        times = [r["created_at"] for r in rows]
        assert times == sorted(times)
        await assert_walks_once(w, "/v1/ops/tickets", everything, limit=len(everything))
        for status in ("OPEN", "RESOLVED"):
            wanted = {t.id for t in data.tickets if t.status == status}
            await assert_walks_once(w, "/v1/ops/tickets", wanted, limit=2, status=status)
        wanted = {t.id for t in data.tickets if (t.kind, t.status) == ("activation_failed", "OPEN")}
        await assert_walks_once(
            w, "/v1/ops/tickets", wanted, limit=1, kind="activation_failed", status="OPEN"
        )
        some = data.tickets[0]
        await assert_walks_once(
            w, "/v1/ops/tickets", {some.id}, limit=1, purchase_id=some.purchase_id
        )
        mine = {t.id for t in data.tickets if t.customer_id == some.customer_id}
        await assert_walks_once(w, "/v1/ops/tickets", mine, limit=1, customer_id=some.customer_id)
        await assert_walks_once(w, "/v1/ops/tickets", set(), limit=3, kind="no_such_kind")
        one = await w.api.get(f"/v1/ops/tickets/{some.id}", headers=w.as_(w.ops_token))
        assert one.json()["id"] == some.id and one.json()["number"] == some.number
        await w.finish()


async def test_purchases_and_customers_walk_every_row_once(
    make_world: WorldFactory, db_url: str
) -> None:
    """Purchases by state, service, vehicle model, customer, vehicle, failure category
    (with the customer and the vehicle model in each row); customers by a part of their
    name or e-mail, whatever its case."""
    async with make_world(db_url) as w:
        data = await populate(w)
        bought = await w.buy()  # a real one too: with its payment
        assert bought.status_code == 202
        real = bought.json()["id"]
        path = "/v1/ops/purchases"
        everything = {p.id for p in data.purchases} | {real}
        rows = await assert_walks_once(w, path, everything, limit=4)
        mine = next(r for r in rows if r["id"] == real)
        assert (mine["customer_id"], mine["vehicle_model"]) == (w.alice.customer_id, "Tourer")
        assert mine["payment"]["state"] == "HELD_FOR_ACTIVATION"
        model_of = {p.id: data.vehicles[p.vehicle_id][1] for p in data.purchases}
        assert all(r["vehicle_model"] == model_of[r["id"]] for r in rows if r["id"] != real)
        for state in STATES:
            wanted = {p.id for p in data.purchases if p.state == state}
            await assert_walks_once(w, path, wanted, limit=2, state=state)
        wanted = {p.id for p in data.purchases if model_of[p.id] == "Cargo"}
        wanted_power = {p.id for p in data.purchases if p.service_id == "power_boost_50"}
        await assert_walks_once(w, path, wanted, limit=3, model="Cargo")
        await assert_walks_once(
            w, path, wanted & wanted_power, limit=2, model="Cargo", service_id="power_boost_50"
        )
        first = data.purchases[0]
        wanted = {p.id for p in data.purchases if p.vehicle_id == first.vehicle_id}
        await assert_walks_once(w, path, wanted, limit=2, vehicle_id=first.vehicle_id)
        await assert_walks_once(w, path, wanted, limit=2, customer_id=first.customer_id)
        wanted = {p.id for p in data.purchases if p.failure_category}
        await assert_walks_once(w, path, wanted, limit=5, failure_category="persistent_iot_failure")
        people = set(data.customers) | {w.alice.customer_id, w.bob.customer_id}
        found = await assert_walks_once(w, "/v1/ops/customers", people, limit=2)
        alice = next(c for c in found if c["id"] == w.alice.customer_id)
        assert alice == {
            "id": w.alice.customer_id, "name": "Alice", "email": "alice@example.com",
            "payment_method": "card", "vehicles": 2,
        }  # fmt: skip
        await assert_walks_once(w, "/v1/ops/customers", set(data.customers), limit=2, q="FLEET.")
        await assert_walks_once(w, "/v1/ops/customers", {data.customers[3]}, limit=2, q="person 3")
        await assert_walks_once(w, "/v1/ops/customers", set(), limit=2, q="%")  # not a wildcard
        await assert_walks_once(w, "/v1/ops/customers", people, limit=4, q="")  # an empty box
        await w.finish()


async def test_a_row_added_during_a_walk_is_seen_once(world: World) -> None:
    """Keyset, not offset: a ticket opened while an operator pages is met once (at the
    end, oldest first) and no row of the first page comes back."""
    data = await populate(world)
    headers = world.as_(world.ops_token)
    first = await world.api.get("/v1/ops/tickets", params={"limit": 3}, headers=headers)
    async with world.backend.sessions.begin() as s:
        p = data.purchases[0]
        s.add(
            Ticket(
                id=str(uuid.uuid4()), number="T-late", customer_id=p.customer_id,
                purchase_id=p.id, kind="settlement_failed", status="OPEN", details={},
                created_at=T0 - 10,  # older than everything: before the cursor, not listed
            )
        )  # fmt: skip
        s.add(
            Ticket(
                id="late-ticket", number="T-later", customer_id=p.customer_id,
                purchase_id=p.id, kind="settlement_failed", status="OPEN", details={},
                created_at=T0 + 1000,
            )
        )  # fmt: skip
    seen = ids(first.json())
    url = LINK.match(first.headers["Link"])
    assert url is not None
    got = await world.api.get(url["url"], headers=headers)
    while True:
        seen += ids(got.json())
        if "Link" not in got.headers:
            break
        nxt = LINK.match(got.headers["Link"])
        assert nxt is not None
        got = await world.api.get(nxt["url"], headers=headers)
    assert len(seen) == len(set(seen)) == len(data.tickets) + 1
    assert seen[-1] == "late-ticket"
    assert int(got.headers["X-Total-Count"]) == len(data.tickets) + 2
    await world.finish()


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/v1/ops/tickets", {"cursor": "bm9wZQ"}, "bad_cursor"),  # base64 of "nope"
        ("/v1/ops/tickets", {"cursor": cursor_of(["x", "id"])}, "bad_cursor"),
        ("/v1/ops/purchases", {"cursor": cursor_of([1.0, ""])}, "bad_cursor"),
        ("/v1/ops/customers", {"cursor": cursor_of([1e400, "a"])}, "bad_cursor"),
        ("/v1/ops/audit", {"cursor": cursor_of({"at": 1})}, "bad_cursor"),
        ("/v1/ops/tickets", {"cursor": "not a cursor!"}, "invalid_request"),
        ("/v1/ops/tickets", {"limit": 0}, "invalid_request"),
        ("/v1/ops/purchases", {"limit": 501}, "invalid_request"),
        ("/v1/ops/tickets", {"order": "sideways"}, "invalid_request"),
        ("/v1/ops/tickets", {"status": "CLOSED"}, "invalid_request"),
        ("/v1/ops/tickets", {"customer_id": "x'--"}, "invalid_request"),
        ("/v1/ops/purchases", {"state": "HAPPY"}, "invalid_request"),
        ("/v1/ops/purchases", {"model": "<script>"}, "invalid_request"),
        ("/v1/ops/purchases", {"service_id": "Climate Plus"}, "invalid_request"),
        ("/v1/ops/customers", {"q": "a\x00b"}, "invalid_request"),
        ("/v1/ops/customers", {"q": "x" * 101}, "invalid_request"),
        ("/v1/ops/audit", {"operator": "a\nb"}, "invalid_request"),
    ],
)
async def test_bad_cursor_limit_or_filter_is_422(
    world: World, path: str, params: dict[str, Any], error: str
) -> None:
    """Never a 500, never a silent full list: a 422 with the project's error body."""
    got = await world.api.get(path, params=params, headers=world.as_(world.ops_token))
    assert (got.status_code, got.json()["error"]) == (422, error), got.text


async def test_ops_read_any_customers_expediente(world: World) -> None:
    """Operations open a customer's purchase file: the one the customer sees; an unknown
    customer is 404, a customer's token 403."""
    assert (await world.buy()).status_code == 202
    await world.drain()
    own = await world.api.get("/v1/customers/me/expediente", headers=world.as_(world.alice))
    path = f"/v1/ops/customers/{world.alice.customer_id}/expediente"
    theirs = await world.api.get(path, headers=world.as_(world.ops_token))
    assert theirs.status_code == 200
    assert theirs.json() == own.json() and len(own.json()["purchases"]) == 1
    missing = "/v1/ops/customers/no-such-customer/expediente"
    assert (await world.api.get(missing, headers=world.as_(world.ops_token))).status_code == 404
    assert (await world.api.get(path, headers=world.as_(world.alice))).status_code == 403
    await world.finish()
