"""Live view of a running fleet: a rich table on a terminal, a log line otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vehicle_sim.runtime import FleetRuntime


class Snapshot:
    """Counters now, and rates since the previous snapshot."""

    def __init__(self, runtime: FleetRuntime, connected: int, previous: Snapshot | None) -> None:
        self.at = time.monotonic()
        self.received = runtime.stats.commands_received
        self.answered = runtime.stats.answers_sent
        self.connected = connected
        elapsed = self.at - previous.at if previous else 0.0
        self.rx_rate = (self.received - previous.received) / elapsed if previous and elapsed else 0
        self.tx_rate = (self.answered - previous.answered) / elapsed if previous and elapsed else 0


def summary_line(runtime: FleetRuntime, snap: Snapshot) -> str:
    modes = " ".join(f"{m}={n}" for m, n in sorted(runtime.mode_counts().items()))
    return (
        f"sim vehicles={len(runtime.vehicles)} connections={snap.connected} "
        f"received={snap.received} ({snap.rx_rate:.0f}/s) answered={snap.answered} "
        f"({snap.tx_rate:.0f}/s) dropped={sum(runtime.stats.dropped.values())} modes[{modes}]"
    )


def table(runtime: FleetRuntime, snap: Snapshot, title: str) -> Table:
    grid = Table(title=title, expand=False)
    grid.add_column("what")
    grid.add_column("value", justify="right")
    grid.add_row("vehicles", str(len(runtime.vehicles)))
    grid.add_row("MQTT connections up", str(snap.connected))
    for mode, n in sorted(runtime.mode_counts().items()):
        grid.add_row(f"  mode {mode}", str(n))
    grid.add_row("commands received", f"{snap.received}  ({snap.rx_rate:.0f}/s)")
    for ctype, n in sorted(runtime.stats.received.items()):
        grid.add_row(f"  {ctype}", str(n))
    grid.add_row("answers sent", f"{snap.answered}  ({snap.tx_rate:.0f}/s)")
    for label, n in sorted(runtime.stats.answered.items()):
        grid.add_row(f"  {label}", str(n))
    for why, n in sorted(runtime.stats.dropped.items()):
        grid.add_row(f"  not answered: {why}", str(n))
    grid.add_row("duplicate command_ids", str(runtime.stats.duplicates))
    return grid


async def show(
    runtime: FleetRuntime,
    connected: Callable[[], int],
    title: str,
    interval_s: float = 1.0,
    plain_interval_s: float = 5.0,
) -> None:
    """Refresh until cancelled."""
    previous: Snapshot | None = None
    if sys.stdout.isatty():
        with Live(console=Console(), refresh_per_second=4) as live:
            while True:
                previous = Snapshot(runtime, connected(), previous)
                live.update(table(runtime, previous, title))
                await asyncio.sleep(interval_s)
    while True:
        previous = Snapshot(runtime, connected(), previous)
        print(summary_line(runtime, previous), flush=True)
        await asyncio.sleep(plain_interval_s)
