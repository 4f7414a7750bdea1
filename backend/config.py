"""Backend settings from the environment (docs/spec.md §6). One class, read once at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.settings import http_url, redis_url, required_secret
from protocol.startup import DEFAULT_STARTUP_WAIT_S

DEFAULT_DB_PATH = Path("run/dev/backend.sqlite3")


class BackendSettings(BaseSettings):
    """``CAAS_*`` variables (docs/spec.md §6) and ``CAAS_BACKEND_*`` internals."""

    model_config = SettingsConfigDict(env_prefix="CAAS_", extra="ignore")

    database_url: str | None = None
    gateway_url: str = "http://127.0.0.1:8081"
    gateway_token: SecretStr | None = None
    redis_url: str | None = None
    events_stream: str = "caas:events"
    # the payment provider (docs/paysim.md): required by `serve`, not by the other
    # commands; no defaults, a secret is never baked into the code
    payment_provider_url: str | None = None
    payment_provider_key: SecretStr | None = None  # our bearer key at the provider
    payment_webhook_secret: SecretStr | None = None  # the provider signs webhooks with it

    # how long a command waits at start for the database and Redis (exit 3 after it)
    startup_wait_s: float = Field(default=DEFAULT_STARTUP_WAIT_S, gt=0)

    # internals (docs/spec.md §6 lists them)
    backend_consumer_group: str = "backend"
    backend_consumer_name: str = "backend-1"
    backend_public_url: str = "http://127.0.0.1:8080"
    # how often each background loop looks for due work it was not woken for (work
    # committed by another process, or before a restart)
    backend_poll_s: float = Field(default=0.5, gt=0)
    # provider calls / gateway POSTs in flight at once (money executor / outbox relay)
    backend_money_concurrency: int = Field(default=32, ge=1)
    backend_relay_concurrency: int = Field(default=32, ge=1)
    # a claimed money intent or outbox row is left alone by other executors this long;
    # above the gateway client's timeout (10 s), so a live claim never expires
    backend_claim_lease_s: float = Field(default=30.0, gt=0)
    backend_outbox_initial_backoff_s: float = Field(default=1.0, gt=0)
    backend_outbox_max_backoff_s: float = Field(default=60.0, gt=0)
    # how long an activation may take before the purchase must be terminal; covers the
    # gateway's default policy (5 attempts, backoff up to 3600 s, ready_wait 300 s)
    backend_activation_deadline_s: float = Field(default=6 * 3600.0, gt=0)
    backend_settlement_grace_s: float = Field(default=3600.0, gt=0)
    # the process exporting the gauges read from the database holds this lease; above
    # Prometheus' scrape interval, so the holder keeps it while it is scraped
    backend_metrics_lease_s: float = Field(default=60.0, gt=0)
    backend_workshop_url: str = "https://workshops.caas.example/book"
    backend_smtp_url: str | None = None  # smtp://host:port; unset: e-mails go to the log
    backend_mail_from: str = "no-reply@caas.example"
    backend_maintenance_overdue_vins: str = ""  # simulator: comma-separated VINs overdue
    # lifecycle (issue 5)
    backend_expiry_notice_lead_s: float = Field(default=3 * 86_400.0, ge=0)
    backend_apology_offer: str = "20% off your next purchase with code SORRY20"
    # services whose cancellation by the customer removes them from that customer's
    # catalog, on top of `exclude_after_cancel` in data/catalog.yaml (comma-separated)
    backend_exclude_after_cancel: str = ""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        DEFAULT_DB_PATH.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{DEFAULT_DB_PATH}"

    def resolved_redis_url(self) -> str | None:
        """None when unset; ConfigError (one line) when it is not a Redis URL."""
        return redis_url("CAAS_REDIS_URL", self.redis_url) if self.redis_url else None

    def resolved_webhook_secret(self) -> str:
        """ConfigError (one line: the variable) when missing or under 16 characters."""
        return required_secret("CAAS_PAYMENT_WEBHOOK_SECRET", self.payment_webhook_secret)

    def resolved_provider(self) -> tuple[str, str]:
        """(URL, key) of the payment provider; ConfigError naming what is missing."""
        url = http_url("CAAS_PAYMENT_PROVIDER_URL", self.payment_provider_url)
        return url, required_secret("CAAS_PAYMENT_PROVIDER_KEY", self.payment_provider_key)

    def resolved_gateway_token(self) -> str:
        return self.gateway_token.get_secret_value() if self.gateway_token else ""
