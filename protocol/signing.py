"""Ed25519 keys and command signatures (docs/spec.md §1, §2.1).

The gateway holds the private key and signs every command; vehicles hold the public
key (PEM file or ``GET /v1/keys``) and verify.

Keys are read and written as PEM with ``cryptography``; the per-message sign and
verify use libsodium (PyNaCl), measured 2.2x faster to verify and 1.75x to sign on
this machine (docs/performance.md): the simulator verifies every command it gets.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.codec import signable_bytes
from protocol.errors import InvalidSignature, KeyFileError


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = nacl.signing.SigningKey(private_key.private_bytes_raw())
        self.public_key = private_key.public_key()

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``obj`` with ``sig`` set over its canonical bytes."""
        unsigned = {k: v for k, v in obj.items() if k != "sig"}
        signature = self._key.sign(signable_bytes(unsigned)).signature
        return {**unsigned, "sig": base64.b64encode(signature).decode("ascii")}


class Verifier:
    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = nacl.signing.VerifyKey(public_key.public_bytes_raw())

    def verify(self, obj: dict[str, Any]) -> None:
        """Raise InvalidSignature unless ``obj['sig']`` signs the rest of ``obj``."""
        sig = obj.get("sig")
        if not isinstance(sig, str):
            raise InvalidSignature("missing sig")
        try:
            raw = base64.b64decode(sig, validate=True)
            self._key.verify(signable_bytes(obj), raw)
        except (binascii.Error, ValueError, TypeError, nacl.exceptions.BadSignatureError) as exc:
            raise InvalidSignature("signature does not verify") from exc


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_keypair(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    """Generate a key pair; the private file is created 0600."""
    key = generate_private_key()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    public_path.write_bytes(public_pem(key.public_key()))
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:  # not PEM, a public key, or encrypted
        raise KeyFileError(str(path), "not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(str(path), "not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    return public_key_from_pem(_read(path), str(path))


def public_key_from_pem(pem: bytes, source: str = "<pem>") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyFileError(source, f"not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(source, "not an Ed25519 public key")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(str(path), exc.strerror or "cannot be read") from exc
