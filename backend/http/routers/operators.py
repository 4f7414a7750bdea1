"""Operators as people: who is calling (``/v1/ops/me``) and what every operator did
(``/v1/ops/audit``, the audit log)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from backend.http.deps import BackendDep, Operator, Ops
from backend.http.errors import OPS, errors, invalid
from backend.http.paging import PAGED, Paging, send_page
from backend.http.schemas import PRINTABLE, AuditEntry, Me
from backend.store import listings
from protocol.http_errors import INVALID

router = APIRouter(tags=["operators"])

Action = Literal["manual_activation", "permanent_failure", "catalog_rules_updated"]


@router.get("/v1/ops/me", responses=errors(*OPS))
async def me(_: Ops, name: Operator) -> Me:
    """The calling operator."""
    return Me(role="ops", name=name)


@router.get("/v1/ops/audit", responses={**PAGED, **errors(*OPS, INVALID, invalid("bad_cursor"))})
async def audit(
    _: Ops,
    backend: BackendDep,
    request: Request,
    response: Response,
    page: Paging,
    operator: Annotated[str | None, Query(pattern=PRINTABLE, max_length=64)] = None,
    action: Annotated[Action | None, Query()] = None,
) -> list[AuditEntry]:
    """What operators did, oldest first: manual activations, permanent failures,
    catalog rule updates; filtered by operator name (empty: any) or action."""
    async with backend.sessions() as session:
        rows, found = await listings.audit_log(session, operator or None, action, page)
    send_page(request, response, found)
    return [AuditEntry.model_validate(a) for a in rows]
