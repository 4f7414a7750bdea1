"""The launcher's services run with the project's settings: auth, AOF, private PostgreSQL;
`launcher run` / `launcher env` hand the local stack's variables to a service."""

from __future__ import annotations

import os
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
from launcher.stack import LocalStack, Secrets, export_lines, read_stack_env
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


def test_redis_runs_the_projects_persistence_settings(stack: LocalStack) -> None:
    """redis/redis.conf reaches the server: AOF every second, no RDB snapshots, and an
    automatic AOF rewrite (a fork that stalls the gateway) not before 512 MB."""
    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url(63))
    settings = client.config_get("append*") | client.config_get("auto-aof-*")
    settings |= client.config_get("save")
    assert settings == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "appendfilename": "appendonly.aof",
        "appenddirname": "appendonlydir",
        "auto-aof-rewrite-percentage": "100",
        "auto-aof-rewrite-min-size": str(512 * 1024 * 1024),
        "save": "",
    }


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


def launcher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m launcher ARGS` with no CAAS_* variable of ours but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args], cwd=project_root(), capture_output=True,
        text=True, timeout=30, env={**clean, **(env or {})},
    )  # fmt: skip


def test_stack_env_is_private_and_reads_back(stack: LocalStack, tmp_path: Path) -> None:
    """stack.env holds the stack's variables (mode 0600: secrets); shell quoting survives
    the round trip."""
    assert read_stack_env(stack.env_path) == stack.env()
    assert stack.env_path.stat().st_mode & 0o777 == 0o600
    odd = {"CAAS_A": 'it\'s "quoted" $HOME', "CAAS_B": "", "CAAS_C": "a b\\c"}
    (tmp_path / "stack.env").write_text(export_lines(odd))
    assert read_stack_env(tmp_path / "stack.env") == odd


def test_launcher_env_is_eval_able(stack: LocalStack) -> None:
    """`eval "$(python -m launcher env)"` puts the stack's variables in a shell."""
    printed = launcher("env", "--run-dir", str(stack.run_dir))
    assert printed.returncode == 0, printed.stderr
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf %s "$CAAS_MQTT_URL|$CAAS_GATEWAY_TOKEN"', "-",
         printed.stdout], capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert shell.stdout == f"{stack.env()['CAAS_MQTT_URL']}|{stack.env()['CAAS_GATEWAY_TOKEN']}"


def test_launcher_run_gives_the_stack_variables_under_the_environment(tmp_path: Path) -> None:
    """The service gets stack.env's variables; one already set in the environment wins."""
    (tmp_path / "stack.env").write_text(export_lines({
        "CAAS_PAYMENT_PROVIDER_KEY": "short",
        "CAAS_PAYMENT_WEBHOOK_SECRET": "a-webhook-secret-long-enough",
        "CAAS_PAYSIM_WEBHOOK_URL": "backend:8080",
    }))  # fmt: skip
    run = ["run", "--run-dir", str(tmp_path), "paysim", "--", "--db", str(tmp_path / "p.db")]
    with_stack = launcher(*run)
    assert with_stack.returncode == 2
    assert with_stack.stderr.strip() == (
        "paysim: CAAS_PAYMENT_PROVIDER_KEY: too short: at least 16 characters"
    )
    mine = launcher(*run, env={"CAAS_PAYMENT_PROVIDER_KEY": "my-own-key-long-enough"})
    assert mine.returncode == 2
    assert mine.stderr.strip().startswith("paysim: CAAS_PAYSIM_WEBHOOK_URL: expected http(s)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "launcher: error: unknown service 'nope': one of gateway, backend, "
                          "paysim, vehicle_sim"),
        (["run", "--run-dir", "{tmp}", "gateway"], "launcher: error: {tmp}/stack.env not found"),
        (["env", "--run-dir", "{tmp}"], "launcher: error: {tmp}/stack.env not found"),
    ],
)  # fmt: skip
def test_launcher_run_misconfigured_is_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """An unknown service or a run folder without stack.env: one line, exit 2."""
    done = launcher(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(message.format(tmp=tmp_path)), done.stderr
    assert done.stdout == ""
