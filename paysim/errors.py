"""Exceptions of the paysim package.

PaysimError
├── Refused(status, code, detail)   an API call answered with a definite error (stored
│                                   under its idempotency key like any answer)
└── UnknownPayment(payment_id)      404: no authorization or charge with that id

Settings problems are ``protocol.settings.ConfigError`` (one line at start, exit 2).
"""

from __future__ import annotations


class PaysimError(Exception):
    """Base class of every error raised by ``paysim``."""


class Refused(PaysimError):
    def __init__(self, status: int, code: str, detail: str, payment: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.payment = payment


class UnknownPayment(Refused):
    def __init__(self, payment_id: str) -> None:
        super().__init__(404, "not_found", f"no authorization or charge {payment_id}")
