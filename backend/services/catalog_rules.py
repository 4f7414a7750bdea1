"""The catalog's compatibility rules as operations see and change them: which vehicle
models and firmware each service is sold to. An update is audited
(``catalog_rules_updated``) and bumps the catalog's version in the same transaction, so
every backend process applies it to its next catalog read and purchase."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.catalog import ServiceInfo, parse_rules, rules_json
from backend.errors import InvalidRequest
from backend.store import catalog
from backend.store.records import audit


def rules_view(service: ServiceInfo) -> dict[str, Any]:
    return {
        "service_id": service.id,
        "name": service.name,
        "applies_to": rules_json(service.applies_to),
    }


async def all_rules(session: AsyncSession) -> list[dict[str, Any]]:
    """Every service on sale (never the base platform) with its rules, as stored now."""
    stored = await catalog.load(session)
    return [rules_view(s) for s in stored.services if not s.base_platform]


async def update_rules(
    session: AsyncSession,
    service_id: str,
    applies_to: list[dict[str, Any]],
    operator: str,
    now: float,
) -> dict[str, Any]:
    """Replace a service's rules; 404 for an unknown service or the base platform, 422
    ``bad_rules`` for a model listed twice or a bad name or version."""
    try:
        rules = parse_rules(applies_to)
    except ValueError as exc:
        raise InvalidRequest("bad_rules", str(exc)) from None
    name, before = await catalog.set_rules(session, service_id, rules, now)
    audit(
        session, operator, "catalog_rules_updated", ("service", service_id), now,
        before=rules_json(before), after=rules_json(rules),
    )  # fmt: skip
    return {"service_id": service_id, "name": name, "applies_to": rules_json(rules)}
