"""The fleet manifest (docs/spec.md §7): every VIN with its mode, model and installed features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vehicle_sim.fleet import VehicleSpec


def manifest(seed: int, specs: list[VehicleSpec], connection_mode: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.initial_mode.value] = counts.get(spec.initial_mode.value, 0) + 1
    return {
        "seed": seed,
        "vehicles": len(specs),
        "connection_mode": connection_mode,
        "modes": counts,
        "fleet": [
            {
                "vin": s.vin,
                "mode": s.initial_mode.value,
                "model": s.model,
                "firmware": s.firmware,
                "installed_features": list(s.installed_features),
            }
            for s in specs
        ],
    }


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
