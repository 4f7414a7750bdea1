"""What the gateway accepts from a vehicle (gateway/intake.py), pure: bounds, clamped
clocks, fixed refusal reasons, and a junk corpus that must never raise anything but a
counted refusal."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from bench.junk import mutate
from gateway import intake
from gateway.backlog import Backlog, Inbound
from protocol.codec import MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, json_depth, loads_object
from protocol.errors import PayloadRejected
from protocol.models import MAX_FEATURES, MAX_SEQ
from protocol.timeutil import format_ts, parse_ts

pytestmark = pytest.mark.timeout(30)
VIN = "CAATR1234SB000901"
NOW = 1_795_000_000.0


def state(**over: Any) -> dict[str, Any]:
    base = {"vin": VIN, "model": "Tourer", "firmware": "5.0.2", "online": True, "power": "off",
            "moving": False, "speed_kmh": 0.0, "gear": "P", "busy": False,
            "installed_features": ["climate_plus", "power_boost_50"],
            "active_features": ["climate_plus"], "seq": 3, "at": format_ts(NOW - 60)}  # fmt: skip
    return {**base, **over}


def response(**over: Any) -> dict[str, Any]:
    base = {"v": 1, "command_id": "7f0c4b5e-1d2a-4e1b-9d6a-0a1b2c3d4e5f", "vin": VIN,
            "type": "activate", "status": "ack", "reason": None, "retry_after_s": None,
            "state": state(), "diagnostics": None, "at": format_ts(NOW - 1)}  # fmt: skip
    return {**base, **over}


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def reason_of(call: Any) -> str:
    with pytest.raises(PayloadRejected) as caught:
        call()
    return caught.value.reason


def test_a_valid_state_is_accepted_as_sent() -> None:
    """A well-formed state passes with its seq, and its time unchanged (in the past)."""
    accepted = intake.read_state(VIN, raw(state()), NOW)
    assert accepted.seq == 3
    assert accepted.at == pytest.approx(NOW - 60)
    assert accepted.body["active_features"] == ["climate_plus"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"installed_features": [f"f{i}" for i in range(2000)]}, "schema"),  # amplification
        ({"active_features": ["not_installed_one"]}, "schema"),  # active ⊄ installed
        ({"installed_features": ["../../etc/passwd"], "active_features": []}, "schema"),
        ({"installed_features": ["bad\nname"], "active_features": []}, "schema"),
        ({"installed_features": ["x" * 2000], "active_features": []}, "schema"),
        ({"seq": 10**30}, "schema"),
        ({"seq": -1}, "schema"),
        ({"model": "Tourer\n2026-01-01 level=INFO forged"}, "schema"),
        ({"vin": "CAATR1234SB000902"}, "wrong_vin"),
        ({"at": "2096-13-01T00:00:00Z"}, "schema"),
        ({"speed_kmh": 1e308}, "schema"),
    ],
)
def test_a_state_outside_the_contract_is_refused(change: dict[str, Any], reason: str) -> None:
    """Bounded and consistent, or refused whole with a reason from the fixed set."""
    assert reason_of(lambda: intake.read_state(VIN, raw(state(**change)), NOW)) == reason


def test_feature_bounds_are_the_contract() -> None:
    """MAX_FEATURES installed is fine; one more is refused."""
    names = [f"feature_{i}" for i in range(MAX_FEATURES)]
    intake.read_state(VIN, raw(state(installed_features=names, active_features=names)), NOW)
    more = [*names, "one_more"]
    payload = raw(state(installed_features=more, active_features=[]))
    assert reason_of(lambda: intake.read_state(VIN, payload, NOW)) == "schema"
    intake.read_state(VIN, raw(state(seq=MAX_SEQ)), NOW)


def test_vehicle_clocks_are_clamped_to_the_receive_time() -> None:
    """A presence or state dated 2096 counts as received now (it cannot outrank later
    messages for 70 years), and the stored body carries the clamped time."""
    presence = {"vin": VIN, "online": False, "at": "2096-01-01T00:00:00.000Z"}
    accepted = intake.read_presence(VIN, raw(presence), NOW)
    assert accepted.at == NOW
    assert parse_ts(accepted.body["at"]) == NOW
    future_state = intake.read_state(VIN, raw(state(at="2096-01-01T00:00:00.000Z")), NOW)
    assert future_state.at == NOW
    ancient = intake.read_state(VIN, raw(state(at="0001-01-01T00:00:00.000Z")), NOW)
    assert ancient.at == NOW - intake.MAX_PAST_S
    extreme = intake.read_presence(
        VIN, raw({**presence, "at": "9999-12-31T23:59:59.999-23:59"}), NOW
    )
    assert extreme.at == NOW


def test_responses_are_checked_against_topic_and_correlation() -> None:
    """Another vehicle's answer, a forged Correlation Data, an id with a newline: refused."""
    ok = response()
    cid = ok["command_id"].encode()
    assert intake.read_response(VIN, raw(ok), cid, NOW).command_id == ok["command_id"]
    assert reason_of(lambda: intake.read_response(VIN, raw(ok), b"other", NOW)) == "correlation"
    other = response(vin="CAATR1234SB000902")
    assert reason_of(lambda: intake.read_response(VIN, raw(other), None, NOW)) == "wrong_vin"
    forged = response(command_id="x\n2026-01-01 level=INFO event=activation.succeeded")
    assert reason_of(lambda: intake.read_response(VIN, raw(forged), None, NOW)) == "schema"
    nack = response(status="nack", reason="busy", retry_after_s=-5)
    assert reason_of(lambda: intake.read_response(VIN, raw(nack), None, NOW)) == "schema"
    with pytest.raises(PayloadRejected):
        intake.check_correlation(b"c" * 1000)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 60_000, "too_deep"),
        (b"{" * 5_000, "too_deep"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "too_deep"),
        (b'{"speed_kmh": NaN}', "non_finite"),
        (b'{"x": -Infinity}', "non_finite"),
        (b"\xff\xfe", "not_json"),
        (b'{"seq": ' + b"9" * 5000 + b"}", "not_json"),
        (b"[1, 2]", "not_object"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "too_large"),
    ],
    ids=lambda value: value[:12].decode(errors="replace") if isinstance(value, bytes) else None,
)
def test_payloads_json_cannot_carry_safely_are_refused(payload: bytes, reason: str) -> None:
    """Size, depth and non-finite numbers are refused before anything is built."""
    assert reason_of(lambda: loads_object(payload)) == reason


