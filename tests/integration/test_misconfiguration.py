"""Every expected misconfiguration, tried from the command line as a new user would:
one line on stderr naming the variable (or option) and the host, the exit code of its
kind (protocol/startup.py: 2 configuration, 3 unreachable, 4 credentials refused), no
traceback, and quickly: an unreachable dependency after CAAS_STARTUP_WAIT_S (short
here), refused credentials at once, never retried."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.postgres import PostgresServer, PostgresSettings
from launcher.procs import free_port
from launcher.stack import LocalStack
from protocol.startup import ExitCode
from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SHORT_WAIT_S = "1"  # unreachable dependencies: the start-up gives up after this
LONG_WAIT_S = 30.0  # refused credentials must answer well before this: not retried


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PostgresSettings(port=free_port(), password="misconf-pw-1"))
    server.start()
    yield server
    server.remove()


def run(
    cwd: Path, env: dict[str, str], *argv: str, wait_s: float | str = SHORT_WAIT_S
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m argv`` with only ``env`` of the CAAS_ variables; (result, seconds)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    full = {**clean, "PYTHONPATH": str(project_root()), "CAAS_STARTUP_WAIT_S": str(wait_s)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", *argv], env={**full, **env}, cwd=cwd,
                            capture_output=True, text=True, timeout=45)  # fmt: skip
    return result, time.monotonic() - started


def one_line(result: subprocess.CompletedProcess[str], code: ExitCode, *names: str) -> str:
    """The single stderr line, checked: exit code, every name in it, no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, (result.returncode, lines[0])
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def gateway_env(stack: LocalStack) -> dict[str, str]:
    assert stack.redis is not None
    return {
        "CAAS_MQTT_URL": stack.broker.gateway_address().url(),
        "CAAS_REDIS_URL": stack.redis.url(0),
        "CAAS_GATEWAY_TOKEN": stack.secrets["gateway_token"],
        "CAAS_GATEWAY_SHARE_GROUP": stack.secrets["gateway_share_group"],
        "CAAS_SIGNING_KEY": str(stack.private_key_path),
    }


def gateway(tmp_path: Path, env: dict[str, str], wait_s: float | str = SHORT_WAIT_S) -> tuple[
    subprocess.CompletedProcess[str], float
]:  # fmt: skip
    return run(tmp_path, env, "gateway", "--port", str(free_port()), wait_s=wait_s)


def test_gateway_without_a_broker_names_its_address(stack: LocalStack, tmp_path: Path) -> None:
    """No broker listening: exit 3 after the start-up wait, naming CAAS_MQTT_URL and host:port."""
    port = free_port()
    env = {**gateway_env(stack), "CAAS_MQTT_URL": f"mqtt://gw:pw@127.0.0.1:{port}"}
    result, took = gateway(tmp_path, env)
    line = one_line(result, ExitCode.UNREACHABLE, "CAAS_MQTT_URL", f"127.0.0.1:{port}")
    assert "CAAS_STARTUP_WAIT_S" in line
    assert took < 15


