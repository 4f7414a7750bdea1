"""Fleet derivation: VINs, exact mode counts, determinism; scenario files; mosquitto hashes."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from launcher.credentials import mosquitto_hash
from protocol.credentials import vehicle_password
from protocol.models import is_valid_vin
from vehicle_sim.errors import ScenarioError
from vehicle_sim.fleet import Mode, build_fleet, check_digit, deal_modes, parse_mix
from vehicle_sim.scenario import Stage, load_scenario


def test_vins_are_valid_unique_and_checksummed() -> None:
    """17 chars of the ISO 3779 alphabet, a correct check digit, no duplicates."""
    fleet = build_fleet(3, 2000, {Mode.ONLINE: 1.0})
    vins = [s.vin for s in fleet]
    assert len(set(vins)) == len(vins)
    for vin in vins:
        assert is_valid_vin(vin)
        assert vin[8] == check_digit(vin[:8] + "0" + vin[9:])


def test_known_check_digit() -> None:
    """The ISO 3779 check digit of a published example VIN (1M8GDM9AXKP042788 → X)."""
    assert check_digit("1M8GDM9A0KP042788") == "X"


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    """VINs, models, firmware and modes are a function of the seed."""
    mix = parse_mix("online=0.5,busy=0.3,timeout=0.2")
    assert build_fleet(9, 300, mix) == build_fleet(9, 300, mix)
    assert [s.vin for s in build_fleet(9, 300, mix)] != [s.vin for s in build_fleet(10, 300, mix)]


def test_mix_gives_exact_counts() -> None:
    """Largest remainder: 10 vehicles at 0.5/0.3/0.2 → exactly 5/3/2; 3 at thirds → 1/1/1."""
    modes = deal_modes(1, 10, parse_mix("online=0.5,busy=0.3,timeout=0.2"))
    assert {m: modes.count(m) for m in set(modes)} == {
        Mode.ONLINE: 5,
        Mode.BUSY: 3,
        Mode.TIMEOUT: 2,
    }
    thirds = deal_modes(1, 3, parse_mix("online=1,busy=1,nack=1"))
    assert sorted(thirds) == sorted([Mode.ONLINE, Mode.BUSY, Mode.NACK])


@pytest.mark.parametrize("bad", ["online", "online=x", "warp=1", "online=-1", "online=0"])
def test_bad_mix_is_a_clear_error(bad: str) -> None:
    """--mix typos name the offending part."""
    with pytest.raises(ScenarioError, match="--mix"):
        parse_mix(bad)


def test_scenario_file_validates(tmp_path: Path) -> None:
    """A good scenario loads; a bad one lists each problem with its path."""
    good = tmp_path / "good.yaml"
    good.write_text(
        "vehicles: 10\nmix: {online: 1, busy: 1}\n"
        "timing: {busy_s: [1, 2]}\n"
        "stages:\n  - {at_s: 1, fraction: 0.5, set_mode: offline}\n"
    )
    scenario = load_scenario(good)
    assert scenario.stages == [Stage(at_s=1, fraction=0.5, set_mode=Mode.OFFLINE)]
    assert scenario.timing.behaviour().busy_s == (1, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "mix: {online: 1}\ntiming: {busy_s: [5, 1]}\n"
        "stages:\n  - {at_s: 5, set_mode: warp}\n  - {at_s: 1, set_mode: online}\n"
        "extra: 1\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    text = str(err.value)
    assert "busy_s" in text and "stages.0.set_mode" in text and "extra" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [")
    with pytest.raises(ScenarioError, match="YAML"):
        load_scenario(broken)


def test_mosquitto_hash_format() -> None:
    """$7$ PBKDF2-SHA512 with 101 iterations, as mosquitto_passwd writes it."""
    salt = b"0123456789ab"
    line = mosquitto_hash("secret", salt)
    _, kind, iterations, salt_b64, digest_b64 = line.split("$")
    assert (kind, iterations, base64.b64decode(salt_b64)) == ("7", "101", salt)
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)


def test_vehicle_passwords_differ_per_vin_and_secret() -> None:
    """Derived passwords: stable per (secret, VIN), different across VINs and secrets."""
    assert vehicle_password("s", "A") == vehicle_password("s", "A")
    assert vehicle_password("s", "A") != vehicle_password("s", "B")
    assert vehicle_password("s", "A") != vehicle_password("t", "A")
