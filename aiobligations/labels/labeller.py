"""Label a file and inspect one: GB 45438 implicit labels, then C2PA content credentials.

The implicit label goes in first (file metadata, by a byte-level edit), then the C2PA manifest is
signed over the labelled file, so both stay valid. Where the format can say which bytes labelling
never touches (its ``content_digest``), ``ReservedCode1`` carries an Ed25519 signature binding the
label to the content (see :mod:`aiobligations.labels.annex_e`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import LabelError
from . import annex_e
from .formats import gif, jpeg, markdown, mp3, mp4, ooxml, pdf, png, tiff, wav, webp

if TYPE_CHECKING:  # pragma: no cover
    from .c2pa import C2PAReport

__all__ = ["C2PA_UNSUPPORTED", "EXPLICIT", "FORMATS", "WATERMARKED", "Labelled", "Labeller", "detect"]

FORMATS: tuple[ModuleType, ...] = (png, jpeg, webp, gif, tiff, wav, mp3, mp4, pdf, ooxml, markdown)
"""The formats with implicit labels, in the order their signatures are sniffed."""

_BY_TYPE = {media_type: module for module in FORMATS for media_type in module.MEDIA_TYPES}
_IMAGES = (png, jpeg, webp)
_CAPTIONED = (png, jpeg, webp, gif, tiff)

EXPLICIT: dict[ModuleType, str] = {
    png: "caption, corner, ≥ 5% high",
    jpeg: "caption, corner, ≥ 5% high",
    webp: "caption, corner, ≥ 5% high",
    gif: "caption, corner, ≥ 5% high (still images)",
    tiff: "caption, corner, ≥ 5% high",
    wav: "rhythm cue ·−·· at the start",
    mp3: "rhythm cue ·−·· at the start (re-encoded)",
    markdown: "text label at the end",
    mp4: "caption on the opening 2 s, ≥ 5% high (H.264); audio-only: the rhythm cue",
}
"""Formats that get an explicit label, and what it is."""

WATERMARKED: tuple[ModuleType, ...] = _IMAGES
"""Formats that carry the invisible watermark."""

C2PA_UNSUPPORTED: dict[ModuleType, str] = {
    ooxml: "c2pa-python 0.38 cannot read deflate-compressed packages",
    markdown: "not a C2PA format",
}
"""Formats that get no C2PA manifest, and why."""
_NO_C2PA = tuple(C2PA_UNSUPPORTED)


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _pixels(data: bytes) -> Any:
    """Decode an image to an RGB array (Pillow, numpy)."""
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LabelError(f"the image cannot be decoded: {exc}") from None


def _image_pass(data: bytes, *, caption: str | None, mark: Any, evidence: dict[str, Any]) -> tuple[bytes, bool]:
    """Caption and/or watermark a PNG, JPEG or WebP: decoded once, both applied, encoded once.

    ``caption`` is the wording to draw (``None``: none), ``mark`` a function from RGB pixels to
    marked RGB pixels (``None``: none). Either may be skipped (too small an image); the evidence
    says why. Returns the new bytes (``data`` itself when nothing changed) and whether the mark went on.
    """
    import numpy as np
    from PIL import Image

    from . import explicit as marks_explicit

    if caption is not None:
        marks_explicit.validate_wording(caption)
    try:
        source = marks_explicit.open_still(data)
    except marks_explicit.ImageTooLarge:
        raise  # Hostile input: refused whole (the CLI exits 2), never labelled in part.
    except LabelError as exc:
        if caption is not None:
            evidence["explicit"] = {"skipped": str(exc)}
        if mark is not None:
            evidence["watermark"] = {"skipped": str(exc)}
        return data, False
    image = source
    changed = marked = False
    if caption is not None:
        try:
            image = marks_explicit.draw_caption(source, wording=caption)
        except LabelError as exc:
            evidence["explicit"] = {"skipped": str(exc)}
        else:
            changed = True
            # The box is evidence too: `inspect` looks for these glyphs in these pixels.
            evidence["explicit"] = {"kind": "caption", "wording": caption, "corner": "bottom-right",
                                    "box": list(marks_explicit.caption_box(source.size, wording=caption))}
    if mark is not None:
        alpha = marks_explicit.has_alpha(source)
        rgba = image.convert("RGBA") if alpha else None
        try:
            rgb = rgba.convert("RGB") if rgba is not None else image if image.mode == "RGB" else image.convert("RGB")
            pixels = mark(np.asarray(rgb))
        except LabelError as exc:
            # Too small an image carries no mark; the other labels still go on.
            evidence["watermark"] = {"skipped": str(exc)}
        else:
            image = Image.fromarray(pixels, "RGB")
            if rgba is not None:
                image.putalpha(rgba.getchannel("A"))
            changed = marked = True
    if not changed:
        return data, False
    return marks_explicit.encode_like(image, source, data), marked


def _find_caption(data: bytes, wording: str) -> dict[str, Any]:
    """The caption search of :meth:`Labeller.inspect`; an image that cannot be searched says why."""
    try:
        from PIL import Image  # noqa: F401 - the media extra; its absence is a reason, not an error.

        from . import explicit as marks_explicit
    except ImportError:  # pragma: no cover - without the media extra.
        return {"checked": False, "present": None, "reason": "the media extra (Pillow) is not installed"}
    try:
        return marks_explicit.find_caption(data, wording=wording)
    except marks_explicit.ImageTooLarge:
        raise  # Hostile input: refused whole.
    except LabelError as exc:
        return {"checked": False, "present": None, "reason": str(exc)}


MAX_SHOWN_PAYLOAD = 256
"""How many characters of a malformed implicit label :meth:`Labeller.inspect` shows."""


def _malformed_entry(payload: str, reason: str) -> dict[str, Any]:
    """The report entry of an implicit label that does not parse: a bounded excerpt and the reason."""
    entry: dict[str, Any] = {"payload": payload[:MAX_SHOWN_PAYLOAD], "malformed": True,
                             "findings": [f"the label does not parse: {reason}"]}
    if len(payload) > MAX_SHOWN_PAYLOAD:
        entry["payload_truncated"] = True
        entry["payload_length"] = len(payload)
    return entry


def detect(data: bytes, media_type: str | None = None) -> ModuleType:
    """The format module for ``data``: by its content, checked against ``media_type`` if given.

    Markdown without front matter has nothing to sniff; it is detected only when ``media_type``
    says ``text/markdown``.

    Raises:
        LabelError: the content is of no supported format, or not of the declared one.
    """
    declared = _BY_TYPE.get(media_type.split(";")[0].strip().lower()) if media_type is not None else None
    for module in FORMATS:
        if module.sniff(data):
            if declared not in (None, module):
                raise LabelError(f"the content is {module.MEDIA_TYPES[0]}, not {media_type}")
            return module
    if declared is markdown:
        # Markdown has no signature: without front matter, only its declared type says what it is.
        return markdown
    raise LabelError(
        "not a supported file: " + ", ".join(m.MEDIA_TYPES[0] for m in FORMATS) + " can be labelled"
    )


@dataclass
class Labelled:
    """A labelled file and the evidence of what was done to it."""

    data: bytes
    evidence: dict[str, Any] = field(default_factory=dict)


class Labeller:
    """Applies the provider's labels to generated files.

    Args:
        producer: ``ContentProducer``: the 27-character provider code from the provider's
            registration (GB 45438 / 网安秘字〔2025〕29号), or a name in the Annex E charset.
        key: The Ed25519 key that signs ``ReservedCode1``.
        c2pa_signer: A :class:`aiobligations.labels.c2pa.C2PASigner`; ``None`` skips C2PA.
        trust_anchors: PEM root certificates that ``inspect`` trusts for C2PA.
        propagator: ``ContentPropagator`` for first writes (Annex E note 1: the producer by default).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        producer: str,
        key: Ed25519PrivateKey | None = None,
        c2pa_signer: Any = None,
        trust_anchors: bytes | None = None,
        propagator: str | None = None,
    ) -> None:
        annex_e.check_charset(producer)
        self.producer = producer
        self.propagator = producer if propagator is None else propagator
        self._key = key
        self.public_key: Ed25519PublicKey | None = key.public_key() if key is not None else None
        self._c2pa_signer = c2pa_signer
        self.trust_anchors = trust_anchors
        # The watermark's key is derived from the provider's signing key, so `inspect` with the
        # provider's configuration can find the mark after the metadata is gone.
        self._watermark_key = (
            hashlib.sha256(b"aiobligations/watermark/v1\n" + _raw_private(key)).digest() if key is not None else None
        )

    def label(self, data: bytes, media_type: str | None = None, *, produce_id: str,
              implicit: bool = True, c2pa: bool = True, watermark: bool = False,
              explicit: bool = False, wording: str = "AI生成", composite: bool = False) -> Labelled:
        """Label ``data``; return the labelled bytes and a JSON-ready evidence dict.

        The order keeps every label valid: the explicit label (a caption drawn on an image, a cue
        before audio) and the watermark change the content itself, so they come first (a PNG, JPEG or WebP
        is decoded once, captioned and watermarked, and encoded once, only for them; a re-encoded
        JPEG is 4:4:4 with the input's quantisation tables); then the implicit label (metadata,
        inserted without re-encoding), then the C2PA manifest over the result.

        The evidence has an entry for every part asked for: ``explicit``, ``watermark``, ``gb45438``
        (the implicit label's fields) and ``c2pa``. A part that could not go on is
        ``{"skipped": reason}``, with ``"not_applicable": true`` when the format never carries it
        (a watermark in audio, C2PA in Markdown).

        Raises:
            LabelError: the file is malformed or of an unsupported format (nothing is changed).
        """
        if not isinstance(data, bytes):
            raise TypeError("data must be bytes")
        module = detect(data, media_type)
        evidence: dict[str, Any] = {
            "format": module.MEDIA_TYPES[0],
            "sha256_before": hashlib.sha256(data).hexdigest(),
        }
        # Read before anything changes the content: re-encoding for a caption drops metadata.
        prior = module.read_labels(data) if implicit else []
        soft_binding = None
        mark = None
        if watermark and module in _IMAGES and self._watermark_key is not None:
            from . import watermark as marks  # numpy and Pillow: the media extra.

            key = self._watermark_key

            def mark(pixels: Any) -> Any:
                return marks.embed(pixels, produce_id, key)

        if module in _IMAGES and (mark is not None or explicit):
            # One decode and one encode for the caption and the watermark together.
            data, marked = _image_pass(data, caption=wording if explicit else None, mark=mark, evidence=evidence)
            if marked:
                soft_binding = marks.soft_binding_assertion(produce_id, key)
                evidence["watermark"] = {"alg": marks.SOFT_BINDING_ALG,
                                         "payload": soft_binding["data"]["blocks"][0]["value"]}
        elif explicit:
            try:
                data = self._explicit(module, data, wording, evidence)
            except LabelError as exc:
                # A file that cannot carry a visible label (an unsupported codec, too small) still
                # gets the metadata label and C2PA; the evidence says why the explicit label is missing.
                evidence["explicit"] = {"skipped": str(exc)}
            if "explicit" not in evidence:
                evidence["explicit"] = {"skipped": f"no explicit label is written into {module.MEDIA_TYPES[0]} files",
                                        "not_applicable": True}
        if watermark and "watermark" not in evidence:
            # Asked for but not possible here: said, so that no label part is silently absent.
            evidence["watermark"] = (
                {"skipped": "only PNG, JPEG and WebP images carry the watermark", "not_applicable": True}
                if module not in _IMAGES else {"skipped": "no signing key to derive the watermark's key from"})
        out = data
        if implicit:
            label = self._implicit_label(module, data, produce_id, prior)
            evidence["role"] = "propagator" if label.content_producer != self.producer else "producer"
            out = module.write_label(out, label.to_json())
            evidence["gb45438"] = label.as_dict()
        if c2pa and self._c2pa_signer is not None and module not in _NO_C2PA:
            from .c2pa import sign  # Imported here: c2pa-python is the media extra.

            aigc = evidence.get("gb45438")
            out = sign(out, module.MEDIA_TYPES[0], signer=self._c2pa_signer, aigc=aigc, watermark=soft_binding,
                       composite=composite)
            evidence["c2pa"] = {"action": "c2pa.created",
                                "digital_source_type": "compositeWithTrainedAlgorithmicMedia" if composite
                                else "trainedAlgorithmicMedia",
                                "watermarked": soft_binding is not None}
        elif c2pa:
            evidence["c2pa"] = ({"skipped": C2PA_UNSUPPORTED[module], "not_applicable": True} if module in _NO_C2PA
                                else {"skipped": "no C2PA signer (the profile's [labels] c2pa_chain and c2pa_key)"})
        evidence["sha256_after"] = hashlib.sha256(out).hexdigest()
        return Labelled(out, evidence)

    def _explicit(self, module: ModuleType, data: bytes, wording: str, evidence: dict[str, Any]) -> bytes:
        """Add the visible or audible label that suits the format; record what was done."""
        from . import explicit as marks_explicit

        if module in _CAPTIONED:
            import io

            from PIL import Image

            data = marks_explicit.caption_image(data, wording=wording)
            with Image.open(io.BytesIO(data)) as captioned:  # The header alone: the size is kept.
                size = captioned.size
            evidence["explicit"] = {"kind": "caption", "wording": wording, "corner": "bottom-right",
                                    "box": list(marks_explicit.caption_box(size, wording=wording))}
        elif module is wav:
            data = marks_explicit.add_audio_cue(data, at="start")
            evidence["explicit"] = {"kind": "rhythm cue", "pattern": "short long short short", "at": "start"}
        elif module is mp4:
            from .audio import add_cue_encoded, has_video
            from .video import caption_video

            if has_video(data):
                data = caption_video(data, wording=wording)
                evidence["explicit"] = {"kind": "caption", "wording": wording, "seconds": 2.0}
            else:
                data = add_cue_encoded(data, "mp4")
                evidence["explicit"] = {"kind": "rhythm cue", "pattern": "short long short short", "at": "start"}
        elif module is mp3:
            from .audio import add_cue_encoded

            data = add_cue_encoded(data, "mp3")
            evidence["explicit"] = {"kind": "rhythm cue", "pattern": "short long short short", "at": "start"}
        elif module is markdown:
            data = marks_explicit.label_markdown(data)
            evidence["explicit"] = {"kind": "text", "wording": marks_explicit.DEFAULT_TEXT_WORDING, "at": "end"}
        return data

    def _implicit_label(self, module: ModuleType, data: bytes, produce_id: str,
                        prior: list[str]) -> annex_e.AIGCLabel:
        """Our label for ``data``: as its producer, or as a propagator of another producer's label.

        A file already labelled by another producer keeps that producer's fields (and its
        ``ReservedCode1``); we fill in only ``ContentPropagator``, ``PropagateID`` and, when we can
        bind it, ``ReservedCode2``, as the Measures' Art. 6 asks of platforms that pass content on.
        """
        existing = None
        for payload in prior:
            try:
                existing = annex_e.AIGCLabel.parse(payload)
                break
            except LabelError:
                continue
        digest_of = getattr(module, "content_digest", None)
        if existing is not None and existing.content_producer and existing.content_producer != self.producer:
            reserved2 = ""
            if self._key is not None and digest_of is not None:
                signed = annex_e.sign_label(
                    annex_e.AIGCLabel(existing.label, self.propagator, produce_id), digest_of(data), self._key
                )
                reserved2 = signed.reserved_code1
            return dataclasses.replace(
                existing, content_propagator=self.propagator, propagate_id=produce_id, reserved_code2=reserved2
            )
        label = annex_e.AIGCLabel(
            content_producer=self.producer,
            produce_id=produce_id,
            content_propagator=self.propagator,
            propagate_id=produce_id,
        )
        if self._key is not None and digest_of is not None:
            label = annex_e.sign_label(label, digest_of(data), self._key)
        return label

    def inspect(self, data: bytes, media_type: str | None = None, *, produce_id: str | None = None,
                watermark: bool = True, wording: str = "AI生成") -> dict[str, Any]:
        """Every label found in ``data``, with conformance findings and verification results.

        An implicit label that does not parse as an Annex E label (not JSON, too large, not the
        label's object) is reported with ``"malformed": true``, a bounded excerpt of its payload and
        a finding; it does not count as a label, so ``labelled`` is false unless another label is
        found.

        ``produce_id`` is a candidate id to check the watermark's payload against when the file's
        metadata (and so its own ProduceID) is gone. ``watermark=False`` skips the watermark
        search, which decodes the image (tens of milliseconds at 1080p).

        An image's visible caption is looked for in its pixels, not taken from its metadata:
        ``report["explicit"]["caption"]`` is :func:`aiobligations.labels.explicit.find_caption`'s
        answer for ``wording`` (the profile's ``[labels] explicit_wording``): ``present`` true
        only when the caption's glyphs and box are there, ``null`` with a ``reason`` when it cannot
        tell (no CJK font, another wording or font). A WAV's ``report["explicit"]`` is the rhythm
        cue's search. A caption or cue found counts as a label.

        Raises:
            LabelError: the file is malformed or of an unsupported format.
        """
        module = detect(data, media_type)
        report: dict[str, Any] = {"format": module.MEDIA_TYPES[0], "gb45438": [], "c2pa": None}
        payloads = module.read_labels(data)
        valid = 0
        malformed: list[str] = []
        for payload in payloads:
            try:
                parsed = annex_e.AIGCLabel.parse(payload)
            except LabelError as exc:
                # A label that does not parse is a finding, not a label (issue 11, defect 17).
                malformed.append(str(exc))
                report["gb45438"].append(_malformed_entry(payload, str(exc)))
                continue
            valid += 1
            entry: dict[str, Any] = {"payload": payload, "findings": annex_e.findings(payload),
                                     "fields": parsed.as_dict()}
            digest_of = getattr(module, "content_digest", None)
            if parsed.reserved_code1.startswith("v1.") and self.public_key is not None and digest_of is not None:
                try:
                    annex_e.verify_label(parsed, digest_of(data), self.public_key)
                    entry["reserved_code1"] = "verified: the label is bound to this content"
                except LabelError as exc:
                    entry["reserved_code1"] = f"does not verify: {exc}"
                    entry["findings"].append("ReservedCode1 does not verify with the provider's key")
            report["gb45438"].append(entry)
        report_findings = [f"an implicit label that does not parse is not a label: {reason}" for reason in malformed]
        if len(payloads) > 1:
            report_findings.append("more than one implicit label (GB 45438 §6.1 c) requires exactly one)")
        if report_findings:
            report["findings"] = report_findings
        read: Callable[..., C2PAReport | None] | None
        try:
            from .c2pa import read
        except ImportError:  # pragma: no cover - without the media extra.
            read = None
        if read is not None and module not in _NO_C2PA:
            found = read(data, module.MEDIA_TYPES[0], trust_anchors=self.trust_anchors)
            report["c2pa"] = found.as_dict() if found is not None else None
        if watermark and module in _IMAGES and self._watermark_key is not None:
            report["watermark"] = self._detect_watermark(data, module, payloads, self._watermark_key, produce_id)
        if module in _CAPTIONED:
            report["explicit"] = {"caption": _find_caption(data, wording)}
        if module is wav:
            from .explicit import find_audio_cue

            try:
                report["explicit"] = find_audio_cue(data)  # The audible cue (issue 12); not a metadata label.
            except LabelError as exc:  # pragma: no cover - without numpy (the media extra).
                report["explicit"] = {"checked": False, "reason": str(exc)}
        explicit = report.get("explicit", {})
        report["labelled"] = bool(valid) or report["c2pa"] is not None or bool(
            report.get("watermark", {}).get("present")) or bool(
            explicit.get("caption", explicit).get("present"))
        return report

    def _detect_watermark(self, data: bytes, module: ModuleType, payloads: list[str], key: bytes,
                          candidate: str | None = None) -> dict[str, Any]:
        """Look for our mark blind; with the label's ProduceID, check the ID it carries too."""
        try:
            from . import watermark as marks
        except ImportError:  # pragma: no cover - without the media extra.
            return {"checked": False, "reason": "the media extra (numpy, Pillow) is not installed"}
        produce_id = candidate
        for payload in payloads if candidate is None else ():
            try:
                produce_id = annex_e.AIGCLabel.parse(payload).produce_id or None
                break
            except LabelError:
                continue
        pixels = _pixels(data)
        if min(pixels.shape[:2]) < marks.MIN_SIDE:
            return {"checked": False, "reason": "the image is too small to carry the watermark"}
        try:
            found = marks.detect(pixels, key, produce_id=produce_id)
        except (LabelError, ValueError) as exc:
            return {"checked": False, "reason": str(exc)}
        return {"checked": True, **dataclasses.asdict(found)}
