"""Locust load tests of the platform (docs/loadtest.md).

Users:
    ActivationUser   activations through the gateway API (--host = gateway URL); events
                     activation/accepted, activation/ack, activation/final
    PurchaseUser     the customer purchase flow on the backend (CAAS_LOAD_BACKEND_URL):
                     catalog, purchase, then purchase/charged when the money settles

Environment:
    CAAS_GATEWAY_TOKEN, CAAS_REDIS_URL   the gateway's token; the Redis holding caas:events
    CAAS_LOAD_MANIFEST                   the simulator's manifest (VINs and their features)
    CAAS_LOAD_SEED_FILE                  customers and tokens (PurchaseUser): the demo's
                                         run/demo/customers.json, or the JSON printed
                                         by `python -m backend seed`
    CAAS_LOAD_BACKEND_URL                backend URL (PurchaseUser)
    CAAS_LOAD_STAGES                     stages NAME:SECONDS:USERS, e.g.
                                         "ramp:30:50,soak:60:50,spike:15:200";
                                         unset: -u/-r/-t from the command line
    CAAS_LOAD_MAX_FAIL_RATIO (0.01), CAAS_LOAD_MAX_P95_MS (5000)   pass/fail thresholds:
                                         exit code 0 exactly when every request name
                                         holds both, 1 otherwise
    CAAS_LOAD_DRAIN_S (30)               at the stop, how long to wait for the outcomes
                                         of activations in flight; those still unknown
                                         count as failed ("in flight at stop")
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

import gevent
from locust import HttpUser, LoadTestShape, User, between, events, task
from locust.runners import WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest.activation_client import ActivationClient, ActivationFailure, OutcomeWatcher
from loadtest.stages import parse_stages, users_at
from loadtest.thresholds import Limits, Reading, violations

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
        if not offers:
            return  # nothing for sale on this vehicle
        service_id, price = random.choice(offers)
        duration = {"model": price["model"], **({"days": price["days"]} if price["days"] else {})}
        started = time.monotonic()
        with self.client.post(
            "/v1/purchases",
            json={"vehicle_id": vehicle_id, "service_id": service_id, "duration": duration},
            headers={**self.auth, "Idempotency-Key": str(uuid.uuid4())},
            name="/v1/purchases",
            catch_response=True,
        ) as answer:
            if answer.status_code == 409:
                # the platform's right answer: this customer has (or is buying) it already,
                # e.g. the demo bought one feature per vehicle
                answer.success()
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


_csv_caught_up = False  # the CSV files have been written once after the stop


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def report_in_flight(environment: Any, **_: Any) -> None:
    """Activations still in flight when the users stop: their outcome, or a failure.
    Then, with ``--csv``, the CSV files catch up with everything counted."""
    global _csv_caught_up
    if _watcher is not None and _watcher.in_flight:
        accepted = len(_watcher.in_flight)
        drain_s = float(os.environ.get("CAAS_LOAD_DRAIN_S", "30"))
        still = _watcher.report_in_flight(environment, drain_s)
        log.warning("%d activation(s) in flight at the stop, %d still after the drain",
                    accepted, still)  # fmt: skip
    if getattr(environment.parsed_options, "csv_prefix", None) and not _csv_caught_up:
        # Locust rewrites its CSV files every CSV_STATS_INTERVAL_SEC and never at exit:
        # what was counted in the last interval (activations that ended just before the
        # stop, or in the drain) would be missing. Two intervals: its timer may have
        # started just after ours.
        gevent.sleep(2 * CSV_STATS_INTERVAL_SEC)
        _csv_caught_up = True


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def apply_thresholds(environment: Any, **_: Any) -> None:
    """Exit code 0 exactly when the thresholds hold, 1 otherwise (for CI and scripts).
    Set either way: left unset, Locust exits 1 on any failure, even under the limits.
    A worker's statistics are partial: the master decides."""
    if isinstance(environment.runner, WorkerRunner):
        return
    report_in_flight(environment)  # stopped by a signal: no test_stop before quitting
    readings = [
        Reading(e.name, e.num_requests, e.fail_ratio, e.get_response_time_percentile(0.95))
        for e in environment.stats.entries.values()
    ]
    found = violations(readings, Limits.from_env(), len(environment.runner.exceptions))
    for line in found:
        log.error("threshold exceeded: %s", line)
    environment.process_exit_code = 1 if found else 0
