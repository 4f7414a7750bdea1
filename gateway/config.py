"""Gateway settings from the environment (docs/spec.md §6). One class, read once at start."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ConfigError
from gateway.keys import DEFAULT_PREFIX
from gateway.policy import RetryPolicy
from protocol.settings import redis_url as checked_redis_url
from protocol.settings import service_url
from protocol.startup import DEFAULT_STARTUP_WAIT_S
from protocol.topics import DEFAULT_TOPIC_ROOT

MQTT_URL_FORM = "mqtt://user:password@host:port"

_DEFAULT_POLICY = RetryPolicy()
SHARE_GROUP_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


class GatewaySettings(BaseSettings):
    """``CAAS_*`` variables; ``CAAS_RETRY_<FIELD>`` sets the default RetryPolicy."""

    model_config = SettingsConfigDict(env_prefix="CAAS_", extra="ignore")

    mqtt_url: str | None = None
    redis_url: str | None = None
    gateway_token: SecretStr | None = None
    gateway_share_group: str | None = None  # the workers' $share group; secret, per deployment
    signing_key: Path | None = None
    topic_root: str = DEFAULT_TOPIC_ROOT
    events_stream: str = "caas:events"
    # the events stream keeps at least this much history, read or not (gateway/trimming.py)
    events_keep_s: float = Field(default=3600.0, ge=0)

    # defaults: the handbook's, as RetryPolicy holds them (one place)
    retry_max_attempts: int = _DEFAULT_POLICY.max_attempts
    retry_initial_backoff_s: float = _DEFAULT_POLICY.initial_backoff_s
    retry_backoff_multiplier: float = _DEFAULT_POLICY.backoff_multiplier
    retry_max_backoff_s: float = _DEFAULT_POLICY.max_backoff_s
    retry_jitter_ratio: float = _DEFAULT_POLICY.jitter_ratio
    retry_status_query_timeout_s: float = _DEFAULT_POLICY.status_query_timeout_s
    retry_ack_timeout_s: float = _DEFAULT_POLICY.ack_timeout_s
    retry_ready_wait_s: float = _DEFAULT_POLICY.ready_wait_s
    retry_outcome_wait_s: float = _DEFAULT_POLICY.outcome_wait_s

    # how long the start-up waits for the broker and Redis before it gives up (exit 3)
    startup_wait_s: float = Field(default=DEFAULT_STARTUP_WAIT_S, gt=0)

    # internals (docs/spec.md §6 lists them; tuned by tests and operations)
    gateway_key_prefix: str = DEFAULT_PREFIX
    gateway_worker_id: str = Field(default_factory=lambda: f"gw-{os.getpid()}")
    gateway_lease_s: float = Field(default=30.0, gt=0)
    gateway_timer_poll_s: float = Field(default=0.05, gt=0)
    gateway_timer_batch: int = Field(default=200, ge=1)
    gateway_concurrency: int = Field(default=64, ge=1)
    # A frozen worker stays in the shared subscription group, and receives its share of
    # the vehicles' answers, until the broker gives up on it: 1.5 x this keepalive.
    gateway_mqtt_keepalive_s: int = Field(default=5, ge=1, le=300)
    gateway_inbound_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    # One worker exports the gauges read from Redis; a dead one's lease lapses after this
    # (keep it above the scrape interval's jitter, below the alert rules' `for:`)
    gateway_gauge_lease_s: float = Field(default=15.0, ge=0.5, le=3600)
    # how often each worker trims the events stream (± half; idempotent, no lease)
    gateway_events_trim_s: float = Field(default=60.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        values = {
            name.removeprefix("retry_"): getattr(self, name)
            for name in type(self).model_fields
            if name.startswith("retry_")
        }
        try:
            return RetryPolicy(**values)
        except ValueError as exc:
            raise ConfigError("CAAS_RETRY_*", str(exc)) from exc

    def require(self) -> ResolvedSettings:
        """Check that nothing needed is missing."""
        mqtt = self.mqtt_url
        redis_url = self.redis_url
        token = self.gateway_token.get_secret_value() if self.gateway_token else None
        key = self.signing_key
        group = self.gateway_share_group
        for name, value in (
            ("CAAS_MQTT_URL", mqtt),
            ("CAAS_REDIS_URL", redis_url),
            ("CAAS_GATEWAY_TOKEN", token),
            ("CAAS_SIGNING_KEY", key),
            ("CAAS_GATEWAY_SHARE_GROUP", group),
        ):
            if not value:
                raise ConfigError(
                    name, "not set (local stack: `python -m launcher run gateway` sets them all)"
                )
        service_url("CAAS_MQTT_URL", mqtt, ("mqtt", "tcp"), MQTT_URL_FORM)
        checked_redis_url("CAAS_REDIS_URL", redis_url)
        if not SHARE_GROUP_PATTERN.fullmatch(str(group)):
            raise ConfigError(
                "CAAS_GATEWAY_SHARE_GROUP", "must be 8-64 characters of A-Z a-z 0-9 _ -"
            )
        return ResolvedSettings(
            self,
            str(mqtt),
            str(redis_url),
            str(token),
            Path(str(key)),
            self.retry_policy(),
            share_group=str(group),
        )


class ResolvedSettings:
    """Settings with every required value present."""

    def __init__(
        self,
        base: GatewaySettings,
        mqtt_url: str,
        redis_url: str,
        token: str,
        signing_key: Path,
        policy: RetryPolicy,
        share_group: str,
    ) -> None:
        self.base = base
        self.mqtt_url = mqtt_url
        self.redis_url = redis_url
        self.token = token
        self.signing_key = signing_key
        self.policy = policy
        self.share_group = share_group
