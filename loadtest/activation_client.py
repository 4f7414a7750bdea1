"""A Locust client for the gateway's activation API (docs/spec.md §3, §4).

One activation is three request events in Locust's statistics:

    activation/accepted   POST /v1/activations answered 202 (or the failure: status)
    activation/ack        the first attempt's outcome: success on activation.succeeded,
                          failure named by the reason (nack: busy, timeout, not_ready ...)
    activation/final      the terminal state: success on SUCCEEDED, failure named by the
                          failure category

Outcomes come from the ``caas:events`` stream, read by one watcher greenlet per Locust
process. The pending id is registered **before** the POST is sent (an event can beat the
HTTP answer) and every duration is measured on the monotonic clock, up to the moment the
watcher read the outcome.

Every accepted activation ends as one ack and one final event, also when the run stops
while it is in flight (its user is killed): the watcher keeps it, waits a bounded drain
time for its outcome at the stop, and reports what is still missing as the failure
``in flight at stop``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gevent
import requests
from gevent.event import AsyncResult

from protocol.redis_connect import open_redis_sync

OUTCOME_TIMEOUT_S = 300.0
IN_FLIGHT_AT_STOP = "in flight at stop"
ACK, FINAL = "activation/ack", "activation/final"


class ActivationFailure(Exception):
    """A failed step, named by its reason so Locust groups failures by it."""


@dataclass
class Pending:
    first: AsyncResult = field(default_factory=AsyncResult)  # (ok, reason, monotonic at)
    final: AsyncResult = field(default_factory=AsyncResult)  # (ok, category, monotonic at)
    started: float = 0.0  # monotonic, when the POST was sent
    reported: set[str] = field(default_factory=set)  # ACK, FINAL once fired


def fire(
    environment: Any, name: str, started: float, ended: float, error: Exception | None
) -> None:
    """One request event in Locust's statistics."""
    environment.events.request.fire(
        request_type="OTA",
        name=name,
        response_time=(ended - started) * 1000,
        response_length=0,
        exception=error,
        context={},
    )


def report(environment: Any, pending: Pending, name: str, result: AsyncResult) -> None:
    """Fire ``name``'s event from its outcome; not there yet: failed, in flight at stop."""
    ok, reason, at = result.get(block=False) if result.ready() else (
        False, IN_FLIGHT_AT_STOP, time.monotonic()
    )  # fmt: skip
    pending.reported.add(name)
    fire(environment, name, pending.started, at, None if ok else ActivationFailure(reason))


class OutcomeWatcher:
    """Follows caas:events and resolves the pending activations of this process."""

    def __init__(self, redis_url: str, stream: str = "caas:events") -> None:
        self.redis_url = redis_url  # connected by the watcher greenlet (start)
        self.stream = stream
        self.pending: dict[str, Pending] = {}  # registered, outcome not read yet
        self.in_flight: dict[str, Pending] = {}  # accepted, ack or final not reported yet
        self._lock = threading.Lock()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        """Connect and note where the stream ends now, before any activation is sent:
        reading from "$" at the watcher's first XREAD instead missed the outcomes of
        activations that finished before that read (seen on a loaded machine)."""
        if self._greenlet is None:
            client = open_redis_sync(self.redis_url)  # any node of a cluster too
            newest: Any = client.xrevrange(self.stream, count=1)
            start_after = newest[0][0] if newest else "0-0"
            self._greenlet = gevent.spawn(self._run, client, start_after)

    def register(self, activation_id: str) -> Pending:
        with self._lock:
            self.pending[activation_id] = pending = Pending()
        return pending

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self, client: Any, last: bytes | str) -> None:
        while True:
            batches: Any = client.xread({self.stream: last}, block=500, count=1000)
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self.resolve(fields[b"type"].decode(), json.loads(fields[b"data"]))

    def resolve(self, kind: str, data: dict[str, Any], at: float | None = None) -> None:
        pending = self.pending.get(str(data.get("activation_id")))
        if pending is None:
            return
        at = time.monotonic() if at is None else at
        if kind == "activation.attempt_failed" and not pending.first.ready():
            code = data.get("response_code") or "failed"
            reason = data.get("response_message") or ""
            pending.first.set((False, f"{code}: {reason}" if code == "nack" else code, at))
        elif kind == "activation.succeeded":
            if not pending.first.ready():
                pending.first.set((True, "", at))
            pending.final.set((True, "", at))
        elif kind in ("activation.failed", "activation.cancelled"):
            if not pending.first.ready():
                pending.first.set((False, kind.removeprefix("activation."), at))
            pending.final.set((False, str(data.get("failure_category") or kind), at))
        if pending.final.ready():
            self.pending.pop(str(data.get("activation_id")), None)

    def report_in_flight(self, environment: Any, drain_s: float) -> int:
        """At the stop: wait up to ``drain_s`` for the outcomes of the accepted
        activations whose users were stopped, then fire their missing events (what is
        still unknown as failed, in flight at stop). How many were still in flight."""
        deadline = time.monotonic() + drain_s
        still = 0
        while self.in_flight:
            _, pending = self.in_flight.popitem()
            pending.final.wait(timeout=max(0.0, deadline - time.monotonic()))
            still += not pending.final.ready()
            for name, result in ((ACK, pending.first), (FINAL, pending.final)):
                if name not in pending.reported:
                    report(environment, pending, name, result)
        return still


class ActivationClient:
    def __init__(self, environment: Any, base_url: str, token: str, watcher: OutcomeWatcher):
        self.environment = environment
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.watcher = watcher

    def _fire(self, name: str, started: float, error: Exception | None) -> None:
        fire(self.environment, name, started, time.monotonic(), error)

    def activate(self, vin: str, feature: str) -> None:
        activation_id = str(uuid.uuid4())
        pending = self.watcher.register(activation_id)  # before sending: never miss it
        body = {
            "activation_id": activation_id,
            "vin": vin,
            "feature": feature,
            "action": "activate",
        }
        started = pending.started = time.monotonic()
        try:
            answer = self.session.post(f"{self.base_url}/v1/activations", json=body, timeout=30)
        except requests.RequestException as exc:
            self._fire("activation/accepted", started, exc)
            return
        if answer.status_code != 202:
            self._fire(
                "activation/accepted", started, ActivationFailure(f"HTTP {answer.status_code}")
            )
            return
        self.watcher.in_flight[activation_id] = pending  # reported at the stop if cut short
        self._fire("activation/accepted", started, None)
        self._outcome(ACK, pending, pending.first)
        self._outcome(FINAL, pending, pending.final)
        self.watcher.in_flight.pop(activation_id, None)

    def _outcome(self, name: str, pending: Pending, result: AsyncResult) -> None:
        result.wait(timeout=OUTCOME_TIMEOUT_S)  # killed here at the stop: the drain reports it
        if result.ready():
            report(self.environment, pending, name, result)
        else:
            pending.reported.add(name)
            self._fire(name, pending.started, ActivationFailure("no outcome event"))
