"""The local stack: one mosquitto + one redis-server + the run folder's secrets.

The run folder keeps what a restart must find again: generated passwords, the fleet
secret, the gateway signing key, the payment provider's key and webhook secret, broker
persistence, Redis AOF. ``stack.env`` in it is a shell file with the docs/spec.md §6 variables
for the services. The folder is 0700 and every file in it that holds a secret or
customer data 0600 from its creation (protocol/private_files.py; the children run
with umask 077, launcher/procs.py).
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from launcher.broker import Broker, BrokerSettings
from launcher.credentials import new_secret
from launcher.errors import StackEnvMissing
from launcher.procs import free_port
from launcher.redis_cluster import RedisClusterServer, RedisClusterSettings
from launcher.redis_server import RedisServer, RedisSettings
from protocol import signing
from protocol.credentials import vehicle_password
from protocol.private_files import private_dir, write_private

GATEWAY_USER = "gateway"
FLEET_USER = "fleet"
DEV_RUN_DIR = Path("run/dev")  # where `python -m launcher up` puts the stack by default


@dataclass
class StackOptions:
    run_dir: Path
    mqtt_vehicle_port: int = 0  # 0: pick a free port
    mqtt_service_port: int = 0
    redis_port: int = 0
    acl_root: str = "caas/v1"
    with_redis: bool = True
    # > 0: a Redis Cluster of that many masters (one replica each) instead of one
    # redis-server; CAAS_REDIS_URL then names one of its nodes
    redis_cluster_masters: int = 0


def stack_env_path(run_dir: Path) -> Path:
    """The shell file with the stack's variables in a run folder."""
    return run_dir / "stack.env"


def new_share_group() -> str:
    """The gateway's shared-subscription group: not guessable, and a valid MQTT level."""
    return f"gw{secrets.token_hex(12)}"


SECRET_GENERATORS: dict[str, Callable[[], str]] = {
    "gateway_password": new_secret,
    "fleet_password": new_secret,
    "fleet_secret": new_secret,
    "redis_password": new_secret,
    "gateway_token": new_secret,
    "gateway_share_group": new_share_group,
    # the payment provider (paysim): the backend's bearer key there, and the secret the
    # provider signs its webhooks with; both services read the same two variables
    "payment_provider_key": new_secret,
    "payment_webhook_secret": new_secret,
}


class Secrets:
    """Secrets generated once per run folder and reused on restart."""

    def __init__(
        self, run_dir: Path, generators: dict[str, Callable[[], str]] | None = None
    ) -> None:
        self.path = run_dir / "secrets.json"
        stored: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}
        wanted = generators or SECRET_GENERATORS
        self.values = {name: stored.get(name) or new() for name, new in wanted.items()}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(self.values, indent=2))

    def __getitem__(self, name: str) -> str:
        return self.values[name]


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.run_dir = private_dir(options.run_dir.resolve())
        self.secrets = Secrets(self.run_dir)
        self.broker = Broker(
            BrokerSettings(
                run_dir=self.run_dir,
                vehicle_port=options.mqtt_vehicle_port or free_port(),
                service_port=options.mqtt_service_port or free_port(),
                gateway_user=GATEWAY_USER,
                gateway_password=self.secrets["gateway_password"],
                fleet_user=FLEET_USER,
                fleet_password=self.secrets["fleet_password"],
                acl_root=options.acl_root,
            )
        )
        self.redis = (
            RedisServer(
                RedisSettings(
                    self.run_dir, options.redis_port or free_port(), self.secrets["redis_password"]
                )
            )
            if options.with_redis and not options.redis_cluster_masters
            else None
        )
        self.redis_cluster = (
            RedisClusterServer(
                RedisClusterSettings(
                    self.run_dir / "redis-cluster",
                    self.secrets["redis_password"],
                    masters=options.redis_cluster_masters,
                )
            )
            if options.with_redis and options.redis_cluster_masters
            else None
        )
        self.private_key_path = self.run_dir / "gateway_signing_key.pem"
        self.public_key_path = self.run_dir / "gateway_public_key.pem"
        self.env_path = stack_env_path(self.run_dir)

    def start(self) -> LocalStack:
        if not self.private_key_path.exists():
            signing.write_keypair(self.private_key_path, self.public_key_path)
        self.broker.start()
        if self.redis is not None:
            self.redis.start()
        if self.redis_cluster is not None:
            self.redis_cluster.start()
        write_private(self.env_path, export_lines(self.env()))  # secrets.json's secrets
        return self

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        self.broker.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def allow_vehicles(self, vins: list[str]) -> None:
        """Give each VIN its own broker identity (per-vehicle connection mode)."""
        secret = self.secrets["fleet_secret"]
        self.broker.add_vehicles((vin, vehicle_password(secret, vin)) for vin in vins)

    def env(self) -> dict[str, str]:
        """docs/spec.md §6 variables pointing the services at this stack."""
        env = {
            "CAAS_MQTT_URL": self.broker.gateway_address().url(),
            "CAAS_FLEET_MQTT_URL": self.broker.fleet_address().url(),
            "CAAS_VEHICLE_MQTT_URL": self.broker.vehicle_address().url(),
            "CAAS_FLEET_SECRET": self.secrets["fleet_secret"],
            "CAAS_SIGNING_KEY": str(self.private_key_path),
            "CAAS_PUBLIC_KEY": str(self.public_key_path),
            "CAAS_GATEWAY_TOKEN": self.secrets["gateway_token"],
            "CAAS_GATEWAY_SHARE_GROUP": self.secrets["gateway_share_group"],
            "CAAS_PAYMENT_PROVIDER_KEY": self.secrets["payment_provider_key"],
            "CAAS_PAYMENT_WEBHOOK_SECRET": self.secrets["payment_webhook_secret"],
        }
        if self.redis is not None:
            env["CAAS_REDIS_URL"] = self.redis.url()
        if self.redis_cluster is not None:
            env["CAAS_REDIS_URL"] = self.redis_cluster.url()
        return env


def export_lines(env: dict[str, str]) -> str:
    """``export NAME=value`` lines a POSIX shell can ``source`` or ``eval``."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


REDACTED = "***"


def redacted(env: dict[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """``env`` with every occurrence of a secret value replaced by ``***``: what can be
    printed (a URL keeps its host, port and user, loses its password)."""
    hidden = sorted((s for s in secrets if s), key=len, reverse=True)
    shown = {}
    for name, value in env.items():
        for secret in hidden:
            value = value.replace(secret, REDACTED)
        shown[name] = value
    return shown


def read_stack_env(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines of a stack.env (what ``start`` writes);
    StackEnvMissing when there is no such file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StackEnvMissing(path) from None
    values = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep and name:
                values[name] = value
    return values
