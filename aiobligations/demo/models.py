"""Toy models for the demo service: a deterministic chat model and a procedural PNG generator."""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError

__all__ = ["DEFAULT_IMAGE_SIZE", "IMAGE_SIZES", "ToyChatModel", "ToyImageModel", "encode_png", "parse_size"]

IMAGE_SIZES = ("auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792")
"""The image sizes the toy image model accepts: every ``size`` OpenAI's image models take (``auto`` is
:data:`DEFAULT_IMAGE_SIZE`)."""

DEFAULT_IMAGE_SIZE = "1024x1024"
"""The size drawn when a request names none, as OpenAI's default; large enough for every label."""

# Kana, CJK ideographs and Hangul syllables: each character is a token of its own.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Leading whitespace belongs to the token that follows it, so that joining the tokens gives the
# text back exactly: a stream of tokens concatenates to the complete reply.
_TOKEN = re.compile(rf"\s*(?:[{_CJK}]|[^\W{_CJK}]+|\S)|\s+")
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_GREETINGS_EN = frozenset({"hello", "hi", "hey", "greetings", "howdy", "morning", "evening", "afternoon"})
_GREETINGS_ZH = ("你好", "您好", "嗨", "早上好", "晚上好", "下午好", "哈喽")
_ECHO_TOKENS = 12
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _text_of(content: Any) -> str:
    """Return the text of a message's ``content``: a string, or a list of ``text`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(
            part["text"] for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


class ToyChatModel:
    """A deterministic toy chat model: a short reply derived from the last user message.

    It greets back (in Chinese when the message is written in Chinese, otherwise in English),
    and otherwise counts the words and echoes the start of the message. The same messages always
    give the same reply, and a reply stays well under 60 tokens.

    .. versionadded:: 0.1.0
    """

    name = "toy-1"

    def tokens(self, text: str) -> list[str]:
        """Split ``text`` into tokens: words, single CJK characters and single punctuation marks.

        Whitespace is kept with the token that follows it, so ``"".join(tokens(text)) == text``.
        """
        return _TOKEN.findall(text)

    def count_tokens(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        return len(self.tokens(text))

    def prompt_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Return the prompt's token count: each message's content plus one token for its role."""
        return sum(1 + self.count_tokens(_text_of(message.get("content"))) for message in messages)

    def usage(self, messages: Sequence[Mapping[str, Any]], completion: str) -> dict[str, int]:
        """Return OpenAI's ``usage`` object for a prompt and its completion."""
        prompt = self.prompt_tokens(messages)
        completion_tokens = self.count_tokens(completion)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def complete(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """Return the reply to ``messages`` (dicts with ``role`` and ``content``), deterministically."""
        text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                text = " ".join(_text_of(message.get("content")).split())
                break
        if not text:
            return f"I am {self.name}, a deterministic demonstration model. Send me a message and I will sum it up."
        words = _WORD.findall(text)
        chinese = _HAN.search(text) is not None
        if chinese:
            if any(greeting in text for greeting in _GREETINGS_ZH):
                return f"你好！我是 {self.name}，一个确定性的演示模型。请告诉我你想聊什么。"
            digest = hashlib.sha256(text.encode()).hexdigest()[:6]
            return f"你写了 {len(words)} 个字。摘要：“{self._echo(text)}”。指纹 {digest}。"
        if words and words[0].lower() in _GREETINGS_EN:
            return f"Hello! I am {self.name}, a deterministic demonstration model. What shall we talk about?"
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        kind = "question" if text.endswith("?") else "message"
        plural = "" if len(words) == 1 else "s"
        return f"Your {kind} has {len(words)} word{plural}. In short: “{self._echo(text)}”. Fingerprint {digest}."

    def _echo(self, text: str) -> str:
        tokens = self.tokens(text)
        if len(tokens) <= _ECHO_TOKENS:
            return text
        return "".join(tokens[:_ECHO_TOKENS]).strip() + "…"


def parse_size(size: str) -> tuple[int, int]:
    """Return ``(width, height)`` for one of :data:`IMAGE_SIZES` (``auto`` is :data:`DEFAULT_IMAGE_SIZE`).

    Raises:
        ValueError: the size is not one of :data:`IMAGE_SIZES`.
    """
    if size not in IMAGE_SIZES:
        raise ConfigurationError(f"size must be one of {', '.join(IMAGE_SIZES)}, got {size!r}")
    width, _, height = (DEFAULT_IMAGE_SIZE if size == "auto" else size).partition("x")
    return int(width), int(height)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rows: Iterator[bytes] | Sequence[bytes]) -> bytes:
    """Encode 8-bit RGB ``rows`` (each ``width * 3`` bytes) as a PNG: IHDR, one IDAT, IEND.

    Raises:
        ValueError: a row has the wrong length or there are not ``height`` rows.
    """
    raw = bytearray()
    count = 0
    for row in rows:
        if len(row) != width * 3:
            raise ConfigurationError(f"row {count} has {len(row)} bytes, expected {width * 3}")
        raw += b"\x00" + row  # Filter type 0 (None) for every scanline.
        count += 1
    if count != height:
        raise ConfigurationError(f"got {count} rows, expected {height}")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace.
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(bytes(raw), 6)), _chunk(b"IEND", b""))
    )


