"""Runtime control surface: a small HTTP API to steer vehicles during a test.

    GET  /healthz                         liveness
    GET  /v1/fleet                        counts by mode, traffic counters, connections
    GET  /v1/vehicles/{vin}               one vehicle: mode and VehicleState
    POST /v1/vehicles/{vin}/mode          {"mode": "busy", "abrupt": false}
    POST /v1/vehicles/{vin}/trip          {"duration_s": 30, "speed_kmh": 50}  start driving
    POST /v1/vehicles/{vin}/park          end the trip now
    POST /v1/vehicles/{vin}/busy          {"for_s": 10}  (null: until told otherwise)
    POST /v1/vehicles/{vin}/features      {"active": ["climate_plus"]}  force active features
    GET  /metrics                         Prometheus text format

No authentication: it binds to 127.0.0.1 and exists for tests and demos only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from protocol.api_docs import install_docs
from protocol.http_edge import install_http_edge
from vehicle_sim import vehicle as vm
from vehicle_sim.errors import UnknownVehicle
from vehicle_sim.fleet import Mode
from vehicle_sim.metrics import registry_for
from vehicle_sim.runtime import FleetRuntime


class ModeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode
    abrupt: bool = False


class TripRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_s: float = Field(gt=0, le=86_400)
    speed_kmh: float = Field(default=50.0, gt=0, le=250)


class BusyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    for_s: float | None = Field(default=None, gt=0)


class FeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: list[str]


def vehicle_view(vehicle: vm.Vehicle) -> dict[str, Any]:
    return {"mode": vehicle.mode.value, "state": vm.state_dict(vehicle)}


def create_control_app(runtime: FleetRuntime, connected: Callable[[], int]) -> FastAPI:
    app = FastAPI(
        title="CaaS vehicle simulator control", version="1",
        docs_url=None, redoc_url=None,  # /docs from local files: protocol/api_docs.py
    )  # fmt: skip
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    install_docs(app)
    registry = registry_for(runtime, connected)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/fleet")
    def fleet() -> dict[str, Any]:
        stats = runtime.stats
        return {
            "vehicles": len(runtime.vehicles),
            "modes": dict(runtime.mode_counts()),
            "connections": connected(),
            "commands_received": dict(stats.received),
            "answers_sent": dict(stats.answered),
            "dropped": dict(stats.dropped),
            "duplicates": stats.duplicates,
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    _add_vehicle_routes(app, runtime)
    return app


def _add_vehicle_routes(app: FastAPI, runtime: FleetRuntime) -> None:
    def lookup(vin: str) -> vm.Vehicle:
        try:
            return runtime.vehicle(vin)
        except UnknownVehicle as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/v1/vehicles/{vin}")
    def get_vehicle(vin: str) -> dict[str, Any]:
        return vehicle_view(lookup(vin))

    @app.post("/v1/vehicles/{vin}/mode")
    def change_mode(vin: str, body: ModeChange) -> dict[str, Any]:
        lookup(vin)
        return vehicle_view(runtime.set_mode(vin, body.mode, abrupt=body.abrupt))

    @app.post("/v1/vehicles/{vin}/trip")
    def trip(vin: str, body: TripRequest) -> dict[str, Any]:
        lookup(vin)
        return vehicle_view(runtime.start_trip(vin, body.duration_s, body.speed_kmh))

    @app.post("/v1/vehicles/{vin}/park")
    def park(vin: str) -> dict[str, Any]:
        parked = vm.park(lookup(vin))
        fields = {k: getattr(parked, k) for k in ("power", "moving", "gear", "speed_kmh")}
        return vehicle_view(runtime.patch(vin, trip_ends_at=None, **fields))

    @app.post("/v1/vehicles/{vin}/busy")
    def busy(vin: str, body: BusyRequest) -> dict[str, Any]:
        lookup(vin)
        until = math.inf if body.for_s is None else runtime.clock.now() + body.for_s
        vehicle = runtime.patch(vin, busy=True, busy_until=until)
        runtime.schedule_wake(vin, until)
        return vehicle_view(vehicle)

    @app.post("/v1/vehicles/{vin}/features")
    def features(vin: str, body: FeaturesRequest) -> dict[str, Any]:
        vehicle = lookup(vin)
        unknown = set(body.active) - set(vehicle.spec.installed_features)
        if unknown:
            raise HTTPException(422, f"not installed on {vin}: {sorted(unknown)}")
        return vehicle_view(runtime.patch(vin, active_features=tuple(sorted(set(body.active)))))
