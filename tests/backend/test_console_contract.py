"""The console against the issue-12 API contract (docs/console.md), in headless chromium.

A unit test of the pages: a small fake API answers the contract's routes (operators by
name, paginated lists with X-Total-Count / X-Next-Cursor / Link, customers, purchases,
catalog rules, the audit log, the six handbook metrics and their breakdowns) with the
contract's shapes, and records what the pages asked. It pins that the console sends the
filters and cursors, follows pages, saves catalog rules as the contract's body, and draws
the metrics and charts; ``test_console_e2e.py`` runs the console on the real stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from playwright.async_api import expect

from backend.http.console import mount_console
from tests.backend.console_kit import browser, served, sign_in

pytestmark = pytest.mark.timeout(60)

TOKEN = "ops-token-of-ana"
TS = "2026-11-18T11:06:40Z"
FLEET = [
    {"model": "Roadster", "firmware": ["5.0.2"], "vehicles": 3},
    {"model": "Tourer", "firmware": ["4.3.0", "5.0.2"], "vehicles": 7},
]
HOURS = [{"key": f"{h:02d}", "count": h % 3, "total": 10, "rate": (h % 3) / 10} for h in range(24)]


def handbook() -> list[dict[str, Any]]:
    six = [
        ("activation_failure_rate", "Activation failure rate", "ratio", 0.08, 0.05, "above"),
        ("first_attempt_success_rate", "First-attempt success", "ratio", 0.97, 0.95, "below"),
        ("average_attempts_to_success", "Attempts to success", "attempts", 1.2, 2.0, "above"),
        ("payment_to_activation_seconds", "Payment to activation", "seconds", 42.0, 900, "above"),
        ("permanent_failure_rate", "Permanent failure rate", "ratio", None, 0.01, "above"),
        ("customer_impact_rate", "Customer impact rate", "ratio", 0.0, 0.005, "above"),
    ]
    return [
        {"key": k, "name": n, "unit": u, "value": v, "threshold": t, "alert_when": w,
         "alerting": v is not None and (v > t if w == "above" else v < t), "samples": 120}
        for k, n, u, v, t, w in six
    ]  # fmt: skip


def purchase(n: int, state: str, model: str = "Tourer") -> dict[str, Any]:
    return {
        "id": f"p-{n}", "vehicle_id": f"v-{n}", "service_id": "power_boost_50",
        "duration": {"model": "permanent"}, "price_cents": 1500, "currency": "EUR",
        "state": state, "activation_id": f"a-{n}", "activation_state": None,
        "failure_category": "deadline_exceeded" if state == "ESCALATED" else None,
        "start_at": TS, "activation_deadline_at": TS, "activated_at": None, "expires_at": None,
        "ends_at": None, "cancel_reason": None, "deactivation_state": None, "created_at": TS,
        "updated_at": TS,
        "payment": {"id": f"pay-{n}", "method": "card", "state": "CANCELLED", "amount_cents": 1500,
                    "captured_cents": 0, "refunded_cents": 0, "settlement": "NONE"},
        "customer_id": "c-1", "vehicle_model": model,
    }  # fmt: skip


def ticket(n: int) -> dict[str, Any]:
    return {
        "id": f"t-{n}", "number": f"T-{n:06d}-ABCD", "customer_id": "c-1", "purchase_id": f"p-{n}",
        "kind": "activation_failed", "status": "OPEN",
        "details": {"customer": {"id": "c-1", "name": "Alice", "email": "alice@example.com"},
                    "vehicle": {"id": f"v-{n}", "vin": f"VIN{n:014d}", "model": "Tourer"},
                    "purchase": {"id": f"p-{n}", "service_id": "power_boost_50",
                                 "failure_category": "timeout"},
                    "diagnostics": None},
        "created_at": TS, "resolved_at": None, "resolution_s": None, "resolution": None,
        "resolved_by": None,
    }  # fmt: skip


def summary() -> dict[str, Any]:
    """``GET /v1/ops/metrics/summary?window=24h`` as the contract shapes it."""
    return {
        "purchases_by_state": {"ACTIVE": 110, "FAILED_NO_CHARGE": 10},
        "payments_by_state": {"CHARGED": 110, "CANCELLED": 10},
        "open_tickets": 3, "tickets_resolved": 7, "ticket_mean_resolution_s": 120.0,
        "activation_failure_rate": {"value": 0.08, "alert_above": 0.05, "alerting": True},
        "window": {"from": "2026-11-17T11:06:40Z", "to": TS, "seconds": 86400},
        "handbook": handbook(),
        "breakdowns": {
            "failures_by_reason": [{"key": "VEHICLE_OFFLINE", "count": 3, "total": 3, "rate": 1.0}],
            "failures_by_model": [{"key": "Tourer", "count": 2, "total": 40, "rate": 0.05}],
            "failures_by_service": [{"key": "climate_plus", "count": 1, "total": 30,
                                     "rate": 0.033}],
            "failures_by_hour": HOURS,
            "successes_by_attempt": [{"key": "1", "count": 100, "total": 110, "rate": 0.909}],
            "support_resolution": {"open": 3, "resolved": 7, "mean_s": 120.0, "p50_s": 90.0,
                                   "p95_s": 300.0},
        },
    }  # fmt: skip


def listed(request: Request, rows: list[Any], **match: str | None) -> JSONResponse:
    """The rows matching the filters, a page of them, and the contract's headers (the
    cursor is opaque to the console: here "c<offset>")."""
    rows = [r for r in rows if all(not v or r.get(k) == v for k, v in match.items())]
    start = int((request.query_params.get("cursor") or "c0")[1:])
    limit = int(request.query_params.get("limit") or 50)
    headers = {"X-Total-Count": str(len(rows))}
    if start + limit < len(rows):
        cursor = f"c{start + limit}"
        headers["X-Next-Cursor"] = cursor
        headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
    return JSONResponse(rows[start : start + limit], headers=headers)


AUDIT = {
    "id": "1", "at": TS, "operator": "Ana Ruiz", "action": "manual_activation",
    "target_type": "ticket", "target_id": "t-1", "detail": {"purchase_id": "p-1"},
}  # fmt: skip
CUSTOMER = {
    "id": "c-1", "name": "Alice", "email": "alice@example.com", "payment_method": "card",
    "vehicles": 2,
}  # fmt: skip


def escalated_ticket() -> dict[str, Any]:
    """An ``activation_deadline`` ticket, resolved: its diagnostics are the activation the
    deadline watchdog found at the gateway (``{"gateway": …}``), still retrying."""
    attempt = {"n": 1, "command_id": "cmd-1", "at": "2026-11-18T10:00:00.125Z",
               "vehicle_state": None, "command_sent": True, "response_code": "timeout",
               "response_message": "no answer", "result": "FAILED_RETRY"}  # fmt: skip
    remote = {"activation_id": "a-1", "state": "RETRY_SCHEDULED", "attempts": [attempt],
              "diagnostics": None, "failure_category": None}  # fmt: skip
    found = ticket(31)
    found.update(kind="activation_deadline", status="RESOLVED", resolved_at=TS, resolution_s=60.0,
                 resolution="manual_activation", resolved_by="Ana Ruiz")  # fmt: skip
    found["details"]["diagnostics"] = {"gateway": remote}
    return found


class FakeApi:
    """The contract's routes over fixed data, behind the console; ``seen``: (path,
    query) of every call, ``puts``: the bodies of the catalog-rules PUTs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.puts: list[tuple[str, Any]] = []
        self.tickets = [ticket(n) for n in range(1, 31)]
        self.purchases = [purchase(1, "ESCALATED"), purchase(2, "ESCALATED", "Roadster")]
        self.rules = {
            "power_boost_50": {"service_id": "power_boost_50", "name": "Power boost 50",
                               "applies_to": [{"model": "Tourer", "firmware": ["4.3.0", "5.0.2"]}]},
            "climate_plus": {"service_id": "climate_plus", "name": "Climate plus",
                             "applies_to": [{"model": "Tourer", "firmware": None}]},
        }  # fmt: skip
        self.app = FastAPI()
        self.app.middleware("http")(self._bearer)
        self._lists()
        self._catalog()
        self.app.get("/v1/ops/me")(lambda: {"role": "ops", "name": "Ana Ruiz"})
        self.app.get("/v1/ops/metrics/summary")(summary)
        mount_console(self.app)

    async def _bearer(self, request: Request, call_next: Callable[..., Any]) -> Any:
        if request.url.path.startswith("/v1/"):
            self.seen.append((request.url.path, dict(request.query_params)))
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"error": "unauthorized", "detail": "no token"}, 401)
        return await call_next(request)

    def _lists(self) -> None:
        app = self.app

        @app.get("/v1/ops/tickets")
        async def tickets(request: Request, status: str = "", kind: str = "") -> Any:
            return listed(request, self.tickets, status=status, kind=kind)

        @app.get("/v1/ops/purchases")
        async def purchases(request: Request, state: str = "", model: str = "") -> Any:
            return listed(request, self.purchases, state=state, vehicle_model=model)

        @app.get("/v1/ops/customers")
        async def customers(request: Request) -> Any:
            return listed(request, [CUSTOMER])

        @app.get("/v1/ops/audit")
        async def audit(request: Request) -> Any:
            return listed(request, [AUDIT])

        @app.get("/v1/ops/tickets/{ticket_id}")
        async def one_ticket(ticket_id: str) -> Any:
            found = [t for t in [*self.tickets, escalated_ticket()] if t["id"] == ticket_id]
            if not found:
                return JSONResponse({"error": "not_found", "detail": "ticket not found"}, 404)
            return found[0]

        @app.get("/v1/purchases/{purchase_id}")
        async def one_purchase(purchase_id: str) -> Any:
            found = purchase(int(purchase_id[2:]), "MANUALLY_ACTIVATED")
            return {k: v for k, v in found.items() if k not in ("customer_id", "vehicle_model")}

        @app.get("/v1/ops/customers/{customer_id}/expediente")
        async def expediente(customer_id: str) -> Any:
            return {"customer_id": customer_id, "purchases": self.purchases[:1], "charges": [],
                    "refunds": [], "subscription_charges": [], "notifications": [],
                    "tickets": self.tickets[:1], "timeline": []}  # fmt: skip

    def _catalog(self) -> None:
        app = self.app

        @app.get("/v1/ops/catalog/rules")
        async def rules() -> Any:
            return list(self.rules.values())

        @app.get("/v1/ops/fleet/models")
        async def models() -> Any:
            return FLEET

        @app.put("/v1/ops/catalog/{service_id}/rules")
        async def put_rules(service_id: str, request: Request) -> Any:
            body = await request.json()
            self.puts.append((service_id, body))
            self.rules[service_id] = {**self.rules[service_id], "applies_to": body["applies_to"]}
            return self.rules[service_id]

    def asked(self, path: str) -> list[dict[str, str]]:
        return [query for seen, query in self.seen if seen == path]


