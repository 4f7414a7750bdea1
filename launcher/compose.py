"""What docker-compose's one-shot ``config`` job writes (``python -m launcher render``).

One folder per consumer under the output root, each its own named volume in
docker-compose.yml and mounted at the same path (``/run/caas/<folder>``) in the config
job and in the services that need it, so a container sees only its own secrets:

    state/     secrets.json, the TLS CA's key          the config job only
    broker/    mosquitto.conf, ACLs, password files,   mosquitto
               TLS server certificate and key
    public/    gateway public key, TLS CA certificate  the simulator (and vehicles)
    gateway/   gateway.env, the gateway signing key    the gateway workers
    backend/   backend.env                             the backend
    paysim/    paysim.env                              the payment provider
    fleet/     fleet.env                               the simulator
    redis/     redis.conf (password), password         redis
    postgres/  password                                postgres
    grafana/   admin_password                          grafana

Secrets are generated on the first run and reused on every later one (the job runs at
each ``docker compose up``). Running as root (the container), each folder is handed to
the user its image runs as.
"""

from __future__ import annotations

import datetime
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from launcher.broker import Broker, BrokerSettings
from launcher.credentials import new_secret
from launcher.stack import FLEET_USER, GATEWAY_USER, SECRET_GENERATORS, Secrets
from launcher.tls import TlsFiles, ensure_certificates
from protocol import signing
from protocol.credentials import vehicle_password
from protocol.private_files import write_private

HEALTH_USER = "health"  # the broker healthcheck's login: no ACL rights at all
POSTGRES_USER = "caas"  # docker-compose.yml: POSTGRES_USER and POSTGRES_DB
POSTGRES_DB = "caas"
REDIS_BASE_CONF = "/etc/caas/redis.conf"  # redis/redis.conf, bind-mounted in the redis service

COMPOSE_SECRETS: dict[str, Callable[[], str]] = {
    **SECRET_GENERATORS,
    "postgres_password": new_secret,
    "grafana_admin_password": new_secret,
    "mqtt_health_password": new_secret,
}

# (uid, gid) each third-party image runs as; our own image runs as root
OWNERS: dict[str, tuple[int, int]] = {
    "broker": (1883, 1883),  # eclipse-mosquitto
    "redis": (999, 999),  # redis
    "postgres": (999, 999),  # postgres (Debian)
    "grafana": (472, 0),  # grafana/grafana
}
FOLDERS = (
    *("state", "broker", "public", "gateway", "backend", "paysim", "fleet"),
    *("redis", "postgres", "grafana"),
)


@dataclass
class ComposeOptions:
    out: Path
    vehicle_port: int = 8883
    service_port: int = 1884
    bind: str = "0.0.0.0"
    service_bind: str = "0.0.0.0"
    run_user: str = "mosquitto"
    persistence_dir: Path = Path("/mosquitto/data")
    mqtt_host: str = "mosquitto"
    redis_host: str = "redis"
    postgres_host: str = "postgres"
    acl_root: str = "caas/v1"
    plugin_path: Path | None = None
    tls_hostnames: list[str] = field(default_factory=lambda: ["mosquitto", "localhost"])
    vehicle_vins: list[str] | None = None  # None: keep the vehicle password file as it is


def render_compose(opts: ComposeOptions, now: datetime.datetime) -> None:
    out = opts.out
    for name in FOLDERS:
        (out / name).mkdir(parents=True, exist_ok=True)
    secrets = Secrets(out / "state", COMPOSE_SECRETS)
    signing_key = out / "gateway" / "gateway_signing_key.pem"
    public_key = out / "public" / "gateway_public_key.pem"
    if not signing_key.exists():
        signing.write_keypair(signing_key, public_key)
    tls = TlsFiles(
        ca_key=out / "state" / "ca-key.pem",
        ca_cert=out / "public" / "mqtt-ca.pem",
        server_cert=out / "broker" / "server.pem",
        server_key=out / "broker" / "server-key.pem",
    )
    ensure_certificates(tls, opts.tls_hostnames, now)
    write_broker(opts, secrets, tls)
    for name, values in service_env(opts, secrets, signing_key, public_key).items():
        write_private(out / name / f"{name}.env", env_lines(values))
    write_private(out / "redis" / "password", secrets["redis_password"] + "\n")
    conf = f"include {REDIS_BASE_CONF}\nrequirepass {secrets['redis_password']}\n"
    write_private(out / "redis" / "redis.conf", conf)
    write_private(out / "postgres" / "password", secrets["postgres_password"])
    write_private(out / "grafana" / "admin_password", secrets["grafana_admin_password"])
    write_private(out / "broker" / "health_password", secrets["mqtt_health_password"])
    set_permissions(out)


