"""The VSS maintenance system: a ``Protocol`` and a simulator (overdue set, latency,
outages)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from backend.errors import DependencyUnavailable


@dataclass(frozen=True)
class MaintenanceStatus:
    vin: str
    overdue: bool
    workshop_url: str


class MaintenanceClient(Protocol):
    async def status(self, vin: str) -> MaintenanceStatus:
        """Raises ``DependencyUnavailable`` when VSS does not answer."""
        ...


@dataclass
class SimulatedMaintenance:
    workshop_url: str = "https://workshops.caas.example/book"
    overdue: set[str] = field(default_factory=set)
    latency_s: float = 0.0
    outage: bool = False
    timeout_s: float = 5.0
    calls: int = 0

    async def status(self, vin: str) -> MaintenanceStatus:
        self.calls += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.sleep(self.latency_s)
                if self.outage:
                    await asyncio.sleep(self.timeout_s * 2)
        except TimeoutError:
            raise DependencyUnavailable("vss", "maintenance system did not answer") from None
        return MaintenanceStatus(vin, vin in self.overdue, self.workshop_url)
