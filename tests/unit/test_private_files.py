"""Private files and folders, redacted output, secrets kept off command lines."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from launcher.__main__ import fleet_secret
from launcher.errors import LauncherError
from launcher.stack import redacted
from protocol.private_files import create_private, private_dir, private_umask, write_private
from vehicle_sim.__main__ import fleet_secret as simulator_fleet_secret
from vehicle_sim.__main__ import secrets_on_command_line
from vehicle_sim.errors import SimulatorError


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_write_private_replaces_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    """An older 0644 file is replaced (a new inode, 0600), never rewritten in place."""
    path = tmp_path / "stack.env"
    path.write_text("old")
    path.chmod(0o644)
    old_inode = path.stat().st_ino
    write_private(path, "export A=1\n")
    assert (path.read_text(), mode(path)) == ("export A=1\n", 0o600)
    assert path.stat().st_ino != old_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.env"]  # no temporary left


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    assert mode(private_dir(tmp_path / "a" / "b")) == 0o700
    assert mode(tmp_path / "a") == 0o700  # parents created private too
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    assert mode(private_dir(old)) == 0o700


def test_create_private_keeps_an_existing_file(tmp_path: Path) -> None:
    db = tmp_path / "backend.sqlite3"
    create_private(db)
    assert (mode(db), db.read_bytes()) == (0o600, b"")
    db.write_bytes(b"data")
    create_private(db)
    assert db.read_bytes() == b"data"


def test_private_umask_restores_the_previous_one(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        with private_umask():
            (tmp_path / "f").touch()
        assert mode(tmp_path / "f") == 0o600
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_redacted_hides_every_secret_and_keeps_the_rest() -> None:
    env = {
        "CAAS_REDIS_URL": "redis://:pw-redis@127.0.0.1:6379/0",
        "CAAS_MQTT_URL": "mqtt://gateway:pw-gw@127.0.0.1:1884",
        "CAAS_FLEET_SECRET": "fleet-secret",
        "CAAS_PUBLIC_KEY": "/run/gateway_public_key.pem",
    }
    shown = redacted(env, ["pw-redis", "pw-gw", "fleet-secret", ""])
    assert shown == {
        "CAAS_REDIS_URL": "redis://:***@127.0.0.1:6379/0",
        "CAAS_MQTT_URL": "mqtt://gateway:***@127.0.0.1:1884",
        "CAAS_FLEET_SECRET": "***",
        "CAAS_PUBLIC_KEY": "/run/gateway_public_key.pem",
    }


@pytest.mark.parametrize(
    ("argv", "flagged"),
    [
        (["run", "--broker", "mqtt://fleet:pw@h:1884"], ["--broker"]),
        (["run", "--broker=mqtt://fleet:pw@h:1884"], ["--broker"]),
        (["run", "--broker", "mqtt://h:1883", "--fleet-secret", "s"], ["--fleet-secret"]),
        (["run", "--broker", "mqtt://h:1883", "--fleet-secret-file", "f"], []),
        (["run", "--vehicles", "10"], []),
    ],
)
def test_simulator_flags_secrets_on_its_command_line(argv: list[str], flagged: list[str]) -> None:
    assert secrets_on_command_line(argv) == flagged


def test_launcher_passwd_reads_the_fleet_secret_from_a_file_or_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet.secret").write_text("from-file\n")
    assert fleet_secret(tmp_path / "fleet.secret", {"CAAS_FLEET_SECRET": "env"}) == "from-file"
    assert fleet_secret(None, {"CAAS_FLEET_SECRET": "from-env"}) == "from-env"
    with pytest.raises(LauncherError, match="CAAS_FLEET_SECRET or --fleet-secret-file"):
        fleet_secret(None, {})
    with pytest.raises(LauncherError, match="No such file"):
        fleet_secret(tmp_path / "missing", {})


def test_simulator_reads_the_fleet_secret_file_first(tmp_path: Path) -> None:
    (tmp_path / "fleet.secret").write_text("from-file\n")
    args = argparse.Namespace(fleet_secret_file=tmp_path / "fleet.secret", fleet_secret="env")
    assert simulator_fleet_secret(args) == "from-file"
    assert (
        simulator_fleet_secret(argparse.Namespace(fleet_secret_file=None, fleet_secret="e")) == "e"
    )
    with pytest.raises(SimulatorError, match="--fleet-secret-file: No such file"):
        simulator_fleet_secret(
            argparse.Namespace(fleet_secret_file=tmp_path / "x", fleet_secret=None)
        )
