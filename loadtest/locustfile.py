"""Locust load tests of the platform (docs/loadtest.md).

Users:
    ActivationUser   activations through the gateway API (--host = gateway URL); events
                     activation/accepted, activation/ack, activation/final
    PurchaseUser     the customer purchase flow on the backend (CAAS_LOAD_BACKEND_URL):
                     catalog, purchase, then purchase/charged when the money settles

Environment:
    CAAS_GATEWAY_TOKEN, CAAS_REDIS_URL   the gateway's token; the Redis holding caas:events
    CAAS_LOAD_MANIFEST                   the simulator's manifest (VINs and their features)
    CAAS_LOAD_SEED_FILE                  `python -m backend seed` output (PurchaseUser)
    CAAS_LOAD_BACKEND_URL                backend URL (PurchaseUser)
    CAAS_LOAD_STAGES                     stages NAME:SECONDS:USERS, e.g.
                                         "ramp:30:50,soak:60:50,spike:15:200";
                                         unset: -u/-r/-t from the command line
    CAAS_LOAD_MAX_FAIL_RATIO (0.01), CAAS_LOAD_MAX_P95_MS (5000)   pass/fail thresholds:
                                         the exit code is 1 when one is exceeded
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, User, between, events, task

from loadtest.activation_client import ActivationClient, ActivationFailure, OutcomeWatcher
from loadtest.stages import parse_stages, users_at

log = logging.getLogger(__name__)
_watcher: OutcomeWatcher | None = None
_fleet: itertools.cycle[tuple[str, list[str]]] | None = None


def _vehicles() -> itertools.cycle[tuple[str, list[str]]]:
    """(VIN, installed features) from the simulator manifest, each used in turn."""
    global _fleet
    if _fleet is None:
        manifest = json.loads(Path(os.environ["CAAS_LOAD_MANIFEST"]).read_text())
        _fleet = itertools.cycle([(v["vin"], v["installed_features"]) for v in manifest["fleet"]])
    return _fleet


def _outcomes() -> OutcomeWatcher:
    global _watcher
    if _watcher is None:
        _watcher = OutcomeWatcher(os.environ["CAAS_REDIS_URL"])
        _watcher.start()
    return _watcher


class ActivationUser(User):
    """Activates a feature on the next vehicle of the fleet, again and again."""

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.ota = ActivationClient(
            self.environment, str(self.host), os.environ["CAAS_GATEWAY_TOKEN"], _outcomes()
        )

    @task
    def activate(self) -> None:
        vin, features = next(_vehicles())
        self.ota.activate(vin, random.choice(features))


class PurchaseUser(HttpUser):
    """A customer buying a feature for one of their vehicles and waiting for the charge."""

    wait_time = between(1, 3)
    host = os.environ.get("CAAS_LOAD_BACKEND_URL", "http://127.0.0.1:8080")

    def on_start(self) -> None:
        seeded = json.loads(Path(os.environ["CAAS_LOAD_SEED_FILE"]).read_text())
        customer = random.choice(seeded["customers"])
        self.auth = {"Authorization": f"Bearer {customer['token']}"}
        self.vehicle_ids = list(customer["vehicles"].values())

    @task
    def buy(self) -> None:
        vehicle_id = random.choice(self.vehicle_ids)
        catalog = self.client.get(
            "/v1/catalog", params={"vehicle_id": vehicle_id}, headers=self.auth, name="/v1/catalog"
        ).json()
        offers = [
            (s["id"], p)
            for s in catalog.get("services", [])
            for p in s["prices"]
            if p["model"] in ("temporary", "permanent")
        ]
        service_id, price = random.choice(offers)
        duration = {"model": price["model"], **({"days": price["days"]} if price["days"] else {})}
        started = time.monotonic()
        answer = self.client.post(
            "/v1/purchases",
            json={"vehicle_id": vehicle_id, "service_id": service_id, "duration": duration},
            headers={**self.auth, "Idempotency-Key": str(uuid.uuid4())},
            name="/v1/purchases",
        )
        if answer.status_code == 202:
            self._wait_settled(answer.json()["id"], started)

    def _wait_settled(self, purchase_id: str, started: float, timeout_s: float = 120) -> None:
        state: dict[str, Any] = {}
        while time.monotonic() - started < timeout_s:
            state = self.client.get(
                f"/v1/purchases/{purchase_id}", headers=self.auth, name="/v1/purchases/{id}"
            ).json()
            if state.get("payment", {}).get("state") in ("CHARGED", "FAILED_NO_CHARGE"):
                break
            time.sleep(0.5)
        payment = state.get("payment", {}).get("state")
        error = None if payment == "CHARGED" else ActivationFailure(f"payment {payment}")
        self.environment.events.request.fire(
            request_type="FLOW",
            name="purchase/charged",
            response_length=0,
            context={},
            response_time=(time.monotonic() - started) * 1000,
            exception=error,
        )


if os.environ.get("CAAS_LOAD_STAGES"):

    class StagesShape(LoadTestShape):
        """Ramp, soak, spike... each stage holds its user count for its duration."""

        stages = parse_stages(os.environ["CAAS_LOAD_STAGES"])

        def tick(self) -> tuple[int, float] | None:
            users = users_at(self.stages, self.get_run_time())  # type: ignore[no-untyped-call]
            return None if users is None else (users, max(1.0, users / 5))


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def apply_thresholds(environment: Any, **_: Any) -> None:
    """Exit code 1 when a threshold is exceeded (for CI and scripted runs)."""
    max_fail = float(os.environ.get("CAAS_LOAD_MAX_FAIL_RATIO", "0.01"))
    max_p95 = float(os.environ.get("CAAS_LOAD_MAX_P95_MS", "5000"))
    for entry in environment.stats.entries.values():
        if entry.num_requests == 0:
            continue
        p95 = entry.get_response_time_percentile(0.95)
        if entry.fail_ratio > max_fail or p95 > max_p95:
            log.error(
                "threshold exceeded: %s fail_ratio=%.3f p95=%.0fms (limits %.3f, %.0fms)",
                entry.name,
                entry.fail_ratio,
                p95,
                max_fail,
                max_p95,
            )
            environment.process_exit_code = 1
