"""Hostile input on ``POST /v1/payments/webhooks``: no header, body or signed payload
makes it answer 5xx, and nothing is written for a body it refuses. Each case runs on
SQLite and PostgreSQL (a value PostgreSQL cannot store must be refused before SQL)."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.adapters.payments import SIGNATURE_HEADER, sign
from backend.store.inbox import MAX_SEQ
from backend.store.models import InboxEvent, Payment, TimelineEntry
from tests.backend.conftest import SECRET, World, WorldFactory
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(120)

URL = "/v1/payments/webhooks"
HEX = "0" * 64


async def post(w: World, raw: bytes, signature: bytes | None = None) -> httpx.Response:
    """The body with this signature header (latin-1 bytes, as a client may send any),
    or signed with the test secret when ``signature`` is None."""
    header = signature if signature is not None else sign(SECRET, raw, w.clock.now()).encode()
    return await w.api.post(URL, content=raw, headers={SIGNATURE_HEADER: header})


async def written(w: World) -> tuple[int, int, int]:
    """(provider events in the inbox, settlement timeline entries, the payments'
    highest settlement seq)."""
    async with w.backend.sessions() as s:
        inbox = await s.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.source == "provider")
        )
        settled = await s.scalar(
            select(func.count())
            .select_from(TimelineEntry)
            .where(TimelineEntry.kind.like("settlement.%"))
        )
        seq = await s.scalar(select(func.max(Payment.settlement_seq)))
    return inbox or 0, settled or 0, seq or 0


async def charged_payment(w: World) -> str:
    """A captured payment (its settlement webhooks are not delivered: the tests send
    their own)."""
    w.provider.sink = None
    p = await bought(w)
    await w.backend.relay.run_once()
    await event(w, "activation.succeeded", p)
    await w.backend.executor.run_pending()
    return str(p["payment"]["id"])


@pytest.mark.parametrize(
    "signature",
    [
        "t=²,v1=" + HEX,  # str.isdigit() is True, int() fails
        "t=" + "1" * 5000 + ",v1=" + HEX,  # beyond int()'s digit limit
        "t=1795000000000,v1=" + HEX,  # 13 digits
        "t=+1795000000,v1=" + HEX,
        "t=1795000000,v1=" + "é" * 64,  # compare_digest refuses non-ASCII text
        "t=1795000000,v1=" + HEX[:63],
        "t=1795000000",
        "v1=" + HEX,
        ",,,=,==",
    ],
    ids=[
        "superscript-t",
        "5000-digit-t",
        "13-digit-t",
        "signed-t",
        "non-ascii-v1",
        "short-v1",
        "no-v1",
        "no-t",
        "separators",
    ],
)
async def test_malformed_signature_header_is_400(
    make_world: WorldFactory, db_url: str, signature: str
) -> None:
    async with make_world(db_url) as w:
        r = await post(
            w, b'{"event_id": "e1", "type": "capture.settled"}', signature.encode("latin-1")
        )
        assert (r.status_code, r.json()["error"]) == (400, "bad_signature")
        assert await written(w) == (0, 0, 0)


async def test_signed_seq_beyond_2_53_is_400_and_nothing_applied(
    make_world: WorldFactory, db_url: str
) -> None:
    """A correctly signed settlement with seq 2^70 (PostgreSQL's column cannot hold it)
    or 2^53 is refused; 2^53 - 1, the largest allowed, is applied."""
    async with make_world(db_url) as w:
        payment = await charged_payment(w)
        body = {"event_id": "e-big", "type": "capture.settled", "reference": payment}
        for seq in (2**70, 2**53, 0, -1, 1.0, True, "2"):
            r = await post(w, json.dumps({**body, "seq": seq}).encode())
            assert (r.status_code, r.json()["error"]) == (400, "bad_webhook"), seq
        assert await written(w) == (0, 0, 0)
        r = await post(w, json.dumps({**body, "seq": MAX_SEQ}).encode())
        assert (r.status_code, r.json()) == (200, {"outcome": "applied"})
        assert await written(w) == (1, 1, MAX_SEQ)
        await w.finish()


async def test_deeply_nested_or_huge_signed_body_is_400(
    make_world: WorldFactory, db_url: str
) -> None:
    """Nesting that made the parser raise RecursionError, nesting deeper than the
    codec's limit, and a body over its size limit: 400 bad_webhook, nothing written."""
    async with make_world(db_url) as w:
        nested = b'{"event_id": "e1", "type": "x", "n": ' + b"[" * 30 + b"]" * 30 + b"}"
        padded = json.dumps({"event_id": "e2", "type": "x", "pad": "x" * 70_000}).encode()
        for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
            r = await post(w, raw)
            assert (r.status_code, r.json()["error"]) == (400, "bad_webhook")
        for raw in (nested, padded):
            r = await post(w, raw)
            assert (r.status_code, r.json()["error"]) == (400, "bad_webhook")
        assert await written(w) == (0, 0, 0)


# ---------------------------------------------------------------- junk, at random
SETTLEMENT_TYPES = ["capture.pending", "capture.settled", "capture.settlement_failed"]
ODD_STRINGS = ["", "\x00", "a\x00b", "\ud800", "é", "²", " ", "x" * 65, "x" * 129, "None"]
ODD_NUMBERS = [0, -1, 1, 2, 2**31, 2**53 - 1, 2**53, 2**63, 2**70, -(2**70), 1.5, 1e308]


def junk_header(rng: random.Random) -> bytes:
    """A signature header made of the pieces a real one has, and others."""
    pieces = [
        "t=", "v1=", ",", "=", "1795000000", "²", "٣", "9" * rng.choice([1, 12, 13, 5000]),
        HEX, HEX.upper(), "é", " ", "\t", "v0=", "t", rng.choice(ODD_STRINGS),
    ]  # fmt: skip
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
    return text.encode("latin-1", "replace")


def junk_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 12 and roll < 0.15:
        return [junk_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 12 and roll < 0.3:
        return {rng.choice([*ODD_STRINGS, "k"]): junk_value(rng, depth + 1) for _ in range(3)}
    return rng.choice(
        [
            None,
            True,
            False,
            rng.choice(ODD_NUMBERS),
            rng.choice(ODD_STRINGS),
            "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(1, 20))),
        ]
    )


def junk_body(rng: random.Random, payment: str) -> Any:
    """Mostly webhook-shaped objects with some fields right, some wrong; sometimes
    not an object at all."""
    if rng.random() < 0.1:
        return junk_value(rng)
    body: dict[str, Any] = {}
    fields: dict[str, list[Any]] = {
        "event_id": [f"e-{rng.getrandbits(32)}", "e-repeat"],
        "type": [*SETTLEMENT_TYPES, "refund.created"],
        "reference": [payment, "no-such-payment"],
        "seq": [1, 2, 3, MAX_SEQ],
    }
    for name, good in fields.items():
        roll = rng.random()
        if roll < 0.6:
            body[name] = rng.choice(good)
        elif roll < 0.9:
            body[name] = junk_value(rng)
    for _ in range(rng.randint(0, 2)):
        body[rng.choice([*ODD_STRINGS, "extra"])] = junk_value(rng)
    return body


async def test_random_junk_never_answers_5xx(make_world: WorldFactory, db_url: str) -> None:
    """Random headers, random bytes, and random JSON with a valid signature: every
    answer is 200 or 4xx; a refused body writes nothing (the inbox holds exactly one
    row per accepted event, the timeline one settlement per applied one)."""
    rng = random.Random(20261202)
    async with make_world(db_url) as w:
        payment = await charged_payment(w)
        answers: Counter[int] = Counter()
        outcomes: Counter[str] = Counter()

        async def send(raw: bytes, signature: bytes | None = None) -> None:
            r = await post(w, raw, signature)
            assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, raw[:200])
            answers[r.status_code] += 1
            if r.status_code == 200:
                outcomes[r.json()["outcome"]] += 1

        for _ in range(60):
            await send(rng.randbytes(rng.randint(0, 64)), junk_header(rng))
        for _ in range(60):
            await send(rng.randbytes(rng.randint(0, 300)))
        for _ in range(300):
            body = junk_body(rng, payment)
            await send(json.dumps(body).encode())
        inbox, settled, _ = await written(w)
        assert inbox == outcomes.total() - outcomes["duplicate"]
        assert settled == outcomes["applied"]
        assert answers[400] > 200 and answers[200] > 10  # both sides were exercised
        await w.finish()
