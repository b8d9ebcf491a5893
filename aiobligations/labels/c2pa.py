"""C2PA content credentials: sign generated media as AI-made, and read credentials back.

A signed manifest says, in ``c2pa.actions``, that the file was ``c2pa.created`` with IPTC digital
source type ``trainedAlgorithmicMedia``; when GB 45438 fields are given they ride along in the
custom assertion :data:`AIGC_ASSERTION_LABEL`. Signing and reading never fetch anything from the
network (no remote manifests, no OCSP); a TSA URL is the only network access, and only when set.

Needs the ``media`` extra (``pip install 'aiobligations[media]'``, which installs c2pa-python).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiobligations.errors import ConfigurationError, LabelError

from .annex_e import FIELDS

__all__ = [
    "AIGC_ASSERTION_LABEL",
    "AIGC_FIELDS",
    "COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA",
    "TRAINED_ALGORITHMIC_MEDIA",
    "C2PAReport",
    "C2PASigner",
    "read",
    "sign",
]

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type for media made wholly by a trained model."""

COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
"""IPTC digital source type for media that mixes generated and other elements (inpainting)."""

AIGC_ASSERTION_LABEL = "cn.gb45438.aigc"
"""Label of the custom assertion that carries the GB 45438-2025 Annex E fields.

Its data is ``{"AIGC": {"Label": ..., "ContentProducer": ..., ...}}``, the Annex E value as an
object with all seven keys (``""`` when not given). CBOR maps have no order, so readers should not
rely on Annex E's element order here; the file-metadata label keeps that. The label follows the
C2PA reverse-domain convention for custom assertions; it is this package's choice, not a label
registered by TC260 or C2PA.
"""

AIGC_FIELDS = FIELDS
"""The seven GB 45438-2025 Annex E elements, in the standard's order (see :mod:`.annex_e`)."""

ENV_PREFIX = "AIOBLIGATIONS_C2PA_"
"""Default prefix of the variables :meth:`C2PASigner.from_env` reads (``CHAIN``, ``KEY``, ``ALG``,
``TSA_URL``)."""

_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LabelError(
            "C2PA needs c2pa-python: pip install 'aiobligations[media]'"
        ) from exc
    return c2pa


