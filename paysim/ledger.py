"""The provider's logic: authorizations (holds), captures, cancels, immediate charges,
refunds, settlement, and the failure modes.

``Ledger.handle`` runs one API call in one store transaction: the idempotency key's
stored answer is replayed as is (same status, same body, nothing done twice), a key
reused for another request is a 409, and otherwise the call acts, its answer is stored
under the key, and the settlement webhooks it causes are queued, all in one commit.
A call made to time out (forced, or by ``timeout_rate``) may act first and then answer
504 without the answer: the client retries with the same key and gets the stored one.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paysim.errors import Refused, UnknownPayment
from paysim.modes import FailureModes
from paysim.store import Payment, Store
from protocol.timeutil import Clock, format_ts

OPS = ("authorize", "capture", "cancel", "charge", "refund")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


TIMEOUT = Answer(504, {"error": "timeout", "detail": "outcome unknown: retry with the same key"})


@dataclass(frozen=True)
class Call:
    """One POST: its operation, idempotency key, the payment in its path ("" when none)
    and its validated body."""

    op: str
    key: str
    target: str
    request: dict[str, Any]

    def fingerprint(self) -> str:
        """What must match for a key to be replayed: the same route and the same body."""
        canonical = json.dumps([self.op, self.target, self.request], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def settlement(payment: Payment, now: float) -> tuple[str, int]:
    """NONE | PENDING | SETTLED | FAILED and its sequence number (the webhooks' ``seq``:
    a higher one is newer)."""
    if payment.settle_at is None or payment.settle_outcome is None:
        return "NONE", 0
    if now < payment.settle_at:
        return "PENDING", 1
    return payment.settle_outcome, 2


def payment_view(payment: Payment, now: float) -> dict[str, Any]:
    """``GET /v1/payments/{id}``: what reconciliation asks."""
    state, seq = settlement(payment, now)
    return {
        "id": payment.id,
        "kind": payment.kind,
        "reference": payment.reference,
        "currency": payment.currency,
        "amount_cents": payment.amount_cents,
        "captured_cents": payment.captured_cents,
        "refunded_cents": payment.refunded_cents,
        "cancelled": payment.cancelled,
        "settlement": state,
        "settlement_seq": seq,
        "created_at": format_ts(payment.created_at),
    }


class Ledger:
    def __init__(self, store: Store, modes: FailureModes, clock: Clock) -> None:
        self.store = store
        self.modes = modes  # mutable: the control API changes it in place
        self.clock = clock
        self.rng = random.Random(modes.seed)
        self.forced_timeouts: Counter[str] = Counter()  # op → next calls to time out
        self._acts: dict[str, Callable[[Call], Answer]] = {
            "authorize": self._authorize,
            "capture": self._capture,
            "cancel": self._cancel,
            "charge": self._charge,
            "refund": self._refund,
        }

    def reseed(self) -> None:
        self.rng.seed(self.modes.seed)

    # ------------------------------------------------------------ the API
    def handle(self, call: Call) -> Answer:
        """One POST, in one transaction (see the module)."""
        times_out, acts = self._times_out(call.op)
        with self.store.transaction():
            self.store.count_call(call.op)
            answer = self._answer(call) if acts else TIMEOUT
        return TIMEOUT if times_out else answer

    def payment(self, payment_id: str) -> dict[str, Any]:
        found = self.store.payment(payment_id)
        if found is None:
            raise UnknownPayment(payment_id)
        return payment_view(found, self.clock.now())

    def stats(self) -> dict[str, Any]:
        captures = self.store.real_captures()
        return {
            "calls": dict(self.store.calls()),
            "real_captures": dict(captures),
            "captured_more_than_once": sum(1 for n in captures.values() if n > 1),
            "open_authorizations": self.store.open_authorizations(),
            "webhooks": self.store.webhook_counts(),
            "forced_timeouts": {op: n for op, n in self.forced_timeouts.items() if n > 0},
        }

    # ------------------------------------------------------------ internals
    def _times_out(self, op: str) -> tuple[bool, bool]:
        """(answer 504?, act first?): a forced timeout always acts first, a random one
        half of the time."""
        if self.forced_timeouts[op] > 0:
            self.forced_timeouts[op] -= 1
            return True, True
        if self.modes.timeout_rate > 0 and self.rng.random() < self.modes.timeout_rate:
            return True, self.rng.random() < 0.5
        return False, True

    def _answer(self, call: Call) -> Answer:
        """The key's stored answer, or act and store the answer (inside the transaction)."""
        fingerprint = call.fingerprint()
        stored = self.store.answer(call.key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                detail = "this Idempotency-Key was used with another request"
                return Answer(409, {"error": "idempotency_key_reused", "detail": detail})
            return Answer(stored.status, stored.body)
        try:
            answer = self._acts[call.op](call)
        except Refused as exc:  # raised before anything was written: only the answer stays
            body = {"error": exc.code, "detail": exc.detail}
            answer = Answer(exc.status, body | ({"payment": exc.payment} if exc.payment else {}))
        self.store.save_answer(call.key, fingerprint, answer.status, answer.body, self.clock.now())
        return answer

    def _existing(self, payment_id: str, kind: str | None = None) -> Payment:
        found = self.store.payment(payment_id)
        if found is None or (kind is not None and found.kind != kind):
            raise UnknownPayment(payment_id)
        return found

    def _decline_maybe(self) -> None:
        if self.modes.decline_rate > 0 and self.rng.random() < self.modes.decline_rate:
            raise Refused(402, "card_declined", "the card was declined")

    def _new_payment(self, prefix: str, kind: str, request: dict[str, Any]) -> Payment:
        return Payment(
            id=new_id(prefix),
            kind=kind,
            reference=request["reference"],
            currency=request["currency"],
            amount_cents=request["amount_cents"],
            created_at=self.clock.now(),
        )

    def _authorize(self, call: Call) -> Answer:
        self._decline_maybe()
        auth = self._new_payment("auth", "authorization", call.request)
        self.store.add_payment(auth)
        return Answer(201, {**payment_view(auth, auth.created_at), "status": "authorized"})

    def _capture(self, call: Call) -> Answer:
        auth = self._existing(call.target, "authorization")
        amount = call.request["amount_cents"]
        if auth.cancelled or auth.captured_cents:
            state = "cancelled" if auth.cancelled else "captured"
            raise Refused(409, "not_capturable", f"the authorization is {state}", auth.id)
        if amount > auth.amount_cents:
            raise Refused(409, "exceeds_authorized", "more than the authorization", auth.id)
        capture_id = new_id("cap")
        auth.captured_cents = amount
        self.store.add_movement(capture_id, auth.id, "capture", amount, self.clock.now())
        self._settle_later(auth, "capture")
        self.store.save_payment(auth)
        return Answer(201, _movement(capture_id, "capture", auth, amount))

    def _cancel(self, call: Call) -> Answer:
        auth = self._existing(call.target, "authorization")
        if auth.captured_cents:
            raise Refused(409, "already_captured", "captured: refund it instead", auth.id)
        cancel_id = new_id("can")
        auth.cancelled = True  # cancelling twice is harmless: the hold is released already
        self.store.add_movement(cancel_id, auth.id, "cancel", 0, self.clock.now())
        self.store.save_payment(auth)
        return Answer(201, _movement(cancel_id, "cancel", auth, 0))

    def _charge(self, call: Call) -> Answer:
        self._decline_maybe()
        charge = self._new_payment("ch", "charge", call.request)
        charge.captured_cents = charge.amount_cents  # taken at once; it settles later
        self.store.add_payment(charge)
        self.store.add_movement(
            charge.id, charge.id, "charge", charge.amount_cents, charge.created_at
        )
        self._settle_later(charge, "charge")
        self.store.save_payment(charge)
        return Answer(201, {**payment_view(charge, charge.created_at), "status": "pending"})

    def _refund(self, call: Call) -> Answer:
        payment = self._existing(call.request["payment"])
        amount = call.request["amount_cents"]
        if amount > payment.captured_cents - payment.refunded_cents:
            detail = "more than captured and not refunded yet"
            raise Refused(409, "exceeds_captured", detail, payment.id)
        refund_id = new_id("re")
        payment.refunded_cents += amount
        self.store.add_movement(refund_id, payment.id, "refund", amount, self.clock.now())
        self.store.save_payment(payment)
        return Answer(201, _movement(refund_id, "refund", payment, amount))

    def _settle_later(self, payment: Payment, prefix: str) -> None:
        """Decide the settlement now and queue its webhooks: "<prefix>.pending" at once,
        the final one after ``settle_delay_s``; with ``reorder`` the settlement is
        immediate and the final webhook overtakes the "pending" one, which comes late."""
        now, delay = self.clock.now(), self.modes.settle_delay_s
        failed = self.rng.random() < self.modes.settle_fail_rate
        payment.settle_outcome = "FAILED" if failed else "SETTLED"
        payment.settle_at = now if self.modes.reorder else now + delay
        final_type = f"{prefix}.settlement_failed" if failed else f"{prefix}.settled"
        pending = (f"{prefix}.pending", 1, now)
        final = (final_type, 2, payment.settle_at)
        first, second = (final, pending) if self.modes.reorder else (pending, final)
        self._queue(payment, *first, due_at=now)
        self._queue(payment, *second, due_at=now + delay)

    def _queue(self, payment: Payment, type_: str, seq: int, at: float, due_at: float) -> None:
        """The webhook body (field names the backend's inbox reads), queued once, or
        twice with the same event id (``duplicate_rate``)."""
        event_id = str(uuid.uuid4())
        body = {
            "event_id": event_id,
            "type": type_,
            "authorization_ref": payment.id,
            "reference": payment.reference,
            "amount_cents": payment.captured_cents,
            "seq": seq,
            "at": format_ts(at),
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        copies = 2 if self.rng.random() < self.modes.duplicate_rate else 1
        for _ in range(copies):
            self.store.queue_webhook(event_id, type_, raw, due_at)


def _movement(movement_id: str, kind: str, payment: Payment, amount: int) -> dict[str, Any]:
    return {"id": movement_id, "object": kind, "payment": payment.id, "amount_cents": amount}
