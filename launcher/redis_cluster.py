"""A Redis Cluster of redis-server children on loopback, for tests and benchmarks.

Each node is a ``RedisServer`` (the project's redis/redis.conf included, AOF on,
password in a 0600 config file) with cluster mode added: its own folder, its own
``nodes.conf``, an explicit bus port (the default ``port + 10000`` overflows for a free
port above 55535), ``masterauth`` so a replica can sync from a password-protected
master, and a short ``cluster-node-timeout`` so a failover takes about a second.
The slots are assigned by ``redis-cli --cluster create`` with the password in
REDISCLI_AUTH (never on its command line, which every user can read in ps).

redis.conf's settings suit cluster mode: AOF and ``noeviction`` apply per node;
``databases 64`` is harmless (a cluster node only serves db 0).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from launcher import procs
from launcher.errors import ServiceFailed
from launcher.redis_server import RedisServer, RedisSettings
from protocol.private_files import private_dir

SLOTS = 16384


@dataclass
class RedisClusterSettings:
    run_dir: Path
    password: str
    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = 1000
    ready_timeout_s: float = 20.0


class ClusterNode(RedisServer):
    """One node: a RedisServer in its own folder with cluster mode on."""

    def __init__(self, settings: RedisSettings, bus_port: int, node_timeout_ms: int) -> None:
        super().__init__(settings)
        self.bus_port = bus_port
        self.node_timeout_ms = node_timeout_ms

    @property
    def port(self) -> int:
        return self.settings.port

    def config(self) -> str:
        s = self.settings
        return super().config() + "".join(
            f"{line}\n"
            for line in (
                "cluster-enabled yes",
                f"cluster-config-file {s.run_dir / 'nodes.conf'}",
                f"cluster-port {self.bus_port}",
                f"cluster-node-timeout {self.node_timeout_ms}",
                # a replica whose master died takes over however long ago it last heard
                # from it: a test kills masters right after writing
                "cluster-replica-validity-factor 0",
                f"masterauth {s.password}",
            )
        )

    def ask(self, *command: str | bytes | int) -> Any:
        """One command on a connection of its own, the reply's bytes decoded."""
        client = redis.Redis(
            port=self.port,
            password=self.settings.password,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
        )
        try:
            return _decoded(client.execute_command(*command))  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        return f"ClusterNode(127.0.0.1:{self.port})"