def write_broker(opts: ComposeOptions, secrets: Secrets, tls: TlsFiles) -> None:
    settings = BrokerSettings(
        run_dir=opts.out / "broker",
        vehicle_port=opts.vehicle_port,
        service_port=opts.service_port,
        gateway_user=GATEWAY_USER,
        gateway_password=secrets["gateway_password"],
        fleet_user=FLEET_USER,
        fleet_password=secrets["fleet_password"],
        acl_root=opts.acl_root,
        bind_address=opts.bind,
        service_bind=opts.service_bind,
        run_user=opts.run_user,
        persistence_dir=opts.persistence_dir,
        log_to_stdout=True,
        plugin_path=opts.plugin_path,
        vehicle_tls=(tls.server_cert, tls.server_key),
        service_probe_credentials=[(HEALTH_USER, secrets["mqtt_health_password"])],
    )
    broker = Broker(settings)
    # the vehicle identities written earlier (render --vehicles-from) survive a re-run
    kept = broker.vehicle_passwd_path.read_bytes() if broker.vehicle_passwd_path.exists() else b""
    broker.write_files()
    if opts.vehicle_vins is not None:
        fleet_secret = secrets["fleet_secret"]
        settings.vehicle_credentials = [
            (vin, vehicle_password(fleet_secret, vin)) for vin in opts.vehicle_vins
        ]
        broker.write_vehicle_passwords()
    else:
        broker.vehicle_passwd_path.write_bytes(kept)


def service_env(
    opts: ComposeOptions, secrets: Secrets, signing_key: Path, public_key: Path
) -> dict[str, dict[str, str]]:
    """Each Python service's secret variables (the rest is in docker-compose.yml)."""
    mqtt = f"{opts.mqtt_host}:{opts.service_port}"
    redis_url = f"redis://:{secrets['redis_password']}@{opts.redis_host}:6379/0"
    provider = {
        "CAAS_PAYMENT_PROVIDER_KEY": secrets["payment_provider_key"],
        "CAAS_PAYMENT_WEBHOOK_SECRET": secrets["payment_webhook_secret"],
    }
    return {
        "gateway": {
            "CAAS_MQTT_URL": f"mqtt://{GATEWAY_USER}:{secrets['gateway_password']}@{mqtt}",
            "CAAS_REDIS_URL": redis_url,
            "CAAS_GATEWAY_TOKEN": secrets["gateway_token"],
            "CAAS_GATEWAY_SHARE_GROUP": secrets["gateway_share_group"],
            "CAAS_SIGNING_KEY": str(signing_key),
        },
        "backend": {
            "CAAS_DATABASE_URL": f"postgresql+asyncpg://{POSTGRES_USER}:"
            f"{secrets['postgres_password']}@{opts.postgres_host}:5432/{POSTGRES_DB}",
            "CAAS_REDIS_URL": redis_url,
            "CAAS_GATEWAY_TOKEN": secrets["gateway_token"],
            **provider,
        },
        "paysim": provider,
        "fleet": {
            "CAAS_FLEET_MQTT_URL": f"mqtt://{FLEET_USER}:{secrets['fleet_password']}@{mqtt}",
            "CAAS_PUBLIC_KEY": str(public_key),
        },
    }


def env_lines(values: dict[str, str]) -> str:
    """A file for ``set -a; . FILE`` (values quoted for the shell)."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a file written by ``env_lines``."""
    pairs = (shlex.split(line)[0].split("=", 1) for line in path.read_text().splitlines())
    return {name: value for name, value in pairs}


def set_permissions(out: Path) -> None:
    """Folders 0700 and files 0600, owned by the image's user; public/ readable by all."""
    for name in FOLDERS:
        folder = out / name
        public = name == "public"
        folder.chmod(0o755 if public else 0o700)
        for path in folder.iterdir():
            path.chmod(0o644 if public else 0o600)
        if name in OWNERS and os.geteuid() == 0:
            uid, gid = OWNERS[name]
            for path in [folder, *folder.iterdir()]:
                os.chown(path, uid, gid)
