"""C2PA content credentials: the development CA, signing, reading and tampering."""

from __future__ import annotations

import io
import json
import os
import random
import stat
import struct
import wave
import zlib
from pathlib import Path

import pytest

pytest.importorskip("c2pa")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from aiobligations import __version__
from aiobligations.demo.models import ToyImageModel
from aiobligations.errors import ConfigurationError, LabelError
from aiobligations.labels.c2pa import (
    AIGC_ASSERTION_LABEL,
    AIGC_FIELDS,
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    C2PASigner,
    read,
    sign,
)
from aiobligations.labels.certs import DevCertificates, generate_dev_ca

AIGC = {
    "Label": "1",
    "ContentProducer": "001191440300708461136T1XGW3",
    "ProduceID": "img-0001",
}


def _segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


# A valid 8x8 grey baseline JPEG: one-code Huffman tables, one block whose DC and AC are both "0".
TINY_JPEG = (
    b"\xff\xd8"
    + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    + _segment(0xDB, b"\x00" + b"\x01" * 64)
    + _segment(0xC0, b"\x08" + struct.pack(">HH", 8, 8) + b"\x01" + b"\x01\x11\x00")
    + _segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")
    + _segment(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00")
    + _segment(0xDA, b"\x01" + b"\x01\x00" + b"\x00\x3f\x00")
    + b"\x3f"
    + b"\xff\xd9"
)


@pytest.fixture(name="certs", scope="module")
def _certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return generate_dev_ca(tmp_path_factory.mktemp("ca"), organisation="Example Co")


@pytest.fixture(name="anchors", scope="module")
def _anchors(certs: DevCertificates) -> bytes:
    return certs.ca_cert.read_bytes()


@pytest.fixture(name="signer", scope="module")
def _signer(certs: DevCertificates) -> C2PASigner:
    return C2PASigner.from_files(certs.chain, certs.signing_key)


@pytest.fixture(name="png", scope="module")
def _png() -> bytes:
    return ToyImageModel().generate("x")


def _wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 32)
    return buf.getvalue()