class C2PASigner:
    """The signing key and certificate chain for C2PA manifests.

    Build one with :meth:`from_files`, :meth:`from_env` or :meth:`from_callback` (a KMS or HSM).
    It is reusable and thread-safe: every :func:`sign` call gets a fresh native signer, because
    c2pa-python signers and builders are resources that a sign may consume.

    The chain is PEM, the end-entity certificate first, then intermediates. The certificate must
    meet the C2PA certificate profile (not self-signed, not a CA, KeyUsage digitalSignature, an EKU
    such as emailProtection or documentSigning); see :func:`aiobligations.labels.certs.generate_dev_ca`
    for a development one.
    """

    __slots__ = ("_alg", "_callback", "_chain_pem", "_key_pem", "_tsa_url")

    def __init__(
        self,
        *,
        chain_pem: bytes,
        key_pem: bytes | None = None,
        callback: Callable[[bytes], bytes] | None = None,
        alg: str = "es256",
        tsa_url: str | None = None,
    ) -> None:
        """Prefer the ``from_*`` constructors; exactly one of ``key_pem`` and ``callback``."""
        if (key_pem is None) == (callback is None):
            raise ConfigurationError("C2PASigner needs exactly one of key_pem and callback.")
        alg = alg.lower() if isinstance(alg, str) else alg
        if alg not in _ALGORITHMS:
            raise ConfigurationError(
                f"C2PA signing algorithm {alg!r} is not one of {', '.join(_ALGORITHMS)}."
            )
        if tsa_url is not None and not tsa_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"TSA URL {tsa_url!r} must start with http:// or https://.")
        if not isinstance(chain_pem, bytes) or b"-----BEGIN CERTIFICATE-----" not in chain_pem:
            raise ConfigurationError("C2PA certificate chain must be PEM certificates (bytes).")
        if key_pem is not None:
            if not isinstance(key_pem, bytes) or b"PRIVATE KEY-----" not in key_pem:
                raise ConfigurationError("C2PA signing key must be a PEM private key (bytes).")
            # c2pa-rs wants PKCS#8; convert the other PEM forms cryptography can read.
            key_pem = _pkcs8(key_pem)
        self._chain_pem = chain_pem
        self._key_pem = key_pem
        self._callback = callback
        self._alg = alg
        self._tsa_url = tsa_url

    @classmethod
    def from_files(
        cls,
        chain_pem: Path | str,
        key_pem: Path | str,
        *,
        alg: str = "es256",
        tsa_url: str | None = None,
    ) -> C2PASigner:
        """A signer from a chain PEM file (leaf first) and a private key PEM file.

        Args:
            chain_pem: The certificate chain file.
            key_pem: The private key file (PKCS#8, or a traditional EC/RSA PEM).
            alg: One of ``es256``, ``es384``, ``es512``, ``ps256``, ``ps384``, ``ps512``,
                ``ed25519``; it must match the key.
            tsa_url: An RFC 3161 time-stamp authority, contacted on every sign; ``None`` for none.

        Raises:
            ConfigurationError: A file is missing or unreadable, or a value is invalid.
        """
        return cls(
            chain_pem=_read_file(chain_pem, "certificate chain"),
            key_pem=_read_file(key_pem, "signing key"),
            alg=alg,
            tsa_url=tsa_url,
        )

    @classmethod
    def from_env(
        cls, prefix: str = ENV_PREFIX, *, environ: Mapping[str, str] | None = None
    ) -> C2PASigner:
        """A signer from environment variables.

        ``<prefix>CHAIN`` and ``<prefix>KEY`` each hold either PEM text or a path to a PEM file;
        ``<prefix>ALG`` (default ``es256``) and ``<prefix>TSA_URL`` (default none) are optional.

        Args:
            prefix: The variable-name prefix.
            environ: Where to look instead of :data:`os.environ` (for tests).

        Raises:
            ConfigurationError: A variable is missing or its value is not usable.
        """
        env = os.environ if environ is None else environ
        values = {}
        for name, what in (("CHAIN", "certificate chain"), ("KEY", "signing key")):
            value = env.get(prefix + name, "").strip()
            if not value:
                raise ConfigurationError(f"{prefix}{name} is not set; it should hold the {what}.")
            values[name] = (
                value.encode("ascii", "replace") + b"\n"
                if value.startswith("-----BEGIN")
                else _read_file(value, f"{what} ({prefix}{name})")
            )
        return cls(
            chain_pem=values["CHAIN"],
            key_pem=values["KEY"],
            alg=env.get(prefix + "ALG") or "es256",
            tsa_url=env.get(prefix + "TSA_URL") or None,
        )

    @classmethod
    def from_callback(
        cls,
        sign: Callable[[bytes], bytes],
        chain_pem: bytes,
        *,
        alg: str = "es256",
        tsa_url: str | None = None,
    ) -> C2PASigner:
        """A signer whose private key stays elsewhere (a KMS, an HSM).

        Args:
            sign: Given the bytes to sign, returns the signature: DER or raw ``r||s`` for ECDSA
                (as ``cryptography``'s ``sign(data, ECDSA(SHA256()))`` returns), the plain
                signature for RSA-PSS and Ed25519. It is called once per :func:`sign`, from the
                calling thread; an exception makes that sign fail with :class:`LabelError`.
            chain_pem: The certificate chain PEM, leaf first.
            alg: The algorithm the callback uses (see :meth:`from_files`).
            tsa_url: As in :meth:`from_files`.

        Note:
            c2pa reserves more room for a callback signature (about 11 KB against 2 KB), so the
            signed file grows by about 12 KB.
        """
        if not callable(sign):
            raise ConfigurationError("from_callback needs a callable that signs bytes.")
        return cls(chain_pem=chain_pem, callback=sign, alg=alg, tsa_url=tsa_url)

    @property
    def alg(self) -> str:
        """The signing algorithm, lower-case (``es256``)."""
        return self._alg

    @property
    def chain_pem(self) -> bytes:
        """The certificate chain, PEM, leaf first."""
        return self._chain_pem

    def __repr__(self) -> str:
        kind = "callback" if self._callback is not None else "key"
        return f"C2PASigner(alg={self._alg!r}, {kind}, tsa_url={self._tsa_url!r})"

    def _native(self) -> Any:
        """A new c2pa.Signer; the caller closes it."""
        c2pa = _c2pa()
        alg = getattr(c2pa.C2paSigningAlg, self._alg.upper())
        try:
            if self._callback is not None:
                return c2pa.Signer.from_callback(
                    self._callback, alg, self._chain_pem.decode("ascii"), self._tsa_url
                )
            info = c2pa.C2paSignerInfo(
                alg,
                self._chain_pem,
                self._key_pem,
                self._tsa_url.encode() if self._tsa_url else None,
            )
            return c2pa.Signer.from_info(info)
        except (c2pa.C2paError, UnicodeError, ValueError) as exc:
            raise LabelError(f"C2PA signer could not be created: {_one_line(exc)}") from exc


