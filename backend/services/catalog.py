"""The catalog: loaded from data/catalog.yaml into SQL, shown per customer and vehicle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.states import CUSTOMER_REASONS
from backend.errors import ConfigError, InvalidRequest
from backend.store.models import Purchase, Service, ServicePrice

CATALOG_FILE = Path(__file__).parent.parent / "data" / "catalog.yaml"
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


@dataclass(frozen=True)
class ServiceInfo:
    """One service as sold: the catalog file's entry, as seeded into SQL."""

    id: str
    name: str
    description: str
    base_platform: bool
    maintenance_linked: bool
    exclude_after_cancel: bool
    applies_to: tuple[str, ...]
    prices: tuple[PriceOption, ...]  # in display order

    def entry(self) -> CatalogEntry:
        return CatalogEntry(
            self.id, self.name, self.description, self.maintenance_linked, self.prices
        )


@dataclass(frozen=True)
class Catalog:
    """The services and prices, read once per process: they only change through the
    catalog file, which is seeded on start (``Backend.start``), so a running process
    never needs to read them again. Immutable: safe to share between requests."""

    services: tuple[ServiceInfo, ...] = ()  # ordered by id

    def service(self, service_id: str) -> ServiceInfo | None:
        return next((s for s in self.services if s.id == service_id), None)

    def entries_for(
        self, vehicle_model: str, excluded: frozenset[str] = frozenset()
    ) -> list[CatalogEntry]:
        """The services a customer may buy for a vehicle of this model (never the base,
        nor ``excluded``: the post-cancellation policy)."""
        return [
            s.entry()
            for s in self.services
            if not s.base_platform
            and s.id not in excluded
            and (not s.applies_to or vehicle_model in s.applies_to)
            and s.prices
        ]

    def price_of(self, service_id: str, model: str, days: int | None) -> tuple[ServiceInfo, int]:
        """The service and the price of one option; 422 ``unknown_service`` /
        ``unknown_price`` otherwise. ``days`` None: the model's first option."""
        service = self.service(service_id)
        if service is None or service.base_platform:
            raise InvalidRequest("unknown_service", f"{service_id!r} is not sold")
        for option in service.prices:
            if option.model == model and (days is None or option.days == days):
                return service, option.price_cents
        raise InvalidRequest("unknown_price", f"{service_id} has no {model} option {days or ''}")


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
def excluded_after_cancel(catalog: Catalog, service_id: str) -> bool:
    """Whether cancelling ``service_id`` removes it from the customer's catalog for good
    (the catalog file's flag, or ``CAAS_BACKEND_EXCLUDE_AFTER_CANCEL``: both are folded
    into the catalog when it is loaded)."""
    service = catalog.service(service_id)
    return service is not None and service.exclude_after_cancel


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
