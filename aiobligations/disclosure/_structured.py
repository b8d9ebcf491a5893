"""RFC 9651 Structured Field values: the marker types and a strict parser (private; see ``header``)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["Date", "DisplayString", "Token"]

_TCHAR = frozenset("!#$%&'*+-.^_`|~:/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEYCHAR = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.*")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_NUMBER = re.compile(r"-?([0-9]*)(?:\.([0-9]*))?")


class Token(str):
    """A Structured Field Token (an unquoted identifier such as ``ai-originated``).

    It is a ``str``; the class only tells the serializer to write it bare rather than quoted.
    """


class DisplayString(str):
    """A Structured Field Display String (RFC 9651 §3.3.8): Unicode text, sent as ``%"..."``.

    Use it for text that must keep its characters, such as ``"示例科技"``. Recipients that only
    know RFC 8941 reject the whole field, so prefer :func:`ascii_safe` for headers meant for all.
    """


class Date(int):
    """A Structured Field Date: whole seconds since the Unix epoch, sent as ``@<seconds>``."""


class _Parser:
    """RFC 9651 §4.2, over one combined field value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"invalid structured field at position {self.pos} of {self.text!r}: {what}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, tuple[Any, dict[str, Any]]]:
        result: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.skip(" ")
        while self.pos < len(self.text):
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                value: Any = self.inner_list() if self.peek() == "(" else self.bare_item()
            else:
                value = True
            result[key] = (value, self.parameters())
            self.skip(" \t")
            if self.pos >= len(self.text):
                return result
            if self.peek() != ",":
                raise self.fail("expected ',' between members")
            self.pos += 1
            self.skip(" \t")
            if self.pos >= len(self.text):
                raise self.fail("a trailing ',' with no member after it")
        return result

    def inner_list(self) -> list[tuple[Any, dict[str, Any]]]:
        self.pos += 1
        items: list[tuple[Any, dict[str, Any]]] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return items
            items.append((self.bare_item(), self.parameters()))
            if self.peek() not in (" ", ")"):
                raise self.fail("expected ' ' or ')' in an inner list")

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.key()
            value: Any = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params[key] = value
        return params

    def key(self) -> str:
        start = self.pos
        if not ("a" <= self.peek() <= "z" or self.peek() == "*"):
            raise self.fail("a key must start with a lower-case letter or '*'")
        while self.pos < len(self.text) and self.text[self.pos] in _KEYCHAR:
            self.pos += 1
        return self.text[start:self.pos]

    def bare_item(self) -> Any:
        char = self.peek()
        if char == "-" or char.isdigit() and char.isascii():
            return self.number()
        if char == '"':
            return self.string()
        if char == "*" or char.isascii() and char.isalpha():
            return self.token()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char == "@":
            self.pos += 1
            value = self.number()
            if not isinstance(value, int):
                raise self.fail("a date must be an integer")
            return Date(value)
        if char == "%":
            return self.display_string()
        raise self.fail("expected a value" if char else "the field ends where a value was expected")

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.pos)
        whole, frac = (match.group(1), match.group(2)) if match else ("", None)
        if not match or not whole:
            raise self.fail("a number needs a digit")
        if frac is None:
            if len(whole) > 15:
                raise self.fail("an integer has at most 15 digits")
            self.pos = match.end()
            return int(match.group(0))
        if len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise self.fail("a decimal has at most 12 integer and 1 to 3 fractional digits")
        self.pos = match.end()
        return float(match.group(0))

    def string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\") or not escaped:
                    raise self.fail("only '\\\"' and '\\\\' are escapes in a string")
                out.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise self.fail(f"a string holds printable ASCII only, not {char!r}")
            else:
                out.append(char)
        raise self.fail("the string is not terminated")

    def token(self) -> Token:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return Token(self.text[start:self.pos])

    def byte_sequence(self) -> bytes:
        end = self.text.find(":", self.pos + 1)
        if end < 0:
            raise self.fail("the byte sequence is not terminated")
        body = self.text[self.pos + 1:end]
        if not set(body) <= _BASE64:
            raise self.fail("a byte sequence holds base64 only")
        if "=" not in body:
            # RFC 9651 §4.2.7: parsers should not fail when the "=" padding is missing.
            body += "=" * (-len(body) % 4)
        try:
            value = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise self.fail("the byte sequence is not valid base64") from None
        self.pos = end + 1
        return value

    def boolean(self) -> bool:
        value = self.text[self.pos + 1:self.pos + 2]
        if value not in ("0", "1"):
            raise self.fail("a boolean is ?0 or ?1")
        self.pos += 2
        return value == "1"

    def display_string(self) -> DisplayString:
        if self.text[self.pos + 1:self.pos + 2] != '"':
            raise self.fail("a display string starts with '%\"'")
        self.pos += 2
        data = bytearray()
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "%":
                digits = self.text[self.pos:self.pos + 2]
                if len(digits) != 2 or not set(digits) <= set("0123456789abcdef"):
                    raise self.fail("a display string escape is '%' and two lower-case hex digits")
                data.append(int(digits, 16))
                self.pos += 2
            elif char == '"':
                try:
                    return DisplayString(data.decode("utf-8"))
                except UnicodeDecodeError:
                    raise self.fail("the display string is not valid UTF-8") from None
            elif not " " <= char <= "~":
                raise self.fail(f"a display string holds printable ASCII only, not {char!r}")
            else:
                data.append(ord(char))
        raise self.fail("the display string is not terminated")
