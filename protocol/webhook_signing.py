"""The payment webhook signature, shared by the sender (``paysim``) and the receiver
(``backend``): ``Caas-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``, the
Stripe scheme. The receiver checks it with ``backend.payments.verify``."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Caas-Signature"


def sign(secret: str, body: bytes, timestamp: float) -> str:
    """``t=<unix>,v1=<hex hmac-sha256 of "<t>." + body>`` (the Stripe scheme)."""
    t = str(int(timestamp))
    mac = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"
