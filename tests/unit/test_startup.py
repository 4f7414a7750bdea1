"""The start-up decisions without I/O: database URL spellings, the probe's wait (what
it retries, what it refuses at once), the backend's options after its subcommand."""

from __future__ import annotations

import asyncio

import pytest

from backend.cli import parser
from backend.store.db import async_database_url
from protocol.settings import ConfigError, redis_url
from protocol.startup import (
    CredentialsRefused,
    Dependency,
    DependencyFailed,
    DependencyUnreachable,
    ExitCode,
    exit_code,
)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///run/x.db", "sqlite+aiosqlite:///run/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_url_spellings_map_to_the_async_driver(given: str, used: str) -> None:
    """Every common spelling of a PostgreSQL or SQLite URL runs on the async driver."""
    assert async_database_url(given) == used


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "just-a-path.db", "oracle://h"])
def test_other_database_urls_name_the_variable_not_the_password(url: str) -> None:
    """An unsupported URL is a ConfigError naming CAAS_DATABASE_URL, never quoting it."""
    with pytest.raises(ConfigError) as caught:
        async_database_url(url)
    assert caught.value.setting == "CAAS_DATABASE_URL"
    assert "secret" not in str(caught.value)


def test_redis_url_accepts_what_redis_py_opens() -> None:
    """redis://, rediss:// and unix:// pass; the rest names CAAS_REDIS_URL."""
    for ok in ("redis://:pw@h:6379/0", "rediss://h", "unix:///run/redis.sock"):
        assert redis_url("CAAS_REDIS_URL", ok) == ok
    with pytest.raises(ConfigError, match=r"^CAAS_REDIS_URL: "):
        redis_url("CAAS_REDIS_URL", "h:6379")


def _dependency() -> Dependency:
    return Dependency("thing", "h:1", "CAAS_THING_URL", (OSError,), lambda e: "auth" in str(e))


async def test_a_transient_failure_is_retried_until_it_answers() -> None:
    """OSError until the third call, then an answer: the wait returns it."""
    calls = 0

    async def probe() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("refused")
        return "up"

    assert await _dependency().wait(probe, wait_s=5.0) == "up"


async def test_a_refusal_is_raised_at_once() -> None:
    """Refused credentials: CredentialsRefused at the first call (exit 4)."""
    calls = 0

    async def probe() -> None:
        nonlocal calls
        calls += 1
        raise OSError("auth failed")

    with pytest.raises(CredentialsRefused) as caught:
        await _dependency().wait(probe, wait_s=5.0)
    assert calls == 1 and exit_code(caught.value) == ExitCode.AUTH_REFUSED
    assert str(caught.value).startswith("CAAS_THING_URL: thing at h:1 refused")


async def test_the_wait_is_bounded() -> None:
    """A dependency that never answers: DependencyUnreachable after the wait (exit 3)."""

    async def probe() -> None:
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DependencyUnreachable) as caught:
        await _dependency().wait(probe, wait_s=0.3)
    assert loop.time() - started < 2
    assert exit_code(caught.value) == ExitCode.UNREACHABLE


def test_backend_options_after_the_subcommand() -> None:
    """`backend serve --port 8099` and `backend --port 8099` both set the port; the
    default stays when neither gives it."""
    assert parser().parse_args(["serve", "--port", "8099"]).port == 8099
    assert parser().parse_args(["--port", "8099", "serve"]).port == 8099
    assert parser().parse_args(["serve"]).port == 8080
    assert parser().parse_args(["migrate", "--log-level", "debug"]).log_level == "debug"


async def test_any_other_error_is_one_configuration_line() -> None:
    """An answer that waiting will not cure (not transient, not a refusal): at once,
    exit 2, naming the setting and the address."""

    async def probe() -> None:
        raise RuntimeError("protocol error: unexpected reply")

    with pytest.raises(DependencyFailed) as caught:
        await _dependency().wait(probe, wait_s=5.0)
    assert exit_code(caught.value) == ExitCode.CONFIG
    assert str(caught.value).startswith("CAAS_THING_URL: thing at h:1 answered with an error")