class RedisClusterServer:
    """``masters * (1 + replicas_per_master)`` nodes; ``start()`` returns once every node
    says ``cluster_state:ok`` with every slot assigned."""

    def __init__(self, settings: RedisClusterSettings) -> None:
        self.settings = settings
        self._nodes: list[ClusterNode] = []
        self._killed_replicas: list[ClusterNode] = []  # those of the last killed master
        self.create_log = settings.run_dir / "cluster-create.log"

    def nodes(self) -> list[ClusterNode]:
        return list(self._nodes)

    def url(self, node: ClusterNode | None = None) -> str:
        """A redis:// URL (password, db 0) of one node: a cluster client finds the rest."""
        return (node or self._first_alive()).url(0)

    def start(self) -> None:
        s = self.settings
        private_dir(s.run_dir)
        count = s.masters * (1 + s.replicas_per_master)
        self._nodes = [
            ClusterNode(
                RedisSettings(private_dir(s.run_dir / f"node-{i}"), procs.free_port(), s.password),
                procs.free_port(),
                s.node_timeout_ms,
            )
            for i in range(count)
        ]
        try:
            for node in self._nodes:
                node.start()
            self._create()
            self._wait_ok(s.ready_timeout_s, self._nodes)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self._nodes:
            node.stop()

    def _create(self) -> None:
        s = self.settings
        argv = [procs.find_binary("redis-cli"), "--cluster", "create"]
        argv += [f"127.0.0.1:{node.port}" for node in self._nodes]
        argv += ["--cluster-replicas", str(s.replicas_per_master), "--cluster-yes"]
        env = {**os.environ, "REDISCLI_AUTH": s.password}
        with self.create_log.open("wb") as log:
            done = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise ServiceFailed("redis-cli --cluster create", f"see {self.create_log}")

    def _wait_ok(self, timeout_s: float, nodes: list[ClusterNode]) -> None:
        """Every node in ``nodes`` sees the cluster ok and all slots assigned."""
        deadline = time.monotonic() + timeout_s
        pending = [n for n in nodes if n.alive()]
        while pending:
            pending = [n for n in pending if not _node_ok(n)]
            if pending and time.monotonic() > deadline:
                raise ServiceFailed("redis cluster", f"not ok after {timeout_s}s on {pending}")
            if pending:
                time.sleep(0.05)

    def _first_alive(self) -> ClusterNode:
        return next(n for n in self._nodes if n.alive())

    def masters(self) -> list[ClusterNode]:
        """The live nodes that are masters now."""
        return [n for n in self._nodes if n.alive() and _role(n) == "master"]

    def master_of_slot(self, slot: int) -> ClusterNode:
        """The live master serving ``slot`` (CLUSTER SLOTS as that master sees it)."""
        for node in self.masters():
            ranges = node.ask("CLUSTER", "SLOTS")
            if any(int(r[0]) <= slot <= int(r[1]) and int(r[2][1]) == node.port for r in ranges):
                return node
        raise ServiceFailed("redis cluster", f"no live master serves slot {slot}")

    def master_of_key(self, key: str | bytes) -> ClusterNode:
        return self.master_of_slot(int(self._first_alive().ask("CLUSTER", "KEYSLOT", key)))

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        master_id = master.ask("CLUSTER", "MYID")
        return [
            n
            for n in self._nodes
            if n is not master and n.alive() and _master_id_of(n) == master_id
        ]

    def wait_replicated(self, master: ClusterNode, timeout_s: float = 5.0) -> None:
        """Until every live replica of ``master`` has all it wrote so far (replication is
        asynchronous: a test that kills a master right after a write waits for this,
        or the write may be lost, as it may in production)."""
        offset = _int_field(master.ask("INFO", "replication"), "master_repl_offset")
        replicas = self.replicas_of(master)
        deadline = time.monotonic() + timeout_s
        while any(_replica_offset(r) < offset for r in replicas):
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    "redis cluster", f"replicas of {master} behind after {timeout_s}s"
                )
            time.sleep(0.02)

    def kill_master(self, node: ClusterNode) -> None:
        """SIGKILL ``node`` (a crash: no AOF rewrite, no goodbye to the cluster)."""
        self._killed_replicas = self.replicas_of(node)
        node.kill()

    def wait_for_failover(self, timeout_s: float = 10.0) -> ClusterNode:
        """After ``kill_master``: until a replica of the killed master is a master and
        every live node says cluster_state:ok. Returns the promoted replica."""
        deadline = time.monotonic() + timeout_s
        while True:
            promoted = [n for n in self._killed_replicas if n.alive() and _role(n) == "master"]
            if promoted:
                self._wait_ok(max(0.1, deadline - time.monotonic()), self._nodes)
                return promoted[0]
            if time.monotonic() > deadline:
                raise ServiceFailed("redis cluster", f"no failover after {timeout_s}s")
            time.sleep(0.05)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again: it rejoins (its nodes.conf) as a replica of the
        master that replaced it."""
        node.start()
        self._wait_ok(self.settings.ready_timeout_s, self._nodes)


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def _node_ok(node: ClusterNode) -> bool:
    try:
        text = node.ask("CLUSTER", "INFO")
    except redis.exceptions.RedisError:
        return False
    info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS)


def _role(node: ClusterNode) -> str | None:
    try:
        return str(node.ask("ROLE")[0])
    except redis.exceptions.RedisError:
        return None


def _master_id_of(node: ClusterNode) -> str | None:
    """The id of the master ``node`` replicates (from its own CLUSTER NODES line)."""
    try:
        text = node.ask("CLUSTER", "NODES")
    except redis.exceptions.RedisError:
        return None
    for line in str(text).splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            return fields[3] if fields[3] != "-" else None
    return None


def _int_field(info: dict[str, Any], name: str) -> int:
    """A number of an INFO reply (redis-py parses INFO into a dict)."""
    return int(info.get(name, -1))


def _replica_offset(node: ClusterNode) -> int:
    try:
        return _int_field(node.ask("INFO", "replication"), "slave_repl_offset")
    except redis.exceptions.RedisError:
        return -1
