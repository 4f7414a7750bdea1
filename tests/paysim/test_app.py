"""The provider's HTTP API in process (``httpx.ASGITransport``): the bearer key,
Idempotency-Key rules, 409 on reuse, the 504 timeout that acted and its replay, the
control routes, and junk input that never gets a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paysim.app import create_app
from paysim.ledger import Ledger
from paysim.modes import FailureModes
from paysim.store import Store
from protocol.timeutil import ManualClock
from tests.helpers import assert_docs_served_locally
from tests.paysim.kit import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
HOLD = {"reference": "pay-1", "amount_cents": 1000, "currency": "EUR"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(tmp_path / "paysim.sqlite3")
    ledger = Ledger(store, FailureModes(settle_delay_s=5.0), ManualClock())
    transport = httpx.ASGITransport(app=create_app(ledger, KEY))
    async with httpx.AsyncClient(transport=transport, base_url="http://paysim") as client:
        yield client
    store.close()


async def post(
    api: httpx.AsyncClient, path: str, body: Any, key: str | None = "k1", auth: bool = True
) -> httpx.Response:
    headers = {**(AUTH if auth else {}), **({"Idempotency-Key": key} if key else {})}
    return await api.post(path, json=body, headers=headers)


async def test_every_v1_and_control_route_needs_the_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).status_code == 200
    wrong = {"Authorization": "Bearer not-the-key-at-all-00"}
    latin = {"Authorization": "Bearer ü".encode("latin-1")}
    for headers in ({}, wrong, {"Authorization": "Basic abc"}, latin):
        for method, path in [
            ("POST", "/v1/authorizations"),
            ("POST", "/v1/authorizations/auth_x/capture"),
            ("POST", "/v1/refunds"),
            ("GET", "/v1/payments/auth_x"),
            ("GET", "/control/stats"),
            ("PATCH", "/control/config"),
        ]:
            r = await api.request(method, path, json=HOLD, headers=headers)
            assert (r.status_code, r.json()["error"]) == (401, "unauthorized"), (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"


async def test_docs_work_offline(api: httpx.AsyncClient) -> None:
    await assert_docs_served_locally(api)


async def test_posts_need_an_idempotency_key(api: httpx.AsyncClient) -> None:
    r = await post(api, "/v1/authorizations", HOLD, key=None)
    assert (r.status_code, r.json()["error"]) == (400, "idempotency_key_missing")
    r = await post(api, "/v1/authorizations", HOLD, key="with space")
    assert (r.status_code, r.json()["error"]) == (400, "bad_idempotency_key")
    r = await post(api, "/v1/authorizations", HOLD, key="x" * 256)
    assert r.status_code == 400


async def test_the_flow_over_http(api: httpx.AsyncClient) -> None:
    r = await post(api, "/v1/authorizations", HOLD, key="a1")
    assert r.status_code == 201, r.text
    auth = r.json()["id"]
    r = await post(api, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000}, key="c1")
    assert r.status_code == 201 and r.json()["id"].startswith("cap_")
    r = await post(api, f"/v1/authorizations/{auth}/cancel", None, key="x1")
    assert (r.status_code, r.json()["error"], r.json()["payment"]) == (
        409, "already_captured", auth,
    )  # fmt: skip
    r = await post(api, "/v1/refunds", {"payment": auth, "amount_cents": 1001}, key="r1")
    assert (r.status_code, r.json()["error"]) == (409, "exceeds_captured")
    r = await post(api, "/v1/charges", {**HOLD, "reference": "sub-1"}, key="ch1")
    assert r.status_code == 201 and r.json()["id"].startswith("ch_")
    r = await api.get(f"/v1/payments/{auth}", headers=AUTH)
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("kind", "captured_cents", "settlement", "settlement_seq")} == {
        "kind": "authorization", "captured_cents": 1000, "settlement": "PENDING",
        "settlement_seq": 1,
    }  # fmt: skip
    r = await api.get("/v1/payments/auth_unknown", headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = await post(api, "/v1/authorizations/auth_unknown/capture", {"amount_cents": 5}, key="c2")
    assert r.status_code == 404


async def test_reused_key_is_409_and_replay_is_identical(api: httpx.AsyncClient) -> None:
    first = await post(api, "/v1/authorizations", HOLD, key="k1")
    replay = await post(api, "/v1/authorizations", HOLD, key="k1")
    assert (replay.status_code, replay.content) == (first.status_code, first.content)
    other = await post(api, "/v1/authorizations", {**HOLD, "amount_cents": 1}, key="k1")
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_key_reused")


async def test_a_504_that_acted_replays_the_stored_success(api: httpx.AsyncClient) -> None:
    r = await api.post("/control/timeouts", json={"op": "authorize", "count": 1}, headers=AUTH)
    assert r.json() == {"authorize": 1}
    timed_out = await post(api, "/v1/authorizations", HOLD, key="k1")
    assert (timed_out.status_code, timed_out.json()["error"]) == (504, "timeout")
    replay = await post(api, "/v1/authorizations", HOLD, key="k1")
    assert replay.status_code == 201 and replay.json()["status"] == "authorized"
    stats = (await api.get("/control/stats", headers=AUTH)).json()
    assert stats["calls"] == {"authorize": 2}
    assert stats["open_authorizations"] == 1  # one hold, though two calls


async def test_control_config(api: httpx.AsyncClient) -> None:
    got = (await api.get("/control/config", headers=AUTH)).json()
    assert got["decline_rate"] == 0.0 and got["settle_delay_s"] == 5.0
    r = await api.patch("/control/config", json={"decline_rate": 1, "seed": 3}, headers=AUTH)
    assert r.status_code == 200 and r.json()["decline_rate"] == 1.0 and r.json()["seed"] == 3
    declined = await post(api, "/v1/authorizations", HOLD, key="k1")
    assert (declined.status_code, declined.json()["error"]) == (402, "card_declined")
    bad_patches = ['{"decline_rate": 2}', '{"timeout_rate": -0.1}', '{"settle_delay_s": 1e999}',
                   '{"reorder": "maybe"}', '{"nope": 1}', '{"seed": -1}',
                   '{"decline_rate": NaN}']  # fmt: skip
    for bad in bad_patches:
        headers = {**AUTH, "Content-Type": "application/json"}
        r = await api.patch("/control/config", content=bad, headers=headers)
        assert r.status_code == 422, (bad, r.text)
    r = await api.post("/control/timeouts", json={"op": "steal", "count": 1}, headers=AUTH)
    assert r.status_code == 422
    stats = (await api.get("/control/stats", headers=AUTH)).json()
    assert set(stats) == {"calls", "real_captures", "captured_more_than_once",
                          "open_authorizations", "webhooks", "forced_timeouts"}  # fmt: skip


JUNK: list[Any] = [
    None, [], "x", 1, {}, {"amount_cents": "10"}, {"amount_cents": 10.5}, {"amount_cents": True},
    {"amount_cents": 0}, {"amount_cents": -1}, {"amount_cents": 10**9 + 1},
    {"amount_cents": 10**30}, {"reference": "x" * 65},
    {"reference": "tab\there", "amount_cents": 1, "currency": "EUR"},
    {"reference": "ünï", "amount_cents": 1, "currency": "EUR"},
    {"reference": "r", "amount_cents": 1, "currency": "eur"},
    {"reference": "r", "amount_cents": 1, "currency": "EURO"},
    {"reference": "r", "amount_cents": 1, "currency": "EUR", "extra": 1},
    {"payment": "auth_'; DROP TABLE payments;--", "amount_cents": 1},
    {"payment": "x" * 10_000, "amount_cents": 1}, {"a": {"b": {"c": [[[[[[]]]]]]}}},
]  # fmt: skip


@pytest.mark.parametrize(
    "path",
    ["/v1/authorizations", "/v1/charges", "/v1/refunds", "/v1/authorizations/auth_x/capture",
     "/v1/authorizations/auth_x/cancel", "/v1/authorizations/%00%ff/capture",
     f"/v1/authorizations/{'a' * 500}/cancel"],
)  # fmt: skip
async def test_junk_never_gets_a_5xx(api: httpx.AsyncClient, path: str) -> None:
    for n, body in enumerate(JUNK):
        r = await post(api, path, body, key=f"junk-{n}")
        assert r.status_code < 500, (body, r.status_code, r.text)
        assert "error" in r.json() or "detail" in r.json()
    raw = [b"not json", b"{", b'{"amount_cents": NaN}', b'{"amount_cents": 1e999}',
           b"\xff\xfe", b"[" * 5000]  # fmt: skip
    for n, content in enumerate(raw):
        headers = {**AUTH, "Idempotency-Key": f"raw-{n}", "Content-Type": "application/json"}
        r = await api.post(path, content=content, headers=headers)
        assert 400 <= r.status_code < 500, (content[:20], r.status_code, r.text)
    stats = (await api.get("/control/stats", headers=AUTH)).json()
    assert stats["real_captures"] == {} and stats["open_authorizations"] == 0


async def test_bodies_are_json_with_an_error_code(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/nothing-here", headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = await api.put("/v1/authorizations", headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
    body = json.loads((await post(api, "/v1/authorizations", {"x": 1})).content)
    assert "detail" in body


def samples(text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family: sorted labels → value."""
    found = {}
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            for sample in metric.samples:
                if sample.name == metric.name or sample.name == f"{family}_total":
                    found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_metrics_count_calls_by_route_and_outcome(api: httpx.AsyncClient) -> None:
    """/metrics (no key): calls by route and outcome, open holds, webhooks by state, the
    process metrics; never a payment id, reference or idempotency key."""
    auth = (await post(api, "/v1/authorizations", HOLD, key="key-hold")).json()["id"]
    await post(api, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000}, key="key-cap")
    again = await post(api, f"/v1/authorizations/{auth}/capture", {"amount_cents": 1000})
    assert again.json()["error"] == "not_capturable"
    nope = await post(api, "/v1/authorizations/auth_nope/cancel", {}, key="k3")
    assert nope.status_code == 404
    await api.post("/control/timeouts", json={"op": "charge", "count": 1}, headers=AUTH)
    assert (await post(api, "/v1/charges", HOLD, key="key-ch")).status_code == 504
    await api.patch("/control/config", json={"decline_rate": 1}, headers=AUTH)
    assert (await post(api, "/v1/authorizations", HOLD, key="k4")).status_code == 402
    assert (await api.get(f"/v1/payments/{auth}", headers=AUTH)).status_code == 200
    response = await api.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert samples(text, "caas_paysim_requests") == {
        (("outcome", "succeeded"), ("route", "authorize")): 1.0,
        (("outcome", "declined"), ("route", "authorize")): 1.0,
        (("outcome", "succeeded"), ("route", "capture")): 1.0,
        (("outcome", "refused"), ("route", "capture")): 1.0,
        (("outcome", "refused"), ("route", "cancel")): 1.0,
        (("outcome", "timeout"), ("route", "charge")): 1.0,
        (("outcome", "succeeded"), ("route", "payment")): 1.0,
    }
    assert samples(text, "caas_paysim_open_authorizations") == {(): 0.0}
    assert samples(text, "caas_paysim_webhooks") == {
        (("state", "pending"), ): 4.0, (("state", "delivered"), ): 0.0,
    }  # fmt: skip
    assert "process_cpu_seconds_total" in text and "python_info" in text
    for secret in (auth, "pay-1", "key-hold", "key-cap", KEY):
        assert secret not in text
