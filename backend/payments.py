"""The payment-provider boundary: a ``Protocol`` shaped like authorize / capture /
cancel / refund (every call with an idempotency key) and the webhook signature."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Protocol

from backend.errors import InvalidRequest

SIGNATURE_HEADER = "Caas-Signature"
SIGNATURE_TOLERANCE_S = 300.0
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only (str.isdigit accepts "²")
_MAC = re.compile(r"[0-9a-fA-F]{64}")  # a hex HMAC-SHA256


@dataclass(frozen=True)
class ProviderResult:
    """What the provider answered. ``approved`` False: a definite no (decline)."""

    ref: str
    approved: bool
    reason: str | None = None


@dataclass(frozen=True)
class SettlementStatus:
    state: str  # NONE | PENDING | SETTLED | FAILED
    seq: int


class PaymentProvider(Protocol):
    """Raises ``ProviderTimeout`` when the outcome is unknown: retry with the same key."""

    async def authorize(
        self, *, idempotency_key: str, reference: str, amount_cents: int, currency: str
    ) -> ProviderResult: ...

    async def capture(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult: ...

    async def cancel(self, *, idempotency_key: str, authorization_ref: str) -> ProviderResult: ...

    async def refund(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult: ...

    async def settlement(self, authorization_ref: str) -> SettlementStatus: ...


def sign(secret: str, body: bytes, timestamp: float) -> str:
    """``t=<unix>,v1=<hex hmac-sha256 of "<t>." + body>`` (the Stripe scheme)."""
    t = str(int(timestamp))
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str | None, body: bytes, now: float) -> None:
    """Raise ``InvalidRequest("bad_signature")`` unless the header signs this body."""
    if not header:
        raise InvalidRequest("bad_signature", f"missing {SIGNATURE_HEADER} header")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, given = parts.get("t", ""), parts.get("v1", "")
    if not _TIMESTAMP.fullmatch(t) or abs(now - int(t)) > SIGNATURE_TOLERANCE_S:
        raise InvalidRequest("bad_signature", "timestamp missing or outside the tolerance")
    if not _MAC.fullmatch(given):  # compare_digest raises on non-ASCII text
        raise InvalidRequest("bad_signature", "v1 is not 64 hex digits")
    expected = sign(secret, body, int(t)).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given.lower()):
        raise InvalidRequest("bad_signature", "signature does not match")
