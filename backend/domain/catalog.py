"""The catalog as sold: services, their price options, and which of them a customer may
buy for a vehicle. Immutable values, read once per process (``store/catalog.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.errors import InvalidRequest

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


def excluded_after_cancel(catalog: Catalog, service_id: str) -> bool:
    """Whether cancelling ``service_id`` removes it from the customer's catalog for good
    (the catalog file's flag, or ``CAAS_BACKEND_EXCLUDE_AFTER_CANCEL``: both are folded
    into the catalog when it is loaded)."""
    service = catalog.service(service_id)
    return service is not None and service.exclude_after_cancel
