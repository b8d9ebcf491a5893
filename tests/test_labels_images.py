"""GB 45438 implicit labels in image files: Annex E strings, XMP, and the PNG, JPEG and WebP carriers."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobligations.demo.models import encode_png
from aiobligations.errors import LabelError
from aiobligations.labels import xmp
from aiobligations.labels.annex_e import (
    FIELDS,
    AIGCLabel,
    check_charset,
    findings,
    sign_label,
    validate_provider_code,
    verify_label,
)
from aiobligations.labels.formats import jpeg, png, webp

CODE = "001191440300708461136T1XGW3"
LABEL = AIGCLabel(content_producer=CODE, produce_id="img-0001", content_propagator=CODE, propagate_id="img-0001")
PAYLOAD = LABEL.to_json()

# A 2x2 baseline JPEG (JFIF APP0, two DQT, SOF0, four DHT, SOS), made once with Pillow 13:
# Image.new("RGB", (2, 2), (200, 30, 40)).save(buf, "JPEG", quality=80). Pillow is not a dependency.
JPEG_2X2 = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8t"
    "MC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/wAAR"
    "CAACAAIDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEG"
    "E1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWG"
    "h4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB"
    "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYk"
    "NOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDgqKKK8Q/YD//Z"
)
# The well-known 1x1 WebP feature-detection images (lossy VP8, lossless VP8L, and VP8X + ALPH + VP8);
# all three decode with Pillow 13 (checked once, locally).
WEBP_LOSSY = base64.b64decode("UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA")
WEBP_LOSSLESS = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
WEBP_ALPHA = base64.b64decode(
    "UklGRkoAAABXRUJQVlA4WAoAAAAQAAAAAAAAAAAAQUxQSAwAAAARBxAR/Q9ERP8DAABWUDggGAAAABQBAJ0BKgEAAQAAAP4AAA3AAP7mtQAAAA=="
)


def make_png(width: int = 4, height: int = 3) -> bytes:
    """Return a small RGB PNG with a recognisable pattern."""
    rows = [
        b"".join(bytes((x * 40 % 256, y * 60 % 256, (x + y) * 20 % 256)) for x in range(width)) for y in range(height)
    ]
    return encode_png(width, height, rows)


PNG_SMALL = make_png()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """An independent, minimal PNG chunk splitter for the assertions."""
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """An independent, minimal RIFF chunk splitter for the assertions."""
    offset, chunks = 12, []
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset + 4)
        chunks.append((data[offset : offset + 4], data[offset + 8 : offset + 8 + size]))
        offset += 8 + size + size % 2
    return chunks


def pixels(module: ModuleType, data: bytes) -> bytes:
    """Return the bytes that carry the picture: IDAT data, JPEG scan onwards, or the WebP bitstreams."""
    if module is png:
        return b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT")
    if module is jpeg:
        return data[data.rindex(b"\xff\xda") :]
    return b"".join(body for kind, body in riff_chunks(data) if kind in (b"VP8 ", b"VP8L", b"ALPH"))


SAMPLES = [
    pytest.param(png, PNG_SMALL, id="png"),
    pytest.param(jpeg, JPEG_2X2, id="jpeg"),
    pytest.param(webp, WEBP_LOSSY, id="webp-vp8"),
    pytest.param(webp, WEBP_LOSSLESS, id="webp-vp8l"),
    pytest.param(webp, WEBP_ALPHA, id="webp-vp8x"),
]

XMP_WITH_OTHERS = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:tc="http://www.tc260.org.cn/ns/AIGC/1.0/"'
    ' xmp:CreatorTool="Paint &amp; Co" tc:AIGC="{&quot;Label&quot;:&quot;2&quot;}">'
    '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Hello</rdf:li></rdf:Alt></dc:title>'
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
).encode()


class TestAIGCLabel:
    def test_json_key_order_and_compact(self) -> None:
        """
        to_json emits the seven keys in Annex E order, compactly, and wraps on request.
        """
        text = AIGCLabel(content_producer=CODE, produce_id="p1").to_json()

        assert (
            '{"Label":"1","ContentProducer":"001191440300708461136T1XGW3","ProduceID":"p1",'
            '"ReservedCode1":"","ContentPropagator":"","PropagateID":"","ReservedCode2":""}'
        ) == text
        assert '{"AIGC":' + text + "}" == AIGCLabel(content_producer=CODE, produce_id="p1").to_json(wrapped=True)

    @pytest.mark.parametrize("wrapped", [False, True])
    def test_parse_round_trip(self, wrapped: bool) -> None:
        """
        Direct and wrapped forms, as str or bytes with whitespace, parse to the same label.
        """
        text = LABEL.to_json(wrapped=wrapped)

        assert LABEL == AIGCLabel.parse(text)
        assert LABEL == AIGCLabel.parse(("\n  " + text + " \n").encode())

    def test_parse_spaced_wrapped_form_as_printed(self) -> None:
        """
        The standard's printed form, with a space after "AIGC":, parses; missing keys become empty.
        """
        label = AIGCLabel.parse('{"AIGC": {"Label":"1","ContentProducer":"x","ProduceID":"y"}}')

        assert AIGCLabel(content_producer="x", produce_id="y") == label

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "not json",
            "[]",
            '{"AIGC": []}',
            '{"Label": 1}',
            '{"Label":"1","Colour":"red"}',
            '{"ContentProducer":"x"}',
            '{"Label":"1","Label":"2"}',
            b"\xff\xfe",
            "[" * 100_000,
            '{"Label":"' + "1" * 70_000 + '"}',
        ],
    )
    def test_parse_rejects(self, text: str | bytes) -> None:
        """
        Anything but a label object, including oversized and deeply nested input, raises LabelError.
        """
        with pytest.raises(LabelError):
            AIGCLabel.parse(text)

    def test_charset_error_names_character(self) -> None:
        """
        A value outside rule j raises LabelError naming the character.
        """
        with pytest.raises(LabelError, match="'腾'"):
            check_charset("腾讯")
        with pytest.raises(LabelError, match="' '"):
            check_charset("a b")
        with pytest.raises(LabelError, match=r"'\\\\'"):
            check_charset("a\\b")
        check_charset('ok-"quoted"_!~')

    def test_provider_code(self) -> None:
        """
        Real provider codes pass; wrong length, format code or characters fail.
        """
        validate_provider_code(CODE)
        validate_provider_code("001191110102MACQD9K64010000")
        for bad in ("", CODE[:-1], "01" + CODE[2:], CODE[:-1] + "a"):
            with pytest.raises(LabelError):
                validate_provider_code(bad)

    def test_findings(self) -> None:
        """
        A conforming label has no findings; bad values, order and missing keys are each reported.
        """
        assert [] == findings(LABEL)
        assert [] == findings(LABEL.to_json(wrapped=True))

        found = findings(AIGCLabel(label="4", content_producer="腾讯", produce_id=""))
        assert 4 == len(found)
        assert any("ContentProducer" in item and "'腾'" in item for item in found)

        found = findings('{"ProduceID":"x","Label":"1","ContentProducer":"' + CODE + '"}')
        assert any("order" in item for item in found)
        assert any("missing" in item and "ReservedCode1" in item for item in found)
        assert ["label is not valid JSON"] == [item.split(":")[0] for item in findings("{")]

    def test_signature_round_trip_and_tamper(self) -> None:
        """
        A signed label verifies; a changed digest, element or token does not.
        """
        key = Ed25519PrivateKey.generate()
        digest = hashlib.sha256(b"pixels").digest()

        signed = sign_label(LABEL, digest, key)

        assert signed.reserved_code1.startswith("v1.")
        check_charset(signed.reserved_code1)
        verify_label(AIGCLabel.parse(signed.to_json()), digest, key.public_key())
        with pytest.raises(LabelError):
            verify_label(signed, hashlib.sha256(b"other").digest(), key.public_key())
        with pytest.raises(LabelError):
            verify_label(AIGCLabel(**{**vars(signed), "produce_id": "img-0002"}), digest, key.public_key())
        with pytest.raises(LabelError):
            verify_label(signed, digest, Ed25519PrivateKey.generate().public_key())
        for token in ("", "v2." + signed.reserved_code1[3:], signed.reserved_code1[:-1], "v1." + "*" * 86):
            with pytest.raises(LabelError):
                verify_label(AIGCLabel(**{**vars(signed), "reserved_code1": token}), digest, key.public_key())
        with pytest.raises(LabelError):
            sign_label(LABEL, b"short", key)

    def test_fields_constant(self) -> None:
        """
        FIELDS lists the Annex E names in order.
        """
        assert list(FIELDS) == list(LABEL.as_dict())


class TestXMP:
    def test_build_and_get(self) -> None:
        """
        A built packet has the xpacket wrapper and yields the payload back, escapes and all.
        """
        packet = xmp.build_packet('{"a":"<&>"}')

        assert packet.startswith(b"<?xpacket begin=")
        assert packet.endswith(b'<?xpacket end="w"?>')
        assert ['{"a":"<&>"}'] == xmp.get_aigc(packet)

    def test_set_merges_and_replaces_attribute_form(self) -> None:
        """
        set_aigc keeps other properties and prefixes and replaces an attribute-form label under another prefix.
        """
        assert ['{"Label":"2"}'] == xmp.get_aigc(XMP_WITH_OTHERS)

        merged = xmp.set_aigc(XMP_WITH_OTHERS, PAYLOAD)

        assert [PAYLOAD] == xmp.get_aigc(merged)
        assert b'xmp:CreatorTool="Paint &amp; Co"' in merged
        assert b'<rdf:li xml:lang="x-default">Hello</rdf:li>' in merged
        assert b'xmlns:tc="http://www.tc260.org.cn/ns/AIGC/1.0/"' in merged
        assert [PAYLOAD] == xmp.get_aigc(xmp.set_aigc(merged, PAYLOAD))

    def test_set_without_description(self) -> None:
        """
        A packet with an empty rdf:RDF gets a Description; one without rdf:RDF is refused.
        """
        bare = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'

        assert [PAYLOAD] == xmp.get_aigc(xmp.set_aigc(bare, PAYLOAD))
        with pytest.raises(LabelError):
            xmp.set_aigc(b"<a/>", PAYLOAD)

    @pytest.mark.parametrize(
        "packet",
        [
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            b'<?xml version="1.0"?>\n<!doctype x><x/>',
            b'<x><!ENTITY e "boom"></x>',
            b"<a>" * 10_000 + b"</a>" * 10_000,
            b"<x>" + b" " * (xmp.MAX_XMP_SIZE) + b"</x>",
            b"<x>\xff</x>",
            b"<x>",
            b"<x>&undefined;</x>",
            '<?xml version="1.0" encoding="UTF-16"?><x/>'.encode("utf-16"),
        ],
    )
    def test_hostile_packets(self, packet: bytes) -> None:
        """
        DTDs, entities, deep nesting, oversize, bad encodings and malformed XML raise LabelError.
        """
        with pytest.raises(LabelError):
            xmp.get_aigc(packet)
        with pytest.raises(LabelError):
            xmp.set_aigc(packet, PAYLOAD)

    def test_payload_with_control_character_refused(self) -> None:
        """
        A payload XML cannot carry raises LabelError rather than writing a broken packet.
        """
        with pytest.raises(LabelError):
            xmp.build_packet("a\x01b")


class TestFormats:
    @pytest.mark.parametrize(("module", "sample"), SAMPLES)
    def test_round_trip_once_and_twice(self, module: ModuleType, sample: bytes) -> None:
        """
        Writing a label yields exactly that label, writing twice still one, and pixels are untouched.
        """
        assert module.sniff(sample)
        assert [] == module.read_labels(sample)

        once = module.write_label(sample, PAYLOAD)
        twice = module.write_label(once, AIGCLabel(produce_id="second").to_json())

        assert [PAYLOAD] == module.read_labels(once)
        assert [AIGCLabel(produce_id="second").to_json()] == module.read_labels(twice)
        assert pixels(module, sample) == pixels(module, once) == pixels(module, twice)
        assert module.content_digest(sample) == module.content_digest(once) == module.content_digest(twice)

    @pytest.mark.parametrize(("module", "sample"), SAMPLES)
    def test_signed_label_verifies_after_writing(self, module: ModuleType, sample: bytes) -> None:
        """
        A label signed over the unlabelled file verifies against the labelled file.
        """
        key = Ed25519PrivateKey.generate()
        labelled = module.write_label(sample, sign_label(LABEL, module.content_digest(sample), key).to_json())

        (payload,) = module.read_labels(labelled)

        verify_label(AIGCLabel.parse(payload), module.content_digest(labelled), key.public_key())

    @pytest.mark.parametrize(("module", "sample"), SAMPLES)
    def test_truncation_at_every_offset(self, module: ModuleType, sample: bytes) -> None:
        """
        Every proper prefix of a labelled file raises LabelError when read or written.
        """
        labelled = module.write_label(sample, PAYLOAD)
        for end in range(len(labelled)):
            with pytest.raises(LabelError):
                module.read_labels(labelled[:end])
            with pytest.raises(LabelError):
                module.write_label(labelled[:end], PAYLOAD)

    @pytest.mark.parametrize(("module", "sample"), SAMPLES)
    def test_rejects_junk_payload_and_other_formats(self, module: ModuleType, sample: bytes) -> None:
        """
        A payload that is not a label, and a file of another format, raise LabelError.
        """
        with pytest.raises(LabelError):
            module.write_label(sample, "hello")
        other = JPEG_2X2 if module is not jpeg else PNG_SMALL
        assert not module.sniff(other)
        with pytest.raises(LabelError):
            module.read_labels(other)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from([png, jpeg, webp]),
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1, max_size=4
    ),
)
def test_random_byte_flips_raise_only_label_error(which: ModuleType, flips: list[tuple[int, int]]) -> None:
    """
    Flipping bytes of a labelled file never raises anything but LabelError.
    """
    sample = {png: PNG_SMALL, jpeg: JPEG_2X2, webp: WEBP_ALPHA}[which]
    data = bytearray(which.write_label(sample, PAYLOAD))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    for call in (lambda: which.read_labels(bytes(data)), lambda: which.write_label(bytes(data), PAYLOAD)):
        try:
            call()
        except LabelError:
            pass


def make_exif(comment: bytes, *, big_endian: bool = False, inline: bool = False) -> bytes:
    """Return a TIFF block: IFD0 with an Exif IFD pointer, and an Exif IFD with a UserComment."""
    order = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8)
    ifd0 = struct.pack(order + "H", 1) + struct.pack(order + "HHII", 0x8769, 4, 1, 26) + b"\x00" * 4
    value = struct.pack(order + "I", 44) if not inline else comment.ljust(4, b"\x00")
    exif_ifd = struct.pack(order + "H", 1) + struct.pack(order + "HHI", 0x9286, 7, len(comment)) + value
    return head + ifd0 + exif_ifd + b"\x00" * 4 + (b"" if inline else comment)


WRAPPED_COMMENT = b"ASCII\x00\x00\x00" + LABEL.to_json(wrapped=True).encode()


class TestEXIF:
    @pytest.mark.parametrize("big_endian", [False, True])
    def test_jpeg_user_comment_read_and_blanked(self, big_endian: bool) -> None:
        """
        A wrapped label in EXIF UserComment is read, and blanked in place when writing.
        """
        tiff = make_exif(WRAPPED_COMMENT, big_endian=big_endian)
        segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
        data = JPEG_2X2[:20] + segment + JPEG_2X2[20:]

        assert [LABEL.to_json(wrapped=True)] == jpeg.read_labels(data)
        labelled = jpeg.write_label(data, PAYLOAD)
        assert [PAYLOAD] == jpeg.read_labels(labelled)
        assert len(data) == len(labelled) - len(jpeg.write_label(JPEG_2X2, PAYLOAD)) + len(JPEG_2X2)
        assert labelled.startswith(JPEG_2X2[:20] + segment[:4 + 6 + 44] + b"\x00" * len(WRAPPED_COMMENT))

    @pytest.mark.parametrize(
        "tiff",
        [
            make_exif(b"ASCII\x00\x00\x00plain comment"),
            make_exif(b"UNICODE\x00" + "{}".encode("utf-16-le")),
            make_exif(b"abc", inline=True),
            make_exif(WRAPPED_COMMENT)[:50],
            make_exif(WRAPPED_COMMENT)[:12],
            b"II*\x00\xff\xff\xff\xff",
            b"XX",
        ],
    )
    def test_other_or_damaged_exif_is_no_label(self, tiff: bytes) -> None:
        """
        Comments that are not labels and damaged EXIF blocks yield no label and are kept unchanged.
        """
        assert [] == jpeg.exif_labels(tiff)
        assert tiff == jpeg.exif_without_label(tiff)

    def test_webp_exif_chunk(self) -> None:
        """
        A WebP EXIF chunk (with or without the Exif header) is read and blanked; a simple file gets the EXIF flag.
        """
        for prefix in (b"", b"Exif\x00\x00"):
            exif = prefix + make_exif(WRAPPED_COMMENT)
            chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + b"\x00" * (len(exif) % 2)
            body = WEBP_LOSSY[8:] + chunk
            data = b"RIFF" + struct.pack("<I", len(body)) + body

            assert [LABEL.to_json(wrapped=True)] == webp.read_labels(data)
            labelled = webp.write_label(data, PAYLOAD)
            assert [PAYLOAD] == webp.read_labels(labelled)
            assert 0x0C == riff_chunks(labelled)[0][1][0]


class TestPNG:
    def test_xmp_right_after_ihdr_with_valid_crc(self) -> None:
        """
        The XMP iTXt chunk follows IHDR, has flags 0/0 and empty language fields.
        """
        kinds = png_chunks(png.write_label(PNG_SMALL, PAYLOAD))

        assert [b"IHDR", b"iTXt", b"IDAT", b"IEND"] == [kind for kind, _ in kinds]
        assert kinds[1][1].startswith(b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<?xpacket")

    def test_annex_b_text_chunk_read_and_removed(self) -> None:
        """
        A tEXt AIGC chunk is read as a label and removed on writing, leaving exactly one label.
        """
        wrapped = LABEL.to_json(wrapped=True)
        data = PNG_SMALL[:33] + png_chunk(b"tEXt", b"AIGC\x00" + wrapped.encode()) + PNG_SMALL[33:]

        assert [wrapped] == png.read_labels(data)
        labelled = png.write_label(data, PAYLOAD)
        assert [PAYLOAD] == png.read_labels(labelled)
        assert b"tEXt" not in labelled

    def test_existing_xmp_merged_including_compressed(self) -> None:
        """
        An existing (compressed) XMP iTXt is merged; other properties survive and extra XMP chunks go.
        """
        compressed = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(XMP_WITH_OTHERS))
        plain = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp.build_packet('{"Label":"3"}'))
        data = PNG_SMALL[:33] + compressed + PNG_SMALL[33:-12] + plain + PNG_SMALL[-12:]

        assert ['{"Label":"2"}', '{"Label":"3"}'] == png.read_labels(data)
        labelled = png.write_label(data, PAYLOAD)
        assert [PAYLOAD] == png.read_labels(labelled)
        assert b"Paint &amp; Co" in labelled
        assert 1 == [kind for kind, _ in png_chunks(labelled)].count(b"iTXt")

    @pytest.mark.parametrize(
        "data",
        [
            PNG_SMALL[:33] + struct.pack(">I", 2**31) + b"tEXt" + b"x" * 16 + PNG_SMALL[33:],
            PNG_SMALL[:33] + struct.pack(">I", 0xFFFFFFFF) + b"tEXt" + PNG_SMALL[33:],
            PNG_SMALL[:-1] + bytes([PNG_SMALL[-1] ^ 1]),
            PNG_SMALL[:8] + PNG_SMALL[33:],
            b"\x89PNG\r\n\x1a\n",
            PNG_SMALL[:33] + png_chunk(b"t1Xt", b"") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"zTXt", b"AIGC\x00\x00not zlib") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"zTXt", b"AIGC\x00\x01") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"iTXt", b"AIGC\x00\x02\x00\x00\x00x") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"iTXt", b"AIGC\x00\x00\x00\x00") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"iTXt", b"AIGC\x00\x00") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"iTXt", b"AIGC\x00\x01\x01\x00\x00x") + PNG_SMALL[33:],
            PNG_SMALL[:33] + png_chunk(b"iTXt", b"AIGC\x00\x00\x00\x00\x00\xff") + PNG_SMALL[33:],
            PNG_SMALL[:33]
            + png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(b" " * (5 << 20)))
            + PNG_SMALL[33:],
        ],
        ids=["len-2**31", "len-max", "bad-crc", "no-ihdr", "signature-only", "bad-type", "bad-zlib", "bad-method",
             "bad-flag", "short-itxt", "shorter-itxt", "bad-itxt-method", "not-utf8", "zip-bomb"],
    )
    def test_malformed(self, data: bytes) -> None:
        """
        Huge declared lengths, bad CRCs, bad chunk types and bad text chunks raise LabelError.
        """
        with pytest.raises(LabelError):
            png.read_labels(data)

    def test_type_error_for_str(self) -> None:
        """
        Passing text instead of bytes is a TypeError.
        """
        with pytest.raises(TypeError):
            png.read_labels("not bytes")  # type: ignore[arg-type]


class TestJPEG:
    def test_segment_placed_after_app0(self) -> None:
        """
        The XMP APP1 segment follows SOI and the JFIF APP0 segment.
        """
        labelled = jpeg.write_label(JPEG_2X2, PAYLOAD)

        assert labelled.startswith(JPEG_2X2[:20] + b"\xff\xe1")
        assert labelled[24:53] == b"http://ns.adobe.com/xap/1.0/\x00"

    def test_placed_after_exif_and_merges_existing(self) -> None:
        """
        With APP0 and EXIF present, the segment goes after them; an existing XMP segment is merged.
        """
        exif = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 8) + b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00"
        body = b"http://ns.adobe.com/xap/1.0/\x00" + XMP_WITH_OTHERS
        old = b"\xff\xe1" + struct.pack(">H", 2 + len(body)) + body
        data = JPEG_2X2[:20] + exif + old + JPEG_2X2[20:]

        labelled = jpeg.write_label(data, PAYLOAD)

        assert labelled.startswith(JPEG_2X2[:20] + exif + b"\xff\xe1")
        assert [PAYLOAD] == jpeg.read_labels(labelled)
        assert b"Paint &amp; Co" in labelled
        assert 1 == labelled.count(b"http://ns.adobe.com/xap/1.0/\x00")

    def test_oversized_packet_refused(self) -> None:
        """
        A label whose XMP segment would exceed 65,533 bytes raises LabelError.
        """
        with pytest.raises(LabelError):
            jpeg.write_label(JPEG_2X2, AIGCLabel(produce_id="x" * 65_000).to_json())

    @pytest.mark.parametrize(
        "data",
        [
            b"\xff\xd8",
            b"\xff\xd8\x00",
            b"\xff\xd8\xff\xff",
            b"\xff\xd8\xff\xd0\x00\x04",
            b"\xff\xd8\xff\xe0\x00\x01",
            JPEG_2X2[:-2],
            JPEG_2X2[:20] + b"\xff\xe1\xff\xff" + JPEG_2X2[20:],
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        """
        Missing markers, stray markers, bad lengths and a missing EOI raise LabelError.
        """
        with pytest.raises(LabelError):
            jpeg.read_labels(data)


class TestWebP:
    @pytest.mark.parametrize(
        ("sample", "flags"), [(WEBP_LOSSY, 0x04), (WEBP_LOSSLESS, 0x14), (WEBP_ALPHA, 0x14)]
    )
    def test_extended_layout(self, sample: bytes, flags: int) -> None:
        """
        The result has VP8X first with the XMP flag and a 1x1 canvas, XMP last, and a correct RIFF size.
        """
        labelled = webp.write_label(sample, PAYLOAD)
        chunks = riff_chunks(labelled)

        assert len(labelled) - 8 == struct.unpack_from("<I", labelled, 4)[0]
        assert b"VP8X" == chunks[0][0]
        assert bytes([flags, 0, 0, 0, 0, 0, 0, 0, 0, 0]) == chunks[0][1]
        assert b"XMP " == chunks[-1][0]
        assert 0 == len(labelled) % 2

    def test_odd_xmp_is_padded(self) -> None:
        """
        An odd-sized XMP chunk gets a padding byte and still reads back.
        """
        for extra in ("a", "ab"):
            labelled = webp.write_label(WEBP_LOSSY, AIGCLabel(produce_id=extra).to_json())
            assert 0 == len(labelled) % 2
            assert [AIGCLabel(produce_id=extra).to_json()] == webp.read_labels(labelled)

    @pytest.mark.parametrize(
        "data",
        [
            b"RIFF\x04\x00\x00\x00WEBP",
            b"RIFF\x0c\x00\x00\x00WEBPVP8X\x00\x00\x00\x00",
            b"RIFF\x0c\x00\x00\x00WEBPABCD\x00\x00\x00\x00",
            b"RIFF\x0c\x00\x00\x00WEBPVP8 \x00\x00\x00\x80",
            WEBP_LOSSY[:4] + struct.pack("<I", 2**31) + WEBP_LOSSY[8:],
            WEBP_LOSSY[:16] + struct.pack("<I", 2**31) + WEBP_LOSSY[20:],
            b"RIFF\x0e\x00\x00\x00WEBPVP8L\x02\x00\x00\x00\x00\x00",
            b"RIFF\x16\x00\x00\x00WEBPVP8 \x0a\x00\x00\x00\x00\x00\x00\x9d\x01\x2a\x00\x00\x00\x00",
            b"RIFF\x16\x00\x00\x00WEBPVP8 \x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00",
        ],
        ids=["empty", "short-vp8x", "unknown-first", "chunk-too-big", "riff-2**31", "chunk-2**31", "vp8l-sig",
             "vp8-empty", "vp8-no-start-code"],
    )
    def test_malformed(self, data: bytes) -> None:
        """
        Bad RIFF sizes, chunk sizes, first chunks and bitstream headers raise LabelError.
        """
        with pytest.raises(LabelError):
            webp.write_label(data, PAYLOAD)
