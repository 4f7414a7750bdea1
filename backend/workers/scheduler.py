"""A durable scheduler: expiry, pre-expiry notices, subscription ends, month-end billing.

Jobs are rows (``scheduled_jobs``, unique ``key`` such as ``expire:<purchase>``). A pass
claims one due job at a time **inside the transaction that runs it**: ``SELECT … FOR
UPDATE SKIP LOCKED`` on PostgreSQL (another process skips the row instead of waiting),
``BEGIN IMMEDIATE`` on SQLite (transactions that write are serialised), and the job is
marked DONE with ``UPDATE … WHERE state = 'PENDING'`` in that same transaction. The
job's writes and its DONE mark commit together or not at all, so a crash re-runs it and
two processes never both commit it; handlers are also guarded by the purchase state and
by unique constraints (one charge per subscription month), so a re-run is a no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from backend.domain.retry import backoff_s
from backend.logs import log
from backend.store.db import Sessions
from backend.store.models import ScheduledJob
from backend.store.records import JOB_DONE as DONE
from backend.store.records import JOB_PENDING as PENDING
from backend.store.records import schedule
from backend.store.unit_of_work import UnitOfWork, Units

JobHandler = Callable[[UnitOfWork, ScheduledJob], Awaitable[None]]


class _Lost(Exception):
    """Another process marked the job DONE first: roll this run back."""


class Scheduler:
    def __init__(
        self,
        units: Units,
        handlers: dict[str, JobHandler],
        before_pass: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.units = units
        self.sessions = units.sessions
        self.clock = units.clock
        self.handlers = handlers
        self.before_pass = before_pass
        self.ran = 0

    async def run_once(self, limit: int = 200) -> int:
        """Run the due jobs (oldest first); returns how many this process committed."""
        if self.before_pass is not None:
            await self.before_pass(self.clock.now())
        done = 0
        for _ in range(limit):
            outcome = await self._run_one()
            if outcome is None:
                break
            done += outcome
        return done

    async def _run_one(self) -> int | None:
        """1 ran, 0 failed or lost the race, None when nothing is due."""
        now = self.clock.now()
        job_id = None
        try:
            async with self.units.begin() as work:
                session = work.session
                job = await session.scalar(
                    select(ScheduledJob)
                    .where(ScheduledJob.state == PENDING, ScheduledJob.due_at <= now)
                    .order_by(ScheduledJob.due_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if job is None:
                    return None
                job_id = job.id
                await self.handlers[job.kind](work, job)
                marked = await session.execute(
                    update(ScheduledJob)
                    .where(ScheduledJob.id == job.id, ScheduledJob.state == PENDING)
                    .values(state=DONE, done_at=now, attempts=job.attempts + 1)
                )
                if marked.rowcount != 1:  # type: ignore[attr-defined]
                    raise _Lost()
        except _Lost:
            return 0
        except Exception as exc:  # the job's writes rolled back: retry it later
            await self._failed(job_id, exc, now)
            return 0
        self.ran += 1
        log("scheduler.ran", job_id=job_id)
        return 1

    async def _failed(self, job_id: str | None, exc: Exception, now: float) -> None:
        error = f"{type(exc).__name__}: {exc}"[:300]
        log("scheduler.job_failed", job_id=job_id, error=error)
        if job_id is None:
            return
        async with self.sessions.begin() as session:
            job = await session.get(ScheduledJob, job_id)
            if job is None or job.state != PENDING:
                return
            job.attempts += 1
            job.error = error
            job.due_at = now + backoff_s(job.attempts, 5.0, 3600.0)


async def ensure(sessions: Sessions, kind: str, key: str, due_at: float, now: float) -> None:
    """``schedule`` in its own transaction; a concurrent twin insert is fine."""
    try:
        async with sessions.begin() as session:
            await schedule(session, kind, key, due_at, now)
    except IntegrityError:
        pass
