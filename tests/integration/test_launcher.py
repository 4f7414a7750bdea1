"""The launcher's services run with the project's settings: auth, AOF, private PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import redis

from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.stack import LocalStack

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
