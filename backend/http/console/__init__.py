"""The operations console (``/ops/``) and the customer's purchase file (``/me/``).

Plain HTML, CSS and JavaScript modules committed beside this file and served as they
are: no build step, no CDN, no web font, so both pages work on a machine without
internet. The pages call only the backend's JSON API, with the bearer token the person
signs in with (docs/console.md).

Layout: ``ops/index.html`` and ``me/index.html`` are the two pages; ``assets/`` holds
what they share (``/console/…``). Every file goes out with a Content-Security-Policy
that lets a page load and call nothing but this origin: a console that tried to reach
another host would be refused by the browser, not only by convention.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

HERE: Final = Path(__file__).resolve().parent

# 'self' only; data: images for the empty favicon; the SVG charts are DOM, not images
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new release is seen at once
}


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """``/ops/`` and ``/me/`` (index pages), ``/console/`` (their shared assets)."""
    app.mount("/ops", ConsoleFiles(directory=HERE / "ops", html=True), name="ops_console")
    app.mount("/me", ConsoleFiles(directory=HERE / "me", html=True), name="customer_page")
    app.mount("/console", ConsoleFiles(directory=HERE / "assets"), name="console_assets")
