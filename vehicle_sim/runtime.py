"""The fleet at run time: applies events to the vehicles, carries out their outputs.

The runtime knows nothing about sockets: it talks to a ``Link`` (one of the two
connection modes in ``transport``) to publish and to take a vehicle on or off line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from protocol.timeutil import Clock
from protocol.topics import Topics
from vehicle_sim import vehicle as vm
from vehicle_sim.errors import UnknownVehicle
from vehicle_sim.fleet import Mode, VehicleSpec

log = logging.getLogger(__name__)


class Link(Protocol):
    """A connection mode, as the runtime sees it. Neither call raises, broker or not:
    timers, the control API and the scenario timeline call them at any time."""

    def publish(
        self, vin: str, topic: str, payload: bytes, retain: bool, correlation: bytes | None
    ) -> None:
        """Send QoS 1; while the connection is down it is queued and sent after the
        reconnect. What cannot be sent (an off-line vehicle) is dropped and counted."""
        ...

    def set_online(self, vin: str, online: bool, abrupt: bool) -> None:
        """Take the vehicle on line (connect, then ``runtime.announce``) or off line;
        with the broker away, done once it is back. After every reconnect the link calls
        ``announce`` (or ``announce_offline``) again with the vehicle's current state."""
        ...

    def connected_count(self) -> int: ...


@dataclass
class FleetStats:
    """Plain counters (cheap on the hot path); console and /metrics read them."""

    received: Counter[str] = field(default_factory=Counter)  # by command type
    answered: Counter[str] = field(default_factory=Counter)  # "ack" or "nack/<reason>"
    dropped: Counter[str] = field(default_factory=Counter)  # by why
    duplicates: int = 0
    state_publishes: int = 0

    @property
    def commands_received(self) -> int:
        return sum(self.received.values())

    @property
    def answers_sent(self) -> int:
        return sum(self.answered.values())


