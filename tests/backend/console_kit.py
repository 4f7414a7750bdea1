"""Browser tests of the console (``/ops/``, ``/me/``): an app served over real HTTP on a
free port (uvicorn in the test's event loop) and Debian's ``chromium`` driven by
Playwright through ``executable_path`` (Playwright's own browsers are never downloaded;
``scripts/setup.sh`` installs the Debian package).

``Browser.requests`` records every URL any page asked for and ``Browser.problems`` every
uncaught error and console error (a Content-Security-Policy refusal is one), so a test
can assert that the console stayed on its own origin and ran cleanly."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from playwright.async_api import ConsoleMessage, Page, async_playwright

from launcher.procs import free_port

CHROMIUM = os.environ.get("CAAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# a route another part of the platform has not shipped answers 404: the page says "not
# available"; the browser logs the failed load, which is no problem of the page
EXPECTED_CONSOLE = ("Failed to load resource",)


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` on http://127.0.0.1:<free port> while the block runs; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="console-http")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # it failed to start: raise why
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Browser:
    base_url: str
    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Every URL asked for that is not on the backend's origin (data: URLs are
        inline, not requests to anyone)."""
        home = urlsplit(self.base_url)
        return [
            url
            for url in self.requests
            if not url.startswith("data:") and urlsplit(url)[:2] != (home.scheme, home.netloc)
        ]

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(EXPECTED_CONSOLE):
            self.problems.append(f"console: {message.text}")


@asynccontextmanager
async def browser(base_url: str, width: int = 1280, height: int = 900) -> AsyncIterator[Browser]:
    """A fresh headless chromium on ``base_url`` with one page of ``width`` CSS pixels."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"no chromium at {CHROMIUM}: run scripts/setup.sh (apt: chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await chromium.new_context(
                base_url=base_url, viewport={"width": width, "height": height}
            )
            context.set_default_timeout(10_000)
            page = await context.new_page()
            found = Browser(base_url, page)
            context.on("request", lambda request: found.requests.append(request.url))
            page.on("pageerror", lambda error: found.problems.append(f"page: {error}"))
            page.on("console", found._console)
            yield found
        finally:
            await chromium.close()


async def sign_in(page: Page, path: str, label: str, token: str) -> None:
    """Open ``path`` (``/ops/`` or ``/me/``) and sign in with ``token``."""
    await page.goto(path)
    await page.get_by_label(label).fill(token)
    await page.get_by_role("button", name="Sign in").click()
