"""Customers created by an administrator (``python -m backend customers create``): a
name, an e-mail address, the vehicles they own and how they pay; their token is
printed once (only its hash is stored). ``customers list`` shows them, never a token.
The demo's customers come from ``seed`` (seed.py) through the same ``create_customer``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.catalog import FIRMWARE
from backend.domain.states import PaymentMethod
from backend.errors import Conflict
from backend.services.seed import FleetEntry, SeededCustomer, create_customer, owned_vins
from backend.store.models import Customer, Vehicle
from protocol.models import VIN_RE

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    name: str
    email: str
    payment_method: str
    vins: list[str]
    created_at: float


def vehicle_entry(text: str) -> FleetEntry:
    """``VIN:MODEL[:FIRMWARE]`` → a vehicle to own; ValueError saying what is wrong."""
    vin, _, rest = text.partition(":")
    model, _, firmware = rest.partition(":")
    if not VIN_RE.match(vin):
        raise ValueError(f"{vin!r} is not a VIN (17 characters, no I, O or Q)")
    if not model.strip():
        raise ValueError("a vehicle is VIN:MODEL[:FIRMWARE], the model is missing")
    if firmware and not FIRMWARE.fullmatch(firmware):
        raise ValueError(f"{firmware!r} is not a firmware version (e.g. 4.2.0)")
    return FleetEntry(vin, model.strip(), firmware or None)


def email_address(text: str) -> str:
    address = text.strip()
    if len(address) > 255 or not _EMAIL.fullmatch(address):
        raise ValueError(f"{text!r} is not an e-mail address")
    return address


async def create(
    session: AsyncSession,
    name: str,
    email: str,
    vehicles: Sequence[FleetEntry],
    payment_method: PaymentMethod,
    now: float,
) -> SeededCustomer:
    """A new customer owning ``vehicles`` and their token. 409 ``vehicle_owned`` when a
    VIN is listed twice or has an owner already (a vehicle has one owner)."""
    vins = [v.vin for v in vehicles]
    twice = sorted({vin for vin in vins if vins.count(vin) > 1})
    owned = twice or await owned_vins(session, vins)
    if owned:
        raise Conflict("vehicle_owned", f"VIN {owned[0]} is listed twice or has an owner already")
    return await create_customer(
        session, name, email, list(vehicles), now, payment_method=payment_method
    )


async def customers(session: AsyncSession) -> list[CustomerRow]:
    """Every customer with the VINs they own, oldest first (never a token)."""
    vins: defaultdict[str, list[str]] = defaultdict(list)
    for owner, vin in await session.execute(
        select(Vehicle.customer_id, Vehicle.vin).order_by(Vehicle.created_at, Vehicle.vin)
    ):
        vins[owner].append(vin)
    rows = await session.scalars(select(Customer).order_by(Customer.created_at, Customer.id))
    return [
        CustomerRow(c.id, c.name, c.email, c.payment_method, vins[c.id], c.created_at) for c in rows
    ]
