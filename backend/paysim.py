"""A payment-provider simulator: declines, timeouts (before or after acting), delayed
and failed settlement, signed webhooks delivered asynchronously, duplicated and out of
order. Idempotent per key like a real provider: a replayed key returns the first answer
and never acts twice. ``real_captures`` counts captures that actually moved money."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from backend.errors import ProviderError, ProviderTimeout
from backend.logs import log
from backend.payments import SIGNATURE_HEADER, ProviderResult, SettlementStatus, sign
from protocol.timeutil import Clock, SystemClock, format_ts

WebhookSink = Callable[[bytes, dict[str, str]], Awaitable[object]]


@dataclass
class SimConfig:
    seed: int = 0
    decline_rate: float = 0.0
    timeout_rate: float = 0.0  # the call times out (after acting half of the time)
    settle_delay_s: float = 0.05
    settle_fail_rate: float = 0.0
    duplicate_rate: float = 0.0  # each webhook also delivered a second time
    reorder: bool = False  # the final settlement webhook overtakes the "pending" one


@dataclass
class Authorization:
    ref: str
    reference: str
    amount_cents: int
    captured_cents: int = 0
    refunded_cents: int = 0
    cancelled: bool = False
    settlement: str = "NONE"
    seq: int = 0


@dataclass(order=True)
class _Outgoing:
    due_at: float
    order: int
    body: bytes = field(compare=False)


class SimulatedProvider:
    def __init__(
        self,
        config: SimConfig,
        secret: str,
        clock: Clock | None = None,
        sink: WebhookSink | None = None,
    ) -> None:
        self.config = config
        self.secret = secret
        self.clock = clock or SystemClock()
        self.sink = sink
        self.rng = random.Random(config.seed)
        self.auths: dict[str, Authorization] = {}
        self.answers: dict[str, ProviderResult] = {}
        self.real_captures: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.forced_timeouts: Counter[str] = Counter()  # op → how many timeouts to force
        self.outgoing: list[_Outgoing] = []
        self._order = 0

    # ------------------------------------------------------------ provider protocol
    async def authorize(
        self, *, idempotency_key: str, reference: str, amount_cents: int, currency: str
    ) -> ProviderResult:
        def act() -> ProviderResult:
            if self.rng.random() < self.config.decline_rate:
                return ProviderResult(f"auth_{uuid.uuid4().hex[:16]}", False, "card_declined")
            auth = Authorization(f"auth_{uuid.uuid4().hex[:16]}", reference, amount_cents)
            self.auths[auth.ref] = auth
            return ProviderResult(auth.ref, True)

        return await self._call("authorize", idempotency_key, act)

    async def capture(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult:
        def act() -> ProviderResult:
            auth = self._auth(authorization_ref)
            if auth.cancelled or auth.captured_cents:
                return ProviderResult(auth.ref, False, "not_capturable")
            auth.captured_cents = amount_cents
            self.real_captures[auth.ref] += 1
            self._settle_later(auth)
            return ProviderResult(f"cap_{uuid.uuid4().hex[:16]}", True)

        return await self._call("capture", idempotency_key, act)

    async def cancel(self, *, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        def act() -> ProviderResult:
            auth = self._auth(authorization_ref)
            if auth.captured_cents:
                return ProviderResult(auth.ref, False, "already_captured")
            auth.cancelled = True
            return ProviderResult(f"can_{uuid.uuid4().hex[:16]}", True)

        return await self._call("cancel", idempotency_key, act)

    async def refund(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult:
        def act() -> ProviderResult:
            auth = self._auth(authorization_ref)
            if amount_cents > auth.captured_cents - auth.refunded_cents:
                return ProviderResult(auth.ref, False, "exceeds_captured")
            auth.refunded_cents += amount_cents
            return ProviderResult(f"ref_{uuid.uuid4().hex[:16]}", True)

        return await self._call("refund", idempotency_key, act)

    async def settlement(self, authorization_ref: str) -> SettlementStatus:
        auth = self._auth(authorization_ref)
        return SettlementStatus(auth.settlement, auth.seq)

    # ------------------------------------------------------------ internals
    def _auth(self, ref: str) -> Authorization:
        auth = self.auths.get(ref)
        if auth is None:
            raise ProviderError("lookup", f"unknown authorization {ref}")
        return auth

    async def _call(self, op: str, key: str, act: Callable[[], ProviderResult]) -> ProviderResult:
        self.calls[op] += 1
        await asyncio.sleep(0)
        forced = self.forced_timeouts[op] > 0
        if forced or self.rng.random() < self.config.timeout_rate:
            self.forced_timeouts[op] -= 1 if forced else 0
            if (forced or self.rng.random() < 0.5) and key not in self.answers:
                self.answers[key] = act()  # acted, then the answer got lost
            raise ProviderTimeout(op)
        if key not in self.answers:
            self.answers[key] = act()
        return self.answers[key]

    def _settle_later(self, auth: Authorization) -> None:
        now = self.clock.now()
        auth.settlement, auth.seq = "PENDING", 1
        pending = self._webhook(auth, "capture.pending", 1)
        failed = self.rng.random() < self.config.settle_fail_rate
        final_type = "capture.settlement_failed" if failed else "capture.settled"
        final = self._webhook(auth, final_type, 2)
        delay = self.config.settle_delay_s
        first, second = (final, pending) if self.config.reorder else (pending, final)
        self._queue(first, now)
        self._queue(second, now + delay)
        auth.settlement = "FAILED" if failed else "SETTLED"  # as the provider will report
        auth.seq = 2

    def _webhook(self, auth: Authorization, type_: str, seq: int) -> bytes:
        body = {
            "event_id": str(uuid.uuid4()),
            "type": type_,
            "authorization_ref": auth.ref,
            "reference": auth.reference,
            "amount_cents": auth.captured_cents,
            "seq": seq,
            "at": format_ts(self.clock.now()),
        }
        return json.dumps(body).encode()

    def _queue(self, body: bytes, due_at: float) -> None:
        copies = 2 if self.rng.random() < self.config.duplicate_rate else 1
        for _ in range(copies):
            self._order += 1
            self.outgoing.append(_Outgoing(due_at, self._order, body))

    async def deliver_due(self) -> int:
        """Deliver the webhooks that are due; a failed delivery is kept for later."""
        now = self.clock.now()
        due = sorted(o for o in self.outgoing if o.due_at <= now)
        delivered = 0
        for item in due:
            if self.sink is None:
                break
            headers = {
                SIGNATURE_HEADER: sign(self.secret, item.body, now),
                "Content-Type": "application/json",
            }
            try:
                await self.sink(item.body, headers)
            except Exception as exc:  # the receiver is down: retry later, like a provider
                log("paysim.webhook_failed", error=type(exc).__name__)
                break
            self.outgoing.remove(item)
            delivered += 1
        return delivered

    async def run(self, poll_s: float = 0.02) -> None:
        while True:
            await self.deliver_due()
            await asyncio.sleep(poll_s)
