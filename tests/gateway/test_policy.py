"""RetryPolicy validation, the pure backoff function, and the environment settings."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.errors import ConfigError
from gateway.policy import RetryPolicy, backoff_bounds_s, backoff_s, base_delay_s, retry_delay_s

POLICY = RetryPolicy(initial_backoff_s=60, backoff_multiplier=2.0, max_backoff_s=3600)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600), (10_000, 3600)],
)
def test_base_delay_follows_the_formula(attempt: int, expected: float) -> None:
    """min(max, initial × mult^(k−1)), capped, also for huge k."""
    assert base_delay_s(POLICY, attempt) == expected


@pytest.mark.timeout(5)
def test_jitter_stays_within_ratio_and_spreads() -> None:
    """Every jittered delay is within ±jitter_ratio of the base, and they differ."""
    rng = random.Random(7)
    for k in (1, 2, 3, 8):
        low, high = backoff_bounds_s(POLICY, k)
        draws = [backoff_s(POLICY, k, rng) for _ in range(500)]
        assert all(low <= d <= high for d in draws)
        assert max(draws) - min(draws) > (high - low) * 0.8


@pytest.mark.timeout(5)
def test_backoff_is_pure_given_the_rng() -> None:
    """Same seed, same delays: the function has no hidden state."""
    a = [backoff_s(POLICY, k, random.Random(3)) for k in (1, 2, 3)]
    b = [backoff_s(POLICY, k, random.Random(3)) for k in (1, 2, 3)]
    assert a == b


@pytest.mark.timeout(5)
def test_zero_jitter_is_exact() -> None:
    """jitter_ratio 0 gives the base delay exactly."""
    policy = RetryPolicy(initial_backoff_s=0.5, jitter_ratio=0.0)
    assert backoff_s(policy, 2, random.Random(1)) == 1.0


@pytest.mark.timeout(5)
def test_attempts_are_numbered_from_one() -> None:
    """There is no backoff before attempt 1."""
    with pytest.raises(ValueError, match="from 1"):
        base_delay_s(POLICY, 0)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1},
        {"backoff_multiplier": 0.5},
        {"initial_backoff_s": 10, "max_backoff_s": 5},
        {"jitter_ratio": 1.0},
        {"ack_timeout_s": 0},
        {"status_query_timeout_s": -1},
        {"ready_wait_s": -1},
    ],
)
def test_invalid_policies_are_refused(bad: dict[str, float]) -> None:
    """Values that cannot work raise ValueError naming the field."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.timeout(5)
def test_defaults_match_the_handbook() -> None:
    """docs/spec.md §3 defaults (outcome_wait_s is this project's addition, docs/protocol.md)."""
    assert RetryPolicy().to_dict() == {
        "max_attempts": 5,
        "initial_backoff_s": 60,
        "backoff_multiplier": 2.0,
        "max_backoff_s": 3600,
        "jitter_ratio": 0.1,
        "status_query_timeout_s": 30,
        "ack_timeout_s": 120,
        "ready_wait_s": 300,
        "outcome_wait_s": 300,
    }


@pytest.mark.timeout(5)
def test_env_sets_the_default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """CAAS_RETRY_<FIELD> overrides each policy default."""
    monkeypatch.setenv("CAAS_RETRY_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("CAAS_RETRY_ACK_TIMEOUT_S", "2.5")
    monkeypatch.setenv("CAAS_RETRY_JITTER_RATIO", "0")
    policy = GatewaySettings().retry_policy()
    assert (policy.max_attempts, policy.ack_timeout_s, policy.jitter_ratio) == (7, 2.5, 0)
    assert policy.initial_backoff_s == 60


@pytest.mark.timeout(5)
def test_invalid_env_policy_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy from the environment that cannot work stops the start with ConfigError."""
    monkeypatch.setenv("CAAS_RETRY_JITTER_RATIO", "2")
    with pytest.raises(ConfigError, match="jitter_ratio"):
        GatewaySettings().retry_policy()


@pytest.mark.timeout(5)
def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Without CAAS_MQTT_URL (and no launcher run folder) the error names the variable."""
    for name in ("CAAS_MQTT_URL", "CAAS_REDIS_URL", "CAAS_GATEWAY_TOKEN", "CAAS_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(str(tmp_path))
    with pytest.raises(ConfigError, match="CAAS_MQTT_URL"):
        GatewaySettings().require()


def complete_settings(**overrides: str) -> GatewaySettings:
    values: dict[str, Any] = {
        "mqtt_url": "mqtt://gateway:pw@127.0.0.1:1884",
        "redis_url": "redis://127.0.0.1:6379/0",
        "gateway_token": "token",
        "signing_key": "key.pem",
        "gateway_share_group": "gw0123456789abcdef01234567",
        **overrides,
    }
    return GatewaySettings(**values)


@pytest.mark.timeout(5)
def test_share_group_is_required_and_validated() -> None:
    """CAAS_GATEWAY_SHARE_GROUP is required like the token and must be a safe, long name."""
    assert complete_settings().require().share_group == "gw0123456789abcdef01234567"
    with pytest.raises(ConfigError, match="CAAS_GATEWAY_SHARE_GROUP: not set"):
        complete_settings(gateway_share_group="").require()
    for bad in ("gateway", "gw/evil/+", "gw#0123456", "x" * 65, "gw 0123456"):
        with pytest.raises(ConfigError, match="CAAS_GATEWAY_SHARE_GROUP: must be"):
            complete_settings(gateway_share_group=bad).require()


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("hint", "low", "high"),
    [(None, 54, 66), (0, 54, 66), (30, 54, 66), (600, 600, 600), (10**6, 3600, 3600)],
)
def test_retry_delay_obeys_the_hint_within_max_backoff(
    hint: float | None, low: float, high: float
) -> None:
    """max(backoff, retry_after_s), the hint capped at max_backoff_s (attempt 1: 60 ± 10 %)."""
    delay = retry_delay_s(POLICY, 1, random.Random(3), hint)
    assert low <= delay <= high


@pytest.mark.timeout(5)
def test_retry_delay_draws_the_same_jitter_with_or_without_a_hint() -> None:
    """The rng is drawn either way, so a hint does not shift later jitter draws."""
    a, b = random.Random(9), random.Random(9)
    retry_delay_s(POLICY, 1, a, 10**6)
    backoff_s(POLICY, 1, b)
    assert a.random() == b.random()
