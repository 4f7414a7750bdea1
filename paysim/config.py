"""Provider settings from the environment. One class, read once at start.

The key and the webhook secret are shared with the backend (``CAAS_PAYMENT_*``: the
same names on both sides); the rest are the simulator's own (``CAAS_PAYSIM_*``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from paysim.modes import FailureModes
from protocol.private_files import create_private
from protocol.settings import ConfigError, http_url, required_secret

DEFAULT_DB_PATH = Path("run/dev/paysim.sqlite3")
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8080/v1/payments/webhooks"  # python -m backend


class PaysimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAAS_", extra="ignore")

    payment_provider_key: SecretStr | None = None  # the bearer key of every /v1 and /control call
    payment_webhook_secret: SecretStr | None = None  # signs the webhooks (Caas-Signature)
    paysim_webhook_url: str = DEFAULT_WEBHOOK_URL
    paysim_db: Path = DEFAULT_DB_PATH

    # initial failure modes (PATCH /control/config changes them until a restart)
    paysim_seed: int = 0
    paysim_decline_rate: float = Field(default=0.0, ge=0, le=1)
    paysim_timeout_rate: float = Field(default=0.0, ge=0, le=1)
    paysim_settle_delay_s: float = Field(default=1.0, ge=0, le=86_400)
    paysim_settle_fail_rate: float = Field(default=0.0, ge=0, le=1)
    paysim_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    paysim_reorder: bool = False

    # webhook delivery: retried with exponential backoff until a 2xx, never dropped
    paysim_webhook_initial_backoff_s: float = Field(default=0.5, gt=0)
    paysim_webhook_max_backoff_s: float = Field(default=60.0, gt=0)
    paysim_webhook_timeout_s: float = Field(default=10.0, gt=0)
    paysim_webhook_concurrency: int = Field(default=8, ge=1, le=256)
    paysim_poll_s: float = Field(default=0.05, gt=0)

    def modes(self) -> FailureModes:
        return FailureModes(
            seed=self.paysim_seed,
            decline_rate=self.paysim_decline_rate,
            timeout_rate=self.paysim_timeout_rate,
            settle_delay_s=self.paysim_settle_delay_s,
            settle_fail_rate=self.paysim_settle_fail_rate,
            duplicate_rate=self.paysim_duplicate_rate,
            reorder=self.paysim_reorder,
        )

    def require(self, db: Path | None = None, db_option: str = "CAAS_PAYSIM_DB") -> Resolved:
        """Every value the service needs, checked; ConfigError naming the first problem.
        ``db`` (the ``--db`` option) wins over ``CAAS_PAYSIM_DB``."""
        key = required_secret("CAAS_PAYMENT_PROVIDER_KEY", self.payment_provider_key)
        secret = required_secret("CAAS_PAYMENT_WEBHOOK_SECRET", self.payment_webhook_secret)
        url = http_url("CAAS_PAYSIM_WEBHOOK_URL", self.paysim_webhook_url)
        path = db if db is not None else self.paysim_db
        writable_db(db_option if db is not None else "CAAS_PAYSIM_DB", path)
        if self.paysim_webhook_max_backoff_s < self.paysim_webhook_initial_backoff_s:
            raise ConfigError("CAAS_PAYSIM_WEBHOOK_MAX_BACKOFF_S", "below the initial backoff")
        return Resolved(self, key, secret, url, path)


@dataclass(frozen=True)
class Resolved:
    """Settings with every required value present and checked."""

    base: PaysimSettings
    key: str
    webhook_secret: str
    webhook_url: str
    db: Path


def writable_db(setting: str, path: Path) -> None:
    """ConfigError unless SQLite can create (or open) and write the file at ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)  # payments: 0600 from the start (SQLite would make it 0644)
        conn = sqlite3.connect(path, timeout=5)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails when read-only
            conn.rollback()
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(setting, f"cannot write the database {path}: {exc}") from None
