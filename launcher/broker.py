"""A mosquitto child process with the project's configuration (mosquitto/).

Two listeners with their own files (``per_listener_settings true``): the vehicle
listener's password file holds vehicle identities only (username = VIN) and its ACL the
per-vehicle patterns; the service listener's holds the gateway and fleet identities and
their ACL sections. Both load the caas_auth plugin (launcher/plugin.py).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from launcher import procs
from launcher.credentials import write_password_file
from launcher.errors import ServiceFailed
from launcher.plugin import build_plugin
from protocol.mqtt import BrokerAddress
from protocol.private_files import write_private

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_DIR = PROJECT_ROOT / "mosquitto"


@dataclass
class BrokerSettings:
    run_dir: Path
    vehicle_port: int
    service_port: int
    gateway_user: str
    gateway_password: str
    fleet_user: str
    fleet_password: str
    acl_root: str = "caas/v1"  # may hold a '+' level, e.g. "caas/+" for per-test roots
    bind_address: str = "127.0.0.1"
    service_bind: str = "127.0.0.1"
    run_user: str | None = None  # None: whoever runs the launcher
    persistence_dir: Path | None = None  # None: the run folder
    # 0: the database is saved at exit and on SIGUSR1 only (mosquitto.conf.template says
    # why); the broker-stall benchmark sets 30 to measure the periodic save it replaced
    autosave_interval_s: int = 0
    log_to_stdout: bool = False
    plugin_path: Path | None = None  # None: build mosquitto/plugin on demand (launcher/plugin.py)
    # (certificate, key) PEM files: the vehicle listener speaks TLS (docker-compose)
    vehicle_tls: tuple[Path, Path] | None = None
    # extra identities of the service listener with no ACL rights (a healthcheck's login)
    service_probe_credentials: list[tuple[str, str]] = field(default_factory=list)
    vehicle_credentials: list[tuple[str, str]] = field(default_factory=list)


def vehicle_tls_lines(files: tuple[Path, Path] | None) -> str:
    """The vehicle listener's TLS options; plain TCP (local stack, tests) without files."""
    if files is None:
        return "# no TLS on this listener (local stack)"
    cert, key = files
    return f"certfile {cert}\nkeyfile {key}"


def render(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    if "{{" in template:
        raise ValueError(
            f"unfilled placeholder in template: {template[template.index('{{') :][:40]}"
        )
    return template


class Broker(procs.ChildService):
    """Start, stop, kill and restart one mosquitto with its files in ``run_dir``."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf_path = settings.run_dir / "mosquitto.conf"
        self.log_path = settings.run_dir / "mosquitto.log"
        self.vehicle_passwd_path = settings.run_dir / "mosquitto-vehicle.passwd"
        self.service_passwd_path = settings.run_dir / "mosquitto-service.passwd"
        self.vehicle_acl_path = settings.run_dir / "mosquitto-vehicle.acl"
        self.service_acl_path = settings.run_dir / "mosquitto-service.acl"

    def write_files(self) -> None:
        s = self.settings
        s.run_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "PERSISTENCE_DIR": str(s.persistence_dir or s.run_dir),
            "AUTOSAVE_INTERVAL_S": str(s.autosave_interval_s),
            "LOG_DEST": "stdout" if s.log_to_stdout else f"file {self.log_path}",
            "SERVICE_BIND": s.service_bind,
            "VEHICLE_PASSWORD_FILE": str(self.vehicle_passwd_path),
            "SERVICE_PASSWORD_FILE": str(self.service_passwd_path),
            "VEHICLE_ACL_FILE": str(self.vehicle_acl_path),
            "SERVICE_ACL_FILE": str(self.service_acl_path),
            "PLUGIN_PATH": str(s.plugin_path or build_plugin()),
            "VEHICLE_PORT": str(s.vehicle_port),
            "SERVICE_PORT": str(s.service_port),
            "BIND_ADDRESS": s.bind_address,
            "VEHICLE_TLS": vehicle_tls_lines(s.vehicle_tls),
            "ROOT": s.acl_root,
            "GATEWAY_USER": s.gateway_user,
            "FLEET_USER": s.fleet_user,
            "RUN_USER": s.run_user or pwd.getpwuid(os.getuid()).pw_name,
        }
        for path, template in (
            (self.conf_path, "mosquitto.conf.template"),
            (self.vehicle_acl_path, "acl-vehicle.template"),
            (self.service_acl_path, "acl-service.template"),
        ):
            write_private(path, render((MOSQUITTO_DIR / template).read_text(), values))
        services = [(s.gateway_user, s.gateway_password), (s.fleet_user, s.fleet_password)]
        services += s.service_probe_credentials
        write_password_file(self.service_passwd_path, services)
        self.write_vehicle_passwords()

    def write_vehicle_passwords(self) -> int:
        """The vehicle listener's password file: vehicle identities only."""
        return write_password_file(self.vehicle_passwd_path, self.settings.vehicle_credentials)

    def add_vehicles(self, credentials: Iterable[tuple[str, str]]) -> None:
        """Add vehicle identities; a running broker reloads its password file (SIGHUP)
        and this returns once the broker accepts the last identity added."""
        added = list(credentials)
        if not added:
            return
        self.settings.vehicle_credentials.extend(added)
        self.write_vehicle_passwords()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)
            self.wait_accepts(*added[-1])

    def wait_accepts(self, username: str, password: str, timeout_s: float = 10.0) -> None:
        """Block until a CONNECT with these credentials is accepted on the vehicle listener."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _accepts(self.settings.vehicle_port, username, password):
                return
            time.sleep(0.05)
        raise ServiceFailed("mosquitto", f"still refuses {username!r} after {timeout_s}s")

    def start(self) -> None:
        binary = procs.find_binary("mosquitto")
        self.write_files()
        self.proc = procs.spawn([binary, "-c", str(self.conf_path)], self.log_path)
        for port in (self.settings.vehicle_port, self.settings.service_port):
            procs.wait_for_port(self.proc, port, "mosquitto", self.log_path)

    # addresses -----------------------------------------------------------
    def gateway_address(self) -> BrokerAddress:
        s = self.settings
        return BrokerAddress("127.0.0.1", s.service_port, s.gateway_user, s.gateway_password)

    def fleet_address(self) -> BrokerAddress:
        s = self.settings
        return BrokerAddress("127.0.0.1", s.service_port, s.fleet_user, s.fleet_password)

    def vehicle_address(
        self, username: str | None = None, password: str | None = None
    ) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.settings.vehicle_port, username, password)


def _accepts(port: int, username: str, password: str) -> bool:
    """One blocking MQTT 5 CONNECT; True when the broker answers success."""
    result: list[bool] = []
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"probe-{os.getpid()}-{time.monotonic_ns()}",
        protocol=paho.MQTTv5,
    )
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, reason, p: result.append(not reason.is_failure)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        deadline = time.monotonic() + 2
        while not result and time.monotonic() < deadline:
            client.loop(0.05)
        client.disconnect()
    except OSError:
        return False
    return bool(result and result[0])