async def test_console_follows_the_contract() -> None:
    """The operator's name; tickets a page at a time (Next follows the cursor) and
    filtered on the server; an escalated ticket's timeline from the gateway's activation,
    who resolved it, and a ticket that does not exist; purchases by state and model; a
    customer found and their file opened; catalog rules saved as {"applies_to": [...]};
    the audit log; the six metrics (one alerting) and the breakdowns drawn as SVG bars
    (24 for the hours)."""
    api = FakeApi()
    async with served(api.app) as base, browser(base) as b:
        page = b.page
        await sign_in(page, "/ops/", "Operator token", TOKEN)
        await expect(page.locator("#operator")).to_have_text("Signed in as Ana Ruiz")
        await expect(page.get_by_text("Showing 1–25 of 30.")).to_be_visible()
        assert api.asked("/v1/ops/tickets")[-1] == {
            "status": "OPEN",
            "order": "desc",
            "limit": "25",
        }
        await page.get_by_role("link", name="Next page").click()
        await expect(page.get_by_text("Showing 26–30 of 30.")).to_be_visible()
        assert api.asked("/v1/ops/tickets")[-1]["cursor"] == "c25"
        await page.get_by_label("Kind").select_option("capture_failed")
        await page.get_by_role("button", name="Apply").click()
        await expect(page.get_by_text("No tickets match these filters.")).to_be_visible()
        assert api.asked("/v1/ops/tickets")[-1]["kind"] == "capture_failed"
        assert "cursor" not in api.asked("/v1/ops/tickets")[-1]

        await page.goto("/ops/#/tickets/t-31")
        await expect(page.locator("#ticket-status")).to_have_text("RESOLVED")
        await expect(page.get_by_text("Ana Ruiz", exact=True)).to_be_visible()  # resolved by
        timeline = page.locator("#diagnostics-timeline")
        await expect(timeline).to_contain_text("Attempt 1: failed, retried")
        await expect(timeline).to_contain_text("2026-11-18 10:00:00.125 UTC")
        await expect(page.get_by_text("This ticket is resolved.")).to_be_visible()
        await page.goto("/ops/#/tickets/t-99")
        await expect(page.get_by_role("alert")).to_have_text("There is no such ticket.")

        await page.goto("/ops/#/purchases")
        await expect(page.get_by_text("Showing 1–2 of 2.")).to_be_visible()
        await page.get_by_label("Vehicle model").fill("Roadster")
        await page.get_by_role("button", name="Apply").click()
        await expect(page.get_by_text("Showing 1–1 of 1.")).to_be_visible()
        assert api.asked("/v1/ops/purchases")[-1] == {
            "state": "ESCALATED", "model": "Roadster", "order": "desc", "limit": "25",
        }  # fmt: skip

        await page.goto("/ops/#/customers")
        await page.get_by_label("Name or e-mail").fill("ali")
        await page.get_by_role("button", name="Apply").click()
        await page.get_by_role("link", name="Alice").click()
        await expect(page.get_by_role("heading", name="Customer file: Alice")).to_be_visible()
        await expect(page.locator("article[data-purchase='p-1']")).to_contain_text("ESCALATED")
        assert api.asked("/v1/ops/customers")[-1]["q"] == "ali"

        await page.goto("/ops/#/catalog?service=power_boost_50")
        await expect(page.locator("#rules-summary")).to_have_text("Sold to Tourer: 4.3.0, 5.0.2.")
        await page.get_by_label("Tourer firmware 4.3.0").uncheck()
        await page.get_by_label("Roadster: every firmware").check()
        await page.get_by_role("button", name="Save rules").click()
        await expect(page.locator("#rules-summary")).to_have_text(
            "Sold to Roadster: every firmware; Tourer: 5.0.2."
        )
        assert api.puts == [
            ("power_boost_50", {"applies_to": [
                {"model": "Roadster", "firmware": None}, {"model": "Tourer", "firmware": ["5.0.2"]},
            ]}),
        ]  # fmt: skip

        await page.goto("/ops/#/audit")
        await expect(page.get_by_role("link", name="ticket t-1")).to_be_visible()

        await page.goto("/ops/#/metrics")
        cards = page.locator("#handbook article")
        await expect(cards).to_have_count(6)
        await expect(cards.and_(page.locator("[data-alerting='true']"))).to_have_count(1)
        await expect(page.locator("[data-key='activation_failure_rate']")).to_contain_text("8 %")
        await expect(page.locator("[data-key='permanent_failure_rate']")).to_contain_text("no data")
        await expect(page.locator("figure.chart svg")).to_have_count(7)
        hours = page.locator("figure.chart", has_text="Failures by hour of day")
        await expect(hours.locator("rect")).to_have_count(24)
        assert api.asked("/v1/ops/metrics/summary")[-1] == {"window": "24h"}
    assert b.foreign_requests() == []
    assert b.problems == []
