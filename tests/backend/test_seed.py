"""``python -m backend seed --fleet-manifest PATH``: demo customers owning the vehicles
of the simulator's manifest (the backend does not build the simulator's fleet); a
manifest it cannot use is one line and exit code 2."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from backend import cli
from vehicle_sim.fleet import Mode, build_fleet
from vehicle_sim.manifest import manifest, write_manifest


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'b.sqlite3'}")


def test_seed_owns_the_manifest_vehicles(
    tmp_path: Path, sqlite_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Customers own the manifest's first N vehicles, ``--per-customer`` each, in order,
    with each vehicle's model and firmware; the JSON has the ops token (the operator
    ``demo-operator``'s) and each customer's token and vehicles."""
    specs = build_fleet(7, 5, {Mode.ONLINE: 0.5, Mode.BUSY: 0.5})
    path = tmp_path / "manifest.json"
    write_manifest(path, manifest(7, specs, "multiplexed"))
    argv = ["seed", "--fleet-manifest", str(path), "--vehicles", "3", "--per-customer", "2"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"ops_token", "customers"} and out["ops_token"]
    owned = [list(c["vehicles"]) for c in out["customers"]]
    assert owned == [[specs[0].vin, specs[1].vin], [specs[2].vin]]
    for customer in out["customers"]:
        assert set(customer) == {"customer_id", "token", "vehicles"} and customer["token"]
    with closing(sqlite3.connect(tmp_path / "b.sqlite3")) as db:
        stored = set(db.execute("SELECT vin, model, firmware FROM vehicles"))
        operators = db.execute("SELECT name, prefix FROM api_tokens WHERE role = 'ops'").fetchall()
    assert stored == {(s.vin, s.model, s.firmware) for s in specs[:3]}
    assert operators == [("demo-operator", out["ops_token"][:12])]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"vehicles": 2}', 'has no "fleet" list'),
        ('{"fleet": [{"vin": "nope", "model": "Aurora"}]}', 'fleet[0] has no valid "vin"'),
        ('{"fleet": [{"vin": "WVWZZZ1JZ3W386752"}]}', 'fleet[0] has no "model"'),
        ('{"fleet": [{"vin": "WVWZZZ1JZ3W386752", "model": "A"},'
         ' {"vin": "WVWZZZ1JZ3W386752", "model": "A"}]}', "listed twice"),
        ('{"fleet": [{"vin": "WVWZZZ1JZ3W386752", "model": "A", "firmware": 4}]}',
         'fleet[0] has a bad "firmware"'),
    ],
)  # fmt: skip
def test_seed_refuses_a_manifest_it_cannot_use(
    tmp_path: Path,
    sqlite_env: None,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    problem: str,
) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["seed", "--fleet-manifest", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("backend: --fleet-manifest: ") and problem in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "b.sqlite3").exists()  # refused before touching the database


def test_seeding_again_is_one_line(
    tmp_path: Path, sqlite_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second seed of the same vehicles is refused in one line (exit 1) saying where the
    first seed's tokens are, never an IntegrityError; the first seed's data is intact."""
    path = tmp_path / "manifest.json"
    write_manifest(path, manifest(7, build_fleet(7, 4, {Mode.ONLINE: 1}), "multiplexed"))
    assert cli.main(["seed", "--fleet-manifest", str(path)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main(["seed", "--fleet-manifest", str(path), "--per-customer", "1"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("backend:")]
    assert captured.out == "" and len(lines) == 1, captured.err
    assert "seeded before" in lines[0] and "customers.json" in lines[0]
    assert "Traceback" not in captured.err and "IntegrityError" not in captured.err
    with closing(sqlite3.connect(tmp_path / "b.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone() == (len(first["customers"]),)
        assert db.execute("SELECT count(*) FROM api_tokens WHERE role = 'ops'").fetchone() == (1,)
