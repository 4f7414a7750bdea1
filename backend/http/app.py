"""The backend HTTP API (docs/spec.md §5): the FastAPI app. Customers see only their own things
(404 otherwise).

The edge (body limit, NaN/Infinity → 422: ``protocol/http_edge.py``), the error handlers
(``errors.py``: every error is ``{"error": code, "detail": …}``, bad input a 4xx, never a
5xx) and one router per resource (``routers/``). Routers import ``deps`` and
``schemas``, never this module. The operations console and the customer's page are
static files mounted last (``console/``, docs/console.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from backend.http.console import mount_console
from backend.http.errors import install_error_handlers
from backend.http.routers import (
    billing,
    catalog,
    catalog_rules,
    customers,
    health,
    metrics,
    operators,
    ops,
    ops_records,
    payments,
    purchases,
    tickets,
    vehicles,
)
from backend.service import Backend
from protocol.api_docs import install_docs
from protocol.http_edge import install_http_edge

ROUTERS: tuple[APIRouter, ...] = (
    catalog.router,
    purchases.router,
    customers.router,
    vehicles.router,
    tickets.router,
    ops_records.router,
    catalog_rules.router,
    operators.router,
    billing.router,
    ops.router,
    payments.router,
    health.router,
    metrics.router,
)


def create_app(backend: Backend, manage_lifespan: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backend.running():
            yield

    app = FastAPI(
        title="CaaS backend",
        version="1",
        lifespan=lifespan if manage_lifespan else None,
        docs_url=None,  # served from local files: protocol/api_docs.py
        redoc_url=None,
        # answers rendered by json.dumps, as they always were (pydantic's own JSON writer
        # would write small floats differently: 0.00001 for 1e-05)
        default_response_class=JSONResponse,
    )
    app.state.backend = backend
    install_http_edge(app)  # body limit, NaN/Infinity → 422 (protocol/http_edge.py)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    mount_console(app)  # /ops/ and /me/: static pages over the routes above
    return app
