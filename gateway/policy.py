"""RetryPolicy (docs/spec.md §3) and the pure backoff function.

After attempt ``k`` fails with a retryable outcome, attempt ``k + 1`` starts
``min(max_backoff_s, initial_backoff_s × backoff_multiplier^(k−1))`` later, the whole
delay multiplied by ``uniform(1 − jitter_ratio, 1 + jitter_ratio)``; a vehicle's
``retry_after_s`` stretches that delay up to ``max_backoff_s`` (``retry_delay_s``).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, fields, replace
from typing import Any

MAX_ATTEMPTS_LIMIT = 100


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_s: float = 60.0
    backoff_multiplier: float = 2.0
    max_backoff_s: float = 3600.0
    jitter_ratio: float = 0.1
    status_query_timeout_s: float = 30.0
    ack_timeout_s: float = 120.0
    ready_wait_s: float = 300.0
    # After the last attempt, while a command the vehicle may have acted on went
    # unanswered (and so did the status query after it), how long the gateway keeps
    # asking for the vehicle's status before it concludes FAILED. An answered status
    # decides at once (docs/protocol.md, gateway readings).
    outcome_wait_s: float = 300.0

    def __post_init__(self) -> None:
        problems = policy_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        # the names, not dataclasses.asdict (a deep copy): every commit stores the policy
        return {name: getattr(self, name) for name in _POLICY_ORDER}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        # every load of a stored activation reads its policy, and most activations
        # share a few: the same values give the same (immutable) policy, checked once
        return _policy_of(tuple((k, v, type(v)) for k, v in data.items()))

    def merged(self, overrides: dict[str, Any]) -> RetryPolicy:
        """This policy with some fields replaced (a per-request policy)."""
        return replace(self, **overrides)


@functools.lru_cache(maxsize=1024)
def _policy_of(items: tuple[tuple[str, Any, type], ...]) -> RetryPolicy:
    # the value's type is in the key: 60 and 60.0 are equal keys but not the same JSON
    return RetryPolicy(**{k: v for k, v, _ in items if k in _POLICY_FIELDS})


_POLICY_ORDER = tuple(f.name for f in fields(RetryPolicy))
_POLICY_FIELDS = frozenset(_POLICY_ORDER)


def policy_problems(p: RetryPolicy) -> list[str]:
    """Every reason the values cannot work together (empty when they can)."""
    problems = []
    if not 1 <= p.max_attempts <= MAX_ATTEMPTS_LIMIT:
        problems.append(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    if p.initial_backoff_s < 0:
        problems.append("initial_backoff_s must be >= 0")
    if p.backoff_multiplier < 1:
        problems.append("backoff_multiplier must be >= 1")
    if p.max_backoff_s < p.initial_backoff_s:
        problems.append("max_backoff_s must be >= initial_backoff_s")
    if not 0 <= p.jitter_ratio < 1:
        problems.append("jitter_ratio must be in [0, 1)")
    for name in ("status_query_timeout_s", "ack_timeout_s"):
        if not getattr(p, name) > 0:
            problems.append(f"{name} must be > 0")
    for name in ("ready_wait_s", "outcome_wait_s"):
        if getattr(p, name) < 0:
            problems.append(f"{name} must be >= 0")
    return problems


def base_delay_s(policy: RetryPolicy, failed_attempt: int) -> float:
    """The delay before attempt ``failed_attempt + 1``, without jitter."""
    if failed_attempt < 1:
        raise ValueError("attempts are numbered from 1")
    exponent = failed_attempt - 1
    # cap the exponent: beyond it the product exceeds any sane max_backoff_s anyway
    raw = policy.initial_backoff_s * policy.backoff_multiplier ** min(exponent, 64)
    return min(policy.max_backoff_s, raw)


def backoff_s(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> float:
    """Jittered delay before attempt ``failed_attempt + 1`` (pure given ``rng``)."""
    r = policy.jitter_ratio
    return base_delay_s(policy, failed_attempt) * rng.uniform(1 - r, 1 + r)


def backoff_bounds_s(policy: RetryPolicy, failed_attempt: int) -> tuple[float, float]:
    """The interval every jittered delay falls in (for checks and tests)."""
    base = base_delay_s(policy, failed_attempt)
    return base * (1 - policy.jitter_ratio), base * (1 + policy.jitter_ratio)


def retry_delay_s(
    policy: RetryPolicy, failed_attempt: int, rng: random.Random, retry_after_s: float | None
) -> float:
    """The delay before attempt ``failed_attempt + 1`` when the vehicle said when to ask
    again: ``max(backoff, retry_after_s)``, the hint capped at ``max_backoff_s``.

    Asking a vehicle before its busy period ends only earns another nack and spends an
    attempt, so the hint is obeyed; but it comes from the vehicle (up to 7 days, SPEC
    §2.3) and the policy is the operator's bound on how long an activation may sleep,
    so it never waits longer than the policy's longest delay. A hint shorter than the
    backoff changes nothing: the backoff also spreads retries across the fleet.
    """
    delay = backoff_s(policy, failed_attempt, rng)  # drawn always: same rng stream either way
    if retry_after_s is None:
        return delay
    return max(delay, min(retry_after_s, policy.max_backoff_s))
