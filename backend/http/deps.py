"""Request dependencies: the ``Backend``, the bearer token → principal, customer vs ops.

A customer route answers 404 to an ops token (``customer``: there is no "me"), an ops
route 403 to a customer token (``ops``); no or an unknown token is 401 everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from backend.errors import Forbidden, NotFound, Unauthorized
from backend.service import Backend
from backend.services.auth import Principal, authenticate

bearer = HTTPBearer(auto_error=False)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def backend_of(request: Request) -> Backend:
    """The app's ``Backend`` (``create_app`` puts it in ``app.state``)."""
    return _backend(request)


async def _authenticated(
    session: AsyncSession, creds: HTTPAuthorizationCredentials | None
) -> Principal:
    if creds is not None and creds.credentials:
        found = await authenticate(session, creds.credentials)
        if found is not None:
            return found
    raise Unauthorized()


def _customer_of(who: Principal) -> str:
    if who.role != "customer" or who.customer_id is None:
        raise NotFound("customer", "me")
    return who.customer_id


Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def principal(request: Request, creds: Creds) -> Principal:
    async with _backend(request).sessions() as session:
        return await _authenticated(session, creds)


Who = Annotated[Principal, Depends(principal)]


async def customer(who: Who) -> str:
    return _customer_of(who)


async def ops(who: Who) -> Principal:
    if who.role != "ops":
        raise Forbidden("ops")
    return who


BackendDep = Annotated[Backend, Depends(backend_of)]
CustomerId = Annotated[str, Depends(customer)]
Ops = Annotated[Principal, Depends(ops)]


async def operator(who: Ops) -> str:
    """The acting operator's name, for the audit log (every ops token has one)."""
    return who.name or "unnamed"


Operator = Annotated[str, Depends(operator)]


@dataclass(frozen=True)
class Authed:
    """A request's principal and the session its token was checked in. The handler goes
    on in that session: one pool checkout and one transaction for the whole request
    (each session costs a checkout, BEGIN and COMMIT/ROLLBACK: see docs/performance.md).
    The session ends before the answer is sent (``scope="function"``)."""

    who: Principal
    session: AsyncSession

    @property
    def customer_id(self) -> str:
        return _customer_of(self.who)


async def authed(request: Request, creds: Creds) -> AsyncIterator[Authed]:
    async with _backend(request).sessions() as session:
        yield Authed(await _authenticated(session, creds), session)


async def customer_authed(
    auth: Annotated[Authed, Depends(authed, scope="function")],
) -> Authed:
    _customer_of(auth.who)  # 404 for ops tokens, as ``customer`` does
    return auth


AuthedSession = Annotated[Authed, Depends(authed, scope="function")]
CustomerSession = Annotated[Authed, Depends(customer_authed, scope="function")]