def sign(
    data: bytes,
    media_type: str,
    *,
    signer: C2PASigner,
    aigc: Mapping[str, Any] | None = None,
    composite: bool = False,
    title: str | None = None,
    thumbnails: bool = False,
    extra_assertions: Iterable[Mapping[str, Any]] = (),
    watermark: Mapping[str, Any] | None = None,
) -> bytes:
    """Embed a signed C2PA manifest that marks ``data`` as AI-generated; return the new bytes.

    The manifest has ``claim_generator_info`` (aiobligations and its version), a ``c2pa.actions``
    assertion with ``c2pa.created`` and digital source type :data:`TRAINED_ALGORITHMIC_MEDIA`
    (with ``composite``: :data:`COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA`, and a ``c2pa.edited``
    action after ``c2pa.created``, since c2pa requires the first action to be a creation),
    and, when ``aigc`` is given, the :data:`AIGC_ASSERTION_LABEL` assertion. The media is not
    re-encoded. Any manifest already in ``data`` is replaced, not kept as an ingredient.

    A PDF is signed as an incremental update, so ``data`` is a byte prefix of the result (see
    :func:`aiobligations.labels.formats.pdf.embed_c2pa`); other formats are rewritten by c2pa.

    .. versionchanged:: 0.2.0
       PDFs keep their original bytes as a prefix.

    Args:
        data: The file's bytes.
        media_type: Its MIME type (``image/png``, ``image/jpeg``, ``audio/wav``, ``video/mp4``…)
            or extension (``png``).
        signer: Key and certificate chain.
        aigc: GB 45438 Annex E fields (``Label``, ``ContentProducer``…), bare or wrapped as
            ``{"AIGC": {...}}``; missing fields become ``""``.
        composite: The content mixes generated and non-generated parts.
        title: The manifest's ``title`` (a file name, usually).
        thumbnails: Embed a thumbnail of the content in the manifest (slower, larger files).
        extra_assertions: More assertions, each ``{"label": ..., "data": ...}``, appended as is.
        watermark: The ``c2pa.soft-binding`` assertion of an invisible watermark embedded in the
            content (see :func:`aiobligations.labels.watermark.soft_binding_assertion`); a
            ``c2pa.watermarked.bound`` action is recorded with it.

    Raises:
        LabelError: The media type is unsupported, the file cannot be parsed, or signing fails
            (a certificate c2pa rejects, a callback that raised, an unreachable TSA).
        ConfigurationError: ``aigc`` or ``extra_assertions`` is malformed.
    """
    c2pa = _c2pa()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LabelError("data must be bytes")
    if not isinstance(signer, C2PASigner):
        raise ConfigurationError("signer must be a C2PASigner.")
    media_type = _check_media_type(media_type, c2pa.Builder.get_supported_mime_types())
    manifest = _manifest(aigc=aigc, composite=composite, title=title, extra=extra_assertions, watermark=watermark)
    context = _context(c2pa, thumbnails=thumbnails)
    native = signer._native()
    out = io.BytesIO()
    try:
        with c2pa.Builder(manifest, context) as builder:
            if media_type in _PDF_TYPES and _data_hash_ffi(c2pa) is not None:
                return _sign_pdf(c2pa, builder, native, bytes(data))
            builder.sign(native, media_type, io.BytesIO(bytes(data)), out)
    except c2pa.C2paError as exc:
        raise LabelError(f"C2PA signing of {media_type} failed: {_one_line(exc)}") from exc
    finally:
        native.close()
        context.close()
    return out.getvalue()


