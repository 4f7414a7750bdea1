"""Catalog compatibility: which vehicle models and firmware run which feature. The
catalog file's rules are the fleet's model table; a vehicle's catalog lists only what
it runs; a purchase it cannot run is refused before any payment; operators change the
rules at runtime (audited), every backend process applies the change at its next read,
and seeding the file on a restart keeps an operator's rules."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from backend.services.seed import SeededCustomer, create_customer
from backend.store import catalog
from backend.store.models import IdempotencyKey, MoneyOp, Payment, Purchase
from tests.backend.conftest import VINS, World, WorldFactory
from vehicle_sim.fleet import ALL_FEATURES, MODELS

pytestmark = pytest.mark.timeout(60)

RULES = "/v1/ops/catalog/rules"
URBANO_NEW, URBANO_OLD, CARGO = "WVWZZZ1JZ5W000001", "WVWZZZ1JZ5W000002", "WVWZZZ1JZ5W000003"


async def carla(w: World) -> SeededCustomer:
    """A customer with two Urbanos on different firmware and a Cargo."""
    async with w.backend.sessions.begin() as s:
        return await create_customer(
            s, "Carla", "carla@example.com",
            [(URBANO_NEW, "Urbano", "4.3.0"), (URBANO_OLD, "Urbano", "4.2.1"),
             (CARGO, "Cargo", "3.9.8")],
            w.clock.now(),
        )  # fmt: skip


async def offered(w: World, who: SeededCustomer, vin: str) -> set[str]:
    got = await w.api.get(
        "/v1/catalog", params={"vehicle_id": who.vehicles[vin]}, headers=w.as_(who)
    )
    assert got.status_code == 200, got.text
    return {s["id"] for s in got.json()["services"]}


async def buy(w: World, who: SeededCustomer, vin: str, service: str, key: str | None = None) -> Any:
    body = {"vehicle_id": who.vehicles[vin], "service_id": service,
            "duration": {"model": "subscription"}}  # every service on sale has one  # fmt: skip
    headers = {**w.as_(who), "Idempotency-Key": key or str(uuid.uuid4())}
    return await w.api.post("/v1/purchases", json=body, headers=headers)


async def put_rules(w: World, service: str, applies_to: Any) -> Any:
    return await w.api.put(
        f"/v1/ops/catalog/{service}/rules",
        json={"applies_to": applies_to},
        headers=w.as_(w.ops_token),
    )


def test_catalog_rules_are_the_fleets_model_table() -> None:
    """Every service names exactly the models whose firmware ships it, every firmware
    of them (the simulator's models ship the same features on every firmware)."""
    entries = {e["id"]: e for e in catalog.load_file()}
    for feature in ALL_FEATURES:
        shipped_by = sorted(m.name for m in MODELS if feature in m.features)
        rules = entries[feature]["applies_to"]
        assert rules == [{"model": m, "firmware": None} for m in shipped_by], feature
    assert "applies_to" not in entries["base_platform"]


async def test_a_vehicle_sees_only_what_it_runs(world: World) -> None:
    """A Tourer is offered every feature, an Urbano all but autonomous driving, a Cargo
    neither autonomous driving nor the entertainment pack."""
    c = await carla(world)
    every = set(ALL_FEATURES)
    assert await offered(world, world.alice, VINS[0][0]) == every
    assert await offered(world, world.bob, VINS[2][0]) == every - {"autonomous_driving"}
    assert await offered(world, c, CARGO) == every - {"autonomous_driving", "entertainment_pack"}
    await world.finish()


async def test_incompatible_purchase_is_refused_before_any_payment(
    make_world: WorldFactory, db_url: str
) -> None:
    """An Urbano buying autonomous driving: 409 ``not_compatible``; the provider saw no
    call, nothing was written, the Idempotency-Key is still free."""
    async with make_world(db_url) as w:
        refused = await buy(w, w.bob, VINS[2][0], "autonomous_driving", key="k-1")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "not_compatible"
        await w.drain()
        assert sum(w.provider.calls.values()) == 0
        async with w.backend.sessions() as s:
            for table in (Purchase, Payment, MoneyOp, IdempotencyKey):
                assert await s.scalar(select(func.count()).select_from(table)) == 0, table
        assert (await buy(w, w.bob, VINS[2][0], "climate_plus", key="k-1")).status_code == 202
        await w.finish()


async def test_rules_update_reaches_every_process_at_its_next_read(
    make_world: WorldFactory, db_url: str
) -> None:
    """Two backends on one database, both with their catalog cached: a rules update
    through one applies to the other's next catalog read and purchase, and the other
    way round; the update is audited with the rules before and after."""
    async with make_world(db_url) as a, make_world(db_url, restart_of=a) as b:
        c = await carla(a)
        assert "autonomous_driving" not in await offered(b, c, URBANO_NEW)  # b's cache warm
        new = [{"model": "Tourer", "firmware": None},
               {"model": "Urbano", "firmware": ["5.0.0", "4.3.0"]}]  # fmt: skip
        put = await put_rules(a, "autonomous_driving", new)
        assert put.status_code == 200, put.text
        assert put.json() == {
            "service_id": "autonomous_driving", "name": "Autonomous driving",
            "applies_to": [{"model": "Tourer", "firmware": None},
                           {"model": "Urbano", "firmware": ["4.3.0", "5.0.0"]}],
        }  # fmt: skip
        assert "autonomous_driving" in await offered(b, c, URBANO_NEW)
        assert "autonomous_driving" not in await offered(b, c, URBANO_OLD)
        assert (await buy(b, c, URBANO_NEW, "autonomous_driving")).status_code == 202
        late = await buy(b, c, URBANO_OLD, "autonomous_driving")
        assert (late.status_code, late.json()["error"]) == (409, "not_compatible")
        b.clock.advance(60)
        assert (await put_rules(b, "climate_plus", [])).status_code == 200  # sold to nobody
        assert "climate_plus" not in await offered(a, a.alice, VINS[0][0])
        gone = await buy(a, a.alice, VINS[0][0], "climate_plus")
        assert (gone.status_code, gone.json()["error"]) == (409, "not_compatible")
        rules = (await a.api.get(RULES, headers=a.as_(a.ops_token))).json()
        assert {r["service_id"]: r["applies_to"] for r in rules}["climate_plus"] == []
        log = (await a.api.get("/v1/ops/audit", headers=a.as_(a.ops_token))).json()
        assert [(e["action"], e["target_type"], e["target_id"]) for e in log] == [
            ("catalog_rules_updated", "service", "autonomous_driving"),
            ("catalog_rules_updated", "service", "climate_plus"),
        ]
        assert log[0]["detail"]["before"] == [{"model": "Tourer", "firmware": None}]
        assert log[0]["detail"]["after"] == put.json()["applies_to"]
        await b.finish()
        await a.finish()


def edited_file(tmp_path: Path, changes: dict[str, list[dict[str, Any]]]) -> Path:
    """The shipped catalog file with other rules for some services."""
    raw = yaml.safe_load(catalog.CATALOG_FILE.read_text())
    for entry in raw["services"]:
        if entry["id"] in changes:
            entry["applies_to"] = changes[entry["id"]]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def seed(w: World, path: Path = catalog.CATALOG_FILE) -> tuple[dict[str, Any], int]:
    """Seed the file as a restart would; the stored rules and the version after."""
    async with w.backend.sessions.begin() as s:
        await catalog.seed_catalog(s, w.clock.now(), path)
    async with w.backend.sessions() as s:
        stored = await catalog.load(s)
    return {sv.id: catalog.rules_json(sv.applies_to) for sv in stored.services}, stored.version


async def test_seeding_keeps_the_rules_an_operator_changed(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart seeds the file: services no operator touched follow the file, an
    edited one keeps the operator's rules (and the log says so) until an operator puts
    the file's rules back; the version moves only when something changed."""
    caplog.set_level(logging.WARNING, logger="backend")
    tourer = [{"model": "Tourer", "firmware": None}]
    _, version = await seed(world)
    assert (await seed(world))[1] == version  # the same file again: nothing changed
    assert (await put_rules(world, "winter_traction", tourer)).status_code == 200
    cargo = [{"model": "Cargo", "firmware": ["4.2.1"]}]
    changed = edited_file(tmp_path, {"climate_plus": cargo, "winter_traction": cargo})
    rules, after = await seed(world, changed)
    assert rules["climate_plus"] == cargo  # nobody edited it: the file's new rules
    assert rules["winter_traction"] == tourer  # the operator's, kept
    assert after == version + 2  # the update, then the seed that changed climate_plus
    assert "catalog.rules_kept" in caplog.text and "winter_traction" in caplog.text
    rules, _ = await seed(world)  # the shipped file again: the operator's still kept
    assert rules["winter_traction"] == tourer
    shipped = {e["id"]: e.get("applies_to") for e in catalog.load_file()}
    put = await put_rules(world, "winter_traction", shipped["winter_traction"])
    assert put.status_code == 200  # the file's rules back: the file leads again
    rules, _ = await seed(world, changed)
    assert rules["winter_traction"] == cargo
    await world.finish()


CARGO_TWICE = [{"model": "Cargo", "firmware": None}, {"model": "Cargo", "firmware": ["4.2.1"]}]
BAD_RULES = [  # (service, body, status, error)
    ("climate_plus", {"applies_to": CARGO_TWICE}, 422, "bad_rules"),
    ("climate_plus", {"applies_to": [{"model": "Cargo", "firmware": ["1", "1"]}]}, 422,
     "bad_rules"),
    ("climate_plus", {"applies_to": [{"model": "Cargo"}]}, 422, "invalid_request"),
    ("climate_plus", {"applies_to": [{"model": "Cargo", "firmware": None, "x": 1}]}, 422,
     "invalid_request"),
    ("climate_plus", {"applies_to": [{"model": "", "firmware": None}]}, 422, "invalid_request"),
    ("climate_plus", {"applies_to": [{"model": "Cargo", "firmware": ["4.2;--"]}]}, 422,
     "invalid_request"),
    ("climate_plus", {"applies_to": "Cargo"}, 422, "invalid_request"),
    ("climate_plus", {}, 422, "invalid_request"),
    ("no_such_service", {"applies_to": []}, 404, "not_found"),
    ("base_platform", {"applies_to": []}, 404, "not_found"),
    ("Bad-Id", {"applies_to": []}, 422, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("service", "body", "status", "error"), BAD_RULES)
async def test_bad_rules_are_refused_and_change_nothing(
    world: World, service: str, body: dict[str, Any], status: int, error: str
) -> None:
    """A bad rules body is a 4xx with the project's error body; nothing changes."""
    before = (await world.api.get(RULES, headers=world.as_(world.ops_token))).json()
    got = await world.api.put(
        f"/v1/ops/catalog/{service}/rules", json=body, headers=world.as_(world.ops_token)
    )
    assert (got.status_code, got.json()["error"]) == (status, error), got.text
    assert (await world.api.get(RULES, headers=world.as_(world.ops_token))).json() == before
    log = await world.api.get("/v1/ops/audit", headers=world.as_(world.ops_token))
    assert log.json() == []


async def test_rules_and_fleet_models_for_operators(world: World) -> None:
    """The rules of every service on sale (never the base platform) and the fleet's
    models with the firmware seen; customers may not read or change either."""
    await carla(world)
    ops = world.as_(world.ops_token)
    rules = (await world.api.get(RULES, headers=ops)).json()
    shipped = {e["id"]: e["applies_to"] for e in catalog.load_file() if "applies_to" in e}
    assert {r["service_id"]: r["applies_to"] for r in rules} == shipped
    models = (await world.api.get("/v1/ops/fleet/models", headers=ops)).json()
    assert models == [
        {"model": "Cargo", "firmware": ["3.9.8"], "vehicles": 1},
        {"model": "Tourer", "firmware": [], "vehicles": 2},  # seeded without firmware
        {"model": "Urbano", "firmware": ["4.2.1", "4.3.0"], "vehicles": 3},
    ]
    alice = world.as_(world.alice)
    assert (await world.api.get(RULES, headers=alice)).status_code == 403
    assert (await world.api.get("/v1/ops/fleet/models", headers=alice)).status_code == 403
    put = await world.api.put(
        "/v1/ops/catalog/climate_plus/rules", json={"applies_to": []}, headers=alice
    )
    assert put.status_code == 403
    await world.finish()
