"""The durable scheduler: two backend processes on one database run each due job once
(SQLite and PostgreSQL); a job that fails is rolled back and retried; a restart loses
nothing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from backend.store.models import OutboxMessage, ScheduledJob, SubscriptionCharge
from backend.workers.scheduler import Scheduler
from tests.backend.conftest import WorldFactory
from tests.backend.lifecycle_kit import DAY, active

pytestmark = pytest.mark.timeout(60)


async def test_two_processes_run_each_job_once(make_world: WorldFactory, db_url: str) -> None:
    """Two schedulers racing on the same due jobs: one deactivation each, one charge."""
    async with make_world(db_url) as w:
        temps = [
            await active(w, s, duration={"model": "temporary", "days": 7})
            for s in ("power_boost_50", "entertainment_pack")
        ]
        await active(w, "climate_plus", duration={"model": "subscription"})
        async with make_world(db_url, restart_of=w) as other:
            target = w.clock.now() + 14 * DAY
            for clock in (w.clock, other.clock):
                clock.advance(target - clock.now())
            async with w.backend.sessions() as s:
                done_before = await s.scalar(
                    select(func.count())
                    .select_from(ScheduledJob)
                    .where(ScheduledJob.state == "DONE")
                )
            ran = await asyncio.gather(
                w.backend.scheduler.run_once(), other.backend.scheduler.run_once()
            )
            async with w.backend.sessions() as s:
                pending = await s.scalar(
                    select(func.count())
                    .select_from(ScheduledJob)
                    .where(ScheduledJob.state != "DONE")
                )
                jobs = await s.scalar(select(func.count()).select_from(ScheduledJob))
                off = await s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.kind == "deactivation.request")
                )
                charges = await s.scalar(select(func.count()).select_from(SubscriptionCharge))
            assert pending == 0 and sum(ran) == (jobs or 0) - (done_before or 0) >= 5
            assert off == len(temps) == 2
            assert charges == 1
        await w.finish()


async def test_failed_job_rolls_back_and_is_retried(make_world: WorldFactory) -> None:
    """A handler that raises leaves no trace and the job PENDING; the retry runs it once."""
    async with make_world() as w:
        p = await active(w, duration={"model": "temporary", "days": 30})
        calls = []
        real = w.backend.scheduler.handlers["expire"]

        async def flaky(work, job):  # type: ignore[no-untyped-def]
            calls.append(job.key)
            await real(work, job)
            if len(calls) == 1:
                raise RuntimeError("crash after writing")

        handlers = {**w.backend.scheduler.handlers, "expire": flaky}
        w.backend.scheduler = Scheduler(w.backend.units, handlers)
        w.clock.advance(31 * DAY)
        await w.backend.scheduler.run_once()
        assert (await w.purchase(p["id"]))["state"] == "ACTIVE"  # rolled back
        w.clock.advance(3600)
        await w.backend.scheduler.run_once()
        assert (await w.purchase(p["id"]))["state"] == "EXPIRED"
        assert len(calls) == 2
        await w.finish()


async def test_jobs_survive_a_restart(make_world: WorldFactory, db_url: str) -> None:
    """Timers are rows: a new process on the same database expires the service on time."""
    async with make_world(db_url) as w:
        p = await active(w, duration={"model": "temporary", "days": 30})
    async with make_world(db_url, restart_of=w) as again:
        again.clock.advance(31 * DAY)
        await again.drain()
        assert (await again.purchase(p["id"]))["state"] == "EXPIRED"
        await again.finish()
