"""``/docs`` works without the internet: the page names no URL outside the backend and
every file it names (Swagger UI's script, stylesheet, icon, the OpenAPI document) is
served by the backend itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.backend.conftest import World

pytestmark = pytest.mark.timeout(30)

EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class Refs(HTMLParser):
    """Every ``src`` and ``href`` of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("src", "href") and v]


async def test_docs_page_loads_only_from_the_backend(world: World) -> None:
    """No http(s) URL in the page; each asset it names answers 200 with its type."""
    page = await world.api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.findall(r"https?://", html) == []  # no CDN, no font host, no validator
    assert re.findall(r"(?<![\w:])//[\w.-]+\.\w+", html) == []  # nor protocol-relative
    refs = Refs()
    refs.feed(html)
    spec = re.search(r"url: '([^']+)'", html)
    assert spec is not None
    named = [*refs.found, spec.group(1)]
    assert len(named) == 4, named  # stylesheet, icon, script, the OpenAPI document
    for ref in named:
        assert ref.startswith("/"), ref
        got = await world.api.get(ref)
        assert got.status_code == 200, ref
        assert got.content, ref
        suffix = ref[ref.rfind(".") :]
        if suffix in EXPECTED_TYPES:
            assert got.headers["content-type"].startswith(EXPECTED_TYPES[suffix]), ref
    assert (
        "SwaggerUIBundle" in (await world.api.get(next(r for r in named if r.endswith(".js")))).text
    )
    assert (await world.api.get(spec.group(1))).json()["openapi"].startswith("3.")


async def test_only_the_docs_assets_are_served(world: World) -> None:
    """No other file of the package's folder, nothing outside it; ``/redoc`` is gone."""
    for path in (
        "/docs/assets/redoc.standalone.js",
        "/docs/assets/..%2Fcore.py",
        "/docs/assets/%2E%2E/__init__.py",
        "/redoc",
    ):
        got = await world.api.get(path)
        assert got.status_code == 404, path
        assert got.json()["error"] == "not_found", path