_PDF_TYPES = ("application/pdf", "pdf")
_PDF_FFI: dict[str, Any] = {}


def _data_hash_ffi(c2pa: Any) -> Any:
    """The c2pa native library with the data-hashed embeddable functions declared, or ``None``.

    c2pa-python 0.38 does not wrap ``c2pa_builder_data_hashed_placeholder`` and
    ``c2pa_builder_sign_data_hashed_embeddable``, but its native library (c2pa-rs's C API) exports
    them; they are declared here through the wrapper's own ctypes handles. ``None`` when the library
    or the wrapper's internals differ (then a PDF is signed by c2pa-rs's rewrite instead).
    """
    if "lib" in _PDF_FFI:
        return _PDF_FFI["lib"]
    import ctypes

    lib = None
    try:
        native = c2pa.c2pa
        candidate = native._lib
        builder_p, signer_p, stream_p = (
            ctypes.POINTER(native.C2paBuilder), ctypes.POINTER(native.C2paSigner), ctypes.POINTER(native.C2paStream)
        )
        out_p = ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))
        placeholder = candidate.c2pa_builder_data_hashed_placeholder
        placeholder.argtypes = [builder_p, ctypes.c_size_t, ctypes.c_char_p, out_p]
        placeholder.restype = ctypes.c_int64
        embeddable = candidate.c2pa_builder_sign_data_hashed_embeddable
        embeddable.argtypes = [builder_p, signer_p, ctypes.c_char_p, ctypes.c_char_p, stream_p, out_p]
        embeddable.restype = ctypes.c_int64
        for owner, name in ((native, "_check_ffi_operation_result"), (native, "Stream"),
                            (c2pa.Builder, "_exclusive_native_call"), (c2pa.Signer, "_native_call"),
                            (c2pa.Signer, "reserve_size")):
            getattr(owner, name)
        lib = candidate
    except AttributeError:
        lib = None
    _PDF_FFI["lib"] = lib
    return lib


def _native_bytes(c2pa: Any, call: Callable[[Any], int], what: str) -> bytes:
    """Run ``call(out_pointer)``, a c2pa C function returning a length; return and free the bytes."""
    import ctypes

    native = c2pa.c2pa
    pointer = ctypes.POINTER(ctypes.c_ubyte)()
    size = call(ctypes.byref(pointer))
    native._check_ffi_operation_result(size, what + ": {}", check=lambda r: r <= 0)
    try:
        return ctypes.string_at(pointer, size)
    finally:
        native._lib.c2pa_free(pointer)


