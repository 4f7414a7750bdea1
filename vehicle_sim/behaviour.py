"""Timing and probabilities of the simulated behaviours (scenario ``timing:``).

How long a busy vehicle stays busy, how long a trip lasts, what a flaky vehicle does
with a command. Every draw takes the caller's seeded RNG, never a global one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class FlakyOutcome(StrEnum):
    ANSWER = "answer"
    DROP = "drop"
    DELAY = "delay"
    DUPLICATE = "duplicate"
    DISCONNECT = "disconnect"


DEFAULT_FLAKY_WEIGHTS = {
    FlakyOutcome.ANSWER: 0.5,
    FlakyOutcome.DROP: 0.15,
    FlakyOutcome.DELAY: 0.15,
    FlakyOutcome.DUPLICATE: 0.1,
    FlakyOutcome.DISCONNECT: 0.1,
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    busy_s: tuple[float, float] | None = (20.0, 60.0)  # None: busy until told otherwise
    trip_s: tuple[float, float] = (20.0, 90.0)
    flaky_weights: dict[FlakyOutcome, float] = field(
        default_factory=lambda: dict(DEFAULT_FLAKY_WEIGHTS)
    )
    flaky_delay_s: tuple[float, float] = (1.0, 5.0)
    flaky_reconnect_s: tuple[float, float] = (1.0, 5.0)
    dedupe_window: int = 256  # answers remembered per vehicle for duplicate command_ids

    def draw_busy_s(self, rng: random.Random) -> float:
        return float("inf") if self.busy_s is None else rng.uniform(*self.busy_s)

    def draw_trip_s(self, rng: random.Random) -> float:
        return rng.uniform(*self.trip_s)

    def draw_delay_s(self, rng: random.Random) -> float:
        return rng.uniform(*self.flaky_delay_s)

    def draw_reconnect_s(self, rng: random.Random) -> float:
        return rng.uniform(*self.flaky_reconnect_s)


def draw_flaky(behaviour: Behaviour, rng: random.Random) -> FlakyOutcome:
    outcomes = list(behaviour.flaky_weights)
    weights = [behaviour.flaky_weights[o] for o in outcomes]
    return rng.choices(outcomes, weights)[0]
