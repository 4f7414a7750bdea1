"""The notification dispatcher: rows are claimed before they are sent, so two
dispatchers (two coroutines, or two processes on one database) never send the same
row; a route that settles inline does not race the notify loop into a double send; a
failure is recorded once; a crash between send and record resends that one row."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select

from backend.domain.notices import render
from backend.store.db import make_engine, make_sessions
from backend.store.models import Customer, Notification
from backend.store.records import queue_notice
from backend.workers.notify import Dispatcher
from tests.backend.conftest import World, WorldFactory
from tests.backend.fakes import Killed, RecordingChannel
from tests.backend.lifecycle_kit import active, cancel
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


async def queue_notices(w: World, count: int) -> None:
    """``count`` distinct notices for Alice (e-mail and push each: she has the app)."""
    async with w.backend.sessions.begin() as session:
        alice = await session.get(Customer, w.alice.customer_id)
        assert alice is not None
        for n in range(count):
            msg = render("ticket_created", ticket=f"T-{n}", service="x", vin="V")
            queue_notice(session, alice, msg, w.clock.now())


async def statuses(w: World) -> Counter[str]:
    async with w.backend.sessions() as session:
        return Counter((await session.scalars(select(Notification.status))).all())


def slow_channels() -> dict[str, RecordingChannel]:
    return {n: RecordingChannel(n, delay_s=0.005) for n in ("email", "push", "sms")}


def subjects(*channel_sets: dict[str, RecordingChannel]) -> Counter[tuple[str, str]]:
    return Counter(
        (name, subject)
        for channels in channel_sets
        for name, channel in channels.items()
        for _, subject, _ in channel.sent
    )


async def until_idle(dispatcher: Dispatcher) -> int:
    """Pass after pass in small batches, like the notify loop; how many it handled."""
    done = 0
    while handled := await dispatcher.dispatch_pending(limit=4):
        done += handled
    return done


async def test_two_dispatchers_send_each_row_once(make_world: WorldFactory, db_url: str) -> None:
    """Two dispatchers, the second on an engine of its own (another process), work on
    the same queued rows at once: every row is sent exactly once, by one of them."""
    async with make_world(db_url) as w:
        await queue_notices(w, 10)
        other_engine = make_engine(db_url)
        try:
            mine, theirs = slow_channels(), slow_channels()
            first = Dispatcher(w.backend.sessions, dict(mine), w.clock)
            other_sessions = make_sessions(other_engine)
            async with other_sessions() as session:  # connected before the race starts
                await session.execute(select(1))
            second = Dispatcher(other_sessions, dict(theirs), w.clock)
            done = await asyncio.gather(until_idle(first), until_idle(second))
        finally:
            await other_engine.dispose()
        sent = subjects(mine, theirs)
        assert sum(done) == sum(sent.values()) == 20
        assert set(sent.values()) == {1}, sent
        assert subjects(mine) and subjects(theirs)  # both did work
        assert await statuses(w) == {"SENT": 20}
        await w.finish()


async def test_cancel_route_and_notify_loop_send_each_row_once(world: World) -> None:
    """The cancel route settles inline while the notify loop, woken by the same commit,
    runs too: one message per row of the communication log."""
    w = world
    p = await active(w)
    for channel in w.channels.values():
        channel.delay_s = 0.005
    async with w.backend.running():
        await asyncio.sleep(0.05)  # every loop made its first pass and now waits
        response = await cancel(w, p["id"])
        assert response.status_code == 200, response.text

        async def all_handled() -> bool:
            return (await statuses(w))["QUEUED"] == 0

        await eventually(all_handled, interval_s=0.01)
    async with w.backend.sessions() as session:
        rows = (await session.scalars(select(Notification))).all()
    logged = Counter((n.channel, n.subject) for n in rows)
    assert subjects(w.channels) == logged
    assert ("email", "Cancellation of climate_plus") in logged
    assert ("email", "climate_plus has ended") in logged
    await w.finish()


async def test_failed_send_is_recorded_once_and_not_retried(world: World) -> None:
    """A channel that fails: the row is FAILED (the others SENT), and it is not taken
    again once its claim's lease is over."""
    world.channels["email"].fail = True
    await queue_notices(world, 1)
    assert await world.backend.dispatcher.dispatch_pending() == 2
    assert await statuses(world) == {"FAILED": 1, "SENT": 1}
    world.clock.advance(world.backend.dispatcher.lease_s + 1)
    assert await world.backend.dispatcher.dispatch_pending() == 0
    assert len(world.channels["push"].sent) == 1
    async with world.backend.sessions() as session:
        failed = await session.scalar(select(Notification).where(Notification.status == "FAILED"))
    assert failed is not None and failed.channel == "email"
    assert failed.error == "ConnectionError: channel down"


class TimedChannel(RecordingChannel):
    """Each send takes ``took_s`` of the injected clock's time."""

    def __init__(self, name: str, world: World, took_s: float) -> None:
        super().__init__(name)
        self.world, self.took_s = world, took_s

    async def send(self, address: str, subject: str, body: str, ref: str) -> None:
        self.world.clock.advance(self.took_s)
        await super().send(address, subject, body, ref)


async def test_slow_sends_stop_at_half_the_lease(world: World) -> None:
    """Sends that take long: no send starts after half the claim's lease, so none can
    still be running when another dispatcher may take the row; the rest go later."""
    d = world.backend.dispatcher
    channel = TimedChannel("email", world, d.lease_s * 0.3)
    d.channels = {"email": channel, "push": channel}
    await queue_notices(world, 2)  # four rows
    assert await d.dispatch_pending() == 2  # at 0 and 0.3 lease; not at 0.6
    assert await d.dispatch_pending() == 0  # the other two are still claimed
    world.clock.advance(d.lease_s * 0.4 + 1)  # the claim has run out
    assert await d.dispatch_pending() == 2
    assert len(channel.sent) == 4 == len(set(channel.sent))
    assert await statuses(world) == {"SENT": 4}


class DiesAfterSending(RecordingChannel):
    """Sends, then the process dies before the outcome is recorded."""

    async def send(self, address: str, subject: str, body: str, ref: str) -> None:
        await super().send(address, subject, body, ref)
        raise Killed()


async def test_killed_between_send_and_record_resends_that_row_once(world: World) -> None:
    """The documented limit: a dispatcher killed after a send and before its record
    leaves the row QUEUED; once the lease is over it is sent again (one duplicate); the
    rows it had claimed but not sent are sent once."""
    d = world.backend.dispatcher
    await queue_notices(world, 2)
    dying = DiesAfterSending("email")
    d.channels = {"email": dying, "push": dying}
    with pytest.raises(Killed):
        await d.dispatch_pending()
    d.channels = dict(world.channels)
    assert await d.dispatch_pending() == 0  # claimed by the dead dispatcher
    world.clock.advance(d.lease_s)
    assert await d.dispatch_pending() == 4
    resent = dying.sent[0]
    again = [s for s in world.channels["email"].sent + world.channels["push"].sent]
    assert again.count(resent) == 1 and len(again) == len(set(again)) == 4
    assert await statuses(world) == {"SENT": 4}
