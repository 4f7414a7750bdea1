"""``python -m paysim`` as its own process: its state survives SIGKILL (holds,
captures, stored answers, queued webhooks), a kill under load leaves every key all or
nothing, webhooks to a receiver that is down wait and are delivered once it is up, and a
misconfiguration is one line and exit code 2."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.adapters.payments import verify
from launcher.procs import free_port
from launcher.services import PythonService
from protocol.webhook_signing import SIGNATURE_HEADER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KEY = "process-test-provider-key"
SECRET = "process-test-webhook-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
HOLD = {"reference": "pay-1", "amount_cents": 1000, "currency": "EUR"}


class Receiver:
    """The webhook receiver, on a port of its own, started when the test says so."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(0.5)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.stop()


def paysim_env(webhook_port: int) -> dict[str, str]:
    return {
        "CAAS_PAYMENT_PROVIDER_KEY": KEY,
        "CAAS_PAYMENT_WEBHOOK_SECRET": SECRET,
        "CAAS_PAYSIM_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/hooks",
        "CAAS_PAYSIM_SETTLE_DELAY_S": "0.2",
        "CAAS_PAYSIM_WEBHOOK_INITIAL_BACKOFF_S": "0.1",
        "CAAS_PAYSIM_WEBHOOK_MAX_BACKOFF_S": "0.4",
    }


@pytest.fixture
def paysim(tmp_path: Path, receiver: Receiver) -> Iterator[PythonService]:
    port = free_port()
    args = ["paysim", "--port", str(port), "--db", str(tmp_path / "paysim.sqlite3"),
            "--log-level", "warning"]  # fmt: skip
    service = PythonService("paysim", args, paysim_env(receiver.port), tmp_path / "paysim.log",
                            f"http://127.0.0.1:{port}/healthz")  # fmt: skip
    service.start()
    service.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield service
    service.kill()


def post(http: httpx.Client, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    return http.post(path, json=body, headers={**AUTH, "Idempotency-Key": key})


def test_state_survives_sigkill(paysim: PythonService) -> None:
    with httpx.Client(base_url=paysim.url) as http:  # type: ignore[attr-defined]
        held = post(http, "/v1/authorizations", HOLD, "authorize:p1")
        auth = held.json()["id"]
        captured = post(http, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000},
                        "capture:p1")  # fmt: skip
        assert (held.status_code, captured.status_code) == (201, 201)
        paysim.kill()
        paysim.start()  # same port, same database
        view = http.get(f"/v1/payments/{auth}", headers=AUTH).json()
        assert (view["captured_cents"], view["cancelled"]) == (1000, False)
        for answer, path, body, key in [
            (held, "/v1/authorizations", HOLD, "authorize:p1"),
            (captured, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000}, "capture:p1"),
        ]:
            replay = post(http, path, body, key)
            assert (replay.status_code, replay.content) == (answer.status_code, answer.content)
        again = post(http, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000}, "k2")
        assert (again.status_code, again.json()["error"]) == (409, "not_capturable")
        stats = http.get("/control/stats", headers=AUTH).json()
        assert stats["real_captures"] == {auth: 1}
        assert stats["captured_more_than_once"] == 0
        assert stats["calls"] == {"authorize": 2, "capture": 3}


def test_the_running_provider_serves_metrics(paysim: PythonService) -> None:
    """`python -m paysim` answers /metrics without a key: its process metrics and calls."""
    with httpx.Client(base_url=paysim.url) as http:  # type: ignore[attr-defined]
        assert post(http, "/v1/authorizations", HOLD, "authorize:m1").status_code == 201
        response = http.get("/metrics")
    assert response.status_code == 200
    assert "process_cpu_seconds_total" in response.text
    assert 'caas_paysim_requests_total{outcome="succeeded",route="authorize"} 1.0' in response.text