def _flip_png_pixels(data: bytes) -> bytes:
    """Flip one byte inside the first IDAT chunk's data (and fix its CRC, as an editor would)."""
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            body = bytearray(data[pos + 8 : pos + 8 + length])
            body[length // 2] ^= 0xFF
            crc = struct.pack(">I", zlib.crc32(kind + bytes(body)))
            end = pos + 12 + length
            return data[: pos + 8] + bytes(body) + crc + data[end:]
        pos += 12 + length
    raise AssertionError("no IDAT chunk")


class TestDevCA:
    def test_files_and_modes(self, certs: DevCertificates) -> None:
        """All five files exist and both private keys are 0600."""
        for path in vars(certs).values():
            assert path.is_file()
        for key in (certs.ca_key, certs.signing_key):
            assert 0o600 == stat.S_IMODE(os.stat(key).st_mode)

    def test_certificate_profile(self, certs: DevCertificates) -> None:
        """The CA is a CA for certificate signing; the leaf is an emailProtection end entity."""
        ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
        leaf = x509.load_pem_x509_certificate(certs.signing_cert.read_bytes())
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
        assert "secp256r1" == ca.public_key().curve.name
        assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650

        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert [ExtendedKeyUsageOID.EMAIL_PROTECTION] == list(eku)
        leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        assert leaf.issuer == ca.subject != leaf.subject
        assert 360 <= (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 370

    def test_chain_validates_to_the_ca(self, certs: DevCertificates) -> None:
        """The chain file is leaf then CA, and the leaf's signature verifies with the CA key."""
        chain = x509.load_pem_x509_certificates(certs.chain.read_bytes())
        ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
        leaf = x509.load_pem_x509_certificate(certs.signing_cert.read_bytes())
        assert [leaf, ca] == chain
        leaf.verify_directly_issued_by(ca)
        ca.verify_directly_issued_by(ca)

    def test_refuses_to_overwrite(self, certs: DevCertificates) -> None:
        """An existing CA is kept unless force=True."""
        folder = certs.ca_cert.parent
        with pytest.raises(ConfigurationError, match="force=True"):
            generate_dev_ca(folder, organisation="Other")

    def test_force_overwrites(self, tmp_path: Path) -> None:
        """force=True replaces the files with new keys."""
        first = generate_dev_ca(tmp_path, organisation="A")
        old = first.ca_key.read_bytes()
        again = generate_dev_ca(tmp_path, organisation="A", force=True)
        assert old != again.ca_key.read_bytes()


class TestSignAndRead:
    def test_png_trusted_with_anchor(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """A signed PNG reads Trusted against the dev CA, with the AI actions and AIGC fields."""
        signed = sign(png, "image/png", signer=signer, aigc=AIGC, title="x.png")
        report = read(signed, "image/png", trust_anchors=anchors)
        assert report is not None
        assert "Trusted" == report.validation_state
        assert report.trusted and report.ai_generated
        assert [("c2pa.created", TRAINED_ALGORITHMIC_MEDIA)] == [
            (a["action"], a["digitalSourceType"]) for a in report.actions
        ]
        assert {**dict.fromkeys(AIGC_FIELDS, ""), **AIGC} == dict(report.aigc or {})
        assert "Example Co C2PA Signer" == report.signer
        assert "Example Co" == report.issuer
        assert f"aiobligations/{__version__}" == report.claim_generator
        active = report.manifest_store["manifests"][report.manifest_label]
        assert "x.png" == active["title"]
        assert AIGC_ASSERTION_LABEL in {a["label"] for a in active["assertions"]}

    def test_png_valid_without_anchor(self, png: bytes, signer: C2PASigner) -> None:
        """Without the CA as anchor the credential is intact but untrusted."""
        report = read(sign(png, "image/png", signer=signer), "image/png")
        assert report is not None
        assert "Valid" == report.validation_state
        assert "signingCredential.untrusted" in report.status_codes
        assert report.aigc is None

    def test_wav(self, signer: C2PASigner, anchors: bytes) -> None:
        """WAV is signed in place and reads Trusted."""
        audio = _wav()
        signed = sign(audio, "audio/wav", signer=signer, aigc=AIGC)
        report = read(signed, "audio/wav", trust_anchors=anchors)
        assert report is not None and "Trusted" == report.validation_state
        with wave.open(io.BytesIO(signed)) as w:
            assert bytes(range(256)) * 32 == w.readframes(w.getnframes())

    def test_jpeg(self, signer: C2PASigner, anchors: bytes) -> None:
        """A minimal JPEG is signed and reads Trusted; extension media types are accepted."""
        signed = sign(TINY_JPEG, "jpg", signer=signer)
        report = read(signed, "image/jpeg", trust_anchors=anchors)
        assert report is not None and "Trusted" == report.validation_state

    def test_composite(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """composite=True declares compositeWithTrainedAlgorithmicMedia and a c2pa.edited action."""
        report = read(sign(png, "image/png", signer=signer, composite=True), "png", trust_anchors=anchors)
        assert report is not None and "Trusted" == report.validation_state
        assert ["c2pa.created", "c2pa.edited"] == [a["action"] for a in report.actions]
        assert {COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA} == set(report.digital_source_types)
        assert report.ai_generated

    def test_extra_assertions(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """Extra assertions are signed as given."""
        extra = {"label": "com.example.test", "data": {"n": 1}}
        report = read(
            sign(png, "image/png", signer=signer, extra_assertions=[extra]), "png", trust_anchors=anchors
        )
        assert report is not None and "Trusted" == report.validation_state
        active = report.manifest_store["manifests"][report.manifest_label]
        assert extra in active["assertions"]

    def test_resign_replaces(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """Signing an already signed file still gives a Trusted file."""
        twice = sign(sign(png, "image/png", signer=signer), "image/png", signer=signer)
        report = read(twice, "image/png", trust_anchors=anchors)
        assert report is not None and "Trusted" == report.validation_state

    def test_tampered_png_is_invalid(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """Changing one pixel byte after signing breaks the hard binding."""
        signed = sign(png, "image/png", signer=signer)
        report = read(_flip_png_pixels(signed), "image/png", trust_anchors=anchors)
        assert report is not None
        assert "Invalid" == report.validation_state
        assert "assertion.dataHash.mismatch" in report.status_codes
        assert not report.trusted

    def test_tampered_wav_is_invalid(self, signer: C2PASigner, anchors: bytes) -> None:
        """Changing one sample byte after signing breaks the hard binding."""
        signed = bytearray(sign(_wav(), "audio/wav", signer=signer))
        signed[signed.index(bytes(range(256))) + 100] ^= 0xFF
        report = read(bytes(signed), "audio/wav", trust_anchors=anchors)
        assert report is not None and "Invalid" == report.validation_state

    def test_as_dict_is_json(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """as_dict() round-trips through JSON and names what was signed."""
        signed = sign(png, "image/png", signer=signer, aigc=AIGC)
        report = read(signed, "image/png", trust_anchors=anchors)
        assert report is not None
        record = json.loads(json.dumps(report.as_dict(include_store=True)))
        assert "c2pa" == record["kind"] and "Trusted" == record["validation_state"]
        assert "1" == record["aigc"]["Label"]
        assert TRAINED_ALGORITHMIC_MEDIA == record["actions"][0]["digitalSourceType"]
        assert 64 == len(record["sha256"]) and "manifest_store" in record
        assert "manifest_store" not in report.as_dict()

    def test_wrapped_aigc(self, png: bytes, signer: C2PASigner) -> None:
        """The Annex E wrapped form {"AIGC": {...}} is accepted."""
        report = read(sign(png, "image/png", signer=signer, aigc={"AIGC": AIGC}), "png")
        assert report is not None and "1" == (report.aigc or {})["Label"]


class TestSigners:
    def test_callback_signer_trusted(self, certs: DevCertificates, png: bytes, anchors: bytes) -> None:
        """A callback (KMS/HSM-style) ECDSA signer reaches Trusted."""
        key = serialization.load_pem_private_key(certs.signing_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        calls = []

        def kms_sign(data: bytes) -> bytes:
            calls.append(len(data))
            return key.sign(data, ec.ECDSA(hashes.SHA256()))

        signer = C2PASigner.from_callback(kms_sign, certs.chain.read_bytes())
        for _ in range(2):  # The signer is reusable.
            report = read(sign(png, "image/png", signer=signer), "image/png", trust_anchors=anchors)
            assert report is not None and "Trusted" == report.validation_state
        assert 2 == len(calls)

    def test_failing_callback(self, certs: DevCertificates, png: bytes) -> None:
        """A callback that raises makes sign raise LabelError."""

        def broken(data: bytes) -> bytes:
            raise RuntimeError("HSM offline")

        signer = C2PASigner.from_callback(broken, certs.chain.read_bytes())
        with pytest.raises(LabelError, match="signing"):
            sign(png, "image/png", signer=signer)

    def test_from_env_paths_and_text(self, certs: DevCertificates, png: bytes, anchors: bytes) -> None:
        """from_env reads PEM text or file paths."""
        by_path = {"AIOBLIGATIONS_C2PA_CHAIN": str(certs.chain), "AIOBLIGATIONS_C2PA_KEY": str(certs.signing_key)}
        by_text = {
            "X_CHAIN": certs.chain.read_text(),
            "X_KEY": certs.signing_key.read_text(),
            "X_ALG": "ES256",
        }
        for signer in (C2PASigner.from_env(environ=by_path), C2PASigner.from_env("X_", environ=by_text)):
            report = read(sign(png, "image/png", signer=signer), "image/png", trust_anchors=anchors)
            assert report is not None and "Trusted" == report.validation_state

    def test_from_env_real_environment(
        self, certs: DevCertificates, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """from_env defaults to os.environ and names a missing variable."""
        monkeypatch.delenv("AIOBLIGATIONS_C2PA_CHAIN", raising=False)
        with pytest.raises(ConfigurationError, match="AIOBLIGATIONS_C2PA_CHAIN"):
            C2PASigner.from_env()
        monkeypatch.setenv("AIOBLIGATIONS_C2PA_CHAIN", str(certs.chain))
        monkeypatch.setenv("AIOBLIGATIONS_C2PA_KEY", str(certs.signing_key))
        assert "es256" == C2PASigner.from_env().alg

    def test_bad_configuration(self, certs: DevCertificates, tmp_path: Path) -> None:
        """Bad files and values raise ConfigurationError at construction."""
        with pytest.raises(ConfigurationError, match="missing.pem"):
            C2PASigner.from_files(tmp_path / "missing.pem", certs.signing_key)
        with pytest.raises(ConfigurationError, match="algorithm"):
            C2PASigner.from_files(certs.chain, certs.signing_key, alg="md5")
        with pytest.raises(ConfigurationError, match="PEM"):
            C2PASigner.from_files(certs.signing_key, certs.signing_key)
        with pytest.raises(ConfigurationError, match="TSA"):
            C2PASigner.from_files(certs.chain, certs.signing_key, tsa_url="ftp://x")

    def test_self_signed_certificate_is_rejected(self, certs: DevCertificates, png: bytes) -> None:
        """c2pa refuses a CA certificate as the signing certificate: LabelError, one line."""
        signer = C2PASigner.from_files(certs.ca_cert, certs.ca_key)
        with pytest.raises(LabelError) as info:
            sign(png, "image/png", signer=signer)
        assert "\n" not in str(info.value)


class TestBadInput:
    def test_unsigned_returns_none(self, png: bytes) -> None:
        """A file without a manifest reads as None."""
        assert read(png, "image/png") is None
        assert read(_wav(), "audio/wav") is None
        assert read(TINY_JPEG, "image/jpeg") is None

    @pytest.mark.parametrize("data", [b"", b"garbage", b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
    def test_garbage_raises(self, data: bytes) -> None:
        """Bytes that are not a PNG raise LabelError."""
        with pytest.raises(LabelError):
            read(data, "image/png")

    def test_truncated_signed_files(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """Every truncation of a signed PNG gives LabelError, None or an Invalid report."""
        signed = sign(png, "image/png", signer=signer)
        for cut in range(0, len(signed), max(1, len(signed) // 60)):
            try:
                report = read(signed[:cut], "image/png", trust_anchors=anchors)
            except LabelError:
                continue
            assert report is None or "Invalid" == report.validation_state, cut

    def test_unsupported_media_type(self, png: bytes, signer: C2PASigner) -> None:
        """Unsupported media types raise LabelError on sign and read."""
        with pytest.raises(LabelError, match="text/plain"):
            sign(b"hello", "text/plain", signer=signer)
        with pytest.raises(LabelError, match="text/plain"):
            read(b"hello", "text/plain")

    def test_garbage_sign_raises(self, signer: C2PASigner) -> None:
        """Signing bytes that are not the declared format raises LabelError."""
        with pytest.raises(LabelError):
            sign(b"not a png", "image/png", signer=signer)

    def test_bad_aigc(self, png: bytes, signer: C2PASigner) -> None:
        """Unknown Annex E fields or non-string values are configuration errors."""
        with pytest.raises(ConfigurationError, match="Producer"):
            sign(png, "image/png", signer=signer, aigc={"Producer": "x"})
        with pytest.raises(ConfigurationError, match="Label"):
            sign(png, "image/png", signer=signer, aigc={"Label": 1})

    def test_bit_flips_in_the_manifest(self, png: bytes, signer: C2PASigner, anchors: bytes) -> None:
        """Random bit flips around the manifest give LabelError or a report, never a crash."""
        rnd = random.Random(7)
        signed = sign(png, "image/png", signer=signer, aigc=AIGC)
        start = signed.index(b"caBX") - 8
        states = set()
        for _ in range(300):
            damaged = bytearray(signed)
            damaged[rnd.randrange(start, start + 3400)] ^= 1 << rnd.randrange(8)
            try:
                report = read(bytes(damaged), "image/png", trust_anchors=anchors)
            except LabelError:
                states.add("LabelError")
                continue
            states.add(report.validation_state if report else None)
        assert states <= {"LabelError", "Invalid", "Trusted", "Valid", None}
        assert {"LabelError", "Invalid"} <= states
