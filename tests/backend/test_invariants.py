"""The invariant checker finds each broken money rule, and its CLI exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from backend.audit import money as invariants
from backend.store.models import MoneyOp, Payment, Purchase
from tests.backend.conftest import World, sqlite_url
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(60)


async def rules(w: World) -> set[str]:
    async with w.backend.sessions() as s:
        return {v.rule for v in await invariants.check(s, w.clock.now())}


async def test_charged_without_confirmed_activation_is_a_violation(world: World) -> None:
    """A CHARGED payment on a failed purchase breaks 'charged only if confirmed active'."""
    p = await bought(world)
    await event(world, "activation.succeeded", p)
    await world.drain()
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(state="FAILED_NO_CHARGE"))
    assert "charged_only_if_active" in await rules(world)


async def test_open_hold_after_failure_is_a_violation(world: World) -> None:
    """A hold still open on a terminal purchase with no pending release is flagged."""
    await bought(world)
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(state="FAILED_NO_CHARGE"))
    assert await rules(world) == {"hold_left_open"}


async def test_partial_refund_and_deadline_are_violations(world: World) -> None:
    """Refund ≠ capture, and an in-flight purchase past its deadline, are both flagged."""
    p = await bought(world)
    await event(world, "activation.succeeded", p)
    await world.drain()
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Payment).values(refunded_cents=100))
        await s.execute(update(Purchase).values(state="ACTIVATING"))
    world.clock.advance(4000)
    found = await rules(world)
    assert {"refund_equals_capture", "terminal_after_deadline", "charged_only_if_active"} <= found


async def test_stuck_money_intent_is_a_violation(world: World) -> None:
    """A money intent left REQUESTED for over an hour is flagged."""
    p = await bought(world)
    async with world.backend.sessions.begin() as s:
        await s.execute(update(MoneyOp).values(state="REQUESTED"))
    world.clock.advance(3601)
    assert "money_op_stuck" in await rules(world)
    assert p


def run_cli(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAAS_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "backend", "check-invariants"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_exit_code_follows_the_checker(world: World, tmp_path: Path) -> None:
    """``python -m backend check-invariants`` exits 0 when clean and 1 on a violation."""
    url = sqlite_url(tmp_path)
    p = await bought(world)
    await event(world, "activation.succeeded", p)
    await world.drain()
    clean = run_cli(url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(state="FAILED_NO_CHARGE"))
    broken = run_cli(url)
    assert broken.returncode == 1
    assert "charged_only_if_active" in broken.stdout
