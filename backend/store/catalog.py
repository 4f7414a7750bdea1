"""The catalog in SQL: seeded from data/catalog.yaml on every start, loaded into this
process's ``Catalog`` (``domain/catalog.py``), and the services a customer's own
cancellations removed from their catalog."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.catalog import (
    DURATION_MODELS,
    Catalog,
    PriceOption,
    ServiceInfo,
    excluded_after_cancel,
)
from backend.domain.states import CUSTOMER_REASONS
from backend.errors import ConfigError
from backend.store.models import Purchase, Service, ServicePrice

CATALOG_FILE = Path(__file__).parent.parent / "data" / "catalog.yaml"


def load_file(path: Path = CATALOG_FILE) -> list[dict[str, Any]]:
    raw = yaml.safe_load(path.read_text())
    services = raw.get("services") if isinstance(raw, dict) else None
    if not isinstance(services, list):
        raise ConfigError(str(path), "expected a top-level 'services' list")
    for entry in services:
        for price in entry.get("prices", []):
            if price["model"] not in DURATION_MODELS or int(price["price_cents"]) <= 0:
                raise ConfigError(str(path), f"bad price in {entry['id']}: {price}")
    return list(services)


async def seed_catalog(session: AsyncSession, path: Path = CATALOG_FILE) -> int:
    """Upsert the services of the file and replace their prices; returns how many."""
    entries = load_file(path)
    for entry in entries:
        service = await session.get(Service, entry["id"])
        if service is None:
            service = Service(id=entry["id"])
            session.add(service)
        service.name = entry["name"]
        service.description = entry.get("description", "")
        service.base_platform = bool(entry.get("base_platform", False))
        service.maintenance_linked = bool(entry.get("maintenance_linked", False))
        service.exclude_after_cancel = bool(entry.get("exclude_after_cancel", False))
        service.models = {"applies_to": list(entry.get("applies_to", []))}
        await session.flush()
        await session.execute(delete(ServicePrice).where(ServicePrice.service_id == entry["id"]))
        for price in entry.get("prices", []):
            session.add(
                ServicePrice(
                    service_id=entry["id"],
                    model=price["model"],
                    days=price.get("days"),
                    price_cents=int(price["price_cents"]),
                )
            )
    await session.flush()
    return len(entries)


async def load(
    session: AsyncSession, exclude_after_cancel: frozenset[str] = frozenset()
) -> Catalog:
    """The catalog as stored (two queries; call it after ``seed_catalog``).
    ``exclude_after_cancel``: services the deployment's setting adds to the file's."""
    services = (await session.scalars(select(Service).order_by(Service.id))).all()
    prices = (await session.scalars(select(ServicePrice))).all()
    return Catalog(tuple(_info(s, prices, s.id in exclude_after_cancel) for s in services))


def _info(service: Service, prices: Sequence[ServicePrice], excluded: bool) -> ServiceInfo:
    options = sorted(
        (PriceOption(p.model, p.days, p.price_cents) for p in prices if p.service_id == service.id),
        key=lambda o: (DURATION_MODELS.index(o.model), o.days or 0),
    )
    return ServiceInfo(
        id=service.id,
        name=service.name,
        description=service.description,
        base_platform=service.base_platform,
        maintenance_linked=service.maintenance_linked,
        exclude_after_cancel=service.exclude_after_cancel or excluded,
        applies_to=tuple(service.models.get("applies_to") or ()),
        prices=tuple(options),
    )


class CatalogCache:
    """This process's ``Catalog``: empty until ``reload`` (at start, after seeding)."""

    def __init__(self, exclude_after_cancel: frozenset[str] = frozenset()) -> None:
        self.current = Catalog()
        self.exclude_after_cancel = exclude_after_cancel

    async def reload(self, session: AsyncSession) -> Catalog:
        self.current = await load(session, self.exclude_after_cancel)
        return self.current


# ---------------------------------------------------------------- post-cancellation policy
async def excluded_services(session: AsyncSession, customer_id: str, catalog: Catalog) -> set[str]:
    """Services this customer cancelled whose policy removes them from their catalog."""
    cancelled = await session.scalars(
        select(Purchase.service_id)
        .distinct()
        .where(
            Purchase.customer_id == customer_id,
            Purchase.cancel_reason.in_(CUSTOMER_REASONS),
        )
    )
    return {sid for sid in cancelled if excluded_after_cancel(catalog, sid)}
