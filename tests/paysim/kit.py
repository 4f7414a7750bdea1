"""The payment provider in the test's own process: the real service logic (``paysim``
ledger + store + FastAPI app, SQLite file in the test's folder, the test's clock)
reached over HTTP (``httpx.ASGITransport``) by the backend's real adapter
(``HttpPaymentProvider``). ``InProcessProvider`` is the handle tests steer it and look
at it through."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from backend.adapters.provider_http import HttpPaymentProvider
from paysim.app import create_app
from paysim.ledger import Ledger
from paysim.modes import FailureModes
from paysim.store import Payment, Store, Webhook
from paysim.webhooks import Deliverer
from protocol.timeutil import Clock

KEY = "test-provider-key-0123456789"
WEBHOOK_PATH = "/v1/payments/webhooks"


class InProcessProvider:
    def __init__(
        self,
        db: Path,
        clock: Clock,
        modes: FailureModes,
        secret: str,
        key: str = KEY,
    ) -> None:
        self.store = Store(db)
        self.ledger = Ledger(self.store, modes, clock)
        self.app = create_app(self.ledger, key)
        transport = httpx.ASGITransport(app=self.app)
        # what the backend is given: the real adapter, over HTTP to the app above
        self.client = HttpPaymentProvider.connect("http://paysim", key, transport=transport)
        # webhooks go to ``sink`` (an httpx client on the backend's app); None: lost
        self.deliverer = Deliverer(self.store, secret, clock, None, WEBHOOK_PATH)

    # ------------------------------------------------------------ steering
    @property
    def config(self) -> FailureModes:
        return self.ledger.modes

    @property
    def forced_timeouts(self) -> Counter[str]:
        return self.ledger.forced_timeouts

    @property
    def sink(self) -> httpx.AsyncClient | None:
        return self.deliverer.client

    @sink.setter
    def sink(self, client: httpx.AsyncClient | None) -> None:
        self.deliverer.client = client

    async def deliver_due(self) -> int:
        """POST the due webhooks to the sink; a failed one is retried later."""
        return await self.deliverer.deliver_due()

    # ------------------------------------------------------------ what happened
    @property
    def calls(self) -> Counter[str]:
        return self.store.calls()

    @property
    def real_captures(self) -> Counter[str]:
        return self.store.real_captures()

    @property
    def auths(self) -> dict[str, Payment]:
        return {p.id: p for p in self.store.payments("authorization")}

    @property
    def outgoing(self) -> list[Webhook]:
        return self.store.pending_webhooks()

    async def aclose(self) -> None:
        await self.client.aclose()
        self.store.close()
