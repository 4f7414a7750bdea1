"""The payment-provider boundary: a ``Protocol`` shaped like authorize / capture /
cancel / refund / charge (every call with an idempotency key) and the webhook signature
check. The signing scheme itself is shared with the provider (``protocol/
webhook_signing.py``); ``sign`` and ``SIGNATURE_HEADER`` are re-exported here."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Protocol

from backend.errors import InvalidRequest
from protocol.webhook_signing import SIGNATURE_HEADER as SIGNATURE_HEADER
from protocol.webhook_signing import sign as sign

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

    async def charge(
        self, *, idempotency_key: str, reference: str, amount_cents: int, currency: str
    ) -> ProviderResult:
        """An immediate charge (direct-debit-like): the money is taken at once and
        settles later; ``ref`` is then both the payment and its settlement's id."""
        ...

    async def settlement(self, authorization_ref: str) -> SettlementStatus: ...


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
