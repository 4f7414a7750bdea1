"""Backend errors. One tree, shallow::

BackendError
├── ConfigError(name, reason)
├── Unauthorized()                        → 401 (no or unknown bearer token)
├── Forbidden(role)                       → 403 (a customer on an ops route)
├── NotFound(kind, ident)                 → 404
├── Conflict(code, detail)                → 409 (idempotency mismatch, maintenance_overdue…)
├── InvalidRequest(code, detail)          → 422 / 400
├── DependencyUnavailable(system, detail) → 503 (VSS outage)
├── ProviderError(op, reason)             payment provider said no / did not answer
│   └── ProviderTimeout(op)               outcome unknown: retry with the same key
├── GatewayError(status, detail)          outbox relay: gateway refused or unreachable
└── InvariantViolation(rule, detail)      check-invariants found a broken money rule
"""

from __future__ import annotations


class BackendError(Exception):
    """Base of every backend error."""


class ConfigError(BackendError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class Unauthorized(BackendError):
    def __init__(self) -> None:
        super().__init__("a valid bearer token is required")


class Forbidden(BackendError):
    def __init__(self, role: str) -> None:
        super().__init__(f"role {role} required")
        self.role = role


class NotFound(BackendError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} not found: {ident}")
        self.kind = kind
        self.ident = ident


class Conflict(BackendError):
    def __init__(self, code: str, detail: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.extra = extra or {}


class InvalidRequest(BackendError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class DependencyUnavailable(BackendError):
    def __init__(self, system: str, detail: str) -> None:
        super().__init__(f"{system} unavailable: {detail}")
        self.system = system
        self.detail = detail


class ProviderError(BackendError):
    def __init__(self, op: str, reason: str) -> None:
        super().__init__(f"payment provider {op}: {reason}")
        self.op = op
        self.reason = reason


class ProviderTimeout(ProviderError):
    def __init__(self, op: str) -> None:
        super().__init__(op, "timeout")


class GatewayError(BackendError):
    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(f"gateway {status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in (401, 408, 429)


class InvariantViolation(BackendError):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail
