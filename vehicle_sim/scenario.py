"""Scenario files: fleet mix, timing of behaviours and a timeline of stages.

    name: morning-rush
    vehicles: 1000            # --vehicles overrides
    seed: 7                   # --seed overrides
    mix: {online: 0.7, busy: 0.1, driving: 0.1, offline: 0.05, flaky: 0.05}
    timing:
      busy_s: [20, 60]        # null: busy until a stage or the control API says otherwise
      trip_s: [20, 90]
      flaky: {answer: 0.5, drop: 0.15, delay: 0.15, duplicate: 0.1, disconnect: 0.1}
    stages:
      - {at_s: 30, fraction: 0.2, from_modes: [online], set_mode: offline, abrupt: true}
      - {at_s: 90, fraction: 1.0, from_modes: [offline], set_mode: online}

Which vehicles a stage picks is a pure function of (seed, stage index, VIN).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vehicle_sim.behaviour import DEFAULT_FLAKY_WEIGHTS, Behaviour, FlakyOutcome
from vehicle_sim.errors import ScenarioError
from vehicle_sim.fleet import Mode, validate_mix
from vehicle_sim.rng import stable_seed
from vehicle_sim.runtime import FleetRuntime

log = logging.getLogger(__name__)

Range = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(name: str, value: Range | None) -> None:
    if value is not None and not 0 <= value[0] <= value[1]:
        raise ValueError(f"{name} must be [low, high] with 0 <= low <= high")


class Timing(_Strict):
    busy_s: Range | None = (20.0, 60.0)
    trip_s: Range = (20.0, 90.0)
    flaky: dict[FlakyOutcome, float] = Field(default_factory=lambda: dict(DEFAULT_FLAKY_WEIGHTS))
    flaky_delay_s: Range = (1.0, 5.0)
    flaky_reconnect_s: Range = (1.0, 5.0)

    @model_validator(mode="after")
    def _ranges(self) -> Timing:
        for name in ("busy_s", "trip_s", "flaky_delay_s", "flaky_reconnect_s"):
            _check_range(name, getattr(self, name))
        if sum(self.flaky.values()) <= 0 or min(self.flaky.values()) < 0:
            raise ValueError("flaky weights must be >= 0 with a positive sum")
        return self

    def behaviour(self) -> Behaviour:
        return Behaviour(
            busy_s=self.busy_s,
            trip_s=self.trip_s,
            flaky_weights=dict(self.flaky),
            flaky_delay_s=self.flaky_delay_s,
            flaky_reconnect_s=self.flaky_reconnect_s,
        )


class Stage(_Strict):
    at_s: float = Field(ge=0)
    set_mode: Mode
    fraction: float = Field(default=1.0, gt=0, le=1)
    from_modes: list[Mode] | None = None
    abrupt: bool = False  # off line by a dropped connection (the Will) rather than cleanly


class Scenario(_Strict):
    name: str = "default"
    vehicles: int | None = Field(default=None, ge=1)
    seed: int | None = None
    mix: dict[Mode, float] = Field(default_factory=lambda: {Mode.ONLINE: 1.0})
    timing: Timing = Field(default_factory=Timing)
    stages: list[Stage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mix_and_order(self) -> Scenario:
        validate_mix(dict(self.mix), "mix")
        if [s.at_s for s in self.stages] != sorted(s.at_s for s in self.stages):
            raise ValueError("stages must be in time order")
        return self


def load_scenario(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(str(path), f"cannot be read as YAML: {exc}") from exc
    try:
        return Scenario.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ScenarioError(str(path), problems) from exc


def select_for_stage(runtime: FleetRuntime, stage: Stage, index: int) -> list[str]:
    """The vehicles a stage acts on: a seeded, interleaving-independent choice."""
    seed = runtime.ctx.seed
    candidates = [
        vin
        for vin, v in runtime.vehicles.items()
        if stage.from_modes is None or v.mode in stage.from_modes
    ]
    candidates.sort(key=lambda vin: stable_seed(seed, "stage", index, vin))
    return candidates[: round(len(candidates) * stage.fraction)]


def apply_stage(runtime: FleetRuntime, stage: Stage, index: int) -> list[str]:
    chosen = select_for_stage(runtime, stage, index)
    for vin in chosen:
        runtime.set_mode(vin, stage.set_mode, abrupt=stage.abrupt)
    log.info(
        "scenario.stage index=%d at_s=%g vehicles=%d mode=%s",
        index,
        stage.at_s,
        len(chosen),
        stage.set_mode.value,
    )
    return chosen


async def run_timeline(runtime: FleetRuntime, stages: list[Stage]) -> None:
    """Apply each stage at its offset from now (event loop time)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, stage in enumerate(stages):
        await asyncio.sleep(max(0.0, start + stage.at_s - loop.time()))
        apply_stage(runtime, stage, index)
