"""Exceptions of the simulator.

SimulatorError
├── ScenarioError     a scenario file or --mix that does not validate
└── UnknownVehicle    a control request for a VIN that is not in the fleet
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Base class of simulator errors."""


class ScenarioError(SimulatorError):
    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class UnknownVehicle(SimulatorError):
    def __init__(self, vin: str) -> None:
        super().__init__(f"no vehicle {vin} in this fleet")
        self.vin = vin
