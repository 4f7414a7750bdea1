"""Operators as people: ``python -m backend operators create`` gives a person their own
ops token (printed once, never listed); ``/v1/ops/me`` names them; manual activation,
permanent failure and rule updates are written to the audit log under their name, on
the ticket they resolved, in the action's own transaction."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from backend import cli
from backend.store.models import ApiToken, OpsAction
from backend.workers.consumer import consume
from tests.backend.conftest import OPERATOR, VINS, World, WorldFactory
from tests.backend.test_support import failed_ticket

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def backend_cli(db_url: str, *args: str) -> Ran:
    """``python -m backend ARGS`` on this database, in a process of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend", *args,
        env={**clean, "CAAS_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(50):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit(w: World, **params: Any) -> list[dict[str, Any]]:
    r = await w.api.get("/v1/ops/audit", params=params, headers=w.as_(w.ops_token))
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_operator_created_by_the_cli_signs_in_by_name(
    make_world: WorldFactory, db_url: str
) -> None:
    """``operators create`` prints a token once; it is an ops token that ``/v1/ops/me``
    names; ``operators list`` shows names and prefixes, never a token; a taken or
    unusable name is refused."""
    async with make_world(db_url) as w:
        made = await backend_cli(db_url, "operators", "create", "--name", "  Ana Ruiz ")
        assert made.code == 0, made.err
        token = made.out.strip()
        assert token.startswith("caas_ops_") and "\n" not in token
        assert "shown once" in made.err and token not in made.err
        me = await w.api.get("/v1/ops/me", headers=bearer(token))
        assert (me.status_code, me.json()) == (200, {"role": "ops", "name": "Ana Ruiz"})
        tickets = await w.api.get("/v1/ops/tickets", headers=bearer(token))
        assert tickets.status_code == 200
        listed = await backend_cli(db_url, "operators", "list")
        assert listed.code == 0, listed.err
        lines = {line.split("\t")[0]: line for line in listed.out.splitlines()}
        assert set(lines) == {"Ana Ruiz", OPERATOR}
        assert token[:12] in lines["Ana Ruiz"] and token not in listed.out
        again = await backend_cli(db_url, "operators", "create", "--name", "Ana Ruiz")
        assert (again.code, again.out) == (1, "")
        assert "exists" in again.err
        for bad in ("", "   ", "x" * 65, "Ana\tRuiz"):  # refused before any database work
            with pytest.raises(SystemExit) as exit_:
                cli.main(["operators", "create", "--name", bad])
            assert exit_.value.code == 2, bad
        async with w.backend.sessions() as s:
            count = select(func.count()).select_from(ApiToken).where(ApiToken.role == "ops")
            assert await s.scalar(count) == 2
        await w.finish()


async def test_me_is_for_operators_only(world: World) -> None:
    """A customer token on ``/v1/ops/me`` is 403; no token 401."""
    assert (await world.api.get("/v1/ops/me", headers=world.as_(world.alice))).status_code == 403
    assert (await world.api.get("/v1/ops/me")).status_code == 401
    me = await world.api.get("/v1/ops/me", headers=world.as_(world.ops_token))
    assert me.json() == {"role": "ops", "name": OPERATOR}


async def _operator(w: World, name: str) -> dict[str, str]:
    from backend.services.operators import create_operator

    async with w.backend.sessions.begin() as session:
        return bearer(await create_operator(session, name, w.clock.now()))


async def test_support_actions_are_attributed_to_the_operator(
    make_world: WorldFactory, db_url: str
) -> None:
    """Ana activates one ticket by hand, Ben closes another as a permanent failure: each
    ticket names who resolved it and how, the audit log has one line each (a repeated
    or refused action adds none), filterable by operator and action."""
    async with make_world(db_url) as w:
        ana, ben = await _operator(w, "Ana Ruiz"), await _operator(w, "Ben Okafor")
        first, t1 = await failed_ticket(w)
        second, t2 = await failed_ticket(w, vin=VINS[1][0])
        w.clock.advance(600)
        r = await w.api.post(f"/v1/ops/tickets/{t1['id']}/manual-activation", headers=ana)
        assert r.status_code == 202, r.text
        support_id = r.json()["support_activation_id"]
        repeat = await w.api.post(f"/v1/ops/tickets/{t1['id']}/manual-activation", headers=ben)
        assert repeat.status_code == 202  # idempotent: nothing new, nothing audited
        w.clock.advance(60)
        pending = (await w.api.get(f"/v1/ops/tickets/{t1['id']}", headers=ana)).json()
        assert (pending["status"], pending["resolved_by"], pending["resolution"]) == (
            "OPEN", "Ana Ruiz", None,
        )  # fmt: skip
        r = await w.api.post(f"/v1/ops/tickets/{t2['id']}/permanent-failure", headers=ben)
        assert r.status_code == 200, r.text
        refused = await w.api.post(f"/v1/ops/tickets/{t2['id']}/permanent-failure", headers=ana)
        assert (refused.status_code, refused.json()["error"]) == (409, "ticket_resolved")
        body = {"activation_id": support_id, "vin": VINS[0][0], "feature": "climate_plus",
                "action": "activate"}  # fmt: skip
        assert await consume(w.backend.units, "ev-manual", "activation.succeeded", body) == (
            "applied"
        )
        await w.drain()
        done = (await w.api.get(f"/v1/ops/tickets/{t1['id']}", headers=ana)).json()
        assert (done["status"], done["resolution"], done["resolved_by"]) == (
            "RESOLVED", "manual_activation", "Ana Ruiz",
        )  # fmt: skip
        closed = (await w.api.get(f"/v1/ops/tickets/{t2['id']}", headers=ana)).json()
        assert (closed["status"], closed["resolution"], closed["resolved_by"]) == (
            "RESOLVED", "permanent_failure", "Ben Okafor",
        )  # fmt: skip
        log = await audit(w)
        assert [(a["operator"], a["action"], a["target_type"], a["target_id"]) for a in log] == [
            ("Ana Ruiz", "manual_activation", "ticket", t1["id"]),
            ("Ben Okafor", "permanent_failure", "ticket", t2["id"]),
        ]
        assert log[0]["detail"]["purchase_id"] == first["id"]
        assert log[0]["detail"]["support_activation_id"] == support_id
        assert log[1]["detail"]["purchase_id"] == second["id"]
        assert log[1]["at"] == closed["resolved_at"]
        assert [a["operator"] for a in await audit(w, operator="Ben Okafor")] == ["Ben Okafor"]
        assert [a["action"] for a in await audit(w, action="manual_activation")] == [
            "manual_activation"
        ]
        assert await audit(w, operator="Nobody") == []
        bad = await w.api.get("/v1/ops/audit", params={"action": "drop"}, headers=ana)
        assert bad.status_code == 422
        await w.finish()


async def test_audit_line_and_action_share_one_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permanent failure whose audit line cannot be written is not done either: the
    ticket, the purchase and the money intents roll back with it."""
    from backend.services import support

    _, t = await failed_ticket(world)
    ops = world.as_(world.ops_token)

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(support, "audit", broken)
    with pytest.raises(RuntimeError):
        await world.api.post(f"/v1/ops/tickets/{t['id']}/permanent-failure", headers=ops)
    monkeypatch.undo()
    ticket = (await world.api.get(f"/v1/ops/tickets/{t['id']}", headers=ops)).json()
    assert (ticket["status"], ticket["resolved_by"]) == ("OPEN", None)
    async with world.backend.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(OpsAction)) == 0
    r = await world.api.post(f"/v1/ops/tickets/{t['id']}/permanent-failure", headers=ops)
    assert r.status_code == 200
    assert [a["action"] for a in await audit(world)] == ["permanent_failure"]
    await world.finish()
