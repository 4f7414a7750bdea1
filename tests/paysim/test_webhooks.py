"""Webhook delivery: signed with the shared scheme, retried with exponential backoff
while the receiver is down or answers non-2xx, never dropped, delivered once it is up."""

from __future__ import annotations

import json

import httpx
import pytest

from backend.adapters.payments import verify
from backend.errors import InvalidRequest
from paysim.ledger import Ledger
from paysim.webhooks import Deliverer, backoff_s
from protocol.timeutil import ManualClock
from protocol.webhook_signing import SIGNATURE_HEADER
from tests.paysim.conftest import call, hold

SECRET = "paysim-test-webhook-secret"


class Receiver:
    """An httpx transport standing for the backend: down, failing, or taking them."""

    def __init__(self) -> None:
        self.mode = "down"  # down | error | up
        self.received: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "error":
            return httpx.Response(503)
        self.received.append(request)
        return httpx.Response(200, json={"outcome": "applied"})


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


def deliverer(ledger: Ledger, clock: ManualClock, receiver: Receiver) -> Deliverer:
    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver.handle))
    return Deliverer(ledger.store, SECRET, clock, client, "http://backend/v1/payments/webhooks",
                     initial_backoff_s=0.5, max_backoff_s=4.0)  # fmt: skip


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 0.5, 60.0) for n in range(1, 9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0,
    ]  # fmt: skip
    assert backoff_s(10_000, 0.5, 60.0) == 60.0


async def test_retried_while_down_then_delivered_once(
    ledger: Ledger, clock: ManualClock, receiver: Receiver
) -> None:
    auth = hold(ledger)
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    sender = deliverer(ledger, clock, receiver)
    delays = []
    for mode in ["down"] * 4 + ["error"] * 3:  # refused, then 503: the same to us
        receiver.mode = mode
        assert await sender.deliver_due() == 0
        (hook,) = [w for w in ledger.store.pending_webhooks() if w.type == "capture.pending"]
        delays.append(round(hook.due_at - clock.now(), 3))
        assert await sender.deliver_due() == 0  # not due again before its backoff
        clock.advance(hook.due_at - clock.now())
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    receiver.mode = "up"
    clock.advance(5)  # the final settlement is due too by now
    assert await sender.deliver_due() == 2
    assert await sender.deliver_due() == 0
    assert ledger.store.pending_webhooks() == []
    types = [json.loads(r.content)["type"] for r in receiver.received]
    assert sorted(types) == ["capture.pending", "capture.settled"]
    assert ledger.stats()["webhooks"] == {"pending": 0, "delivered": 2}
    await sender.client.aclose()  # type: ignore[union-attr]


async def test_webhooks_are_signed_with_the_shared_scheme(
    ledger: Ledger, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.mode = "up"
    auth = hold(ledger)
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    sender = deliverer(ledger, clock, receiver)
    assert await sender.deliver_due() == 1
    (request,) = receiver.received
    assert request.headers["content-type"] == "application/json"
    verify(SECRET, request.headers[SIGNATURE_HEADER], request.content, clock.now())
    with pytest.raises(InvalidRequest):
        verify("another-secret-0123456", request.headers[SIGNATURE_HEADER], request.content,
               clock.now())  # fmt: skip
    await sender.client.aclose()  # type: ignore[union-attr]


async def test_no_client_means_they_wait(ledger: Ledger, clock: ManualClock) -> None:
    auth = hold(ledger)
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    sender = Deliverer(ledger.store, SECRET, clock, None, "/v1/payments/webhooks")
    assert await sender.deliver_due() == 0
    assert len(ledger.store.pending_webhooks()) == 2
