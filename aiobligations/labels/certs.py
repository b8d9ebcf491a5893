"""A local development CA and a C2PA signing certificate issued by it, for tests and demos.

C2PA signers reject self-signed certificates, so even a throwaway setup needs two certificates: a
root CA and an end-entity ("leaf") certificate that meets the C2PA certificate profile (not a CA,
KeyUsage digitalSignature, an EKU such as emailProtection, an Authority Key Identifier). Readers
only report ``Trusted`` when the root is passed as a trust anchor; public validators will show such
files as signed by an unknown signer. Use a certificate from a CA on the C2PA trust list in
production.
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

from aiobligations.errors import ConfigurationError

__all__ = ["DevCertificates", "generate_dev_ca"]

CA_VALIDITY = datetime.timedelta(days=3652)
"""How long the development root CA is valid: about ten years."""

LEAF_VALIDITY = datetime.timedelta(days=365)
"""How long the signing certificate is valid: one year."""

_FILE_NAMES = {
    "ca_cert": "ca.pem",
    "ca_key": "ca.key",
    "signing_cert": "signer.pem",
    "signing_key": "signer.key",
    "chain": "chain.pem",
}


@dataclass(frozen=True)
class DevCertificates:
    """Where :func:`generate_dev_ca` wrote its files (all PEM).

    Attributes:
        ca_cert: The root CA certificate; give it to readers as the trust anchor.
        ca_key: The root CA's private key (PKCS#8, mode 0600).
        signing_cert: The leaf signing certificate alone.
        signing_key: The leaf's private key (PKCS#8, mode 0600); the signer's ``key_pem``.
        chain: Leaf first, then the CA: the signer's ``chain_pem``.
    """

    ca_cert: Path
    ca_key: Path
    signing_cert: Path
    signing_key: Path
    chain: Path


def generate_dev_ca(
    folder: Path | str,
    *,
    organisation: str,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> DevCertificates:
    """Create a development root CA and a C2PA signing certificate in ``folder``.

    Both keys are EC P-256; the leaf can sign with ``es256``. The files are ``ca.pem``, ``ca.key``,
    ``signer.pem``, ``signer.key`` and ``chain.pem``; private keys get mode 0600.

    Args:
        folder: Where to write; created if missing.
        organisation: The ``O=`` of both certificates (the CA is "<organisation> Dev Root CA", the
            leaf "<organisation> C2PA Signer").
        force: Overwrite existing files. Without it, any existing file is an error.
        now: The start of validity (for tests); defaults to the current time.

    Returns:
        The paths written.

    Raises:
        ConfigurationError: ``organisation`` is empty, or a file already exists and ``force``
            is false.
    """
    if not organisation or not organisation.strip():
        raise ConfigurationError("organisation must be a non-empty string.")
    folder = Path(folder)
    paths = DevCertificates(**{field: folder / name for field, name in _FILE_NAMES.items()})
    existing = [p.name for p in vars(paths).values() if p.exists()]
    if existing and not force:
        raise ConfigurationError(
            f"{folder}: {', '.join(existing)} already exist; pass force=True to overwrite them."
        )
    folder.mkdir(parents=True, exist_ok=True)

    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(organisation, f"{organisation} Dev Root CA")
    leaf_name = _name(organisation, f"{organisation} C2PA Signer")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(leaf_name)
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    leaf_pem = leaf_cert.public_bytes(serialization.Encoding.PEM)
    _write(paths.ca_key, _key_pem(ca_key), private=True)
    _write(paths.signing_key, _key_pem(leaf_key), private=True)
    _write(paths.ca_cert, ca_pem)
    _write(paths.signing_cert, leaf_pem)
    # c2pa-rs wants the end-entity certificate first, then any intermediates. Including the root
    # is harmless and lets a reader that has the root as an anchor build the path either way.
    _write(paths.chain, leaf_pem + ca_pem)
    return paths


def _name(organisation: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
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


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    # Private keys are created 0600 from the start, never chmod-ed after being readable.
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if private:
        os.chmod(path, 0o600)
