"""The catalog in SQL: seeded from data/catalog.yaml on every start, its compatibility
rules changed by operators at runtime, loaded into this process's ``Catalog``
(``domain/catalog.py``) and reloaded when the stored version moves; and the services a
customer's own cancellations removed from their catalog.

**The file and the operators' rule edits.** Every start seeds the file (upsert by id,
prices replaced). A service's rules (``applies_to``) are stored beside the rules the file
had when they were last seeded (``seeded``). Seeding takes the file's rules only while
the stored rules are still the seeded ones: a service whose rules an operator changed
(``PUT /v1/ops/catalog/{id}/rules``) keeps them across restarts and new catalog files,
and a start whose file disagrees with them logs ``catalog.rules_kept`` naming the
service. Putting back the file's rules hands the service back to the file.

**Every process sees a change at its next read.** ``catalog_state.version`` moves with
every change (a seed that changed anything, a rules update). The reads that judge a
purchase or list a vehicle's catalog fetch the version in the query that loads the
vehicle (``version_column``, no extra statement); ``CatalogCache.at`` reloads the
catalog (three queries) when it differs from the cached one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import ScalarSelect, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.catalog import (
    DURATION_MODELS,
    Catalog,
    PriceOption,
    Rule,
    ServiceInfo,
    excluded_after_cancel,
    parse_rules,
    rules_json,
)
from backend.domain.states import CUSTOMER_REASONS
from backend.errors import ConfigError, NotFound
from backend.logs import log
from backend.store.models import CatalogState, Purchase, Service, ServicePrice

CATALOG_FILE = Path(__file__).parent.parent / "data" / "catalog.yaml"


def load_file(path: Path = CATALOG_FILE) -> list[dict[str, Any]]:
    """The file's services; every one but the base platform states its ``applies_to``
    rules (``[]``: sold to no vehicle), checked like an operator's."""
    raw = yaml.safe_load(path.read_text())
    services = raw.get("services") if isinstance(raw, dict) else None
    if not isinstance(services, list):
        raise ConfigError(str(path), "expected a top-level 'services' list")
    for entry in services:
        for price in entry.get("prices", []):
            if price["model"] not in DURATION_MODELS or int(price["price_cents"]) <= 0:
                raise ConfigError(str(path), f"bad price in {entry['id']}: {price}")
        if "applies_to" not in entry and not entry.get("base_platform"):
            raise ConfigError(str(path), f"{entry['id']} has no applies_to rules")
        try:
            parse_rules(entry.get("applies_to", []))
        except ValueError as exc:
            raise ConfigError(str(path), f"{entry['id']}: {exc}") from None
    return list(services)


async def seed_catalog(session: AsyncSession, now: float, path: Path = CATALOG_FILE) -> int:
    """Upsert the services of the file and replace their prices; take the file's rules
    where no operator changed them; bump the version if anything changed. Returns how
    many services the file has. The service rows are locked: a rules update waits."""
    entries = load_file(path)
    locked = select(Service).with_for_update().execution_options(populate_existing=True)
    stored = {s.id: s for s in (await session.scalars(locked)).all()}
    before = await load(session)
    for entry in entries:
        service = stored.get(entry["id"])
        if service is None:
            service = Service(id=entry["id"], models={})
            session.add(service)
        service.name = entry["name"]
        service.description = entry.get("description", "")
        service.base_platform = bool(entry.get("base_platform", False))
        service.maintenance_linked = bool(entry.get("maintenance_linked", False))
        service.exclude_after_cancel = bool(entry.get("exclude_after_cancel", False))
        service.models = _seeded(service, parse_rules(entry.get("applies_to", [])))
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
    if (await load(session)).services != before.services:
        await bump_version(session, now)
    return len(entries)


def _seeded(service: Service, from_file: tuple[Rule, ...]) -> dict[str, Any]:
    """The service's rules after seeding the file's: the file's, unless an operator
    changed them since the last seed (then theirs, and the file's are remembered)."""
    stored = service.models or {}
    current = _rules(stored.get("applies_to"))
    edited = "seeded" in stored and current != _rules(stored.get("seeded"))
    if edited and current != from_file:
        log("catalog.rules_kept", logging.WARNING, service=service.id, by="an operator")
    kept = current if edited else from_file
    return {"applies_to": rules_json(kept), "seeded": rules_json(from_file)}


def _rules(raw: object) -> tuple[Rule, ...]:
    try:
        return parse_rules(raw if raw is not None else [])
    except ValueError:  # not written by this version: no rule is kept from it
        return ()


async def bump_version(session: AsyncSession, now: float) -> None:
    await session.execute(
        update(CatalogState)
        .where(CatalogState.id == 1)
        .values(version=CatalogState.version + 1, updated_at=now)
    )


def version_column() -> ScalarSelect[int]:
    """The stored catalog's version, to add to a query that runs anyway."""
    return select(CatalogState.version).where(CatalogState.id == 1).scalar_subquery()


async def set_rules(
    session: AsyncSession, service_id: str, rules: Sequence[Rule], now: float
) -> tuple[str, tuple[Rule, ...]]:
    """Replace a service's rules and bump the version, in the caller's transaction; the
    service's name and its rules before. 404 for an unknown service and for the base
    platform (it has none). The row is locked against a concurrent seed or update."""
    service = await session.scalar(
        select(Service)
        .where(Service.id == service_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if service is None or service.base_platform:
        raise NotFound("service", service_id)
    before = _rules((service.models or {}).get("applies_to"))
    service.models = {**(service.models or {}), "applies_to": rules_json(rules)}
    await bump_version(session, now)
    return service.name, before


async def load(
    session: AsyncSession, exclude_after_cancel: frozenset[str] = frozenset()
) -> Catalog:
    """The catalog as stored, with its version (three queries).
    ``exclude_after_cancel``: services the deployment's setting adds to the file's."""
    version = await session.scalar(select(CatalogState.version).where(CatalogState.id == 1))
    services = (await session.scalars(select(Service).order_by(Service.id))).all()
    prices = (await session.scalars(select(ServicePrice))).all()
    infos = tuple(_info(s, prices, s.id in exclude_after_cancel) for s in services)
    return Catalog(infos, version or 0)


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
        applies_to=_rules((service.models or {}).get("applies_to")),
        prices=tuple(options),
    )


class CatalogCache:
    """This process's ``Catalog``: empty until ``reload`` (at start, after seeding);
    swapped for a fresh one when a read finds the stored version moved (``at``)."""

    def __init__(
        self,
        exclude_after_cancel: frozenset[str] = frozenset(),
        on_load: Callable[[Catalog], None] | None = None,
    ) -> None:
        self.current = Catalog()
        self.exclude_after_cancel = exclude_after_cancel
        self.on_load = on_load  # told of every catalog loaded (the metrics' series)

    async def reload(self, session: AsyncSession) -> Catalog:
        self.current = await load(session, self.exclude_after_cancel)
        if self.on_load is not None:
            self.on_load(self.current)
        return self.current

    async def at(self, session: AsyncSession, version: int | None) -> Catalog:
        """The catalog at ``version`` (read with the request's vehicle) or newer."""
        if version is not None and version != self.current.version:
            await self.reload(session)
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
