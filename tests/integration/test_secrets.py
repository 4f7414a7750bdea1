"""Secrets and files: `python -m launcher up` and the demo as real processes.

The run folder is 0700 and every file in it 0600 (the public key aside), no secret
is on any child's command line or on stdout unless asked, and every child ends
within seconds of a SIGKILLed launcher (PR_SET_PDEATHSIG): none is left holding a
file of the run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher import procs
from launcher.stack import read_stack_env
from tests.conftest import project_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PUBLIC_FILES = {"gateway_public_key.pem"}  # the only file others may read
GONE_WITHIN_S = 5.0


def start(argv: list[str], ready: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m ARGV` with its stdout read up to the first line starting ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=project_root(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(ready):
            return proc, "".join(seen)
    proc.wait(10)
    raise AssertionError(f"exited {proc.returncode} before {ready!r}:\n{''.join(seen)}")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children of children included)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def holding(run_dir: Path) -> set[int]:
    """Live processes (zombies aside) with a file of ``run_dir`` open: a service's log,
    mosquitto's and redis-server's data. redis-server renames itself in ps, so its
    arguments would not find it."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if "\nState:\tZ" in (proc / "status").read_text():
                continue
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).startswith(f"{run_dir}/"):
                    found.add(int(proc.name))
                    break
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found - {os.getpid()}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def secret_values(run_dir: Path) -> list[str]:
    values = list(json.loads((run_dir / "secrets.json").read_text()).values())
    assert len(values) >= 8 and all(len(v) >= 16 for v in values)
    return values


def assert_private(run_dir: Path) -> list[str]:
    """Every folder 0700, every file 0600 but the public key; the files seen."""
    assert run_dir.stat().st_mode & 0o777 == 0o700
    seen = []
    for path in run_dir.rglob("*"):
        mode = path.stat().st_mode & 0o777
        name = str(path.relative_to(run_dir))
        seen.append(name)
        if path.is_dir():
            assert mode == 0o700, f"{name}: {mode:o}"
        elif path.name not in PUBLIC_FILES:
            assert mode == 0o600, f"{name}: {mode:o}"
    return seen


def assert_no_secret_in_argv(pids: set[int], secrets: list[str]) -> None:
    for pid in pids:
        line = cmdline(pid)
        leaked = [s[:4] + "..." for s in secrets if s in line]
        assert not leaked, f"pid {pid} ({line[:60]}...) shows {leaked}"


def assert_all_end_on_sigkill(proc: subprocess.Popen[str], run_dir: Path) -> float:
    """SIGKILL the launcher: every process holding a run-folder file ends; how long."""
    assert holding(run_dir), "nothing holds the run folder before the kill"
    killed = time.monotonic()
    proc.kill()
    proc.wait(5)
    while holding(run_dir) and time.monotonic() - killed < GONE_WITHIN_S:
        time.sleep(0.05)
    left = {pid: cmdline(pid) for pid in holding(run_dir)}
    assert not left, f"orphans after the launcher's SIGKILL: {left}"
    return time.monotonic() - killed


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} not healthy after {timeout_s}s")


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "run"
    for pid in holding(tmp_path / "run"):  # a failed test leaves nothing behind
        os.kill(pid, signal.SIGKILL)


def test_launcher_up_keeps_secrets_private_and_dies_with_its_children(run_dir: Path) -> None:
    """Folder 0700 and files 0600 (AOF, persistence, passwords, ACL, keys, logs), no
    secret in any argv or on stdout, and no orphan after `kill -9` of the launcher."""
    proc, out = start(["launcher", "up", "--run-dir", str(run_dir)], "# also in")
    try:
        children = descendants(proc.pid)
        assert len(children) == 2  # mosquitto and redis-server
        secrets = secret_values(run_dir)
        seen = assert_private(run_dir)
        for name in ("stack.env", "secrets.json", "gateway_signing_key.pem", "redis.conf",
                     "mosquitto-service.passwd", "mosquitto-vehicle.acl", "redis.log"):  # fmt: skip
            assert name in seen
        assert any(name.startswith("redis/appendonlydir/") for name in seen), seen
        assert_no_secret_in_argv(children | {proc.pid}, secrets)
        assert not [s for s in secrets if s in out], "a secret value on stdout"
        assert "CAAS_REDIS_URL=redis://:***@127.0.0.1:" in out
        assert f"{run_dir / 'stack.env'}" in out
        assert_all_end_on_sigkill(proc, run_dir)
        # they ended on SIGTERM, not SIGKILL: mosquitto saved its persistence, privately
        assert (run_dir / "mosquitto.db").stat().st_mode & 0o777 == 0o600
        assert_private(run_dir)
    finally:
        proc.kill()


def test_launcher_up_shows_secrets_when_asked(run_dir: Path, tmp_path: Path) -> None:
    """--show-secrets prints the export lines of stack.env, values included."""
    argv = ["launcher", "up", "--run-dir", str(run_dir), "--show-secrets"]
    proc, out = start(argv, "# also in")
    try:
        (tmp_path / "printed.env").write_text(out)
        printed = read_stack_env(tmp_path / "printed.env")
        assert printed == read_stack_env(run_dir / "stack.env")
        assert printed["CAAS_FLEET_SECRET"] in secret_values(run_dir)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)


def test_demo_services_keep_data_private_and_die_with_the_demo(run_dir: Path) -> None:
    """The demo's services (simulator, gateway, paysim, backend): their databases 0600,
    no secret in their argv (the fleet password came on the simulator's command line),
    all gone after `kill -9` of the demo."""
    port = procs.free_port()
    argv = ["launcher", "demo", "--run-dir", str(run_dir), "--vehicles", "4", "--no-live",
            "--backend-port", str(port)]  # fmt: skip
    proc, _ = start(argv, "demo: starting backend")  # the last one
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz")
        children = descendants(proc.pid)
        names = " ".join(cmdline(pid) for pid in children)
        for service in ("vehicle_sim", "gateway", "paysim", "backend", "mosquitto"):
            assert service in names
        seen = assert_private(run_dir)
        assert {"backend.sqlite3", "paysim.sqlite3", "manifest.json"} <= set(seen)
        assert_no_secret_in_argv(children, secret_values(run_dir))
        assert_all_end_on_sigkill(proc, run_dir)
    finally:
        proc.kill()


def test_a_child_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """The death signal follows the forking thread: a service started from a thread
    that then ends (asyncio.to_thread(broker.start)) must keep running."""
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(
        target=lambda: started.append(procs.spawn(["sleep", "30"], tmp_path / "sleep.log"))
    )
    thread.start()
    thread.join()
    try:
        time.sleep(0.3)
        assert started[0].poll() is None
        assert (tmp_path / "sleep.log").stat().st_mode & 0o777 == 0o600
    finally:
        procs.kill(started[0])
