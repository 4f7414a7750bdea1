"""The fleet derived from a seed: VINs, models, firmware, installed features, modes.

Same seed and size → the same fleet, vehicle for vehicle. Modes are dealt by exact
counts (largest remainder) and then shuffled with a seeded RNG, so ``--mix
online=0.5,busy=0.5`` over 10 vehicles gives exactly 5 and 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.models import VIN_ALPHABET
from vehicle_sim.errors import ScenarioError
from vehicle_sim.rng import stable_rng

MAX_VEHICLES = 999_999  # the VIN serial (positions 12-17) is the fleet index


class Mode(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    BUSY = "busy"
    NACK = "nack"
    TIMEOUT = "timeout"
    DRIVING = "driving"
    CONFLICT = "conflict"
    FLAKY = "flaky"


ALL_FEATURES = (
    "power_boost_50",
    "autonomous_driving",
    "climate_plus",
    "entertainment_pack",
    "winter_traction",
)


@dataclass(frozen=True, slots=True)
class VehicleModel:
    name: str
    code: str  # VIN positions 4-5
    firmwares: tuple[str, ...]
    features: tuple[str, ...]  # what this model's firmware ships


MODELS = (
    VehicleModel(
        "Urbano",
        "UR",
        ("4.2.1", "4.2.3", "4.3.0"),
        ("climate_plus", "entertainment_pack", "winter_traction", "power_boost_50"),
    ),
    VehicleModel("Tourer", "TR", ("4.2.1", "4.3.0", "5.0.2"), ALL_FEATURES),
    VehicleModel(
        "Cargo", "CG", ("3.9.8", "4.2.1"), ("climate_plus", "winter_traction", "power_boost_50")
    ),
)


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """What a vehicle is (never changes while the simulator runs)."""

    index: int
    vin: str
    model: str
    firmware: str
    installed_features: tuple[str, ...]
    initial_mode: Mode


_TRANSLIT = {  # ISO 3779 check digit transliteration
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
WMI = "CAA"  # world manufacturer identifier of the simulated maker


def check_digit(vin_without_check: str) -> str:
    total = sum(_TRANSLIT[c] * w for c, w in zip(vin_without_check, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def make_vin(seed: int, index: int, model: VehicleModel) -> str:
    """17 chars of the ISO 3779 alphabet with a valid check digit at position 9."""
    rng = stable_rng(seed, "vin", index)
    vds = model.code + "".join(rng.choice(VIN_ALPHABET) for _ in range(3))
    year_plant = rng.choice("RSTV") + rng.choice("ABCDEFGH")
    draft = f"{WMI}{vds}0{year_plant}{index:06d}"
    return draft[:8] + check_digit(draft) + draft[9:]


def parse_mix(text: str) -> dict[Mode, float]:
    """``online=0.7,busy=0.1,...`` → weights (normalised later)."""
    mix: dict[Mode, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            mode = Mode(name.strip())
            weight = float(value) if sep else float("nan")
        except ValueError as exc:
            raise ScenarioError("--mix", f"{part!r} is not MODE=WEIGHT ({exc})") from exc
        if not weight >= 0:
            raise ScenarioError("--mix", f"{part!r}: the weight must be a number >= 0")
        mix[mode] = weight
    return validate_mix(mix, "--mix")


def validate_mix(mix: dict[Mode, float], source: str) -> dict[Mode, float]:
    total = sum(mix.values())
    if total <= 0:
        raise ScenarioError(source, "the mix needs at least one mode with a weight > 0")
    return {mode: weight / total for mode, weight in mix.items() if weight > 0}


def deal_modes(seed: int, count: int, mix: dict[Mode, float]) -> list[Mode]:
    """Exact counts per mode (largest remainder), shuffled deterministically."""
    quotas = {mode: share * count for mode, share in mix.items()}
    counts = {mode: int(q) for mode, q in quotas.items()}
    by_remainder = sorted(mix, key=lambda m: (-(quotas[m] - counts[m]), list(Mode).index(m)))
    for mode in by_remainder[: count - sum(counts.values())]:
        counts[mode] += 1
    modes = [mode for mode in Mode for _ in range(counts.get(mode, 0))]
    stable_rng(seed, "modes").shuffle(modes)
    return modes


def build_fleet(seed: int, count: int, mix: dict[Mode, float]) -> list[VehicleSpec]:
    if not 1 <= count <= MAX_VEHICLES:
        raise ScenarioError("--vehicles", f"must be between 1 and {MAX_VEHICLES}")
    modes = deal_modes(seed, count, mix)
    fleet = []
    for index, mode in enumerate(modes):
        rng = stable_rng(seed, "spec", index)
        model = rng.choice(MODELS)
        fleet.append(
            VehicleSpec(
                index=index,
                vin=make_vin(seed, index, model),
                model=model.name,
                firmware=rng.choice(model.firmwares),
                installed_features=model.features,
                initial_mode=mode,
            )
        )
    return fleet