async def test_a_kill_under_load_leaves_each_key_all_or_nothing(paysim: PythonService) -> None:
    """300 holds, 30 at a time, SIGKILL after about 100 answers; after the restart every
    key is replayed: the answered ones keep their ids, and there is one hold per key."""
    keys = [f"authorize:p{n}" for n in range(300)]
    answered: dict[str, str] = {}
    gate = asyncio.Semaphore(30)
    async with httpx.AsyncClient(base_url=paysim.url, timeout=5) as http:  # type: ignore[attr-defined]

        async def hold(key: str) -> None:
            async with gate:
                try:
                    r = await http.post("/v1/authorizations", json={**HOLD, "reference": key},
                                        headers={**AUTH, "Idempotency-Key": key})  # fmt: skip
                except httpx.HTTPError:
                    return  # killed under it: outcome unknown
                if r.status_code == 201:
                    answered[key] = r.json()["id"]

        load = asyncio.gather(*(hold(key) for key in keys))
        async with asyncio.timeout(30):
            while len(answered) < 100:  # noqa: ASYNC110 - the load appends
                await asyncio.sleep(0.005)
        paysim.kill()
        await load
    assert 100 <= len(answered) < 300
    paysim.start()
    async with httpx.AsyncClient(base_url=paysim.url, timeout=5) as http:  # type: ignore[attr-defined]
        replays = {}
        for key in keys:
            r = await http.post("/v1/authorizations", json={**HOLD, "reference": key},
                                headers={**AUTH, "Idempotency-Key": key})  # fmt: skip
            assert r.status_code == 201, r.text
            replays[key] = r.json()["id"]
        stats = (await http.get("/control/stats", headers=AUTH)).json()
    assert all(replays[key] == ref for key, ref in answered.items())
    assert len(set(replays.values())) == 300
    assert stats["open_authorizations"] == 300  # one hold per key, not one more


def test_webhooks_wait_for_the_receiver_across_a_restart(
    paysim: PythonService, receiver: Receiver
) -> None:
    """The receiver is down: the webhooks are retried, survive a SIGKILL of the provider,
    and are delivered, signed, once the receiver is up."""
    with httpx.Client(base_url=paysim.url) as http:  # type: ignore[attr-defined]
        auth = post(http, "/v1/authorizations", HOLD, "a1").json()["id"]
        post(http, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000}, "c1")
        time.sleep(1.0)  # both due (settle delay 0.2 s), each tried a few times
        stats = http.get("/control/stats", headers=AUTH).json()
        assert stats["webhooks"] == {"pending": 2, "delivered": 0}
        paysim.kill()
        paysim.start()
        receiver.start()
        # The receiver notes a POST before it answers, and the provider marks the row
        # delivered only on the answer: wait on the provider's count, not the receiver's.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stats = http.get("/control/stats", headers=AUTH).json()
            if stats["webhooks"]["pending"] == 0:
                break
            time.sleep(0.05)
    assert stats["webhooks"] == {"pending": 0, "delivered": 2}
    assert len(receiver.received) == 2
    types = []
    for headers, body in receiver.received:
        verify(SECRET, headers[SIGNATURE_HEADER.lower()], body, time.time())
        types.append(httpx.Response(200, content=body).json()["type"])
    assert sorted(types) == ["capture.pending", "capture.settled"]


def run_paysim(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    return subprocess.run(
        [sys.executable, "-m", "paysim", "--port", str(free_port()), *args],
        env={**clean, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({}, (), "CAAS_PAYMENT_PROVIDER_KEY"),
        ({"CAAS_PAYMENT_PROVIDER_KEY": "short"}, (), "CAAS_PAYMENT_PROVIDER_KEY"),
        ({"CAAS_PAYMENT_PROVIDER_KEY": KEY}, (), "CAAS_PAYMENT_WEBHOOK_SECRET"),
        ({"CAAS_PAYSIM_WEBHOOK_URL": "backend:8080"}, (), "CAAS_PAYSIM_WEBHOOK_URL"),
        ({"CAAS_PAYSIM_DECLINE_RATE": "2"}, (), "CAAS_PAYSIM_DECLINE_RATE"),
        ({}, ("--db", "/dev/null/paysim.sqlite3"), "--db"),
    ],
)
def test_misconfiguration_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    full = {**paysim_env(free_port()), "CAAS_PAYSIM_DB": str(tmp_path / "p.sqlite3")}
    if named.startswith("CAAS_PAYMENT"):
        full = {k: v for k, v in full.items() if not k.startswith("CAAS_PAYMENT")}
    result = run_paysim(tmp_path, {**full, **env}, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"paysim: {named}"), result.stderr


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    result = run_paysim(tmp_path, {}, "--help")
    assert result.returncode == 0
    assert "run/dev/paysim.sqlite3" in result.stdout and "8082" in result.stdout
