"""The catalog as sold: services, their price options, and which of them a customer may
buy for a vehicle (the compatibility rules: vehicle model and firmware). Immutable
values, cached per process and reloaded when the stored catalog's version moves
(``store/catalog.py``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backend.errors import Conflict, InvalidRequest

DURATION_MODELS = ("temporary", "permanent", "subscription")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")  # "Tourer"
FIRMWARE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$")  # "4.3.0"


@dataclass(frozen=True, order=True)
class Rule:
    """Who may buy a service: vehicles of ``model`` running one of ``firmware`` (None:
    any firmware of that model, also an unknown one)."""

    model: str
    firmware: tuple[str, ...] | None = None

    def matches(self, model: str, firmware: str | None) -> bool:
        if model != self.model:
            return False
        return self.firmware is None or (firmware is not None and firmware in self.firmware)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "firmware": None if self.firmware is None else [*self.firmware],
        }


def parse_rules(raw: object) -> tuple[Rule, ...]:
    """A stored or given ``applies_to`` list as rules, in one canonical order (by model,
    firmware sorted), so that two equal rule sets compare equal. ``ValueError`` naming
    the first problem: not a list, a rule that is not ``{"model", "firmware"}``, a bad
    name or version, a model listed twice."""
    if not isinstance(raw, list):
        raise ValueError("applies_to must be a list of {model, firmware} rules")
    rules = [_rule(index, item) for index, item in enumerate(raw)]
    models = [r.model for r in rules]
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise ValueError(f"model {twice[0]!r} is listed twice (one rule per model)")
    return tuple(sorted(rules))


def _rule(index: int, item: object) -> Rule:
    where = f"applies_to[{index}]"
    if not isinstance(item, dict) or set(item) - {"model", "firmware"}:
        raise ValueError(f'{where} must be {{"model": ..., "firmware": [...] | null}}')
    model, firmware = item.get("model"), item.get("firmware")
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise ValueError(f"{where}.model must be a model name (letters, digits, ' ._-')")
    if firmware is None:
        return Rule(model)
    if not isinstance(firmware, list) or not all(
        isinstance(v, str) and FIRMWARE.fullmatch(v) for v in firmware
    ):
        raise ValueError(f"{where}.firmware must be null or a list of versions like 4.3.0")
    if len(set(firmware)) != len(firmware):
        raise ValueError(f"{where}.firmware lists a version twice")
    return Rule(model, tuple(sorted(firmware)))


def rules_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    return [r.as_json() for r in rules]


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
    applies_to: tuple[Rule, ...]  # empty: sold to no vehicle
    prices: tuple[PriceOption, ...]  # in display order

    def sold_for(self, model: str, firmware: str | None) -> bool:
        """Whether a vehicle of this model and firmware can run it."""
        return any(rule.matches(model, firmware) for rule in self.applies_to)

    def entry(self) -> CatalogEntry:
        return CatalogEntry(
            self.id, self.name, self.description, self.maintenance_linked, self.prices
        )


@dataclass(frozen=True)
class Catalog:
    """The services, prices and rules at one ``version`` of the stored catalog.
    Immutable: safe to share between requests; a process swaps in a new one when the
    stored version moves (a rules update, a new catalog file)."""

    services: tuple[ServiceInfo, ...] = ()  # ordered by id
    version: int = 0  # 0: never loaded

    def service(self, service_id: str) -> ServiceInfo | None:
        return next((s for s in self.services if s.id == service_id), None)

    def entries_for(
        self, vehicle_model: str, firmware: str | None, excluded: frozenset[str] = frozenset()
    ) -> list[CatalogEntry]:
        """The services a customer may buy for a vehicle of this model and firmware
        (never the base, nor ``excluded``: the post-cancellation policy)."""
        return [
            s.entry()
            for s in self.services
            if not s.base_platform
            and s.id not in excluded
            and s.sold_for(vehicle_model, firmware)
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


def ensure_sold_for(service: ServiceInfo, model: str, firmware: str | None) -> None:
    """409 ``not_compatible`` when the vehicle cannot run the service (its rules)."""
    if not service.sold_for(model, firmware):
        raise Conflict(
            "not_compatible",
            f"{service.id} does not run on a {model} with firmware {firmware or '(unknown)'}",
        )


def excluded_after_cancel(catalog: Catalog, service_id: str) -> bool:
    """Whether cancelling ``service_id`` removes it from the customer's catalog for good
    (the catalog file's flag, or ``CAAS_BACKEND_EXCLUDE_AFTER_CANCEL``: both are folded
    into the catalog when it is loaded)."""
    service = catalog.service(service_id)
    return service is not None and service.exclude_after_cancel
