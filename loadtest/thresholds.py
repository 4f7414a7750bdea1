"""The load test's verdict: pass exactly when every request name holds the limits.
No Locust import here (unit-tested without gevent's monkey-patching)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_fail_ratio: float = 0.01
    max_p95_ms: float = 5000.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Limits:
        return cls(
            float(environ.get("CAAS_LOAD_MAX_FAIL_RATIO", cls.max_fail_ratio)),
            float(environ.get("CAAS_LOAD_MAX_P95_MS", cls.max_p95_ms)),
        )


@dataclass(frozen=True)
class Reading:
    """One request name's statistics at the end of the run."""

    name: str
    requests: int
    fail_ratio: float
    p95_ms: float


def violations(readings: Iterable[Reading], limits: Limits, user_errors: int = 0) -> list[str]:
    """One line per broken limit; empty = the run passes. A run that made no request, or
    whose user code raised, proves nothing and does not pass."""
    measured = [r for r in readings if r.requests]
    found = [
        f"{r.name}: fail ratio {r.fail_ratio:.3f} (limit {limits.max_fail_ratio:.3f}), "
        f"p95 {r.p95_ms:.0f} ms (limit {limits.max_p95_ms:.0f} ms)"
        for r in measured
        if r.fail_ratio > limits.max_fail_ratio or r.p95_ms > limits.max_p95_ms
    ]
    if not measured:
        found.append("no request was made")
    if user_errors:
        found.append(f"{user_errors} error(s) raised in user code (see Locust's error report)")
    return found
