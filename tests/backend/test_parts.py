"""Small parts on their own: backoff, signatures, catalog file, channel rules, SMTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backend.adapters.channels import SmtpChannel
from backend.adapters.payments import sign, verify
from backend.domain.notices import channels_for, render
from backend.domain.retry import backoff_s
from backend.errors import ConfigError, InvalidRequest
from backend.store.catalog import load_file
from backend.store.models import Customer

pytestmark = pytest.mark.timeout(20)


def test_backoff_doubles_and_caps() -> None:
    """Backoff: initial × 2^(n−1), capped; attempt 0 waits nothing."""
    assert [backoff_s(n, 1.0, 5.0) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert backoff_s(10_000, 1.0, 60.0) == 60.0


def test_signature_round_trip_and_tamper() -> None:
    """A signed body verifies; a changed body or another secret does not."""
    header = sign("s", b"{}", 1000)
    verify("s", header, b"{}", 1010)
    with pytest.raises(InvalidRequest):
        verify("s", header, b"{ }", 1010)
    with pytest.raises(InvalidRequest):
        verify("t", header, b"{}", 1010)
    with pytest.raises(InvalidRequest):
        verify("s", "garbage", b"{}", 1010)


def test_catalog_file_is_validated(tmp_path: Path) -> None:
    """The shipped catalog loads; a bad price model is refused at load time."""
    ids = {s["id"] for s in load_file()}
    assert {
        "base_platform",
        "power_boost_50",
        "autonomous_driving",
        "climate_plus",
        "entertainment_pack",
        "winter_traction",
    } == ids
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "services:\n  - id: x\n    name: X\n    prices: [{model: lifetime, price_cents: 1}]\n"
    )
    with pytest.raises(ConfigError):
        load_file(bad)


def test_channel_rules() -> None:
    """E-mail always; push only with the app; SMS only when critical (and a phone)."""
    c = Customer(id="c", name="n", email="e@x", phone="+34", has_app=False, created_at=0)
    assert [ch for ch, _ in channels_for(c, critical=False)] == ["email"]
    c.has_app = True
    assert [ch for ch, _ in channels_for(c, critical=True)] == ["email", "push", "sms"]


def test_failure_template_promises_no_charge() -> None:
    """The initial-failure template says the customer will NOT be charged."""
    msg = render("activation_failed_initial", service="climate_plus", vin="V", ticket="T-1")
    assert "You will NOT be charged" in msg.body


async def test_smtp_channel_talks_to_a_real_smtp_server() -> None:
    """The SMTP channel delivers through any SMTP server (a minimal one here)."""
    received: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        while line := await reader.readline():
            cmd = line[:4].upper()
            if cmd == b"DATA":
                writer.write(b"354 go\r\n")
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk
                received.append(data)
                writer.write(b"250 queued\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        channel = SmtpChannel(f"smtp://127.0.0.1:{port}", "no-reply@caas.example", 5)
        await channel.send("alice@example.com", "Hello", "You will NOT be charged.", "n-1")
    assert len(received) == 1
    assert b"Subject: Hello" in received[0] and b"NOT be charged" in received[0]
