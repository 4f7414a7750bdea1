"""``/docs`` without the internet: Swagger UI from files this process serves (every
service's API: the backend, the gateway, the payment provider, the simulator's control).

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so it is blank offline. The same
page is rendered here pointing at local copies of the Swagger UI 5 bundle, stylesheet
and icon (shipped by the pinned ``fastapi-offline`` package: Swagger UI 5 is the first
to render OpenAPI 3.1, which FastAPI writes); ``/redoc`` is not served. Pinned by
``tests/backend/test_docs.py`` and ``tests/unit/test_api_docs.py``: the page names no
URL outside the service and every asset it names answers 200.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {  # served name → media type; nothing else in the folder is served
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets (the app is made with ``docs_url=None`` and
    ``redoc_url=None``)."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = f"{root}{ASSETS_PATH}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title}: API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # no badge fetched from the public validator
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:  # the service's error shape: {"error": "not_found", ...}
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(
            ASSET_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )
