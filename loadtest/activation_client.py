"""A Locust client for the gateway's activation API (SPEC §3, §4).

One activation is three request events in Locust's statistics:

    activation/accepted   POST /v1/activations answered 202 (or the failure: status)
    activation/ack        the first attempt's outcome: success on activation.succeeded,
                          failure named by the reason (nack: busy, timeout, not_ready ...)
    activation/final      the terminal state: success on SUCCEEDED, failure named by the
                          failure category

Outcomes come from the ``caas:events`` stream, read by one watcher greenlet per Locust
process. The pending id is registered **before** the POST is sent (an event can beat the
HTTP answer) and every duration is measured on the monotonic clock.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gevent
import redis
import requests
from gevent.event import AsyncResult

OUTCOME_TIMEOUT_S = 300.0


class ActivationFailure(Exception):
    """A failed step, named by its reason so Locust groups failures by it."""


@dataclass
class Pending:
    first: AsyncResult = field(default_factory=AsyncResult)  # (ok, reason)
    final: AsyncResult = field(default_factory=AsyncResult)  # (ok, category)


class OutcomeWatcher:
    """Follows caas:events and resolves the pending activations of this process."""

    def __init__(self, redis_url: str, stream: str = "caas:events") -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.stream = stream
        self.pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def register(self, activation_id: str) -> Pending:
        with self._lock:
            self.pending[activation_id] = pending = Pending()
        return pending

    def _run(self) -> None:
        last: bytes | str = "$"
        while True:
            batches: Any = self.redis.xread({self.stream: last}, block=500, count=1000)
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self.resolve(fields[b"type"].decode(), json.loads(fields[b"data"]))

    def resolve(self, kind: str, data: dict[str, Any]) -> None:
        pending = self.pending.get(str(data.get("activation_id")))
        if pending is None:
            return
        if kind == "activation.attempt_failed" and not pending.first.ready():
            code = data.get("response_code") or "failed"
            reason = data.get("response_message") or ""
            pending.first.set((False, f"{code}: {reason}" if code == "nack" else code))
        elif kind == "activation.succeeded":
            if not pending.first.ready():
                pending.first.set((True, ""))
            pending.final.set((True, ""))
        elif kind in ("activation.failed", "activation.cancelled"):
            if not pending.first.ready():
                pending.first.set((False, kind.removeprefix("activation.")))
            pending.final.set((False, str(data.get("failure_category") or kind)))
        if pending.final.ready():
            self.pending.pop(str(data.get("activation_id")), None)


class ActivationClient:
    def __init__(self, environment: Any, base_url: str, token: str, watcher: OutcomeWatcher):
        self.environment = environment
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.watcher = watcher

    def _fire(self, name: str, started: float, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="OTA",
            name=name,
            response_time=(time.monotonic() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    def activate(self, vin: str, feature: str) -> None:
        activation_id = str(uuid.uuid4())
        pending = self.watcher.register(activation_id)  # before sending: never miss it
        body = {
            "activation_id": activation_id,
            "vin": vin,
            "feature": feature,
            "action": "activate",
        }
        started = time.monotonic()
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
        self._fire("activation/accepted", started, None)
        self._outcome("activation/ack", pending.first, started)
        self._outcome("activation/final", pending.final, started)

    def _outcome(self, name: str, result: AsyncResult, started: float) -> None:
        try:
            ok, reason = result.get(timeout=OUTCOME_TIMEOUT_S)
        except gevent.Timeout:
            ok, reason = False, "no outcome event"
        self._fire(name, started, None if ok else ActivationFailure(reason))
