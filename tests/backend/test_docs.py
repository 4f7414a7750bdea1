"""``/docs`` works without the internet: the page names no URL outside the backend and
every file it names (Swagger UI's script, stylesheet, icon, the OpenAPI document) is
served by the backend itself."""

from __future__ import annotations

import pytest

from tests.backend.conftest import World
from tests.helpers import assert_docs_served_locally

pytestmark = pytest.mark.timeout(30)


async def test_docs_page_loads_only_from_the_backend(world: World) -> None:
    await assert_docs_served_locally(world.api)


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
