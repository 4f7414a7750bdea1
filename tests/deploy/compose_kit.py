"""docker-compose.yml read as Docker Compose would, for tests/deploy/test_compose.py: the
file with its `${VAR:-default}` substituted, each service's mounts, the env files its
entrypoint sources, and what the config job renders into each volume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from launcher.compose import read_env_file

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_YML = ROOT / "docker-compose.yml"
# the compose specification's schema, vendored unchanged: compose-spec/compose-spec,
# schema/compose-spec.json at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
CONTAINER_ROOT = Path("/run/caas")  # where the config job renders (--out)
PYTHON_IMAGE = "caas-ota:latest"

_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
_SOURCED = re.compile(r"\. (/\S+\.env)")
_PORT = re.compile(r"--port (\d+)")


def load_compose() -> dict[str, Any]:
    """The file as Compose reads it with no variable set: each ``${VAR:-default}`` is its
    default (a ``${VAR}`` without one stays: test_compose refuses it)."""
    text = _DEFAULTED.sub(lambda m: m.group(2), COMPOSE_YML.read_text())
    loaded: dict[str, Any] = yaml.safe_load(text.replace("$$", "$"))
    return loaded


@dataclass(frozen=True)
class Mount:
    source: str  # a volume's name, or a host path for a bind mount
    target: str
    is_volume: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found.append(Mount(source, target, not source.startswith((".", "/"))))
    return found


def volume_at(service: dict[str, Any], path: str) -> str | None:
    """The named volume whose mount holds ``path`` in this service, if any."""
    for mount in mounts(service):
        if mount.is_volume and (path == mount.target or path.startswith(mount.target + "/")):
            return mount.source
    return None


def command_text(service: dict[str, Any]) -> str:
    parts = [*service.get("entrypoint", []), *service.get("command", [])]
    return " ".join(str(part) for part in parts)


def sourced_env_files(service: dict[str, Any]) -> list[str]:
    return _SOURCED.findall(command_text(service))


def listening_port(service: dict[str, Any]) -> int | None:
    match = _PORT.search(command_text(service))
    return int(match.group(1)) if match else None


class Rendered:
    """The config job's output (rendered into ``out``), seen through the volumes."""

    def __init__(self, compose: dict[str, Any], out: Path) -> None:
        self.services: dict[str, Any] = compose["services"]
        self.out = out
        config = self.services["config"]
        # each volume of the config job: the folder of `out` it renders into
        self.folder_of = {
            m.source: out / Path(m.target).relative_to(CONTAINER_ROOT)
            for m in mounts(config)
            if m.is_volume
        }

    def host_path(self, service: str, container_path: str) -> Path | None:
        """Where a file the service sees at ``container_path`` was rendered, when it lies
        in a volume the config job wrote into (mounted at the same path in both)."""
        volume = volume_at(self.services[service], container_path)
        if volume is None or volume not in self.folder_of:
            return None
        config_target = next(
            m.target for m in mounts(self.services["config"]) if m.source == volume
        )
        relative = Path(container_path).relative_to(config_target)
        return self.folder_of[volume] / relative

    def environment(self, service: str) -> dict[str, str]:
        """The variables the service's process starts with: its sourced env files (which
        must exist), then its ``environment:``."""
        values: dict[str, str] = {}
        for container_path in sourced_env_files(self.services[service]):
            path = self.host_path(service, container_path)
            assert path is not None and path.exists(), f"{service}: {container_path} not rendered"
            values.update({k: self.in_container(v) for k, v in read_env_file(path).items()})
        values.update({k: str(v) for k, v in self.services[service].get("environment", {}).items()})
        return values

    def in_container(self, value: str) -> str:
        """A rendered value as the containers see it: the job renders into /run/caas."""
        return value.replace(str(self.out), CONTAINER_ROOT.as_posix())

    def readers(self, path: Path) -> set[str]:
        """The services that can read a rendered file (through a volume)."""
        folder = path.parent
        volumes = {name for name, rendered in self.folder_of.items() if rendered == folder}
        return {
            name
            for name, service in self.services.items()
            if any(m.source in volumes for m in mounts(service))
        }


def url_host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return str(parts.hostname), parts.port