def _sign_pdf(c2pa: Any, builder: Any, signer: Any, data: bytes) -> bytes:
    """Sign a PDF as an incremental update: ``data`` stays a byte prefix of the result.

    The C2PA "data-hashed embeddable" flow: c2pa-rs makes a placeholder manifest store of the final
    size; :func:`aiobligations.labels.formats.pdf.embed_c2pa` appends it as an embedded file with
    ``/AFRelationship /C2PA_Manifest``; c2pa-rs signs a ``c2pa.hash.data`` assertion over the
    resulting file whose one exclusion is exactly the store's bytes; the signed store, which c2pa-rs
    makes the placeholder's length, replaces the placeholder in place.
    """
    from .formats import pdf

    lib = _data_hash_ffi(c2pa)
    native = c2pa.c2pa
    reserve = signer.reserve_size()
    with builder._exclusive_native_call(), signer._native_call():
        placeholder = _native_bytes(
            c2pa,
            lambda out: lib.c2pa_builder_data_hashed_placeholder(builder._handle, reserve, b"application/pdf", out),
            "C2PA placeholder",
        )
        updated, offset = pdf.embed_c2pa(data, placeholder)
        data_hash = json.dumps({
            "exclusions": [{"start": offset, "length": len(placeholder)}],
            "name": "jumbf manifest",
            "alg": "sha256",
            "hash": [],
            "pad": [],
        }).encode("ascii")
        stream = native.Stream(io.BytesIO(updated))
        try:
            store = _native_bytes(
                c2pa,
                lambda out: lib.c2pa_builder_sign_data_hashed_embeddable(
                    builder._handle, signer._handle, data_hash, b"application/pdf", stream._stream, out
                ),
                "C2PA signing",
            )
        finally:
            stream.close()
    if len(store) != len(placeholder):
        raise LabelError(
            f"C2PA signing of application/pdf failed: the signed manifest store ({len(store)} bytes) "
            f"does not fit its placeholder ({len(placeholder)} bytes)"
        )
    return updated[:offset] + store + updated[offset + len(store):]


@dataclass(frozen=True)
class C2PAReport:
    """What a C2PA manifest store in a file says, as read and validated by c2pa.

    Attributes:
        validation_state: ``"Trusted"`` (valid and chains to a trust anchor), ``"Valid"`` (intact,
            signer not trusted) or ``"Invalid"`` (a hash, signature or structure check failed).
        status_codes: The active manifest's failure and informational status codes
            (``signingCredential.untrusted``, ``assertion.dataHash.mismatch``…).
        actions: The active manifest's actions, as c2pa reports them (``action``,
            ``digitalSourceType``…).
        aigc: The GB 45438 fields from :data:`AIGC_ASSERTION_LABEL`, or ``None``.
        signer: The signing certificate's subject common name, as c2pa reports it.
        issuer: The issuer's organisation, as c2pa reports it.
        alg: The signature algorithm.
        signed_at: The time-stamp (RFC 3339) when the signature has one, else ``None``.
        claim_generator: ``name/version`` of the claim generator's first entry.
        manifest_label: The active manifest's URN.
        sha256: SHA-256 of the bytes read, hex.
        media_type: The media type read.
        manifest_store: The whole manifest store, parsed from c2pa's JSON.
    """

    validation_state: str
    status_codes: tuple[str, ...]
    actions: tuple[Mapping[str, Any], ...]
    aigc: Mapping[str, str] | None
    signer: str | None
    issuer: str | None
    alg: str | None
    signed_at: str | None
    claim_generator: str | None
    manifest_label: str | None
    sha256: str
    media_type: str
    manifest_store: Mapping[str, Any] = field(repr=False)

    @property
    def trusted(self) -> bool:
        """The credential is valid and its signer chains to a trust anchor."""
        return self.validation_state == "Trusted"

    @property
    def digital_source_types(self) -> tuple[str, ...]:
        """The digital source types named by the actions."""
        return tuple(
            a["digitalSourceType"] for a in self.actions if isinstance(a.get("digitalSourceType"), str)
        )

    @property
    def ai_generated(self) -> bool:
        """An action declares trained-model content (wholly generated or composite)."""
        return bool(
            {TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA}
            & set(self.digital_source_types)
        )

    def as_dict(self, *, include_store: bool = False) -> dict[str, Any]:
        """A JSON-ready summary, for the ledger's ``label`` record.

        Args:
            include_store: Add the whole manifest store under ``"manifest_store"``.
        """
        out: dict[str, Any] = {
            "kind": "c2pa",
            "media_type": self.media_type,
            "sha256": self.sha256,
            "validation_state": self.validation_state,
            "status_codes": list(self.status_codes),
            "manifest_label": self.manifest_label,
            "claim_generator": self.claim_generator,
            "actions": [dict(a) for a in self.actions],
            "aigc": dict(self.aigc) if self.aigc is not None else None,
            "signer": self.signer,
            "issuer": self.issuer,
            "alg": self.alg,
            "signed_at": self.signed_at,
        }
        if include_store:
            out["manifest_store"] = self.manifest_store
        return out