def test_gateway_wrong_broker_password_is_refused_at_once(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The broker refuses the credentials: exit 4, not retried until the wait runs out."""
    bad = stack.broker.gateway_address().with_credentials(
        stack.broker.settings.gateway_user, "not-the-password"
    )
    env = {**gateway_env(stack), "CAAS_MQTT_URL": bad.url()}
    result, took = gateway(tmp_path, env, wait_s=LONG_WAIT_S)
    line = one_line(result, ExitCode.AUTH_REFUSED, "CAAS_MQTT_URL", "refused the credentials")
    assert "not-the-password" not in line
    assert took < LONG_WAIT_S / 2


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379", "redis://h:port/0"])
def test_gateway_malformed_redis_url(stack: LocalStack, tmp_path: Path, url: str) -> None:
    """A Redis URL redis-py cannot open: exit 2 naming CAAS_REDIS_URL and the expected form."""
    result, _ = gateway(tmp_path, {**gateway_env(stack), "CAAS_REDIS_URL": url})
    assert "redis://" in one_line(result, ExitCode.CONFIG, "CAAS_REDIS_URL")


def test_gateway_wrong_redis_password_is_not_retried(stack: LocalStack, tmp_path: Path) -> None:
    """WRONGPASS: exit 4 at once naming CAAS_REDIS_URL and the host, never the password."""
    assert stack.redis is not None
    where = f"127.0.0.1:{stack.redis.settings.port}"
    env = {**gateway_env(stack), "CAAS_REDIS_URL": f"redis://:wrong-password@{where}/0"}
    result, took = gateway(tmp_path, env, wait_s=LONG_WAIT_S)
    line = one_line(result, ExitCode.AUTH_REFUSED, "CAAS_REDIS_URL", where)
    assert "wrong-password" not in line
    assert took < LONG_WAIT_S / 2


def test_gateway_unreachable_redis(stack: LocalStack, tmp_path: Path) -> None:
    """Nothing on Redis' port: exit 3 naming CAAS_REDIS_URL and host:port."""
    where = f"127.0.0.1:{free_port()}"
    result, _ = gateway(tmp_path, {**gateway_env(stack), "CAAS_REDIS_URL": f"redis://{where}/0"})
    one_line(result, ExitCode.UNREACHABLE, "CAAS_REDIS_URL", where)


def test_gateway_unreadable_number_names_the_variable(stack: LocalStack, tmp_path: Path) -> None:
    """CAAS_GATEWAY_LEASE_S=abc: the variable (not the field) and what to do, exit 2."""
    result, _ = gateway(tmp_path, {**gateway_env(stack), "CAAS_GATEWAY_LEASE_S": "abc"})
    line = one_line(result, ExitCode.CONFIG, "CAAS_GATEWAY_LEASE_S", "valid number")
    assert line.endswith("(fix or unset CAAS_GATEWAY_LEASE_S)")


@pytest.mark.parametrize("kind", ["missing", "public"])
def test_gateway_signing_key_file(stack: LocalStack, tmp_path: Path, kind: str) -> None:
    """A missing key file, or the public key given for the private one: exit 2, the
    variable and the path."""
    path = tmp_path / "nokey.pem" if kind == "missing" else stack.public_key_path
    result, _ = gateway(tmp_path, {**gateway_env(stack), "CAAS_SIGNING_KEY": str(path)})
    one_line(result, ExitCode.CONFIG, "CAAS_SIGNING_KEY", str(path), "private key")


def test_gateway_reindex_wrong_redis_password(stack: LocalStack, tmp_path: Path) -> None:
    """--reindex goes through the same checks: WRONGPASS is exit 4, one line."""
    assert stack.redis is not None
    env = {"CAAS_REDIS_URL": f"redis://:nope@127.0.0.1:{stack.redis.settings.port}/0"}
    result, _ = run(tmp_path, env, "gateway", "--reindex", wait_s=LONG_WAIT_S)
    one_line(result, ExitCode.AUTH_REFUSED, "CAAS_REDIS_URL")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_backend_accepts_common_postgres_spellings(
    postgres: PostgresServer, tmp_path: Path, scheme: str
) -> None:
    """postgres://, postgresql://, postgresql+psycopg:// all run on the async driver."""
    url = postgres.url().replace("postgresql+asyncpg", scheme, 1)
    result, _ = run(tmp_path, {"CAAS_DATABASE_URL": url}, "backend", "migrate")
    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stdout


@pytest.mark.parametrize("command", [["migrate"], ["customers", "list"]])
def test_backend_unreachable_postgres(tmp_path: Path, command: list[str]) -> None:
    """No PostgreSQL on the port: exit 3 naming CAAS_DATABASE_URL and host:port (the
    admin commands too)."""
    where = f"127.0.0.1:{free_port()}"
    env = {"CAAS_DATABASE_URL": f"postgresql://caas:pw@{where}/caas"}
    result, took = run(tmp_path, env, "backend", *command)
    one_line(result, ExitCode.UNREACHABLE, "CAAS_DATABASE_URL", where)
    assert took < 15


def test_backend_wrong_postgres_password_is_refused_at_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """password authentication failed: exit 4, at once, never the password."""
    url = postgres.url().replace("misconf-pw-1", "not-it-at-all")
    result, took = run(tmp_path, {"CAAS_DATABASE_URL": url}, "backend", "migrate",
                       wait_s=LONG_WAIT_S)  # fmt: skip
    line = one_line(result, ExitCode.AUTH_REFUSED, "CAAS_DATABASE_URL", "password")
    assert "not-it-at-all" not in line
    assert took < LONG_WAIT_S / 2


@pytest.mark.parametrize(
    ("url", "says"),
    [("mysql://u:p@h/db", "mysql://"), ("postgresql://caas:pw@127.0.0.1:{port}/nodb", "nodb")],
)
def test_backend_unusable_database_url(
    postgres: PostgresServer, tmp_path: Path, url: str, says: str
) -> None:
    """An unsupported scheme, a database that does not exist: exit 2, one line."""
    real = url.format(port=postgres.settings.port).replace("caas:pw", "caas:misconf-pw-1")
    result, _ = run(tmp_path, {"CAAS_DATABASE_URL": real}, "backend", "migrate")
    one_line(result, ExitCode.CONFIG, "CAAS_DATABASE_URL", says)


def test_backend_serve_wrong_redis_password(stack: LocalStack, tmp_path: Path) -> None:
    """serve checks Redis before uvicorn: exit 4 naming CAAS_REDIS_URL, no traceback;
    its options are accepted after the subcommand."""
    assert stack.redis is not None
    env = {
        "CAAS_DATABASE_URL": f"sqlite:///{tmp_path / 'b.sqlite3'}",
        "CAAS_REDIS_URL": f"redis://:nope@127.0.0.1:{stack.redis.settings.port}/0",
        "CAAS_PAYMENT_PROVIDER_URL": "http://127.0.0.1:9",
        "CAAS_PAYMENT_PROVIDER_KEY": "misconf-provider-key",
        "CAAS_PAYMENT_WEBHOOK_SECRET": "misconf-webhook-secret",
    }
    port = str(free_port())
    result, _ = run(tmp_path, env, "backend", "serve", "--port", port, wait_s=LONG_WAIT_S)
    one_line(result, ExitCode.AUTH_REFUSED, "CAAS_REDIS_URL")


def test_simulator_without_a_broker(stack: LocalStack, tmp_path: Path) -> None:
    """vehicle_sim with nothing on the broker's port: exit 3 naming --broker and host:port."""
    where = f"127.0.0.1:{free_port()}"
    argv = ["vehicle_sim", "run", "--vehicles", "1", "--no-live",
            "--public-key", str(stack.public_key_path)]  # fmt: skip
    # the broker's URL (a password) through the environment, as the help asks
    result, _ = run(tmp_path, {"CAAS_FLEET_MQTT_URL": f"mqtt://fleet:pw@{where}"}, *argv)
    one_line(result, ExitCode.UNREACHABLE, "--broker", where)


NO_OPTION_DEFAULTS = (["vehicle_sim", "--help"], ["backend", "operators", "create", "--help"])


@pytest.mark.parametrize(
    "argv",
    [
        ["gateway", "--help"],
        ["backend", "--help"],
        ["backend", "serve", "--help"],
        ["backend", "seed", "--help"],
        ["backend", "operators", "create", "--help"],
        ["vehicle_sim", "--help"],
        ["vehicle_sim", "run", "--help"],
        ["paysim", "--help"],
        ["launcher", "up", "--help"],
        ["launcher", "passwd", "--help"],
        ["launcher", "demo", "--help"],
    ],
)
def test_every_help_shows_defaults_and_exit_codes(tmp_path: Path, argv: list[str]) -> None:
    """Defaults shown, never "(default: None)" or twice; the services' exit codes in the
    epilog (the launcher is the dev stack's tool, not a service)."""
    result, _ = run(tmp_path, {}, *argv)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert argv[0] == "launcher" or "exit codes: 0 done" in text
    assert "(default: None)" not in text
    assert not re.search(r"\(default[^)]*\) \(default", text), "a default said twice"
    if argv not in NO_OPTION_DEFAULTS:
        assert "(default: " in text
