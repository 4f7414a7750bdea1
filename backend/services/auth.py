"""Bearer tokens (stored as SHA-256 hashes) and the two roles: customer and ops. An ops
token belongs to a named operator (``services/operators.py``): the name goes into the
audit log and onto the tickets they resolve."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.store.models import ApiToken


@dataclass(frozen=True)
class Principal:
    role: str  # customer | ops
    customer_id: str | None
    name: str | None = None  # the operator's name (ops); customers: None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    session: AsyncSession, role: str, customer_id: str | None, now: float, name: str | None = None
) -> str:
    """A new token; only its hash is stored, the caller gets the only plain copy. An ops
    token needs the operator's ``name``."""
    if role == "ops" and not name:
        raise ValueError("an ops token belongs to a named operator")
    token = f"caas_{role[:3]}_{secrets.token_urlsafe(24)}"
    session.add(
        ApiToken(
            id=str(uuid.uuid4()),
            token_hash=hash_token(token),
            prefix=token[:12],
            role=role,
            customer_id=customer_id,
            name=name,
            created_at=now,
        )
    )
    return token


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    # three columns, not the ORM entity: every request runs this
    row = (
        await session.execute(
            select(ApiToken.role, ApiToken.customer_id, ApiToken.name).where(
                ApiToken.token_hash == hash_token(token)
            )
        )
    ).first()
    return Principal(row.role, row.customer_id, row.name) if row else None
