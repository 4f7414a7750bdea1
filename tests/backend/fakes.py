"""Fakes behind the backend's Protocols: a gateway, channels, a crashing provider."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.errors import GatewayError
from protocol.redis_connect import AnyRedis
from protocol.timeutil import format_ts


@dataclass
class FakeGateway:
    """Records activation requests; ``down`` / ``reject`` simulate outages and refusals.
    With ``redis`` and ``outcome`` set it also writes the outcome events to the stream,
    like the real gateway would (``outcome``: vin → "succeeded" | "failed")."""

    down: bool = False
    reject: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    remote: dict[str, dict[str, Any]] = field(default_factory=dict)
    redis: AnyRedis | None = None
    stream: str = "caas:events"
    outcome: dict[str, str] = field(default_factory=dict)
    default_outcome: str | None = None

    async def request_activation(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise GatewayError(None, "ConnectError")
        if self.reject:
            raise GatewayError(self.reject, "rejected")
        self.requests.append(body)
        first = body["activation_id"] not in self.remote
        self.remote.setdefault(body["activation_id"], {**body, "state": "QUEUED"})
        outcome = self.outcome.get(body["vin"], self.default_outcome)
        if first and self.redis is not None and outcome:
            await emit(self.redis, self.stream, "activation.accepted", body)
            await emit(
                self.redis,
                self.stream,
                f"activation.{outcome}",
                body,
                diagnostics={"dtcs": ["P0A80"]} if outcome == "failed" else None,
            )
        return {**body, "state": "QUEUED"}

    async def get_activation(self, activation_id: str) -> dict[str, Any] | None:
        if self.down:
            raise GatewayError(None, "ConnectError")
        return self.remote.get(activation_id)

    async def cancel_activation(self, activation_id: str) -> None:
        self.cancelled.append(activation_id)
        if activation_id in self.remote:
            self.remote[activation_id]["state"] = "CANCELLED"


async def emit(
    redis_client: AnyRedis,
    stream: str,
    type_: str,
    body: dict[str, Any],
    event_id: str | None = None,
    **extra: Any,
) -> str:
    """XADD an event shaped like docs/spec.md §4; returns its event_id."""
    event_id = event_id or str(uuid.uuid4())
    data = {
        "activation_id": body["activation_id"],
        "vin": body.get("vin", ""),
        "feature": body.get("feature", ""),
        "action": "activate",
        **extra,
    }
    if type_ == "activation.failed":
        data.setdefault("failure_category", "persistent_iot_failure")
    await redis_client.xadd(
        stream, {"event_id": event_id, "type": type_, "at": format_ts(0), "data": json.dumps(data)}
    )
    return event_id


@dataclass
class RecordingChannel:
    """Records what it sends; ``fail``: the channel is down; ``delay_s``: each send
    takes that long (so that concurrent dispatchers overlap)."""

    name: str
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    fail: bool = False
    delay_s: float = 0.0

    async def send(self, address: str, subject: str, body: str, ref: str) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("channel down")
        self.sent.append((address, subject, body))


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


class CrashAfterCapture:
    """Wraps the provider client: the capture happens at the provider, then the process
    'dies' before the answer reaches the database."""

    def __init__(self, inner: PaymentProvider) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def capture(self, **kw: Any) -> ProviderResult:
        await self.inner.capture(**kw)
        raise Killed()
