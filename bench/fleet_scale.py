"""How big a fleet one simulator process serves (issue 2 "Must show").

Starts the project's broker, runs ``python -m vehicle_sim run`` as a separate process
(as in production), then sends one signed ``status`` command to every vehicle with a
bounded window of commands outstanding and waits for every answer. Reports the
simulator's connect time, its RSS after connecting and at the end, and answers/s.

Commands are signed before the clock starts, so the rate measures broker + simulator
(parse, verify, answer, publish), not this probe's signing.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.probe import FleetProbe
from bench.report import emit
from launcher.stack import LocalStack, StackOptions
from protocol.commands import OutgoingCommand
from protocol.models import CommandType
from protocol.signing import Signer, load_private_key
from protocol.topics import Topics
from vehicle_sim.fleet import build_fleet, parse_mix

CONNECTED_RE = re.compile(r"(\d+) vehicles connected in ([\d.]+)s")


@dataclass
class EchoBaseline:
    commands: int
    seconds: float
    answers_per_s: float


@dataclass
class ScaleResult:
    connection_mode: str
    vehicles: int
    shards: int
    connect_s: float
    rss_after_connect_mb: float
    rss_peak_mb: float
    commands: int
    answered: int
    seconds: float
    answers_per_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    window: int
    cpus: int
    python: str
    echo: EchoBaseline | None = None
    ratio_to_echo: float | None = None


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_simulator(
    stack: LocalStack, vehicles: int, mode: str, shards: int, root: str
) -> tuple[subprocess.Popen[str], float]:
    broker = stack.env()[
        "CAAS_FLEET_MQTT_URL" if mode == "multiplexed" else "CAAS_VEHICLE_MQTT_URL"
    ]
    argv = [sys.executable, "-m", "vehicle_sim", "run", "--vehicles", str(vehicles),
            "--seed", "1", "--mix", "online=1", "--connection-mode", mode,
            "--shards", str(shards), "--no-live"]  # fmt: skip
    # the broker URL (a password in it) in the environment, not in ps
    env = {**os.environ, **stack.env(), "CAAS_FLEET_MQTT_URL": broker, "CAAS_TOPIC_ROOT": root}
    profile = os.environ.get("CAAS_BENCH_PROFILE")  # cProfile output path for the simulator
    if profile:
        argv[1:1] = ["-m", "cProfile", "-o", profile]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        match = CONNECTED_RE.search(line)
        if match:
            return proc, float(match.group(2))
        print(f"  sim: {line.rstrip()}", flush=True)
    raise RuntimeError(f"simulator exited with {proc.wait()} before connecting")


async def drive(probe: FleetProbe, commands: list[OutgoingCommand], window: int) -> float:
    """Send every command keeping at most ``window`` unanswered; seconds until the last answer."""
    slots = asyncio.Semaphore(window)
    done = asyncio.Event()
    remaining = len(commands)

    def answered(_: object) -> None:
        nonlocal remaining
        slots.release()
        remaining -= 1
        if remaining == 0:
            done.set()

    started = time.perf_counter()
    last_report = started
    for n, cmd in enumerate(commands):
        await slots.acquire()
        probe.send(cmd).add_done_callback(answered)
        if time.perf_counter() - last_report >= 1.0:
            last_report = time.perf_counter()
            rate = probe.stats.answered / (last_report - started)
            print(f"  sent {n + 1}/{len(commands)}, answered {probe.stats.answered} "
                  f"({rate:.0f}/s)", flush=True)  # fmt: skip
    await asyncio.wait_for(done.wait(), timeout=600)
    return time.perf_counter() - started


async def echo_baseline(
    stack: LocalStack, signer: Signer, vins: list[str], window: int
) -> EchoBaseline:
    """The same commands and window against the echo responder, in this same run."""
    root = f"caas/echo{int(time.time())}"
    argv = [sys.executable, "-m", "bench.echo", "--topic-root", root]  # CAAS_FLEET_MQTT_URL
    env = {**os.environ, "CAAS_FLEET_MQTT_URL": stack.env()["CAAS_FLEET_MQTT_URL"]}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220 - one spawn before timing
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "echo responder ready"
        async with FleetProbe(stack.broker.gateway_address(), signer, Topics(root),
                              client_id="echo-probe", ttl_s=900) as probe:  # fmt: skip
            commands = [probe.command(vin, CommandType.STATUS) for vin in vins]
            seconds = await drive(probe, commands, window)
            answered = probe.stats.answered
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return EchoBaseline(len(commands), round(seconds, 2), round(answered / seconds, 1))


async def measure(vehicles: int, mode: str, shards: int, window: int) -> ScaleResult:
    root = f"caas/scale{int(time.time())}"
    with (
        tempfile.TemporaryDirectory(prefix="caas-scale-") as run_dir,
        LocalStack(
            StackOptions(run_dir=Path(run_dir), with_redis=False, acl_root="caas/+")
        ) as stack,
    ):
        vins = [s.vin for s in build_fleet(1, vehicles, parse_mix("online=1"))]
        if mode == "per-vehicle":
            print(f"writing {vehicles} vehicle identities", flush=True)
            stack.allow_vehicles(vins)
        print(f"starting {vehicles} {mode} vehicles", flush=True)
        proc, connect_s = start_simulator(stack, vehicles, mode, shards, root)
        try:
            rss_connected = rss_mb(proc.pid)
            signer = Signer(load_private_key(stack.private_key_path))
            async with FleetProbe(stack.broker.gateway_address(), signer, Topics(root),
                                  client_id="scale-probe", ttl_s=900) as probe:  # fmt: skip
                print(f"signing {vehicles} status commands", flush=True)
                commands = [probe.command(vin, CommandType.STATUS) for vin in vins]
                seconds = await drive(probe, commands, window)
                stats = probe.stats
            peak = rss_mb(proc.pid, "VmHWM")
            print("baseline: the same commands against a raw echo responder", flush=True)
            echo = await echo_baseline(stack, signer, vins, window)
        finally:
            proc.send_signal(signal.SIGINT)  # a clean stop (lets a profiler write its output)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return ScaleResult(
        connection_mode=mode, vehicles=vehicles, shards=shards, connect_s=connect_s,
        rss_after_connect_mb=round(rss_connected, 1), rss_peak_mb=round(peak, 1),
        commands=len(commands), answered=stats.answered, seconds=round(seconds, 2),
        answers_per_s=round(stats.answered / seconds, 1),
        rtt_p50_ms=round(stats.percentile_ms(50), 1), rtt_p99_ms=round(stats.percentile_ms(99), 1),
        window=window, cpus=os.cpu_count() or 0, python=platform.python_version(),
        echo=echo, ratio_to_echo=round(stats.answered / seconds / echo.answers_per_s, 3),
    )  # fmt: skip


def run(vehicles: int, mode: str, shards: int, window: int, json_out: Path | None) -> int:
    result = asyncio.run(measure(vehicles, mode, shards, window))
    emit(asdict(result), json_out)
    return 0 if result.answered == result.commands else 1