def read(
    data: bytes, media_type: str, *, trust_anchors: bytes | str | None = None
) -> C2PAReport | None:
    """Read and validate the C2PA manifest store in ``data``.

    Args:
        data: The file's bytes.
        media_type: Its MIME type or extension.
        trust_anchors: PEM root certificates to trust in addition to c2pa's built-in list (for
            example the development CA). Without them, a credential from a private CA is at best
            ``"Valid"``.

    Returns:
        ``None`` when the file has no manifest, else the report. A tampered file gives a report
        whose ``validation_state`` is ``"Invalid"``.

    Raises:
        LabelError: The media type is unsupported, or the file or its manifest cannot be parsed.
    """
    c2pa = _c2pa()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LabelError("data must be bytes")
    data = bytes(data)
    media_type = _check_media_type(media_type, c2pa.Reader.get_supported_mime_types())
    if isinstance(trust_anchors, bytes):
        trust_anchors = trust_anchors.decode("ascii", "replace")
    if trust_anchors is not None and "-----BEGIN CERTIFICATE-----" not in trust_anchors:
        raise ConfigurationError("trust_anchors must be PEM certificates.")
    context = _context(c2pa, trust_anchors=trust_anchors)
    try:
        reader = c2pa.Reader.try_create(media_type, io.BytesIO(data), context=context)
        if reader is None:
            return None
        with reader:
            state = reader.get_validation_state() or "Invalid"
            store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        raise LabelError(f"C2PA manifest in {media_type} is unreadable: {_one_line(exc)}") from exc
    except (ValueError, UnicodeError) as exc:
        raise LabelError(f"C2PA manifest in {media_type} is unreadable: {_one_line(exc)}") from exc
    finally:
        context.close()
    return _report(store, state, data=data, media_type=media_type)


def _report(store: Mapping[str, Any], state: str, *, data: bytes, media_type: str) -> C2PAReport:
    label = store.get("active_manifest")
    manifests = store.get("manifests") or {}
    active = manifests.get(label) if isinstance(label, str) else None
    active = active if isinstance(active, Mapping) else {}

    results = store.get("validation_results")
    codes: list[str] = []
    if isinstance(results, Mapping) and isinstance(results.get("activeManifest"), Mapping):
        for kind in ("failure", "informational"):
            codes += [s.get("code", "") for s in results["activeManifest"].get(kind) or ()]
    else:  # Older c2pa JSON: a flat list of problems.
        codes += [s.get("code", "") for s in store.get("validation_status") or ()]

    actions: list[Mapping[str, Any]] = []
    aigc: Mapping[str, str] | None = None
    for assertion in active.get("assertions") or ():
        if not isinstance(assertion, Mapping):
            continue
        name, body = assertion.get("label"), assertion.get("data")
        if not isinstance(name, str) or not isinstance(body, Mapping):
            continue
        if name in ("c2pa.actions", "c2pa.actions.v2"):
            actions += [a for a in body.get("actions") or () if isinstance(a, Mapping)]
        elif name == AIGC_ASSERTION_LABEL:
            fields = body.get("AIGC", body)
            if isinstance(fields, Mapping):
                aigc = {k: str(v) for k, v in fields.items() if isinstance(k, str)}

    sig = active.get("signature_info") or {}
    generator = None
    info = active.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], Mapping):
        generator = "/".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    elif isinstance(active.get("claim_generator"), str):
        generator = active["claim_generator"]
    return C2PAReport(
        validation_state=state,
        status_codes=tuple(c for c in codes if c),
        actions=tuple(actions),
        aigc=aigc,
        signer=sig.get("common_name"),
        issuer=sig.get("issuer"),
        alg=sig.get("alg"),
        signed_at=sig.get("time"),
        claim_generator=generator,
        manifest_label=label if isinstance(label, str) else None,
        sha256=hashlib.sha256(data).hexdigest(),
        media_type=media_type,
        manifest_store=store,
    )


