"""The console in a real browser (headless Debian chromium, Playwright): the customer's
purchase file on ``/me/``, every operator page on ``/ops/``, sign-in and sign-out, and
that no page asks anything of a host other than the backend."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from playwright.async_api import expect

import backend
from backend.http.app import create_app
from backend.http.console import HERE as CONSOLE
from tests.backend.conftest import World
from tests.backend.console_kit import browser, served, sign_in
from tests.backend.lifecycle_kit import active
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(60)

PHONE = {"width": 320, "height": 700}
OPS_PAGES = {
    "Tickets": "Tickets",
    "Failed and escalated": "Failed and escalated activations",
    "Customers": "Customers",
    "Catalog rules": "Catalog rules",
    "Audit log": "Audit log",
    "Metrics": "Metrics",
}


SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


async def test_console_files_are_served_with_a_same_origin_policy(world: World) -> None:
    """/ops/ and /me/ answer their pages (/ops redirects to /ops/), the assets their
    types, every file with the policy that keeps a page on its own origin; an unknown
    file is the usual 404 body; no file names another host."""
    for path in ("/ops/", "/me/"):
        r = await world.api.get(path)
        assert (r.status_code, r.headers["content-type"]) == (200, "text/html; charset=utf-8")
        policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    r = await world.api.get("/ops")
    assert (r.status_code, r.headers["location"]) == (307, "http://backend/ops/")
    js = await world.api.get("/console/ops/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "script-src 'self'" in js.headers["content-security-policy"]
    assert (
        (await world.api.get("/console/console.css")).headers["content-type"].startswith("text/css")
    )
    missing = await world.api.get("/console/nothing.js")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    for file in CONSOLE.rglob("*"):
        if file.suffix in (".html", ".js", ".css"):
            text = file.read_text().replace(SVG_NAMESPACE, "")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), file


def test_every_console_file_is_packaged() -> None:
    """The package-data globs of pyproject.toml take every file of the console (an
    installed backend serves the same pages as a checkout)."""
    root = Path(backend.__file__).parent
    config = tomllib.loads((root.parent / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["backend"]
    packaged = {path for pattern in globs for path in root.glob(pattern)}
    files = {f for f in CONSOLE.rglob("*") if f.is_file() and f.suffix != ".py"}
    files = {f for f in files if "__pycache__" not in f.parts}
    assert files and files <= packaged, sorted(str(f) for f in files - packaged)


async def test_customer_page_shows_the_purchase_file_at_phone_width(world: World) -> None:
    """/me/: a signed-in customer sees their purchases with state and payment, the charge,
    a failed one's "not charged" and its ticket; the page fits a phone; an ops token is
    refused; sign-out forgets the token; nothing is fetched from another host."""
    paid = await active(world)
    failed = await bought(world, service="power_boost_50")
    await world.backend.relay.run_once()
    await event(world, "activation.failed", failed, failure_category="timeout")
    await world.drain()
    async with (
        served(create_app(world.backend, manage_lifespan=False)) as base,
        browser(base, **PHONE) as b,
    ):
        page = b.page
        await sign_in(page, "/me/", "Your access token", world.ops_token)
        await expect(page.get_by_role("alert")).to_contain_text("not a customer's token")

        await page.get_by_label("Your access token").fill(world.alice.token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(
            page.get_by_role("heading", name="Your purchase file", exact=True)
        ).to_be_visible()
        card = page.locator(f"article[data-purchase='{paid['id']}']")
        await expect(card).to_have_attribute("data-state", "ACTIVE")
        await expect(card).to_contain_text("Climate plus")
        await expect(card).to_contain_text("Charged")
        lost = page.locator(f"article[data-purchase='{failed['id']}']")
        await expect(lost).to_contain_text("Could not be activated: you are not charged")
        await expect(page.get_by_role("heading", name="Purchases (2)")).to_be_visible()
        await expect(page.get_by_role("heading", name="Support tickets (1)")).to_be_visible()
        await expect(page.locator("ol.timeline li").first).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("Your access token")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0
    assert b.foreign_requests() == []
    assert b.problems == []
    await world.finish()


async def test_every_ops_page_renders_and_a_refused_token_signs_out(world: World) -> None:
    """/ops/: each page of the navigation renders its heading (a route this backend does
    not have yet says "not available" instead of failing), the customer's file opens from
    a ticket, a customer token is refused, a token the backend stops accepting sends the
    operator back to sign-in, and every request stays on the backend."""
    failed = await bought(world)
    await world.backend.relay.run_once()
    await event(world, "activation.failed", failed, failure_category="timeout")
    await world.drain()
    async with (
        served(create_app(world.backend, manage_lifespan=False)) as base,
        browser(base) as b,
    ):
        page = b.page
        await sign_in(page, "/ops/", "Operator token", world.alice.token)
        await expect(page.get_by_role("alert")).to_contain_text("customer's token")

        await page.get_by_label("Operator token").fill(world.ops_token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Tickets", exact=True)).to_be_visible()
        await expect(page.locator("#operator")).to_contain_text("Signed in")
        for link, heading in OPS_PAGES.items():
            await (
                page.get_by_role("navigation", name="Console")
                .get_by_role("link", name=link, exact=True)
                .click()
            )
            await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            await expect(page.get_by_text("Loading…")).to_have_count(0)
            await expect(page.get_by_role("heading", name="Something went wrong")).to_have_count(0)

        await page.goto(f"/ops/#/customers/{world.alice.customer_id}")
        await expect(page.get_by_role("heading", name=re.compile("^Customer file"))).to_be_visible()
        await expect(page.get_by_text("Loading…")).to_have_count(0)

        await page.evaluate("sessionStorage.setItem('caas.ops.token', 'not-a-token')")
        await page.goto("/ops/#/metrics")
        await expect(page.get_by_role("alert")).to_contain_text("sign in again")
        await expect(page.get_by_label("Operator token")).to_be_visible()
    assert b.foreign_requests() == []
    assert b.problems == []
    await world.finish()
