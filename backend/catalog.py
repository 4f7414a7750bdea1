"""The catalog: loaded from data/catalog.yaml into SQL, shown per customer and vehicle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import ConfigError, InvalidRequest
from backend.models import Service, ServicePrice

CATALOG_FILE = Path(__file__).parent / "data" / "catalog.yaml"
DURATION_MODELS = ("temporary", "permanent", "subscription")


@dataclass(frozen=True)
class PriceOption:
    model: str
    days: int | None
    price_cents: int


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    name: str
    description: str
    maintenance_linked: bool
    prices: tuple[PriceOption, ...]


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


async def catalog_for(
    session: AsyncSession, vehicle_model: str, excluded: frozenset[str] = frozenset()
) -> list[CatalogEntry]:
    """The services a customer may buy for a vehicle of this model (never the base, nor
    ``excluded``: the post-cancellation policy)."""
    services = (await session.scalars(select(Service).order_by(Service.id))).all()
    prices = (await session.scalars(select(ServicePrice))).all()
    out = []
    for service in services:
        applies = service.models.get("applies_to") or []
        if service.base_platform or service.id in excluded:
            continue
        if applies and vehicle_model not in applies:
            continue
        options = sorted(
            (
                PriceOption(p.model, p.days, p.price_cents)
                for p in prices
                if p.service_id == service.id
            ),
            key=lambda o: (DURATION_MODELS.index(o.model), o.days or 0),
        )
        if options:
            out.append(
                CatalogEntry(
                    service.id,
                    service.name,
                    service.description,
                    service.maintenance_linked,
                    tuple(options),
                )
            )
    return out


async def price_of(session: AsyncSession, service_id: str, model: str, days: int | None) -> int:
    """The price of one option; 422 ``unknown_service`` / ``unknown_price`` otherwise."""
    service = await session.get(Service, service_id)
    if service is None or service.base_platform:
        raise InvalidRequest("unknown_service", f"{service_id!r} is not sold")
    query = select(ServicePrice).where(
        ServicePrice.service_id == service_id, ServicePrice.model == model
    )
    query = query.where(ServicePrice.days == days) if days is not None else query
    price = (await session.scalars(query)).first()
    if price is None:
        raise InvalidRequest("unknown_price", f"{service_id} has no {model} option {days or ''}")
    return price.price_cents
