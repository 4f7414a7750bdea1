"""The launcher's services run with the project's settings: auth, AOF, private PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.stack import LocalStack, Secrets
from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PostgresSettings(port=free_port(), password="s3cret-pw"))
    server.start()
    yield server
    server.remove()


def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", url.replace("+asyncpg", ""), "-tAc", sql],
                          capture_output=True, text=True, timeout=20)  # fmt: skip


def test_private_postgres_requires_its_password(postgres: PostgresServer) -> None:
    """The cluster answers with the right password over TCP and refuses a wrong one."""
    ok = psql(postgres.url(), "select current_user")
    assert ok.stdout.strip() == "caas", ok.stderr
    bad = psql(postgres.url().replace("s3cret-pw", "wrong"), "select 1")
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr


def test_private_postgres_creates_fresh_databases(postgres: PostgresServer) -> None:
    """create_database gives an empty database per caller."""
    url = postgres.create_database("isolated_one")
    assert psql(url, "select current_database()").stdout.strip() == "isolated_one"


def test_redis_requires_password_and_keeps_writes_across_kill(stack: LocalStack) -> None:
    """AOF: a write acknowledged before SIGKILL survives the restart; no password, no access."""
    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url(63))
    client.set("aof-probe", "kept")
    stack.redis.restart(hard=True)
    client = redis.Redis.from_url(stack.redis.url(63))
    assert client.get("aof-probe") == b"kept"
    client.delete("aof-probe")
    anonymous = redis.Redis(port=stack.redis.settings.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("aof-probe")


def test_launcher_up_stops_its_services_on_sigint(tmp_path: Path) -> None:
    """`python -m launcher up` stops its broker and Redis cleanly and at once on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "up", "--run-dir", str(tmp_path / "up")],
        cwd=project_root(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("# also in"):
                break
        children = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()]  # fmt: skip
        assert len(children) == 2  # mosquitto and redis-server
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        # a clean SIGTERM stop takes well under a second; 10 s would mean the services
        # ignored it and were SIGKILLed (losing mosquitto's persistence file)
        assert time.monotonic() - started < 5
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
                f"/proc/{pid}/status").read_text()  # fmt: skip
    finally:
        proc.kill()


def test_payment_secrets_are_generated_per_run_folder(stack: LocalStack, tmp_path: Path) -> None:
    """The provider's key and webhook secret: generated once per run folder (0600), the
    same after a restart, another folder gets others; exported as CAAS_PAYMENT_*."""
    env = stack.env()
    key, secret = env["CAAS_PAYMENT_PROVIDER_KEY"], env["CAAS_PAYMENT_WEBHOOK_SECRET"]
    assert len(key) >= 16 and len(secret) >= 16 and key != secret
    assert stack.secrets.path.stat().st_mode & 0o777 == 0o600
    again = Secrets(stack.run_dir)
    assert (again["payment_provider_key"], again["payment_webhook_secret"]) == (key, secret)
    other = Secrets(tmp_path)
    assert other["payment_provider_key"] != key and other["payment_webhook_secret"] != secret
