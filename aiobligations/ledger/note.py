"""C2SP signed notes and tlog checkpoints, signed and verified with Ed25519."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import ConfigurationError, ObligationError

__all__ = [
    "BadSignature",
    "Checkpoint",
    "MalformedNote",
    "NoteError",
    "Signer",
    "UnknownKey",
    "Verifier",
    "open_checkpoint",
    "sign_checkpoint",
]

# The signature type byte of plain Ed25519 in c2sp.org/signed-note.
_ED25519 = b"\x01"
# Every signature line starts with an em dash (U+2014) and a space.
_DASH = "\u2014 "
# The spec asks verifiers to accept at least 16 signatures and to cap them; golang.org/x/mod's
# sumdb/note caps at 100, so notes that Go accepts are accepted here too.
_MAX_SIGNATURES = 100
# ASCII control characters other than newline, which a note must not contain.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile("[0-9a-f]{8}")
_DECIMAL = re.compile("0|[1-9][0-9]{0,19}")


class NoteError(ObligationError, ValueError):
    """A signed note could not be opened."""


class MalformedNote(NoteError):
    """The note, or the checkpoint inside it, breaks its format."""


class UnknownKey(NoteError):
    """The note carries no signature by the expected key (name and key ID): the wrong key?"""


class BadSignature(NoteError):
    """The note has a signature line for the expected key, but the signature does not verify."""


class _NamedKey:
    """What a signer and a verifier share: a key name, its key ID and the verifier key string."""

    _name: str
    _key_id: bytes
    _public: bytes

    def _bind(self, name: str, public: bytes) -> None:
        _check_name(name)
        self._name = name
        self._public = public
        self._key_id = _key_id(name, public)

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return self._key_id

    @property
    def verifier_key(self) -> str:
        """The public verifier key, ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        return _verifier_key(self._name, self._key_id, self._public)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.verifier_key!r})"


class Signer(_NamedKey):
    """
    Sign notes with an Ed25519 key under a key name, as c2sp.org/signed-note describes.

    Args:
        name: The key name; non-empty, without spaces or ``+`` (for a log, its origin).
        private_key: The Ed25519 private key.

    Raises:
        TypeError: If ``private_key`` is not an Ed25519 private key.
        ValueError: If ``name`` is not a valid key name.
    """

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(
                f"private_key must be an Ed25519PrivateKey, got {type(private_key).__name__}."
            )
        self._key = private_key
        self._bind(name, private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The Ed25519 private key (labels sign their ``ReservedCode1`` with it too)."""
        return self._key

    @classmethod
    def generate(cls, name: str) -> Signer:
        """
        Create a signer with a fresh random Ed25519 key.

        Args:
            name: The key name.

        Returns:
            The new signer.

        Raises:
            ValueError: If ``name`` is not a valid key name.
        """
        return cls(name, Ed25519PrivateKey.generate())

    def sign(self, text: str) -> str:
        """
        Sign ``text`` and return the signed note.

        Args:
            text: The note text: UTF-8, ending in a newline, without other control characters.

        Returns:
            ``text``, a blank line and the line ``— <name> <base64(key ID || signature)>``.

        Raises:
            TypeError: If ``text`` is not a ``str``.
            ValueError: If ``text`` cannot be a note text.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}.")
        if not text.endswith("\n"):
            raise ConfigurationError("A note text must end with a newline.")
        problem = _text_problem(text)
        if problem:
            raise ConfigurationError(f"The note text {problem}.")
        signature = self._key.sign(text.encode("utf-8"))
        line = base64.b64encode(self._key_id + signature).decode("ascii")
        return f"{text}\n{_DASH}{self._name} {line}\n"


