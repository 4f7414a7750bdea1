"""A private PostgreSQL cluster: initdb in a folder, ``postgres`` on a free port.

Tests and benchmarks get a database with known credentials whatever the machine's own
PostgreSQL is configured to do. PostgreSQL refuses to run as root, so as root the
cluster belongs to (and runs as) the ``postgres`` system user that Debian's package
creates; its folder then lives outside root-only temporary folders.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import procs
from launcher.errors import BinaryMissing, ServiceFailed
from protocol.private_files import create_private, private_dir, write_private

DB_USER = "caas"
DB_NAME = "caas"


def postgres_bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise BinaryMissing("postgresql (initdb)")


@dataclass
class PostgresSettings:
    port: int
    password: str
    data_dir: Path | None = None  # None: a fresh folder under the system temp dir
    fsync: bool = False  # tests and benchmarks: durability of the test cluster is not needed
    # count every statement (the pg_stat_statements view, in the caas database): the
    # purchases benchmark counts the statements of a purchase from PostgreSQL's side
    stat_statements: bool = False


class PostgresServer(procs.ChildService):
    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.bindir = postgres_bindir()
        self.as_root = os.geteuid() == 0
        self.owner = pwd.getpwnam("postgres") if self.as_root else pwd.getpwuid(os.getuid())
        base = settings.data_dir or Path(tempfile.mkdtemp(prefix="caas-pg-", dir="/tmp"))
        self.base = base
        self.data_dir = base / "data"
        self.log_path = base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, driver: str = "asyncpg", database: str = DB_NAME) -> str:
        s = self.settings
        return f"postgresql+{driver}://{DB_USER}:{s.password}@127.0.0.1:{s.port}/{database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.owner.pw_name, "--", *argv] if self.as_root else argv

    def _initdb(self) -> None:
        private_dir(self.base)  # the owner (chowned below) is the only one who needs it
        pwfile = self.base / "pwfile"
        write_private(pwfile, self.settings.password + "\n")
        os.chown(self.base, self.owner.pw_uid, self.owner.pw_gid)
        os.chown(pwfile, self.owner.pw_uid, self.owner.pw_gid)
        argv = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", DB_USER,
                "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C"]  # fmt: skip
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True)
        pwfile.unlink()
        if result.returncode != 0:
            raise ServiceFailed("initdb", result.stderr.strip()[-500:])

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        log = self.log_path
        create_private(log)
        os.chown(log, self.owner.pw_uid, self.owner.pw_gid)
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir),
                "-p", str(self.settings.port), "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.base}",
                "-c", f"fsync={'on' if self.settings.fsync else 'off'}",
                "-c", "max_connections=200"]  # fmt: skip
        if self.settings.stat_statements:
            argv += ["-c", "shared_preload_libraries=pg_stat_statements"]
        # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave)
        self.proc = procs.spawn(self._as_owner(argv), log, death_signal=signal.SIGINT)
        procs.wait_for_port(self.proc, self.settings.port, "postgres", log, timeout_s=30)
        self._create_database()

    def _create_database(self) -> None:
        psql = [str(self.bindir / "psql"), "-h", str(self.base), "-p", str(self.settings.port),
                "-U", DB_USER, "-d", "postgres", "-tAc"]  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            exists = subprocess.run(
                self._as_owner([*psql, f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"]),
                capture_output=True, text=True,
            )  # fmt: skip
            if exists.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ServiceFailed("postgres", exists.stderr.strip()[-300:])
            time.sleep(0.1)
        if exists.stdout.strip() != "1":
            subprocess.run(self._as_owner([*psql, f"CREATE DATABASE {DB_NAME}"]), check=True,
                           capture_output=True)  # fmt: skip
        if self.settings.stat_statements:
            create = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
            in_db = [*psql[:-2], DB_NAME, "-tAc", create]
            subprocess.run(self._as_owner(in_db), check=True, capture_output=True)

    def create_database(self, name: str) -> str:
        """A fresh database in this cluster (one per test run); returns its async URL."""
        psql = [str(self.bindir / "psql"), "-h", str(self.base), "-p", str(self.settings.port),
                "-U", DB_USER, "-d", "postgres", "-tAc", f"CREATE DATABASE {name}"]  # fmt: skip
        subprocess.run(self._as_owner(psql), check=True, capture_output=True)
        return self.url(database=name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