class _Seed:
    """An endless, deterministic byte stream: SHA-256 of the seed and a counter."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def byte(self) -> int:
        if not self._buffer:
            self._buffer = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        value, self._buffer = self._buffer[0], self._buffer[1:]
        return value

    def fraction(self) -> float:
        return self.byte() / 255

    def colour(self) -> bytes:
        return bytes((self.byte(), self.byte(), self.byte()))


class ToyImageModel:
    """A procedural image generator: a gradient with circles, squares and diamonds, as a PNG.

    The picture is derived from SHA-256 of the prompt, so the same prompt (and ``variant``) always
    gives the same bytes, and shapes sit at the same relative places whatever the size.

    .. versionadded:: 0.1.0
    """

    name = "toy-image-1"

    def generate(self, prompt: str, size: str = DEFAULT_IMAGE_SIZE, *, variant: int = 0) -> bytes:
        """Return a PNG (8-bit RGB) drawn from ``prompt``.

        Args:
            prompt: What to draw; only its hash matters.
            size: One of :data:`IMAGE_SIZES`.
            variant: Picks another picture for the same prompt (the n-th of ``n`` images).

        Raises:
            ValueError: ``size`` is not one of :data:`IMAGE_SIZES`.
        """
        width, height = parse_size(size)
        seed = _Seed(hashlib.sha256(f"{variant}\x00{prompt}".encode()).digest())
        top, bottom = seed.colour(), seed.colour()
        shapes = []
        scale = min(width, height)
        for _ in range(3 + seed.byte() % 5):
            kind = seed.byte() % 3
            cx, cy = seed.fraction() * width, seed.fraction() * height
            radius = (0.06 + 0.2 * seed.fraction()) * scale
            shapes.append((kind, cx, cy, radius, seed.colour()))
        return encode_png(width, height, self._rows(width, height, top, bottom, shapes))

    @staticmethod
    def _rows(
        width: int, height: int, top: bytes, bottom: bytes, shapes: list[tuple[int, float, float, float, bytes]]
    ) -> Iterator[bytes]:
        # Each row is a solid gradient colour with the shapes' spans painted over it by slicing,
        # which keeps even 1024x1024 fast without a per-pixel loop in Python.
        for y in range(height):
            t = y / max(height - 1, 1)
            row = bytearray(bytes(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)) * width)
            for kind, cx, cy, radius, colour in shapes:
                dy = abs(y + 0.5 - cy)
                if dy >= radius:
                    continue
                if kind == 0:
                    half = math.sqrt(radius * radius - dy * dy)
                elif kind == 1:
                    half = radius
                else:
                    half = radius - dy
                x0, x1 = max(0, round(cx - half)), min(width, round(cx + half))
                if x1 > x0:
                    row[x0 * 3 : x1 * 3] = colour * (x1 - x0)
            yield bytes(row)
