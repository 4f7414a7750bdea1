"""protocol/: canonical JSON, signatures, timestamps, topics, command properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.codec import canonical_bytes, loads_object, signable_bytes
from protocol.commands import build_command, command_properties, message_expiry_s
from protocol.errors import InvalidSignature, KeyFileError
from protocol.models import Command, CommandType
from protocol.signing import (
    Signer,
    Verifier,
    load_private_key,
    load_public_key,
    public_key_from_pem,
    write_keypair,
)
from protocol.timeutil import format_ts, parse_ts
from protocol.topics import Topics


def test_canonical_bytes_follow_spec_formula() -> None:
    """Sorted keys, no spaces, UTF-8 kept: exactly json.dumps(..., ensure_ascii=False)."""
    obj = {"b": 1, "a": "Müller ✓", "c": None, "n": [1, 2]}
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(obj) == expected.encode()
    assert signable_bytes({**obj, "sig": "x"}) == expected.encode()


def test_signature_made_with_cryptography_verifies_and_tampering_fails() -> None:
    """A signature made by any Ed25519 implementation over the canonical bytes verifies."""
    key = Ed25519PrivateKey.generate()
    obj = {"v": 1, "command_id": "c", "vin": "V"}
    sig = base64.b64encode(key.sign(canonical_bytes(obj))).decode()
    verifier = Verifier(key.public_key())
    verifier.verify({**obj, "sig": sig})
    with pytest.raises(InvalidSignature):
        verifier.verify({**obj, "vin": "W", "sig": sig})
    with pytest.raises(InvalidSignature):
        verifier.verify({**obj, "sig": "not base64!"})
    with pytest.raises(InvalidSignature):
        verifier.verify(obj)


def test_signer_output_verifies_with_cryptography() -> None:
    """Our signer's signatures verify with the reference library (same bytes signed)."""
    key = Ed25519PrivateKey.generate()
    signed = Signer(key).sign({"z": 1, "a": "b"})
    key.public_key().verify(base64.b64decode(signed["sig"]), signable_bytes(signed))


def test_keypair_files_round_trip(tmp_path: Path) -> None:
    """PEM files written by write_keypair load back; the private one is 0600."""
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    key = write_keypair(priv, pub)
    assert priv.stat().st_mode & 0o777 == 0o600
    signed = Signer(load_private_key(priv)).sign({"a": 1})
    Verifier(load_public_key(pub)).verify(signed)
    assert Signer(key).sign({"a": 1}) == signed  # Ed25519 is deterministic
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError):
        public_key_from_pem(b"-----BEGIN NOTHING-----")


def test_timestamps_are_rfc3339_utc_millis() -> None:
    """format_ts gives Z-suffixed milliseconds; parse_ts inverts it; junk is refused."""
    assert format_ts(1_795_000_000.1234) == "2026-11-18T11:06:40.123Z"
    assert parse_ts("2026-11-18T11:06:40.123Z") == pytest.approx(1_795_000_000.123)
    for bad in ("yesterday", "2026-11-18", "2026-11-18T07:06:40"):
        with pytest.raises(ValueError, match=r"timestamp|RFC"):
            parse_ts(bad)


def test_topics_and_shared_subscriptions() -> None:
    """Topic templates of docs/spec.md §2 and their parse."""
    t = Topics()
    assert t.commands("V") == "caas/v1/vehicles/V/commands"
    assert t.shared("responses", "gw0123") == "$share/gw0123/caas/v1/vehicles/+/responses"
    assert t.parse("caas/v1/vehicles/V/state") == ("V", "state")
    assert t.parse("other/v1/vehicles/V/state") is None
    assert t.parse("caas/v1/vehicles/V/state/extra") is None


def test_built_command_is_valid_signed_and_has_mqtt5_properties() -> None:
    """build_command: fresh id, validates, verifies; properties per docs/spec.md §2.1."""
    key = Ed25519PrivateKey.generate()
    cmd = build_command(
        Signer(key),
        vin="V" * 17,
        type=CommandType.ACTIVATE,
        now=1000.0,
        ttl_s=30.4,
        feature="climate_plus",
        activation_id="a",
        attempt=2,
    )
    Command.model_validate(loads_object(cmd.payload))
    Verifier(key.public_key()).verify(loads_object(cmd.payload))
    props = command_properties(Topics(), cmd, now=1000.0)
    assert props.ResponseTopic == Topics().responses("V" * 17)
    assert props.CorrelationData == cmd.command_id.encode()
    assert props.MessageExpiryInterval == 30
    assert message_expiry_s(1000.2, now=1000.0) == 1  # at least one second
    other = build_command(Signer(key), vin="V" * 17, type=CommandType.STATUS, now=1000.0, ttl_s=5)
    assert other.command_id != cmd.command_id


def test_loads_object_refuses_non_objects() -> None:
    """A JSON array or scalar is not a message."""
    for payload in (b"[1]", b"3", b'"x"'):
        with pytest.raises(ValueError, match="object"):
            loads_object(payload)