class Verifier(_NamedKey):
    """
    Verify notes signed by one Ed25519 key; usually built with :meth:`Verifier.from_key`.

    Args:
        name: The key name.
        public_key: The Ed25519 public key.

    Raises:
        TypeError: If ``public_key`` is not an Ed25519 public key.
        ValueError: If ``name`` is not a valid key name.
    """

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        if not isinstance(public_key, Ed25519PublicKey):
            raise TypeError(
                f"public_key must be an Ed25519PublicKey, got {type(public_key).__name__}."
            )
        self._key = public_key
        self._bind(name, public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """
        Parse a verifier key, ``<name>+<hex key ID>+<base64(0x01 || 32-byte public key)>``.

        Args:
            vkey: The verifier key, as :attr:`Signer.verifier_key` writes it.

        Returns:
            The verifier.

        Raises:
            TypeError: If ``vkey`` is not a ``str``.
            ValueError: If the key is malformed, not Ed25519, of the wrong length, or its key ID
                does not match its name and public key.
        """
        if not isinstance(vkey, str):
            raise TypeError(f"vkey must be a str, got {type(vkey).__name__}.")
        # The base64 part may itself contain "+", but the name and the key ID cannot.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise ConfigurationError(
                f"A verifier key has the form <name>+<key id>+<base64 key>, got {vkey!r}."
            )
        name, key_id, encoded = parts
        _check_name(name)
        if not _KEY_ID_HEX.fullmatch(key_id):
            raise ConfigurationError(f"A verifier key's key ID is 8 lowercase hex digits, got {key_id!r}.")
        raw = _b64decode(encoded)
        if raw is None:
            raise ConfigurationError(f"The verifier key {name}+{key_id} does not end in valid base64.")
        if raw[:1] != _ED25519:
            kind = f"0x{raw[0]:02x}" if raw else "missing"
            raise ConfigurationError(f"The verifier key's type is {kind}; only Ed25519 (0x01) works.")
        if len(raw) != 33:
            raise ConfigurationError(f"An Ed25519 public key is 32 bytes long, got {len(raw) - 1}.")
        expected = _key_id(name, raw[1:])
        if expected.hex() != key_id:
            raise ConfigurationError(
                f"The key ID {key_id} does not match the name and key, which give {expected.hex()}."
            )
        return cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))

    def verify(self, note: str | bytes) -> str:
        """
        Check the note's signature by this key and return the text it signs.

        Signature lines of other keys are ignored. Every line with this key's name and ID must
        verify.

        Args:
            note: The signed note; bytes must be UTF-8.

        Returns:
            The verified note text, ending in a newline.

        Raises:
            TypeError: If ``note`` is neither ``str`` nor ``bytes``.
            MalformedNote: If the note breaks the signed-note format.
            UnknownKey: If no signature line carries this key's name and ID.
            BadSignature: If a signature line of this key does not verify.
        """
        text, signatures = _split(note)
        found = False
        message = text.encode("utf-8")
        for name, key_id, signature in signatures:
            if name != self._name or key_id != self._key_id:
                continue
            found = True
            try:
                self._key.verify(signature, message)
            except InvalidSignature:
                raise BadSignature(
                    f"The signature by {self._name}+{key_id.hex()} does not verify."
                ) from None
        if not found:
            present = ", ".join(sorted({f"{n}+{k.hex()}" for n, k, _ in signatures}))
            raise UnknownKey(
                f"The note has no signature by {self._name}+{self._key_id.hex()}; "
                f"it is signed by {present}."
            )
        return text


