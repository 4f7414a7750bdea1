"""Child-process helpers: free ports, readiness waits, clean stops."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from launcher.errors import BinaryMissing, ServiceFailed
from protocol.fdlimit import raise_fd_limit
from protocol.private_files import PRIVATE_UMASK, open_private_append

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# looked up here, not in the forked child (a dlopen there can deadlock on a lock some
# other thread of ours held at fork time)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
# The death signal follows the *thread* that forked the child, not the process: a
# service started from a short-lived thread (``asyncio.to_thread(broker.start)``) would
# be killed when that thread ends. Every long-running child is therefore forked by this
# one thread, which lives as long as the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="launcher-spawner")


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


def _set_death_signal(sig: int) -> None:
    """Linux: the kernel sends ``sig`` to this process when the thread that forked it
    dies, however it dies (SIGKILL included). Elsewhere: nothing."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _child_setup(parent_pid: int, death_signal: int) -> None:
    """In the child before exec:
    - the child ends with the launcher, even a SIGKILLed one (no orphaned broker left
      holding its ports and files); if the launcher died before prctl took effect,
      the child is an orphan already and ends now;
    - what it creates (persistence, AOF, SQLite, logs) is private: umask 077;
    - many descriptors;
    - no signal mask inherited from a parent that blocks SIGINT/SIGTERM to sigwait()
      for them (`launcher up` does), which would make the service deaf to our SIGTERM."""
    _set_death_signal(death_signal)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), death_signal)
    os.umask(PRIVATE_UMASK)
    raise_fd_limit()
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def child_setup(death_signal: int = signal.SIGTERM) -> functools.partial[None]:
    """The ``preexec_fn`` for a child of this process (see _child_setup). SIGTERM by
    default: mosquitto and redis-server still save what they persist."""
    return functools.partial(_child_setup, os.getpid(), death_signal)


def spawn(
    argv: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log_path`` (0600). No secret in
    ``argv``: /proc/PID/cmdline is readable by every user; pass them in ``env`` or a
    0600 file."""
    log = open_private_append(log_path)
    try:
        return _SPAWNER.submit(
            subprocess.Popen,
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=child_setup(death_signal),
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop the child
        ).result()
    finally:
        os.close(log)


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
