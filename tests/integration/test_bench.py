"""The benchmark harnesses run and report what they promise (correctness, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_activation_benchmark_smoke(tmp_path: Path) -> None:
    """`python -m bench activations` writes the JSON fields issue 6 names, all activations done."""
    out = tmp_path / "act.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "activations",
            "--vehicles",
            "400",
            "--duration",
            "1",
            "--workers",
            "1",
            "--window",
            "20",
            "--json",
            str(out),
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(out.read_text())
    for key in ("raw_echo_per_s", "activations_per_s", "ratio", "p50_ms", "p99_ms", "cpus"):
        assert key in report
    assert report["raw_echo_per_s"] > 0
    assert report["activations_per_s"] > 0
    for phase in report["phases"]:
        assert phase["failed"] == 0
        assert phase["http_errors"] == 0
        assert phase["accepted"] == phase["succeeded"]
    assert set(report["cpu_ms_per_activation"]) >= {"gateway-0", "vehicle_sim", "redis-server"}


def test_micro_benchmark_reports_ratios() -> None:
    """`python -m bench micro` compares each choice with its alternative on the same bytes."""
    run = subprocess.run(
        [sys.executable, "-m", "bench", "micro"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(run.stdout)
    assert {"ed25519_sign", "ed25519_verify", "mqtt5_publish_properties_pack_unpack"} <= set(report)
    assert all(row["speedup"] > 0 for row in report.values())
