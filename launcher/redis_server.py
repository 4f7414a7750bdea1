"""A redis-server child process with the project's configuration (redis/redis.conf)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from launcher import procs
from launcher.errors import ServiceFailed
from protocol.private_files import private_dir, write_private

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
        self.conf_path = settings.run_dir / "redis.conf"

    def url(self, db: int = 0) -> str:
        s = self.settings
        return f"redis://:{s.password}@127.0.0.1:{s.port}/{db}"

    def config(self) -> str:
        """The project's redis.conf with this server's settings. A file, not
        ``--requirepass`` on the command line, which every user can read in ps."""
        s = self.settings
        return "".join(
            f"{line}\n"
            for line in (
                f"include {REDIS_CONF}",
                f"port {s.port}",
                "bind 127.0.0.1",
                f"dir {s.run_dir / 'redis'}",
                f"logfile {self.log_path}",
                f"requirepass {s.password}",
            )
        )

    def start(self) -> None:
        s = self.settings
        private_dir(s.run_dir / "redis")  # the AOF and RDB: the gateway's state
        write_private(self.conf_path, self.config())
        argv = [procs.find_binary("redis-server"), str(self.conf_path)]
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
