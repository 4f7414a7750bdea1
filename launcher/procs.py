"""Child-process helpers: free ports, readiness waits, clean stops."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from launcher.errors import BinaryMissing, ServiceFailed
from protocol.fdlimit import raise_fd_limit


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()),
        None,
    )
    if found is None:
        raise BinaryMissing(name)
    return found


def _child_setup() -> None:
    """In the child before exec: many descriptors, and no signal mask inherited from a
    parent that blocks SIGINT/SIGTERM to sigwait() for them (`launcher up` does), which
    would make the service deaf to our SIGTERM."""
    raise_fd_limit()
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def spawn(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        argv,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_child_setup,
        start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop the child
    )


def wait_for_port(
    proc: subprocess.Popen[bytes], port: int, service: str, log_path: Path, timeout_s: float = 15
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceFailed(service, f"exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServiceFailed(service, f"port {port} not open after {timeout_s}s; see {log_path}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM (mosquitto saves its persistence file, redis its AOF), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: a crash, for restart tests."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


class ChildService:
    """A service run as a child process: subclasses set ``proc`` in ``start()``."""

    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Clean stop (the service saves what it persists)."""
        if self.proc is not None:
            stop(self.proc)

    def kill(self) -> None:
        """SIGKILL: a crash, for restart tests."""
        if self.proc is not None:
            kill(self.proc)

    def restart(self, hard: bool = False) -> None:
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
