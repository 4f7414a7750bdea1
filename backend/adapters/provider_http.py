"""The payment provider over HTTP (the ``paysim`` service, or any provider speaking its
API: docs/paysim.md), behind ``backend.payments.PaymentProvider``.

How answers map onto the money executor's contract:

* 2xx → ``ProviderResult(id, True)``;
* 402 (declined) and 409 (not capturable, already captured, exceeds captured, key
  reused) → ``ProviderResult(payment or "", False, error)``: a definite no;
* 400, 404, 422 and other 4xx → ``ProviderError(op, error)``: a request that can never
  succeed (recorded as failed, like a definite no);
* 5xx (the provider's 504 timeout among them), 401/403/408/429 (our key refused, or
  slow down: fixed by an operator or by waiting, not by giving up), connection errors,
  read timeouts and unreadable 2xx bodies → ``ProviderTimeout(op)``: outcome unknown,
  retry later with the same idempotency key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from backend.adapters.health import Health, unobserved
from backend.adapters.payments import ProviderResult, SettlementStatus
from backend.errors import ProviderError, ProviderTimeout

RETRY_LATER = frozenset({401, 403, 408, 429})
DEFINITE_NO = frozenset({402, 409})
SETTLEMENT_STATES = frozenset({"NONE", "PENDING", "SETTLED", "FAILED"})


class HttpPaymentProvider:
    def __init__(self, client: httpx.AsyncClient, on_health: Health = unobserved) -> None:
        self.client = client
        self.on_health = on_health  # told after every call whether the provider answered

    @classmethod
    def connect(
        cls,
        base_url: str,
        key: str,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> HttpPaymentProvider:
        """A keep-alive pool to ``base_url``; every request carries the bearer key."""
        return cls(
            httpx.AsyncClient(
                base_url=base_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=timeout_s,
                # the money executor runs up to CAAS_BACKEND_MONEY_CONCURRENCY calls at once
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                transport=transport,
            )
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------ PaymentProvider
    async def authorize(
        self, *, idempotency_key: str, reference: str, amount_cents: int, currency: str
    ) -> ProviderResult:
        body = {"reference": reference, "amount_cents": amount_cents, "currency": currency}
        return await self._post("authorize", "/v1/authorizations", idempotency_key, body)

    async def capture(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult:
        path = f"/v1/authorizations/{_segment(authorization_ref)}/capture"
        return await self._post("capture", path, idempotency_key, {"amount_cents": amount_cents})

    async def cancel(self, *, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        path = f"/v1/authorizations/{_segment(authorization_ref)}/cancel"
        return await self._post("cancel", path, idempotency_key, {})

    async def refund(
        self, *, idempotency_key: str, authorization_ref: str, amount_cents: int
    ) -> ProviderResult:
        body = {"payment": authorization_ref, "amount_cents": amount_cents}
        return await self._post("refund", "/v1/refunds", idempotency_key, body)

    async def charge(
        self, *, idempotency_key: str, reference: str, amount_cents: int, currency: str
    ) -> ProviderResult:
        body = {"reference": reference, "amount_cents": amount_cents, "currency": currency}
        return await self._post("charge", "/v1/charges", idempotency_key, body)

    async def settlement(self, authorization_ref: str) -> SettlementStatus:
        response = await self._send(
            "settlement", "GET", f"/v1/payments/{_segment(authorization_ref)}"
        )
        if not response.is_success:
            raise ProviderError("settlement", _error_code(response))
        body = _json(response)
        state, seq = body.get("settlement"), body.get("settlement_seq")
        if state not in SETTLEMENT_STATES or not isinstance(seq, int):
            raise ProviderTimeout("settlement")  # unreadable: ask again later
        return SettlementStatus(str(state), seq)

    # ------------------------------------------------------------ internals
    async def _post(
        self, op: str, path: str, idempotency_key: str, body: dict[str, Any]
    ) -> ProviderResult:
        headers = {"Idempotency-Key": idempotency_key}
        response = await self._send(op, "POST", path, json=body, headers=headers)
        if response.is_success:
            ref = _json(response).get("id")
            if not isinstance(ref, str) or not ref:
                raise ProviderTimeout(op)  # acted, but we cannot read how: replay the key
            return ProviderResult(ref, True)
        if response.status_code in DEFINITE_NO:
            payment = _json(response).get("payment")
            ref = payment if isinstance(payment, str) else ""
            return ProviderResult(ref, False, _error_code(response))
        raise ProviderError(op, _error_code(response))

    async def _send(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """The response, unless the outcome is unknown (``ProviderTimeout``)."""
        try:
            response = await self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:  # refused, reset, read timeout: it may have acted
            self.on_health(False)
            raise ProviderTimeout(op) from exc
        self.on_health(response.status_code < 500)
        if response.status_code >= 500 or response.status_code in RETRY_LATER:
            raise ProviderTimeout(op)
        return response


def _segment(ref: str) -> str:
    """A payment id as one path segment, whatever it contains."""
    return quote(ref, safe="") or "-"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response: httpx.Response) -> str:
    code = _json(response).get("error")
    return code if isinstance(code, str) and code else f"http_{response.status_code}"
