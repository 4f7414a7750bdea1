"""``HttpPaymentProvider``: the provider's answers mapped onto the money executor's
contract (approved / definite no / ProviderError / ProviderTimeout: retry, same key),
against the paysim app in process and against a transport that misbehaves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from backend.adapters.payments import PaymentProvider, ProviderResult, SettlementStatus
from backend.adapters.provider_http import HttpPaymentProvider
from backend.errors import ProviderError, ProviderTimeout
from paysim.modes import FailureModes
from protocol.timeutil import ManualClock
from tests.paysim.kit import InProcessProvider

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def paysim(tmp_path: Path) -> AsyncIterator[InProcessProvider]:
    clock = ManualClock()
    provider = InProcessProvider(
        tmp_path / "paysim.sqlite3", clock, FailureModes(settle_delay_s=5.0), "s" * 16
    )
    yield provider
    await provider.aclose()


async def hold(client: PaymentProvider, key: str = "authorize:p1") -> ProviderResult:
    return await client.authorize(
        idempotency_key=key, reference="p1", amount_cents=1000, currency="EUR"
    )


async def test_the_money_flow(paysim: InProcessProvider) -> None:
    client = paysim.client
    auth = await hold(client)
    assert auth.approved and auth.ref.startswith("auth_")
    cap = await client.capture(idempotency_key="capture:p1", authorization_ref=auth.ref,
                               amount_cents=1000)  # fmt: skip
    assert cap.approved and cap.ref.startswith("cap_")
    again = await client.capture(idempotency_key="capture:p1", authorization_ref=auth.ref,
                                 amount_cents=1000)  # fmt: skip
    assert again == cap  # the replay: same answer, no second capture
    assert paysim.real_captures == {auth.ref: 1}
    refund = await client.refund(idempotency_key="refund:p1", authorization_ref=auth.ref,
                                 amount_cents=1000)  # fmt: skip
    assert refund.approved and refund.ref.startswith("re_")
    assert await client.settlement(auth.ref) == SettlementStatus("PENDING", 1)
    charge = await client.charge(idempotency_key="charge:m1", reference="m1", amount_cents=990,
                                 currency="EUR")  # fmt: skip
    assert charge.approved and charge.ref.startswith("ch_")


async def test_definite_noes(paysim: InProcessProvider) -> None:
    client = paysim.client
    auth = await hold(client)
    await client.capture(idempotency_key="c1", authorization_ref=auth.ref, amount_cents=1000)
    refused = await client.cancel(idempotency_key="x1", authorization_ref=auth.ref)
    assert refused == ProviderResult(auth.ref, False, "already_captured")
    reused = await client.capture(idempotency_key="c1", authorization_ref=auth.ref,
                                  amount_cents=999)  # fmt: skip
    assert (reused.approved, reused.reason) == (False, "idempotency_key_reused")
    paysim.config.decline_rate = 1.0
    declined = await hold(client, "authorize:p2")
    assert declined == ProviderResult("", False, "card_declined")


async def test_unknown_ids_are_provider_errors(paysim: InProcessProvider) -> None:
    client = paysim.client
    for call in (
        client.capture(idempotency_key="c1", authorization_ref="auth_nope", amount_cents=5),
        client.cancel(idempotency_key="x1", authorization_ref=""),
        client.refund(idempotency_key="r1", authorization_ref="auth_nope", amount_cents=5),
        client.settlement("auth_nope"),
    ):
        with pytest.raises(ProviderError) as caught:
            await call
        assert not isinstance(caught.value, ProviderTimeout)
        assert caught.value.reason in ("not_found", "http_422")


async def test_a_provider_timeout_is_retried_with_the_same_key(
    paysim: InProcessProvider,
) -> None:
    paysim.forced_timeouts["authorize"] = 1
    with pytest.raises(ProviderTimeout):
        await hold(paysim.client)
    auth = await hold(paysim.client)
    assert auth.approved and list(paysim.auths) == [auth.ref]


def failing(handler: Callable[[httpx.Request], httpx.Response]) -> HttpPaymentProvider:
    return HttpPaymentProvider.connect("http://paysim", "k" * 16,
                                       transport=httpx.MockTransport(handler))  # fmt: skip


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=request)


@pytest.mark.parametrize(
    "handler",
    [
        refused,
        read_timeout,
        lambda _: httpx.Response(500, text="oops"),
        lambda _: httpx.Response(503, json={"error": "busy"}),
        lambda _: httpx.Response(401, json={"error": "unauthorized"}),  # our key: an operator
        lambda _: httpx.Response(429),
        lambda _: httpx.Response(201, text="not json"),  # acted, unreadable: replay the key
        lambda _: httpx.Response(200, json={"id": 5}),
    ],
)
async def test_outcome_unknown_is_a_timeout(
    handler: Callable[[httpx.Request], httpx.Response],
) -> None:
    client = failing(handler)
    with pytest.raises(ProviderTimeout):
        await hold(client)
    with pytest.raises(ProviderTimeout):
        await client.settlement("auth_x")
    await client.aclose()


async def test_other_client_errors_and_odd_bodies() -> None:
    client = failing(lambda _: httpx.Response(400, text="<html>"))
    with pytest.raises(ProviderError) as caught:
        await hold(client)
    assert caught.value.reason == "http_400" and not isinstance(caught.value, ProviderTimeout)
    client = failing(lambda _: httpx.Response(402, json=["declined"]))
    assert await hold(client) == ProviderResult("", False, "http_402")
    client = failing(lambda _: httpx.Response(200, json={"settlement": "MAYBE"}))
    with pytest.raises(ProviderTimeout):
        await client.settlement("auth_x")
    await client.aclose()
