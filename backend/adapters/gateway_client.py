"""The backend's view of the gateway (docs/spec.md §3): a ``Protocol`` and its HTTP client."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from backend.adapters.health import Health, unobserved
from backend.errors import GatewayError


class GatewayClient(Protocol):
    async def request_activation(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def get_activation(self, activation_id: str) -> dict[str, Any] | None: ...

    async def cancel_activation(self, activation_id: str) -> None: ...


class HttpGatewayClient:
    def __init__(self, client: httpx.AsyncClient, on_health: Health = unobserved) -> None:
        self.client = client
        self.on_health = on_health  # told after every call whether the gateway answered

    @classmethod
    def connect(cls, base_url: str, token: str, timeout_s: float = 10.0) -> HttpGatewayClient:
        headers = {"Authorization": f"Bearer {token}"}
        return cls(httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s))

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.on_health(False)
            raise GatewayError(None, type(exc).__name__) from exc
        self.on_health(response.status_code < 500)
        return response

    async def request_activation(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send("POST", "/v1/activations", json=body)
        if response.status_code not in (200, 202):
            raise GatewayError(response.status_code, response.text[:300])
        return dict(response.json())

    async def get_activation(self, activation_id: str) -> dict[str, Any] | None:
        response = await self._send("GET", f"/v1/activations/{activation_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise GatewayError(response.status_code, response.text[:300])
        return dict(response.json())

    async def cancel_activation(self, activation_id: str) -> None:
        response = await self._send("POST", f"/v1/activations/{activation_id}/cancel")
        if response.status_code not in (200, 202, 404, 409):
            raise GatewayError(response.status_code, response.text[:300])

    async def aclose(self) -> None:
        await self.client.aclose()