def test_a_number_too_large_for_a_float_is_refused_by_the_schema() -> None:
    """1e999 parses as infinity; every float of the schema is bounded, so it is refused
    there (and an unknown field carrying it is dropped, never stored)."""
    payload = raw(state()).replace(b'"speed_kmh": 0.0', b'"speed_kmh": 1e999')
    assert b"1e999" in payload
    assert reason_of(lambda: intake.read_state(VIN, payload, NOW)) == "schema"
    extra = raw(state()).replace(b'"seq": 3', b'"seq": 3, "x": 1e999')
    assert "x" not in intake.read_state(VIN, extra, NOW).body


def test_depth_ignores_brackets_inside_strings() -> None:
    """json_depth counts structure, not text (a state may mention '[' in a string)."""
    assert json_depth(b'{"a": "[[[[[[[[[[[[[[[[", "b": [1, {"c": "]]]}"}]}') == 3
    assert json_depth(b'{"a": "\\"[[[[[[[[[[[[[[["}') == 1
    assert json_depth(raw(response(diagnostics={"modem": {"rssi_dbm": 1}}))) <= MAX_JSON_DEPTH


def test_ten_thousand_junk_payloads_only_ever_raise_counted_refusals() -> None:
    """10,000 mutations of valid messages: each is accepted or refused with a reason of
    REASONS; nothing else escapes (RecursionError, OverflowError, 'year out of range')."""
    rng = random.Random(2026)
    seeds = [raw(state()), raw(response()), raw({"vin": VIN, "online": True,
                                                 "at": format_ts(NOW)})]  # fmt: skip
    readers = [
        lambda p: intake.read_state(VIN, p, NOW),
        lambda p: intake.read_response(VIN, p, None, NOW),
        lambda p: intake.read_presence(VIN, p, NOW),
    ]
    reasons: dict[str, int] = {}
    accepted = 0
    for n in range(10_000):
        which = n % 3
        payload = mutate(rng, seeds[which])
        try:
            readers[which](payload)
            accepted += 1
        except PayloadRejected as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
    assert set(reasons) <= set(intake.REASONS)
    assert sum(reasons.values()) + accepted == 10_000
    assert sum(reasons.values()) > 5_000  # most mutations break something


async def test_backlog_pauses_reading_over_its_byte_limit() -> None:
    """Over max_bytes the reader is paused; under half of it, resumed; at twice the
    limit a message is refused instead of queued."""
    calls: list[str] = []
    backlog = Backlog(100_000, lambda: calls.append("pause"), lambda: calls.append("resume"))
    item = Inbound("state", VIN, b"x" * 30_000, None, NOW)
    assert all(backlog.put(item) for _ in range(4))
    assert calls == ["pause"]
    assert backlog.put(item) and backlog.put(item)
    assert not backlog.put(item)  # would pass 2 x the limit
    for _ in range(4):
        await backlog.get()
    assert calls == ["pause"]  # two left: still over half the limit
    await backlog.get()
    assert calls == ["pause", "resume"]
    assert backlog.bytes == item.size


async def test_backlog_says_up_to_where_every_item_is_handled() -> None:
    """handled_below: the first number some consumer still holds, or the next to take;
    an item finished out of order does not move it past an older one still held."""
    backlog = Backlog(100_000, lambda: None, lambda: None)
    for n in range(3):
        backlog.put(Inbound("state", VIN, bytes([n]), None, NOW))
    mark = backlog.accepted
    assert (mark, backlog.handled_below()) == (3, 0)
    first, _ = await backlog.take()
    second, _ = await backlog.take()
    backlog.done(second)
    assert backlog.handled_below() == first == 0  # the older item is still held
    backlog.done(first)
    assert backlog.handled_below() == 2  # the third is not taken yet
    await backlog.get()
    assert backlog.handled_below() == mark
    backlog.put(Inbound("state", VIN, b"live", None, NOW))
    assert backlog.handled_below() == mark  # live traffic after the mark does not matter
    await asyncio.wait_for(backlog.wait_handled(mark), 1.0)


async def test_waiting_for_handled_items_wakes_on_done() -> None:
    """wait_handled returns when the last item before the mark is done, not before."""
    backlog = Backlog(100_000, lambda: None, lambda: None)
    backlog.put(Inbound("state", VIN, b"x", None, NOW))
    number, _ = await backlog.take()
    waiter = asyncio.create_task(backlog.wait_handled(1))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    backlog.done(number)
    await asyncio.wait_for(waiter, 1.0)
