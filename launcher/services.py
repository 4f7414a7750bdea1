"""The platform's own services (`python -m gateway`, `backend`, `vehicle_sim`) as child
processes: started with an environment, ready when their HTTP health route answers,
stopped with SIGINT like a person pressing Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from launcher import procs
from launcher.errors import ServiceFailed
from launcher.procs import ChildService


class PythonService(ChildService):
    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        health_url: str | None = None,
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", *args]
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.health_url = health_url

    def start(self) -> None:
        self.proc = procs.spawn(self.argv, self.log_path, env=self.env)
        if self.health_url:
            self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServiceFailed(
                    self.name, f"exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(str(self.health_url), timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServiceFailed(self.name, f"not healthy after {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        """Ctrl-C first (the services shut down cleanly on SIGINT), then the usual stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            procs.stop(self.proc)


def run_python(args: list[str], env: dict[str, str], timeout_s: float = 120) -> str:
    """Run `python -m ARGS` to completion; its stdout (stderr goes with the error)."""
    result = subprocess.run(
        [sys.executable, "-m", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=procs.child_setup(),  # private files, and it ends with us
    )
    if result.returncode not in (0, 1):
        raise ServiceFailed(" ".join(args[:2]), result.stderr.strip()[-800:])
    return result.stdout
