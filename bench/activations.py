"""End-to-end activation throughput and latency through the gateway's HTTP API (issue 6).

In one run, on one machine:
  (a) raw MQTT round trips: a QoS 1 request/response echo through the same broker,
      same driver (bench/echo.py): the baseline everything is quoted against;
  (b) activations/s: POST /v1/activations, each for a distinct all-online vehicle, with
      a window of activations outstanding (the best of a short probe of each --window),
      sustained for --duration seconds; an activation counts when its
      activation.succeeded event is on caas:events;
  (c) latency from the API's accept to that event, offered open-loop at 25 % and 50 % of
      the rate measured in (b).
Each phase also reports the median of each hop of a one-attempt activation (``hops``),
read from the stored records of (a sample of) its activations after the run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.fleet_scale import echo_baseline
from bench.report import emit
from gateway.keys import Keys
from launcher.procs import free_port
from launcher.services import PythonService
from launcher.stack import LocalStack, StackOptions
from protocol.heap import freeze_start_up
from protocol.redis_connect import AnyRedis, open_redis
from protocol.signing import Signer, load_private_key
from protocol.timeutil import parse_ts
from vehicle_sim.fleet import build_fleet, parse_mix

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROBE_S = 3.0  # each window tried before the sustained phase
HOP_SAMPLE = 500  # activations of a phase whose stored records are read for its hops
HOPS = ("to_first_step", "command_round_trip", "vehicle_to_read", "answer_to_terminal")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3 of proc(5) first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (from /proc)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its descendants so far: the live ones' user + system,
    plus what the ended ones left in their parents' cutime + cstime (PostgreSQL's
    postmaster and its per-connection processes)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # ended while we looked
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat(current)
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
        todo += parents.get(current, [])
    return total


class CpuMeter:
    """CPU used by each process of the run between ``start()`` and ``stop()``;
    ``trees``: names whose process is counted with its descendants."""

    def __init__(self, pids: dict[str, int], trees: frozenset[str] = frozenset()) -> None:
        self.pids = pids
        self.trees = trees
        self.before: dict[str, float] = {}

    def _read(self, name: str) -> float:
        pid = self.pids[name]
        return tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)

    def start(self) -> None:
        self.before = {name: self._read(name) for name in self.pids}

    def stop(self, activations: int) -> dict[str, float]:
        """Milliseconds of CPU per activation, by process."""
        used = {name: self._read(name) - self.before[name] for name in self.pids}
        return {name: round(s * 1000 / max(1, activations), 3) for name, s in used.items()}


TIMED = ("activation.accepted", "activation.succeeded", "activation.failed",
         "activation.cancelled")  # fmt: skip

SLOW_POLICY = {  # an all-online fleet answers in milliseconds; nothing should retry here
    "CAAS_RETRY_ACK_TIMEOUT_S": "30",
    # A twin older than this is probed (a status query) before the command is sent. The
    # simulated fleet publishes its state only when it changes, so with 30 s every twin
    # went stale half a minute into the run and the rate dropped by a quarter (measured:
    # 545 -> 400/s, each activation then two round trips). The bench measures the one
    # round trip of a vehicle the gateway has heard from recently.
    "CAAS_RETRY_STATUS_QUERY_TIMEOUT_S": "3600",
    "CAAS_RETRY_READY_WAIT_S": "30",
}


class Split(NamedTuple):
    """One activation's latency cut at the gateway's events (stream entry ids are the
    Redis server's clock in ms; everything runs on one machine, one clock)."""

    to_accepted_ms: float  # request sent → `accepted` written (HTTP, the API, CREATE)
    to_terminal_ms: float  # → `succeeded` written (first step, command, vehicle, answer)
    to_seen_ms: float  # → the driver read it (its XREAD and its own loop)


@dataclass
class Phase:
    name: str
    offered_per_s: float | None  # None: closed loop (as fast as it goes)
    seconds: float
    window: int | None = None  # closed loop: activations kept outstanding
    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    http_errors: int = 0
    per_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    # parallel to latencies_ms: (second of the phase it was sent, and its latency split
    # at the stream's accepted and terminal entries): the slowest ones' seconds tell a
    # stall (clustered) from queueing (spread out), their split which side it was on
    timelines: list[tuple[float, Split]] = field(default_factory=list, repr=False)
    succeeded_ids: list[str] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.time, repr=False)
    # the median of each hop (``hops``) over a sample of the phase's activations
    hops_p50_ms: dict[str, float] = field(default_factory=dict)

    def percentile_ms(self, q: int) -> float:
        values = sorted(self.latencies_ms)
        if not values:
            return 0.0
        return round(values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))], 1)

    def slowest(self) -> list[dict[str, float]]:
        """The slowest 1 % (at least 5), in the order they were sent."""
        pairs = sorted(zip(self.latencies_ms, self.timelines, strict=True), reverse=True)
        top = sorted(pairs[: max(5, len(pairs) // 100)], key=lambda pair: pair[1][0])
        return [{"sent_at_s": round(at, 2), "ms": round(ms, 1), **split._asdict()}
                for ms, (at, split) in top]  # fmt: skip

    def report(self) -> dict[str, Any]:
        hidden = {"latencies_ms", "timelines", "succeeded_ids", "started"}
        out = {k: v for k, v in asdict(self).items() if k not in hidden}
        out.update(
            started_at=round(self.started, 3),  # epoch s: to line up with other logs
            p50_ms=self.percentile_ms(50),
            p99_ms=self.percentile_ms(99),
            mean_ms=round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else 0.0,
            slowest=self.slowest(),
        )
        return out


def hops(record: dict[str, Any]) -> dict[str, float] | None:
    """Where one SUCCEEDED activation's time went (ms), from the marks its stored record
    keeps (the gateway's clock; the vehicle's on the same machine):

    - ``to_first_step``: the API's create → the first attempt's step (the command decided);
    - ``command_round_trip``: that decision → the vehicle's answer read off the socket
      (``rtts_ms``: the step's Redis commit, signing, the broker, the vehicle, the broker);
    - ``vehicle_to_read``: of that, the vehicle's answer (its state's ``at``, whole ms,
      taken as the middle of its ms) → the read;
    - ``answer_to_terminal``: the read → the terminal step committed.

    None for an activation that took more than one attempt or round trip."""
    attempts, rtts = record.get("attempts") or [], record.get("rtts_ms") or []
    if len(attempts) != 1 or len(rtts) != 1:
        return None
    decided_s, rtt_ms = attempts[0]["at"], rtts[0]
    read_s = decided_s + rtt_ms / 1000
    out = {
        "to_first_step": (decided_s - record["created_at"]) * 1000,
        "command_round_trip": rtt_ms,
        "answer_to_terminal": (record["updated_at"] - read_s) * 1000,
    }
    answer = (record.get("snapshots") or [{}])[-1].get("at")
    if answer and len(record["snapshots"]) > 1:  # the last snapshot is the answer's state
        out["vehicle_to_read"] = (read_s - parse_ts(answer) - 0.0005) * 1000
    return out


async def hop_medians(client: AnyRedis, activation_ids: list[str]) -> dict[str, float]:
    """The median of each of ``hops`` over (a sample of) these activations' records."""
    keys = Keys()  # the local stack's single Redis: the default layout
    sample = activation_ids[:: max(1, len(activation_ids) // HOP_SAMPLE)][:HOP_SAMPLE]
    async with client.pipeline(transaction=False) as pipe:
        for activation_id in sample:
            pipe.hget(keys.activation(activation_id), "doc")
        docs = await pipe.execute()
    values: dict[str, list[float]] = {}
    for doc in docs:
        split = hops(json.loads(doc)) if doc else None
        for name, ms in (split or {}).items():
            values.setdefault(name, []).append(ms)
    return {name: round(statistics.median(v), 2) for name, v in values.items()}


class Outcomes:
    """Follows caas:events: resolves each activation's future on its terminal event."""

    def __init__(self, client: AnyRedis, stream: str, after: bytes | str = "0-0") -> None:
        self.redis = client
        self.stream = stream
        self.after = after  # the stream's last entry when opened: read from there on
        self.waiting: dict[str, asyncio.Future[str]] = {}
        # stream times (ms) of `accepted`, then of (`accepted`, the terminal entry), by
        # activation id: popped by whoever awaits the outcome
        self.accepted_ms: dict[str, float] = {}
        self.ended_ms: dict[str, tuple[float, float]] = {}

    def expect(self, activation_id: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[activation_id] = future
        return future

    @classmethod
    async def open(cls, redis_url: str, stream: str) -> Outcomes:
        """Connected, and where the stream ends now, before any activation is sent (a
        first XREAD from "$" could come after the first activations had ended)."""
        client = await open_redis(redis_url)  # any node of a cluster too
        newest: Any = await client.xrevrange(stream, count=1)
        return cls(client, stream, newest[0][0] if newest else "0-0")

    async def run(self) -> None:
        last = self.after
        while True:
            batches: Any = await self.redis.xread({self.stream: last}, block=200, count=1000)
            for _, entries in batches:
                for entry_id, fields in entries:
                    last = entry_id
                    self._resolve(entry_id, fields)

    def _resolve(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"type", b"").decode()
        if kind not in TIMED:
            return
        activation_id = str(json.loads(fields.get(b"data", b"{}")).get("activation_id"))
        at_ms = float(entry_id.split(b"-")[0])
        if kind == "activation.accepted":
            self.accepted_ms[activation_id] = at_ms
            return
        future = self.waiting.pop(activation_id, None)
        if future is not None and not future.done():
            self.ended_ms[activation_id] = (self.accepted_ms.pop(activation_id, at_ms), at_ms)
            future.set_result(kind.removeprefix("activation."))


class Driver:
    """Posts activations through aiohttp: the lightest HTTP client we have measured
    (httpx cost as much CPU per activation as the gateway itself)."""

    def __init__(self, urls: list[str], token: str, vins: list[str], outcomes: Outcomes):
        self.clients = [
            aiohttp.ClientSession(
                base_url=u,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(limit=200),
            )
            for u in urls
        ]
        self.vins = iter(vins)
        self.outcomes = outcomes
        self.sent = 0
        self.exhausted = False  # every vehicle has had its activation: phases end early

    async def one(self, phase: Phase) -> None:
        """Activate the next unused vehicle; record accept → SUCCEEDED latency."""
        vin = next(self.vins, None)
        if vin is None:
            self.exhausted = True
            return
        activation_id = str(uuid.uuid4())
        client = self.clients[self.sent % len(self.clients)]
        self.sent += 1
        done = self.outcomes.expect(activation_id)
        body = {
            "activation_id": activation_id,
            "vin": vin,
            "feature": "climate_plus",
            "action": "activate",
        }
        started = time.time()  # the wall clock: compared with the stream's entry ids
        try:
            async with client.post("/v1/activations", json=body) as reply:
                await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError):
            phase.http_errors += 1
            return
        if status != 202:
            phase.http_errors += 1
            return
        phase.accepted += 1
        outcome = await asyncio.wait_for(done, 120)
        seen_ms, sent_ms = time.time() * 1000, started * 1000
        accepted_ms, terminal_ms = self.outcomes.ended_ms.pop(activation_id)
        if outcome == "succeeded":
            phase.succeeded += 1
            phase.latencies_ms.append(seen_ms - sent_ms)
            split = Split(*(round(at - sent_ms, 1) for at in (accepted_ms, terminal_ms, seen_ms)))
            phase.timelines.append((started - phase.started, split))
            phase.succeeded_ids.append(activation_id)
        else:
            phase.failed += 1

    async def closed_loop(self, phase: Phase) -> Phase:
        assert phase.window
        slots = asyncio.Semaphore(phase.window)
        tasks: set[asyncio.Task[None]] = set()
        deadline = time.perf_counter() + phase.seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline and not self.exhausted:
            await slots.acquire()
            task = asyncio.create_task(self.one(phase))
            tasks.add(task)

            def finished(t: asyncio.Task[None]) -> None:
                tasks.discard(t)
                slots.release()

            task.add_done_callback(finished)
        await asyncio.gather(*tasks)
        phase.per_s = round(phase.succeeded / (time.perf_counter() - started), 1)
        return phase

    async def open_loop(self, phase: Phase) -> Phase:
        assert phase.offered_per_s
        interval = 1.0 / phase.offered_per_s
        tasks = []
        started = time.perf_counter()
        for n in range(int(phase.seconds * phase.offered_per_s)):
            if self.exhausted:
                break
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(self.one(phase)))
        await asyncio.gather(*tasks)
        phase.per_s = round(phase.succeeded / (time.perf_counter() - started), 1)
        return phase

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def start_gateways(
    stack: LocalStack, workers: int, policy: dict[str, str] | None = None
) -> tuple[list[PythonService], list[str]]:
    env = {**stack.env(), **(SLOW_POLICY if policy is None else policy)}
    services, urls = [], []
    for n in range(workers):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        services.append(
            PythonService(
                f"gateway-{n}",
                ["gateway", "--port", str(port), "--log-level", "warning"],
                {**env, "CAAS_GATEWAY_WORKER_ID": f"bench-{n}"},
                stack.run_dir / f"gateway-{n}.log",
                f"{url}/readyz",
            )
        )
        urls.append(url)
    for service in services:
        service.start()
    return services, urls


async def wait_twins_loaded(urls: list[str], vehicles: int, timeout_s: float = 300) -> None:
    """Each worker loads every retained state and presence at start (one Redis script
    each): wait until that has settled so it is not measured as activation cost."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            previous = -1
            while time.monotonic() < deadline:
                seen = twin_updates((await http.get(f"{url}/metrics")).text)
                if seen >= 2 * vehicles and seen == previous:
                    print(f"    {url}: {seen} twin updates at start", flush=True)
                    break
                previous = seen
                await asyncio.sleep(2.0)


def twin_updates(metrics_text: str) -> int:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "caas_gateway_twin_updates_total":
                total += sample.value
    return int(total)


def start_fleet(
    stack: LocalStack, vehicles: int, fleet: list[str] | None = None, port: int | None = None
) -> PythonService:
    """The simulator as its own process; ``fleet``: its options (default an all-online
    fleet of seed 3)."""
    port = port or free_port()
    # no --broker: the URL, password included, comes in the environment (not in ps)
    args = [
        "vehicle_sim", "run", "--vehicles", str(vehicles),
        *(fleet or ["--seed", "3", "--mix", "online=1"]),
        "--shards", "8", "--no-live", "--control-port", str(port),
    ]  # fmt: skip
    sim = PythonService(
        "vehicle_sim",
        args,
        stack.env(),
        stack.run_dir / "sim.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    sim.start()
    return sim


async def measure(
    vehicles: int, workers: int, duration_s: float, windows: list[int], echo_commands: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="caas-bench-") as run_dir,
        LocalStack(StackOptions(run_dir=Path(run_dir), acl_root="caas/+")) as stack,
    ):
        vins = [s.vin for s in build_fleet(3, vehicles, parse_mix("online=1"))]
        signer = Signer(load_private_key(stack.private_key_path))
        print(f"(a) raw MQTT echo, {echo_commands} round trips", flush=True)
        echo = await echo_baseline(stack, signer, vins[:echo_commands], window=500)
        print(
            f"    {echo.answers_per_s}/s; starting {vehicles} vehicles and {workers} "
            f"gateway workers",
            flush=True,
        )
        services = [start_fleet(stack, vehicles)]
        try:
            gateways, urls = start_gateways(stack, workers)
            services += gateways
            print("    waiting for the gateways to load every vehicle's twin", flush=True)
            await wait_twins_loaded(urls, vehicles)
            assert stack.redis is not None
            outcomes = await Outcomes.open(stack.redis.url(), "caas:events")
            follower = asyncio.create_task(outcomes.run())
            driver = Driver(urls, stack.env()["CAAS_GATEWAY_TOKEN"], vins, outcomes)
            freeze_start_up()  # the fleet's VINs: no full collection walks them mid-phase
            meter = CpuMeter(process_ids(stack, services))
            # nor any collection at all: a pause of the driver (up to 150 ms measured)
            # would be counted as the gateway's latency
            gc.disable()
            try:
                phases, cpu = await run_phases(driver, duration_s, windows, meter)
            finally:
                gc.enable()
            follower.cancel()
            await driver.close()
            for phase in phases:  # Redis still up: the records of what each phase sent
                phase.hops_p50_ms = await hop_medians(outcomes.redis, phase.succeeded_ids)
                print(f"    {phase.name}: p50 by hop (ms): {phase.hops_p50_ms}", flush=True)
        finally:
            for service in reversed(services):
                service.stop()
    report = result(echo.answers_per_s, phases, workers, vehicles)
    report["cpu_ms_per_activation"] = cpu
    return report


def process_ids(stack: LocalStack, services: list[PythonService]) -> dict[str, int]:
    pids = {s.name: s.proc.pid for s in services if s.proc is not None}
    if stack.broker.proc is not None:
        pids["mosquitto"] = stack.broker.proc.pid
    if stack.redis is not None and stack.redis.proc is not None:
        pids["redis-server"] = stack.redis.proc.pid
    pids["driver (this process)"] = os.getpid()
    return pids


async def run_phases(
    driver: Driver, duration_s: float, windows: list[int], meter: CpuMeter
) -> tuple[list[Phase], dict[str, float]]:
    window = windows[0]
    if len(windows) > 1:
        window = await pick_window(driver, windows, min(PROBE_S, duration_s))
    print(f"(b) closed loop, {window} outstanding, {duration_s:g} s", flush=True)
    meter.start()
    peak = await driver.closed_loop(Phase("max", None, duration_s, window))
    cpu = meter.stop(peak.succeeded)
    print(f"    {peak.per_s} activations/s; CPU ms per activation: {cpu}", flush=True)
    phases = [peak]
    for share in (0.25, 0.5):
        rate = max(1.0, peak.per_s * share)
        print(f"(c) open loop at {share:.0%} of max: {rate:.0f}/s for {duration_s:g} s", flush=True)
        phases.append(await driver.open_loop(Phase(f"{share:.0%}", rate, duration_s)))
        print(
            f"    p50 {phases[-1].percentile_ms(50)} ms, p99 {phases[-1].percentile_ms(99)} ms",
            flush=True,
        )
    if driver.exhausted:
        print("    the fleet ran out of vehicles: phases ended early; raise --vehicles", flush=True)
    return phases, cpu


async def pick_window(driver: Driver, windows: list[int], probe_s: float) -> int:
    """The outstanding-activations window with the best rate in a short probe of each:
    too few leave the pipeline idle, too many only add queueing and client overhead."""
    rates = {}
    for window in windows:
        probe = await driver.closed_loop(Phase(f"probe-{window}", None, probe_s, window))
        rates[window] = probe.per_s
        print(f"    probe: {window} outstanding -> {probe.per_s}/s", flush=True)
    return max(rates, key=lambda w: rates[w])


def result(echo_per_s: float, phases: list[Phase], workers: int, vehicles: int) -> dict[str, Any]:
    peak, half = phases[0], phases[-1]
    return {
        "raw_echo_per_s": echo_per_s,
        "activations_per_s": peak.per_s,
        "ratio": round(peak.per_s / echo_per_s, 3) if echo_per_s else None,
        "p50_ms": half.percentile_ms(50),
        "p99_ms": half.percentile_ms(99),
        "phases": [p.report() for p in phases],
        "gateway_workers": workers,
        "vehicles": vehicles,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("paho-mqtt", "redis", "fastapi", "uvicorn", "pynacl", "caas-ota")
        },
    }


def run(
    vehicles: int, workers: int, duration_s: float, windows: list[int], json_out: Path | None
) -> int:
    report = uvloop.run(measure(vehicles, workers, duration_s, windows, min(vehicles, 5000)))
    emit(report, json_out)
    return 0 if report["activations_per_s"] > 0 else 1
