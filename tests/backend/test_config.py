"""``python -m backend`` and its payment provider settings: serving without the
provider's URL, key or webhook secret (no default anywhere) is one line naming the
variable and exit code 2; the other commands do not need them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.procs import free_port
from tests.backend.conftest import sqlite_url

PROVIDER = {
    "CAAS_PAYMENT_PROVIDER_URL": "http://127.0.0.1:9",
    "CAAS_PAYMENT_PROVIDER_KEY": "backend-test-provider-key",
    "CAAS_PAYMENT_WEBHOOK_SECRET": "backend-test-webhook-secret",
}


def run_backend(
    tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    full = {**clean, "CAAS_DATABASE_URL": sqlite_url(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "backend", *args], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("missing", "value"),
    [
        ("CAAS_PAYMENT_WEBHOOK_SECRET", None),
        ("CAAS_PAYMENT_WEBHOOK_SECRET", "dev-webhook"),  # under 16 characters
        ("CAAS_PAYMENT_PROVIDER_URL", None),
        ("CAAS_PAYMENT_PROVIDER_URL", "paysim:8082"),
        ("CAAS_PAYMENT_PROVIDER_KEY", None),
    ],
)
def test_serve_refuses_to_start_without_the_provider(
    tmp_path: Path, missing: str, value: str | None
) -> None:
    env = {k: v for k, v in PROVIDER.items() if k != missing}
    if value is not None:
        env[missing] = value
    result = run_backend(tmp_path, env, "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"backend: {missing}: "), result.stderr


def test_an_unreadable_variable_is_one_line_too(tmp_path: Path) -> None:
    result = run_backend(tmp_path, {**PROVIDER, "CAAS_BACKEND_POLL_S": "often"}, "migrate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "backend: CAAS_BACKEND_POLL_S: Input should be a valid number, unable to parse string "
        "as a number (fix or unset CAAS_BACKEND_POLL_S)"
    ]


def test_other_commands_do_not_need_the_provider(tmp_path: Path) -> None:
    assert run_backend(tmp_path, {}, "migrate").returncode == 0
    checked = run_backend(tmp_path, {}, "check-invariants")
    assert (checked.returncode, checked.stdout.strip()) == (0, "0 violation(s)")
