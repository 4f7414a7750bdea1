"""Operators as people: each has a name and their own ops token (``python -m backend
operators create --name "Ana Ruiz"``). What they do is written to the audit log
(``ops_actions``) under that name, in the transaction of the action itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Conflict
from backend.services.auth import issue_token
from backend.store.models import ApiToken

# printable, no control characters, 1..64 of them: it is shown in logs and the console
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


@dataclass(frozen=True)
class OperatorToken:
    name: str
    prefix: str  # the token's first characters: never the token
    created_at: float


def person_name(text: str, whose: str = "an operator's") -> str:
    """The name as stored (surrounding spaces dropped); ValueError when unusable."""
    name = text.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(f"{whose} name is 1 to 64 printable characters")
    return name


def operator_name(text: str) -> str:
    return person_name(text)


async def create_operator(session: AsyncSession, name: str, now: float) -> str:
    """A new operator and their token (shown once). 409 ``operator_exists`` when the
    name is taken: two people under one name could not be told apart in the audit."""
    name = operator_name(name)
    taken = await session.scalar(
        select(ApiToken.id).where(ApiToken.role == "ops", ApiToken.name == name).limit(1)
    )
    if taken is not None:
        raise Conflict("operator_exists", f"an operator named {name!r} exists")
    return await issue_token(session, "ops", None, now, name=name)


async def operators(session: AsyncSession) -> list[OperatorToken]:
    """Every ops token: its operator's name and prefix, oldest first."""
    rows = await session.execute(
        select(ApiToken.name, ApiToken.prefix, ApiToken.created_at)
        .where(ApiToken.role == "ops")
        .order_by(ApiToken.created_at, ApiToken.name)
    )
    return [OperatorToken(r.name or "", r.prefix, r.created_at) for r in rows]