class FleetRuntime:
    def __init__(
        self,
        specs: Iterable[VehicleSpec],
        ctx: vm.Context,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self.ctx = ctx
        self.topics = topics
        self.clock = clock
        self.specs = {spec.vin: spec for spec in specs}
        self.vehicles: dict[str, vm.Vehicle] = {}
        self.seen: dict[str, OrderedDict[str, vm.Respond | None]] = {}
        self.stats = FleetStats()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._link: Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------- set-up
    def boot(self, link: Link) -> None:
        """Create every vehicle in its initial mode (before any connection)."""
        self._link = link
        self._loop = asyncio.get_running_loop()
        now = self.clock.now()
        for vin, spec in self.specs.items():
            self.seen[vin] = OrderedDict()
            self._apply(vin, vm.boot(spec, self.ctx.behaviour, self.ctx.seed, now), publish=False)

    def vehicle(self, vin: str) -> vm.Vehicle:
        try:
            return self.vehicles[vin]
        except KeyError:
            raise UnknownVehicle(vin) from None

    def wants_online(self, vin: str) -> bool:
        return self.vehicles[vin].online

    def announce(self, vin: str) -> None:
        """Publish presence and state (retained) for a vehicle that just came on line."""
        vehicle = self.vehicles[vin]
        now = self.clock.now()
        self._publish(vin, self.topics.presence(vin), vm.presence_payload(vin, True, now), True)
        self._publish(vin, self.topics.state(vin), vm.state_payload(vehicle), True)

    def announce_offline(self, vin: str) -> None:
        now = self.clock.now()
        self._publish(vin, self.topics.presence(vin), vm.presence_payload(vin, False, now), True)
        self._publish(vin, self.topics.state(vin), vm.state_payload(self.vehicles[vin]), True)

    # ------------------------------------------------------------- events
    def on_command(self, vin: str, arrival: vm.Arrival) -> None:
        vehicle = self.vehicles.get(vin)
        if vehicle is None:
            self.stats.dropped["unknown_vin"] += 1
            return
        self.stats.received[_command_type(arrival.payload)] += 1
        transition = vm.on_command(vehicle, arrival, self.ctx, self.seen[vin], self.clock.now())
        self._apply(vin, transition)

    def set_mode(self, vin: str, mode: Mode, abrupt: bool = False) -> vm.Vehicle:
        before = self.vehicle(vin)
        transition = vm.set_mode(before, mode, self.ctx.behaviour, self.ctx.seed, self.clock.now())
        self._apply(vin, transition)
        after = self.vehicles[vin]
        if after.online != before.online and self._link is not None:
            self._link.set_online(vin, after.online, abrupt)
        return after

    def patch(self, vin: str, **fields: object) -> vm.Vehicle:
        self._apply(vin, vm.patch(self.vehicle(vin), self.clock.now(), **fields))
        return self.vehicles[vin]

    def start_trip(self, vin: str, duration_s: float, speed_kmh: float = 50.0) -> vm.Vehicle:
        vehicle = self.vehicle(vin)
        now = self.clock.now()
        moving = vm.start_trip(vehicle, now, duration_s, speed_kmh)
        self._apply(vin, vm.patch(vehicle, now, **_fields_of(moving)))
        self.schedule_wake(vin, now + duration_s)
        return self.vehicles[vin]

    def _wake(self, vin: str) -> None:
        self._timers.pop(vin, None)
        transition = vm.on_wake(self.vehicles[vin], self.clock.now())
        self._apply(vin, transition)
        pending = [t for t in (transition.vehicle.trip_ends_at, transition.vehicle.busy_until) if t]
        if pending:
            self.schedule_wake(vin, min(pending))

    # ------------------------------------------------------------- outputs
    def _apply(self, vin: str, transition: vm.Transition, publish: bool = True) -> None:
        self.vehicles[vin] = transition.vehicle
        for out in transition.outputs:
            if isinstance(out, vm.Respond):
                self._respond(vin, out)
            elif isinstance(out, vm.PublishState):
                if publish and transition.vehicle.online:
                    self.stats.state_publishes += 1
                    self._publish(vin, self.topics.state(vin), out.payload, True)
            elif isinstance(out, vm.Remember):
                self._remember(vin, out)
            elif isinstance(out, vm.DuplicateSeen):
                self.stats.duplicates += 1
            elif isinstance(out, vm.ScheduleWake):
                self.schedule_wake(vin, out.at)
            elif isinstance(out, vm.GoOffline):
                self._go_offline_for(vin, out.for_s)
            else:
                self.stats.dropped[out.why] += 1

    def _respond(self, vin: str, out: vm.Respond) -> None:
        # Always our own responses topic: a Response Topic pointing elsewhere would be
        # refused by the broker ACL (or, for the fleet identity, spoof another vehicle).
        topic = self.topics.responses(vin)
        self.stats.answered[_answer_label(out.payload)] += out.copies
        if out.delay_s > 0 and self._loop is not None:
            self._loop.call_later(out.delay_s, self._send_copies, vin, topic, out)
        else:
            self._send_copies(vin, topic, out)

    def _send_copies(self, vin: str, topic: str, out: vm.Respond) -> None:
        for _ in range(out.copies):
            self._publish(vin, topic, out.payload, False, out.correlation)

    def _remember(self, vin: str, out: vm.Remember) -> None:
        seen = self.seen[vin]
        # A duplicate gets the first answer once and at once, whatever its delivery was.
        seen[out.command_id] = (
            replace(out.response, delay_s=0.0, copies=1) if out.response else None
        )
        while len(seen) > self.ctx.behaviour.dedupe_window:
            seen.popitem(last=False)

    def schedule_wake(self, vin: str, at: float) -> None:
        if self._loop is None or math.isinf(at):
            return
        old = self._timers.pop(vin, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, at - self.clock.now())
        self._timers[vin] = self._loop.call_later(delay, self._wake, vin)

    def _go_offline_for(self, vin: str, for_s: float) -> None:
        self.patch(vin, online=False)
        if self._link is not None:
            self._link.set_online(vin, False, True)
        if self._loop is not None:
            self._loop.call_later(for_s, self._back_online, vin)

    def _back_online(self, vin: str) -> None:
        if self.vehicles[vin].mode is Mode.OFFLINE:
            return
        self.patch(vin, online=True)
        if self._link is not None:
            self._link.set_online(vin, True, False)

    def _publish(
        self, vin: str, topic: str, payload: bytes, retain: bool, correlation: bytes | None = None
    ) -> None:
        if self._link is not None:
            self._link.publish(vin, topic, payload, retain, correlation)

    # ------------------------------------------------------------- views
    def mode_counts(self) -> Counter[str]:
        return Counter(v.mode.value for v in self.vehicles.values())

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _fields_of(vehicle: vm.Vehicle) -> dict[str, object]:
    return {
        "power": vehicle.power,
        "moving": vehicle.moving,
        "gear": vehicle.gear,
        "speed_kmh": vehicle.speed_kmh,
        "trip_ends_at": vehicle.trip_ends_at,
    }


_TYPE_RE = re.compile(rb'"type"\s*:\s*"(activate|deactivate|status|diagnostics)"')


def _command_type(payload: bytes) -> str:
    """Cheap label for the received counter (the full parse happens in the vehicle)."""
    match = _TYPE_RE.search(payload)
    return match.group(1).decode() if match else "unparsed"


def _answer_label(payload: bytes) -> str:
    if b'"status":"ack"' in payload:
        return "ack"
    start = payload.find(b'"reason":"')
    if start < 0:
        return "nack/unknown"
    end = payload.find(b'"', start + 10)
    return "nack/" + payload[start + 10 : end].decode(errors="replace")
