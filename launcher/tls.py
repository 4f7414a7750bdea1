"""The broker's TLS material for the vehicle listener (docker-compose's config job).

A private CA, made once, signs the broker's server certificate; vehicles trust the CA's
certificate (public), so the server certificate can be issued again (new host names,
near its end) without touching a vehicle. Keys are ECDSA P-256, written 0600.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=397)  # what browsers accept; vehicles alike
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA's key (config job only), its certificate and the server's pair live."""

    ca_key: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_certificates(files: TlsFiles, hostnames: list[str], now: datetime.datetime) -> bool:
    """Make the CA if missing, and the server certificate if missing, for other host
    names than ``hostnames``, or within RENEW_BEFORE of its end. True when issued."""
    if not files.ca_key.exists() or not files.ca_cert.exists():
        _write_ca(files, now)
    if files.server_cert.exists() and files.server_key.exists():
        current = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        if not needs_new_server_cert(current, hostnames, now):
            return False
    _write_server(files, hostnames, now)
    return True


def needs_new_server_cert(
    cert: x509.Certificate, hostnames: list[str], now: datetime.datetime
) -> bool:
    """Other host names than asked for, or its end within RENEW_BEFORE."""
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    current = sorted(names.get_values_for_type(x509.DNSName))
    return current != sorted(set(hostnames)) or cert.not_valid_after_utc - now < RENEW_BEFORE


def _write_ca(files: TlsFiles, now: datetime.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CaaS OTA broker CA")])
    cert = (
        _builder(name, name, key.public_key(), now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(files.ca_key, key)
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_server(files: TlsFiles, hostnames: list[str], now: datetime.datetime) -> None:
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), now, SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sorted(set(hostnames))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.server_key, key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + validity)
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
