"""Demo data: customers owning the vehicles of a fleet manifest, and the operator
``demo-operator`` with an ops token.

The fleet comes from the manifest the simulator writes (``python -m vehicle_sim run
--manifest PATH``, or ``python -m vehicle_sim manifest``; docs/spec.md §7): a JSON object whose
``fleet`` lists every vehicle with its ``vin``, ``model`` and ``firmware`` (optional:
a vehicle without is stored with an unknown firmware; other fields are ignored). The
manifest stands in for the vehicle registry; the backend never builds the simulator's
fleet itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.catalog import FIRMWARE
from backend.domain.states import PaymentMethod
from backend.errors import Conflict
from backend.services.auth import issue_token
from backend.store.models import Customer, Vehicle
from protocol.models import VIN_RE
from protocol.settings import ConfigError

DEMO_OPERATOR = "demo-operator"


class FleetEntry(NamedTuple):
    vin: str
    model: str
    firmware: str | None = None  # None: not known (then only a rule for every firmware)


@dataclass(frozen=True)
class SeededCustomer:
    customer_id: str
    token: str
    vehicles: dict[str, str]  # vin → vehicle_id


async def create_customer(
    session: AsyncSession,
    name: str,
    email: str,
    vehicles: Sequence[tuple[str, str] | tuple[str, str, str | None]],
    now: float,
    phone: str | None = None,
    has_app: bool = False,
    payment_method: PaymentMethod = PaymentMethod.CARD,
) -> SeededCustomer:
    customer = Customer(
        id=str(uuid.uuid4()), name=name, email=email, phone=phone, has_app=has_app,
        payment_method=payment_method.value, created_at=now,
    )  # fmt: skip
    session.add(customer)
    await session.flush()
    ids = {}
    for entry in vehicles:
        vin, model, firmware = FleetEntry(*entry)
        vehicle = Vehicle(
            id=str(uuid.uuid4()), customer_id=customer.id, vin=vin, model=model,
            firmware=firmware, created_at=now,
        )  # fmt: skip
        session.add(vehicle)
        ids[vin] = vehicle.id
    token = await issue_token(session, "customer", customer.id, now)
    await session.flush()
    return SeededCustomer(customer.id, token, ids)


async def owned_vins(session: AsyncSession, vins: Sequence[str]) -> list[str]:
    """The VINs among ``vins`` that a customer owns already (a VIN has one owner)."""
    owned: list[str] = []
    for start in range(0, len(vins), 500):  # bounded IN lists
        chunk = vins[start : start + 500]
        owned += await session.scalars(select(Vehicle.vin).where(Vehicle.vin.in_(chunk)))
    return owned


def load_fleet_manifest(path: Path, option: str = "--fleet-manifest") -> list[FleetEntry]:
    """(vin, model, firmware) of every vehicle of a fleet manifest, in its order;
    ConfigError naming ``option`` when the file cannot be read or is not a fleet
    manifest."""
    try:
        data: Any = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(option, f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(option, f"{path} is not JSON: {exc}") from None
    fleet = data.get("fleet") if isinstance(data, dict) else None
    if not isinstance(fleet, list):
        raise ConfigError(option, f'{path} has no "fleet" list (a vehicle_sim manifest)')
    entries: list[FleetEntry] = []
    seen: set[str] = set()
    for index, vehicle in enumerate(fleet):
        vin = vehicle.get("vin") if isinstance(vehicle, dict) else None
        model = vehicle.get("model") if isinstance(vehicle, dict) else None
        if not isinstance(vin, str) or not VIN_RE.match(vin):
            raise ConfigError(option, f'{path}: fleet[{index}] has no valid "vin"')
        if not isinstance(model, str) or not model:
            raise ConfigError(option, f'{path}: fleet[{index}] has no "model"')
        firmware = vehicle.get("firmware")
        if firmware is not None and (
            not isinstance(firmware, str) or not FIRMWARE.fullmatch(firmware)
        ):
            raise ConfigError(option, f'{path}: fleet[{index}] has a bad "firmware"')
        if vin in seen:
            raise ConfigError(option, f"{path}: VIN {vin} is listed twice")
        seen.add(vin)
        entries.append(FleetEntry(vin, model, firmware))
    return entries


async def seed_demo(
    session: AsyncSession,
    fleet: Sequence[FleetEntry],
    per_customer: int,
    now: float,
) -> tuple[list[SeededCustomer], str]:
    """Customers owning the fleet's vehicles (``per_customer`` each, in the fleet's
    order) + a token of the operator ``demo-operator`` (another one on every seed).
    Every third customer pays by direct debit, the others by card, so that a demo shows
    both payment flows. 409 ``already_seeded`` when a vehicle of the fleet has an owner:
    the first seed's tokens were shown once and cannot be shown again."""
    owned = await owned_vins(session, [entry.vin for entry in fleet])
    if owned:
        raise Conflict(
            "already_seeded",
            f"{len(owned)} of the fleet's vehicles have an owner already (VIN {owned[0]}): "
            "this database was seeded before; use the tokens that seed printed (the demo "
            "keeps them in its run folder, customers.json) or seed a fresh database",
        )
    out = []
    for start in range(0, len(fleet), per_customer):
        chunk = fleet[start : start + per_customer]
        n = start // per_customer
        out.append(
            await create_customer(
                session,
                f"Demo customer {n}",
                f"customer{n}@demo.caas.example",
                list(chunk),
                now,
                phone=f"+3460000{n:04d}",
                has_app=n % 2 == 0,
                payment_method=PaymentMethod.DIRECT_DEBIT if n % 3 == 2 else PaymentMethod.CARD,
            )
        )
    ops = await issue_token(session, "ops", None, now, name=DEMO_OPERATOR)
    return out, ops
