"""A redis-server child process with the project's configuration (redis/redis.conf)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from launcher import procs
from launcher.errors import ServiceFailed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REDIS_CONF = PROJECT_ROOT / "redis" / "redis.conf"


@dataclass
class RedisSettings:
    run_dir: Path
    port: int
    password: str


class RedisServer(procs.ChildService):
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = settings.run_dir / "redis.log"

    def url(self, db: int = 0) -> str:
        s = self.settings
        return f"redis://:{s.password}@127.0.0.1:{s.port}/{db}"

    def start(self) -> None:
        s = self.settings
        data_dir = s.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            procs.find_binary("redis-server"),
            str(REDIS_CONF),
            "--port",
            str(s.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--requirepass",
            s.password,
            "--logfile",
            str(self.log_path),
        ]
        self.proc = procs.spawn(argv, self.log_path)
        procs.wait_for_port(self.proc, s.port, "redis-server", self.log_path)
        self._wait_loaded()

    def _wait_loaded(self, timeout_s: float = 30) -> None:
        """The port opens before the AOF is loaded; wait until PING answers."""
        client = redis.Redis(port=self.settings.port, password=self.settings.password)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise ServiceFailed("redis-server", f"not answering PING after {timeout_s}s")