@dataclass(frozen=True)
class Checkpoint:
    """
    A transparency log checkpoint, the note text of c2sp.org/tlog-checkpoint.

    Args:
        origin: The log's unique name, for example ``example.com/log``; non-empty.
        size: The number of leaves in the tree.
        root: The RFC 9162 root of the tree, 32 bytes.
        extensions: Optional further lines, each non-empty.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If a field breaks the format.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise ConfigurationError(f"A checkpoint's origin must be a non-empty str, got {self.origin!r}.")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise TypeError(f"size must be an integer, got {type(self.size).__name__}.")
        if not 0 <= self.size < 1 << 64:
            raise ConfigurationError(f"A checkpoint's size must be a uint64, got {self.size}.")
        if not isinstance(self.root, (bytes, bytearray)):
            raise TypeError(f"root must be bytes, got {type(self.root).__name__}.")
        if len(self.root) != 32:
            raise ConfigurationError(f"A checkpoint's root must be 32 bytes, got {len(self.root)}.")
        # Normalise lists and bytearrays so that equal checkpoints compare and hash equal.
        object.__setattr__(self, "root", bytes(self.root))
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line or "\n" in line or _CONTROL.search(line):
                raise ConfigurationError(
                    f"Checkpoint lines must be non-empty, without control characters: {line!r}."
                )

    def to_text(self) -> str:
        """
        Format the checkpoint as note text.

        Returns:
            ``origin``, ``size`` and base64 ``root``, then any extension lines, each ending in a
            newline.
        """
        root = base64.b64encode(self.root).decode("ascii")
        lines = (self.origin, str(self.size), root, *self.extensions)
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """
        Parse checkpoint note text strictly.

        Args:
            text: The verified note text (see :meth:`Verifier.verify`).

        Returns:
            The checkpoint.

        Raises:
            TypeError: If ``text`` is not a ``str``.
            MalformedNote: If a line is missing or empty, the size is not plain decimal (no sign,
                no leading zeros), or the root is not base64 of 32 bytes.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}.")
        if not text.endswith("\n"):
            raise MalformedNote("A checkpoint must end with a newline.")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNote(f"A checkpoint has at least 3 lines, got {len(lines)}.")
        origin, size, encoded, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedNote(f"The tree size must be decimal, no leading zeros, got {size!r}.")
        root = _b64decode(encoded)
        if root is None:
            raise MalformedNote(f"The root hash is not valid base64: {encoded!r}.")
        if len(root) != 32:
            raise MalformedNote(f"The root hash must be 32 bytes, got {len(root)}.")
        try:
            return cls(origin, int(size), root, tuple(extensions))
        except ValueError as exc:
            raise MalformedNote(str(exc)) from None


def sign_checkpoint(signer: Signer, checkpoint: Checkpoint) -> str:
    """
    Sign a checkpoint.

    Args:
        signer: The log's signer; its name should equal the checkpoint's origin.
        checkpoint: The checkpoint.

    Returns:
        The signed note.
    """
    return signer.sign(checkpoint.to_text())


def open_checkpoint(verifier: Verifier, note: str | bytes) -> Checkpoint:
    """
    Verify a signed checkpoint and parse it.

    Args:
        verifier: The log's verifier.
        note: The signed note.

    Returns:
        The checkpoint.

    Raises:
        MalformedNote: If the note or the checkpoint breaks its format.
        UnknownKey: If the note is not signed by ``verifier``'s key.
        BadSignature: If the signature does not verify.
    """
    return Checkpoint.parse(verifier.verify(note))


def _split(note: str | bytes) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    # Split a note into its text and its parsed signature lines (name, key ID, signature).
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNote("A signed note must be valid UTF-8.") from None
    if not isinstance(note, str):
        raise TypeError(f"note must be a str or bytes, got {type(note).__name__}.")
    problem = _text_problem(note)
    if problem:
        raise MalformedNote(f"The note {problem}.")
    # The text ends at the last blank line; signature lines follow it.
    cut = note.rfind("\n\n")
    if cut < 0:
        raise MalformedNote("The note has no blank line before its signatures.")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block:
        raise MalformedNote("The note has no signature lines.")
    if not block.endswith("\n"):
        raise MalformedNote("The note's last signature line must end with a newline.")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise MalformedNote(f"The note has {len(lines)} signatures; at most {_MAX_SIGNATURES}.")
    signatures = []
    for number, line in enumerate(lines, 1):
        fields = line[len(_DASH) :].split(" ") if line.startswith(_DASH) else []
        raw = _b64decode(fields[1]) if len(fields) == 2 else None
        if raw is None or len(raw) < 5 or not _valid_name(fields[0]):
            raise MalformedNote(
                f"Signature line {number} is not '\u2014 <key name> <base64 signature>'."
            )
        signatures.append((fields[0], raw[:4], raw[4:]))
    return text, signatures


def _text_problem(text: str) -> str | None:
    if _CONTROL.search(text):
        return "contains a control character other than newline"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}.")
    if not _valid_name(name) or _text_problem(name):
        raise ConfigurationError(f"A key name must be non-empty, without spaces or '+', got {name!r}.")


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + public).digest()[:4]


def _verifier_key(name: str, key_id: bytes, public: bytes) -> str:
    return f"{name}+{key_id.hex()}+{base64.b64encode(_ED25519 + public).decode('ascii')}"


def _b64decode(text: str) -> bytes | None:
    # Standard base64 with padding, canonical only, so that one value has exactly one encoding.
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None
