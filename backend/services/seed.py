"""Demo data: customers with vehicles from the simulator fleet, and an ops token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from backend.services.auth import issue_token
from backend.store.models import Customer, Vehicle
from vehicle_sim.fleet import Mode, build_fleet


@dataclass(frozen=True)
class SeededCustomer:
    customer_id: str
    token: str
    vehicles: dict[str, str]  # vin → vehicle_id


async def create_customer(
    session: AsyncSession,
    name: str,
    email: str,
    vehicles: list[tuple[str, str]],
    now: float,
    phone: str | None = None,
    has_app: bool = False,
) -> SeededCustomer:
    customer = Customer(
        id=str(uuid.uuid4()), name=name, email=email, phone=phone, has_app=has_app, created_at=now
    )
    session.add(customer)
    await session.flush()
    ids = {}
    for vin, model in vehicles:
        vehicle = Vehicle(
            id=str(uuid.uuid4()), customer_id=customer.id, vin=vin, model=model, created_at=now
        )
        session.add(vehicle)
        ids[vin] = vehicle.id
    token = await issue_token(session, "customer", customer.id, now)
    await session.flush()
    return SeededCustomer(customer.id, token, ids)


async def seed_demo(
    session: AsyncSession,
    seed: int,
    vehicles: int,
    per_customer: int,
    now: float,
    mix: dict[Mode, float] | None = None,
) -> tuple[list[SeededCustomer], str]:
    """Customers owning the simulator fleet's VINs (``per_customer`` each) + an ops token."""
    fleet = build_fleet(seed, vehicles, mix or {Mode.ONLINE: 1.0})
    out = []
    for start in range(0, len(fleet), per_customer):
        chunk = fleet[start : start + per_customer]
        n = start // per_customer
        out.append(
            await create_customer(
                session,
                f"Demo customer {n}",
                f"customer{n}@demo.caas.example",
                [(spec.vin, spec.model) for spec in chunk],
                now,
                phone=f"+3460000{n:04d}",
                has_app=n % 2 == 0,
            )
        )
    ops = await issue_token(session, "ops", None, now)
    return out, ops
