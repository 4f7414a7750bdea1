"""The operations console end to end, in headless chromium: backend (served over HTTP) →
real gateway (in process, real Redis and Mosquitto) → fleet simulator. A vehicle in
conflict mode fails its activation and a ticket carries the diagnostics; an operator
signs in, reads the ticket's timeline, activates by hand once the vehicle can take it,
and sees the purchase become MANUALLY_ACTIVATED and the open tickets go down by one."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from backend.http.app import create_app
from launcher.stack import LocalStack
from protocol.topics import Topics
from tests.backend.conftest import WorldFactory
from tests.backend.console_kit import browser, served, sign_in
from tests.backend.test_e2e import paid_upfront, real_gateway, wait_terminal
from tests.conftest import SimFactory
from vehicle_sim.fleet import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def open_tickets_shown(page: Page) -> str:
    """The metrics page, all time: the open tickets it shows."""
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Metrics").click()
    await page.get_by_role("link", name="All time").click()
    await expect(page.locator("#window-text")).to_be_visible()
    return await page.locator("[data-metric='open_tickets']").inner_text()


async def test_operator_activates_a_failed_purchase_from_the_console(
    make_world: WorldFactory,
    make_sim: SimFactory,
    stack: LocalStack,
    topics: Topics,
    redis_url: str,
    plain_redis: object,
) -> None:
    """Sign in → metrics (1 open ticket) → tickets → the ticket's diagnostics timeline
    (the attempt, the vehicle's "conflict" refusal, the catalog-rules link) → vehicle back
    to normal → "Activate manually", confirmed → MANUALLY_ACTIVATED, ticket resolved, no
    charge → metrics: 0 open tickets. Every request stayed on the backend."""
    async with (
        make_sim(vehicles=1, mix={Mode.CONFLICT: 1.0}) as sim,
        real_gateway(stack, topics, redis_url) as gw,
    ):
        vehicle = sim.specs[0]
        feature = vehicle.installed_features[0]
        fleet = [(vehicle.vin, vehicle.model)]
        async with make_world(None, redis_url=redis_url, gateway=gw, vins=fleet) as w:
            async with w.backend.running():
                r = await w.buy(feature, vin=vehicle.vin, duration=paid_upfront(feature))
                assert r.status_code == 202, r.text
                purchase_id = r.json()["id"]
                failed = (await wait_terminal(w, [purchase_id]))[purchase_id]
                assert (failed["state"], failed["failure_category"]) == (
                    "FAILED_NO_CHARGE",
                    "configuration_conflict",
                )
                [ticket] = (await w.api.get("/v1/ops/tickets", headers=w.as_(w.ops_token))).json()

                app = create_app(w.backend, manage_lifespan=False)
                async with served(app) as base, browser(base) as b:
                    page = b.page
                    await sign_in(page, "/ops/", "Operator token", w.ops_token)
                    await expect(
                        page.get_by_role("heading", name="Tickets", exact=True)
                    ).to_be_visible()
                    assert await open_tickets_shown(page) == "1"

                    await page.get_by_role("link", name="Tickets", exact=True).click()
                    await page.get_by_role("link", name=ticket["number"]).click()
                    await expect(
                        page.get_by_role("heading", name=f"Ticket {ticket['number']}")
                    ).to_be_visible()
                    timeline = page.locator("#diagnostics-timeline")
                    await expect(timeline.locator("li[data-kind='attempt']")).to_have_count(1)
                    await expect(timeline).to_contain_text("Attempt 1: failed, gave up")
                    await expect(timeline).to_contain_text("Vehicle refused the command: conflict")
                    await expect(timeline.locator("li[data-kind='snapshot']").first).to_be_visible()
                    await expect(page.get_by_text(re.compile(r"Signal \(RSSI\)"))).to_be_visible()
                    await expect(page.locator("#update-catalog-rules")).to_have_attribute(
                        "href", f"#/catalog?service={feature}"
                    )
                    await expect(page.locator("#purchase-state")).to_have_text("FAILED_NO_CHARGE")

                    sim.runtime.set_mode(vehicle.vin, Mode.ONLINE)  # the conflict fixed
                    await page.get_by_role("button", name="Activate manually").click()
                    dialog = page.get_by_role("dialog")
                    await dialog.get_by_role("button", name="Activate manually").click()
                    result = page.locator("#action-result")
                    await expect(result).to_contain_text("MANUALLY_ACTIVATED", timeout=20_000)
                    await expect(result).to_contain_text("The vehicle confirmed it")
                    await expect(page.locator("#purchase-state")).to_have_text("MANUALLY_ACTIVATED")
                    await expect(page.locator("#ticket-status")).to_have_text("RESOLVED")
                    await expect(page.locator("#payment-state .badge")).to_have_text("CANCELLED")

                    assert await open_tickets_shown(page) == "0"
                assert b.foreign_requests() == []
                assert b.problems == []
            done = await w.purchase(purchase_id)
            assert (done["state"], done["payment"]["state"]) == ("MANUALLY_ACTIVATED", "CANCELLED")
            assert feature in sim.runtime.vehicle(vehicle.vin).active_features
            await w.finish()
