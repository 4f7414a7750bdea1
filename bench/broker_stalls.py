"""Broker stalls: round trips through an idle broker that holds a fleet's retained
messages, with the periodic autosave mosquitto.conf used to have and with the
project's setting, back to back in one run.

A mosquitto save is a synchronous snapshot of its whole database in its only thread,
so every message waits for it. For each setting the benchmark starts a broker with the
project's config (only ``autosave_interval`` differs), publishes ``--retained`` retained
``state`` messages as the fleet does (one per vehicle, about the simulator's size),
then sends one QoS 1 message every 10 ms from the fleet identity to a gateway
subscriber for ``--seconds`` and records each round trip. It counts the saves by the
database file's modification time, and reports the p50/p99/max round trip, every
stall above ``STALL_MS`` with the second it happened, and the database's size.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from launcher.broker import Broker, BrokerSettings
from launcher.credentials import new_secret
from launcher.procs import free_port
from protocol.mqtt import ConnectionOptions, MqttConnection
from protocol.topics import Topics

STALL_MS = 25.0
INTERVAL_S = 0.010
TOPICS = Topics("caas/v1")
# About what the simulator retains per vehicle (vehicle_sim state: online, moving,
# gear, busy, battery, firmware, features, timestamp).
STATE = (
    b'{"vin":"%s","online":true,"moving":false,"gear":"P","busy":false,"battery_pct":81,'
    b'"firmware":"4.2.1","features":{"climate":"active","power_boost":"inactive"},'
    b'"at":"2026-12-03T21:00:00.000Z"}'
)


@dataclass
class Phase:
    autosave_interval_s: int
    round_trips: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    saves: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (second, ms)
    db_bytes: int = 0


def vin(n: int) -> str:
    return f"BENCH{n:012d}"


async def fill(fleet: MqttConnection, retained: int) -> None:
    """One retained state per vehicle, acknowledged by the broker."""
    for n in range(retained):
        fleet.publish(TOPICS.state(vin(n)), STATE % vin(n).encode(), qos=1, retain=True)
        if n % 2000 == 1999:
            await fleet.flush(60)
    await fleet.flush(60)


async def round_trips(
    fleet: MqttConnection,
    arrived: asyncio.Queue[None],
    db: Path,
    seconds: float,
    autosave_interval_s: int,
) -> Phase:
    """One message every ``INTERVAL_S``; each waits for the subscriber to get it."""
    phase = Phase(autosave_interval_s)
    times_ms: list[float] = []
    mtimes: set[int] = set()
    topic = TOPICS.state("PROBE")
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        sent = time.perf_counter()
        fleet.publish(topic, b"probe", qos=1)
        await asyncio.wait_for(arrived.get(), 10)
        ms = (time.perf_counter() - sent) * 1000
        times_ms.append(ms)
        if ms > STALL_MS:
            phase.stalls.append((round(elapsed, 1), round(ms, 1)))
        mtimes.add(saved_at(db))
        await asyncio.sleep(INTERVAL_S)
    phase.round_trips = len(times_ms)
    phase.p50_ms = round(statistics.median(times_ms), 2)
    phase.p99_ms = round(statistics.quantiles(times_ms, n=100)[98], 2)
    phase.max_ms = round(max(times_ms), 1)
    phase.saves = len(mtimes - {0})  # a fresh run folder: no database until the first save
    return phase


def saved_at(db: Path) -> int:
    """The database's modification time (ns), 0 before the first save (a stat, a few
    microseconds: not worth a thread between two round trips)."""
    return db.stat().st_mtime_ns if db.exists() else 0


async def measure(autosave_interval_s: int, retained: int, seconds: float) -> Phase:
    with tempfile.TemporaryDirectory(prefix="caas-broker-stalls-") as tmp:
        settings = BrokerSettings(
            Path(tmp), free_port(), free_port(), "gateway", new_secret(), "fleet", new_secret(),
            autosave_interval_s=autosave_interval_s,
        )  # fmt: skip
        broker = Broker(settings)
        broker.start()
        try:
            arrived: asyncio.Queue[None] = asyncio.Queue()
            watcher = MqttConnection(
                broker.gateway_address(),
                ConnectionOptions(client_id="stalls", subscriptions=[(TOPICS.state("PROBE"), 1)]),
                on_message=lambda _: arrived.put_nowait(None),
            )
            fleet = MqttConnection(broker.fleet_address(), ConnectionOptions(client_id="stalls"))
            await watcher.connect()
            await fleet.connect()
            await fill(fleet, retained)
            db = settings.run_dir / "mosquitto.db"
            # this process's own collections would be counted as the broker's stalls
            gc.collect()
            gc.disable()
            try:
                phase = await round_trips(fleet, arrived, db, seconds, autosave_interval_s)
            finally:
                gc.enable()
            await fleet.disconnect()
            await watcher.disconnect()
        finally:
            broker.stop()  # a clean stop: the broker saves once more at exit
        phase.db_bytes = db.stat().st_size if db.exists() else 0
        return phase


def report(phases: list[Phase]) -> dict[str, object]:
    """Both phases, and the stalls of each: round trips above ``STALL_MS`` (a stall
    without a save is this machine's noise, which the baseline run has as much of)."""
    before, now = phases
    return {
        "before": asdict(before),
        "project": asdict(now),
        "stall_ms": STALL_MS,
        "stalls": {"before": len(before.stalls), "project": len(now.stalls)},
    }


def run(retained: int, seconds: float, baseline_interval_s: int, json_out: Path | None) -> int:
    phases = []
    for interval in (baseline_interval_s, BrokerSettings.autosave_interval_s):
        label = f"autosave_interval {interval}"
        print(f"[stalls] {label}: {retained} retained messages, {seconds:g} s of round trips",
              flush=True)  # fmt: skip
        phase = asyncio.run(measure(interval, retained, seconds))
        print(f"[stalls] {label}: p50 {phase.p50_ms} ms, p99 {phase.p99_ms} ms, max "
              f"{phase.max_ms} ms, {phase.saves} saves, stalls >{STALL_MS:g} ms at "
              f"(s, ms) {phase.stalls}", flush=True)  # fmt: skip
        phases.append(phase)
    result = report(phases)
    print(json.dumps(result, indent=2))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0