def _manifest(
    *,
    aigc: Mapping[str, Any] | None,
    composite: bool,
    title: str | None,
    extra: Iterable[Mapping[str, Any]],
    watermark: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from aiobligations import __version__

    # c2pa-rs requires the first action to be c2pa.created or c2pa.opened, and c2pa.opened needs a
    # parent ingredient we do not have; so a composite is "created" then "edited", both naming the
    # composite source type.
    source = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA if composite else TRAINED_ALGORITHMIC_MEDIA
    actions = [{"action": "c2pa.created", "digitalSourceType": source}]
    if composite:
        actions.append({"action": "c2pa.edited", "digitalSourceType": source})
    if watermark is not None:
        actions.append({"action": "c2pa.watermarked.bound"})
    assertions: list[dict[str, Any]] = [{"label": "c2pa.actions", "data": {"actions": actions}}]
    if watermark is not None:
        assertions.append(dict(watermark))
    if aigc is not None:
        assertions.append({"label": AIGC_ASSERTION_LABEL, "data": {"AIGC": _aigc_fields(aigc)}})
    for item in extra:
        if not isinstance(item, Mapping) or not isinstance(item.get("label"), str) or "data" not in item:
            raise ConfigurationError(
                'Each extra C2PA assertion must be a mapping with "label" (str) and "data".'
            )
        assertions.append(dict(item))
    manifest: dict[str, Any] = {
        "claim_generator_info": [{"name": "aiobligations", "version": __version__}],
        "assertions": assertions,
    }
    if title is not None:
        manifest["title"] = str(title)
    return manifest


def _aigc_fields(aigc: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(aigc, Mapping):
        raise ConfigurationError("aigc must be a mapping of GB 45438 Annex E fields.")
    if set(aigc) == {"AIGC"} and isinstance(aigc["AIGC"], Mapping):
        aigc = aigc["AIGC"]
    unknown = sorted(str(k) for k in aigc if k not in AIGC_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"aigc has unknown fields {', '.join(unknown)}; Annex E fields are {', '.join(AIGC_FIELDS)}."
        )
    out = {}
    for name in AIGC_FIELDS:
        value = aigc.get(name, "")
        if not isinstance(value, str):
            raise ConfigurationError(f"aigc field {name} must be a string, not {type(value).__name__}.")
        out[name] = value
    return out


def _context(c2pa: Any, *, thumbnails: bool = False, trust_anchors: str | None = None) -> Any:
    settings: dict[str, Any] = {
        # Never reach out to the network while signing or reading.
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": {"enabled": bool(thumbnails)}},
    }
    if trust_anchors is not None:
        settings["trust"] = {"user_anchors": trust_anchors}
    try:
        return c2pa.Context.from_dict(settings)
    except c2pa.C2paError as exc:
        raise ConfigurationError(f"C2PA settings were rejected: {_one_line(exc)}") from exc


def _check_media_type(media_type: str, supported: Iterable[str]) -> str:
    if not isinstance(media_type, str) or not media_type.strip():
        raise LabelError("media_type must be a MIME type such as image/png")
    media_type = media_type.strip().lower().lstrip(".")
    if media_type not in set(supported):
        raise LabelError(f"C2PA does not support media type {media_type!r}")
    return media_type


def _pkcs8(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "C2PA signing key is not an unencrypted PEM private key."
        ) from exc
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read_file(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the C2PA {what} at {path}: {exc.strerror}.") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
