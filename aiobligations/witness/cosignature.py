"""C2SP tlog-cosignature v1 (Ed25519, type 0x04) and the tlog-witness ``add-checkpoint`` body.

A cosignature is a signed-note signature line by a witness over a checkpoint: its signature is an
8-byte big-endian POSIX timestamp followed by an Ed25519 signature of::

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text>

and its key ID is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ..errors import ObligationError
from ..ledger.note import _ED25519 as _PLAIN_ED25519
from ..ledger.note import _KEY_ID_HEX
from ..ledger.note import _b64decode as _b64
from ..ledger.note import _key_id as _plain_key_id  # A plain Ed25519 key's ID, as a log's verifier key has.

__all__ = [
    "COSIGNATURE_V1",
    "MAX_PROOF_LINES",
    "Cosignature",
    "CosignatureError",
    "WitnessSigner",
    "WitnessVerifier",
    "add_cosignatures",
    "check_quorum",
    "cosigned_message",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "split_note",
]

COSIGNATURE_V1 = 0x04
"""The signed-note signature type of timestamped Ed25519 checkpoint cosignatures."""

MAX_PROOF_LINES = 63
"""tlog-witness: a client must not send more than 63 consistency proof lines."""

_DASH = "\u2014 "
_DECIMAL = re.compile("0|[1-9][0-9]{0,19}")
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class CosignatureError(ObligationError, ValueError):
    """A cosignature, a witness key or an ``add-checkpoint`` body is malformed or does not verify.

    .. versionadded:: 0.2.0
    """


@dataclass(frozen=True)
class Cosignature:
    """One verified (or merely parsed) cosignature line.

    Attributes:
        name: The witness's key name.
        key_id: The 4-byte key ID.
        timestamp: When the witness cosigned, in seconds since the Epoch.
        signature: The 64-byte Ed25519 signature.
        line: The whole signature line, ``— <name> <base64>`` and a newline.

    .. versionadded:: 0.2.0
    """

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes
    line: str


def cosigned_message(text: str, timestamp: int) -> bytes:
    """
    The bytes a v1 cosignature signs.

    Args:
        text: The checkpoint's note text (ending in a newline, without signature lines).
        timestamp: The cosignature's time, seconds since the Epoch (``0 <= t < 2**63``).

    Returns:
        ``cosignature/v1\\ntime <timestamp>\\n`` followed by ``text``, in UTF-8.

    Raises:
        CosignatureError: If the timestamp is out of range or the text does not end in a newline.

    .. versionadded:: 0.2.0
    """
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not 0 <= timestamp < 1 << 63:
        raise CosignatureError(f"A cosignature timestamp must be an integer in [0, 2**63), got {timestamp!r}.")
    if not text.endswith("\n"):
        raise CosignatureError("A cosigned checkpoint text must end with a newline.")
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_V1]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise CosignatureError(f"A key name must be non-empty, without spaces or '+', got {name!r}.")


class WitnessVerifier:
    """
    Verify a witness's v1 cosignatures; usually built with :meth:`WitnessVerifier.from_key`.

    Args:
        name: The witness's key name.
        public_key: Its Ed25519 public key.

    Raises:
        CosignatureError: If the name is not a valid key name.
        TypeError: If ``public_key`` is not an Ed25519 public key.

    .. versionadded:: 0.2.0
    """

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        if not isinstance(public_key, Ed25519PublicKey):
            raise TypeError(f"public_key must be an Ed25519PublicKey, got {type(public_key).__name__}.")
        self.name = name
        self._key = public_key
        self._public = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = _key_id(name, self._public)

    @property
    def verifier_key(self) -> str:
        """The vkey, ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
        encoded = base64.b64encode(bytes([COSIGNATURE_V1]) + self._public).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def __repr__(self) -> str:
        return f"WitnessVerifier({self.verifier_key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WitnessVerifier) and other.verifier_key == self.verifier_key

    def __hash__(self) -> int:
        return hash(self.verifier_key)

    @classmethod
    def from_key(cls, vkey: str) -> WitnessVerifier:
        """
        Parse a witness verifier key: type 0x04 (cosignature/v1), or a plain Ed25519 vkey (0x01).

        A plain Ed25519 vkey is how transparency-dev's witnesses (omniwitness, the Armored Witness)
        publish their keys: as their ``NewVerifierForCosignatureV1`` does, its public key is taken
        as a cosignature/v1 key, whose key ID is computed with 0x04 (the vkey's own key ID, computed
        with 0x01, must match too).

        Args:
            vkey: ``<name>+<hex key ID>+<base64(0x04 || 32-byte Ed25519 public key)>`` (or 0x01).

        Returns:
            The verifier.

        Raises:
            CosignatureError: If the key is malformed, of another type, or its key ID does not
                match its name and public key.
        """
        if not isinstance(vkey, str):
            raise CosignatureError(f"A witness key must be a str, got {type(vkey).__name__}.")
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise CosignatureError(f"A witness key has the form <name>+<key id>+<base64 key>, got {vkey!r}.")
        name, key_id, encoded = parts
        _check_name(name)
        if not _KEY_ID_HEX.fullmatch(key_id):
            raise CosignatureError(f"A witness key's key ID is 8 lowercase hex digits, got {key_id!r}.")
        raw = _b64(encoded)
        if raw is None:
            raise CosignatureError(f"The witness key {name}+{key_id} does not end in valid base64.")
        if raw[:1] not in (bytes([COSIGNATURE_V1]), _PLAIN_ED25519):
            kind = f"0x{raw[0]:02x}" if raw else "missing"
            raise CosignatureError(
                f"The witness key {name}+{key_id} has type {kind}; a cosignature/v1 key has type 0x04 "
                "(or 0x01, a plain Ed25519 key).")
        if len(raw) != 33:
            raise CosignatureError(f"An Ed25519 public key is 32 bytes long, got {len(raw) - 1}.")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        expected = _plain_key_id(name, raw[1:]) if raw[:1] == _PLAIN_ED25519 else verifier.key_id
        if expected.hex() != key_id:
            raise CosignatureError(
                f"The key ID {key_id} does not match the name and key, which give {expected.hex()}.")
        return verifier

    def verify_line(self, text: str, line: str) -> Cosignature:
        """
        Verify one signature line as this witness's cosignature of ``text``.

        Args:
            text: The checkpoint's note text.
            line: The signature line (with or without its final newline).

        Returns:
            The cosignature.

        Raises:
            CosignatureError: If the line is not by this key or does not verify.
        """
        parsed = _parse_line(line)
        if parsed is None:
            raise CosignatureError("The line is not '\u2014 <key name> <base64 signature>'.")
        name, key_id, raw = parsed
        if name != self.name or key_id != self.key_id:
            raise CosignatureError(f"The line is signed by {name}+{key_id.hex()}, not by {self.name}+{self.key_id.hex()}.")
        if len(raw) != 8 + 64:
            raise CosignatureError(f"A cosignature/v1 signature is 72 bytes, got {len(raw)}.")
        timestamp = int.from_bytes(raw[:8], "big")
        try:
            self._key.verify(raw[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            raise CosignatureError(f"The cosignature by {self.name}+{self.key_id.hex()} does not verify.") from None
        return Cosignature(name, key_id, timestamp, raw[8:], line.rstrip("\n") + "\n")

    def find(self, note: str) -> Cosignature | None:
        """
        Find and verify this witness's cosignature on a signed note.

        Args:
            note: A signed checkpoint note, with any signature lines.

        Returns:
            The newest valid cosignature by this key, or ``None`` when the note has none.

        Raises:
            CosignatureError: If the note is malformed, or a line with this key's name and ID
                does not verify.
        """
        text, lines = split_note(note)
        found: Cosignature | None = None
        for line in lines:
            parsed = _parse_line(line)
            if parsed is None or parsed[0] != self.name or parsed[1] != self.key_id:
                continue
            cosignature = self.verify_line(text, line)
            if found is None or cosignature.timestamp > found.timestamp:
                found = cosignature
        return found


class WitnessSigner(WitnessVerifier):
    """
    A witness's cosigning key.

    Args:
        name: The witness's key name (a schema-less URL, e.g. ``witness.example.org/w1``).
        private_key: The Ed25519 private key.

    Raises:
        CosignatureError: If the name is not a valid key name.
        TypeError: If ``private_key`` is not an Ed25519 private key.

    .. versionadded:: 0.2.0
    """

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:  # noqa: D107
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(f"private_key must be an Ed25519PrivateKey, got {type(private_key).__name__}.")
        super().__init__(name, private_key.public_key())
        self._private = private_key

    def __repr__(self) -> str:
        return f"WitnessSigner({self.verifier_key!r})"

    @classmethod
    def generate(cls, name: str) -> WitnessSigner:
        """
        Create a witness key with a fresh random Ed25519 key.

        Args:
            name: The witness's key name.

        Returns:
            The signer.
        """
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> WitnessVerifier:
        """The public half."""
        return WitnessVerifier(self.name, self._key)

    def cosign(self, text: str, timestamp: int) -> str:
        """
        Cosign a checkpoint text at ``timestamp``.

        Args:
            text: The checkpoint's note text.
            timestamp: Seconds since the Epoch; the spec forbids 0 for checkpoints.

        Returns:
            The signature line, ``— <name> <base64(key ID || timestamp || signature)>`` and a newline.

        Raises:
            CosignatureError: If the timestamp is out of range or the text malformed.
        """
        signature = self._private.sign(cosigned_message(text, timestamp))
        raw = self.key_id + timestamp.to_bytes(8, "big") + signature
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode('ascii')}\n"

    def private_text(self) -> str:
        """
        The private key file's line: ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``.

        Returns:
            The line, ending in a newline (the format of golang.org/x/mod/sumdb/note signer keys).
        """
        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        encoded = base64.b64encode(bytes([COSIGNATURE_V1]) + seed).decode("ascii")
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{encoded}\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """
        Write the private key file, readable by its owner only; an existing file is refused.

        Args:
            path: Where to write it.

        Raises:
            FileExistsError: If the file exists.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self.private_text())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WitnessSigner:
        """
        Read a private key file written by :meth:`save`.

        Args:
            path: The file.

        Returns:
            The signer.

        Raises:
            CosignatureError: If the file cannot be read or is not a witness key.
        """
        try:
            text = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CosignatureError(f"{path}: cannot read the witness key ({exc})") from None
        return cls.from_private_text(text, str(path))

    @classmethod
    def from_private_text(cls, text: str, source: str = "the witness key") -> WitnessSigner:
        """
        Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || 32-byte seed)>`` (or a plain Ed25519
        signer key, 0x01, which signs cosignature/v1 as transparency-dev's witnesses do).

        Args:
            text: The key line.
            source: Named in error messages.

        Returns:
            The signer.

        Raises:
            CosignatureError: If the line is malformed or its key ID does not match.
        """
        if not text.startswith(_PRIVATE_PREFIX):
            raise CosignatureError(f"{source}: not a witness private key (it starts with PRIVATE+KEY+).")
        parts = text[len(_PRIVATE_PREFIX):].split("+", 2)
        raw = _b64(parts[2]) if len(parts) == 3 else None
        if raw is None or len(raw) != 33 or raw[0] not in (COSIGNATURE_V1, _PLAIN_ED25519[0]):
            raise CosignatureError(f"{source}: not a cosignature/v1 (0x04) or Ed25519 (0x01) private key.")
        try:
            signer = cls(parts[0], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        except CosignatureError as exc:
            raise CosignatureError(f"{source}: {exc}") from None
        public = signer._public
        expected = signer.key_id if raw[0] == COSIGNATURE_V1 else _plain_key_id(parts[0], public)
        if expected.hex() != parts[1]:
            raise CosignatureError(f"{source}: the key ID {parts[1]} does not match the key.")
        return signer


def _parse_line(line: str) -> tuple[str, bytes, bytes] | None:
    line = line.rstrip("\n")
    if not line.startswith(_DASH):
        return None
    fields = line[len(_DASH):].split(" ")
    if len(fields) != 2 or not fields[0] or "+" in fields[0]:
        return None
    raw = _b64(fields[1])
    if raw is None or len(raw) < 5:
        return None
    return fields[0], raw[:4], raw[4:]


def split_note(note: str | bytes) -> tuple[str, list[str]]:
    """
    Split a signed note into its text and its signature lines (not verified).

    Args:
        note: The signed note.

    Returns:
        The text (ending in a newline) and the signature lines (each ending in a newline).

    Raises:
        CosignatureError: If the note has no signature block or a line is not a signature line.

    .. versionadded:: 0.2.0
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CosignatureError("A signed note must be valid UTF-8.") from None
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CosignatureError("The note has no blank line before its signatures, or does not end in a newline.")
    text, block = note[: cut + 1], note[cut + 2:]
    lines = [f"{line}\n" for line in block[:-1].split("\n")] if block else []
    if not lines or any(_parse_line(line) is None for line in lines):
        raise CosignatureError("The note's signature block holds a line that is not a signature line.")
    return text, lines


def add_cosignatures(note: str, lines: Iterable[str]) -> str:
    """
    Append signature lines to a signed note, skipping lines it already carries.

    Args:
        note: A signed note.
        lines: Signature lines (for instance an ``add-checkpoint`` response).

    Returns:
        The note with the new lines at the end.

    Raises:
        CosignatureError: If the note or a line is malformed.

    .. versionadded:: 0.2.0
    """
    _, present = split_note(note)
    out = note
    for line in lines:
        line = line.rstrip("\n") + "\n"
        if _parse_line(line) is None:
            raise CosignatureError(f"Not a signature line: {line!r}.")
        if line not in present:
            present.append(line)
            out += line
    return out


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """
    The body of an ``add-checkpoint`` request (c2sp.org/tlog-witness).

    Args:
        old_size: The size of the checkpoint the witness last cosigned (0 if none).
        proof: The consistency proof from ``old_size`` to the checkpoint's size.
        note: The signed checkpoint.

    Returns:
        ``old <size>``, one base64 line per proof hash, an empty line, then the note.

    Raises:
        CosignatureError: If the proof has more than 63 hashes.

    .. versionadded:: 0.2.0
    """
    if len(proof) > MAX_PROOF_LINES:
        raise CosignatureError(f"A consistency proof has at most {MAX_PROOF_LINES} hashes, got {len(proof)}.")
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode("ascii") + "\n" for h in proof), "\n"]
    return ("".join(lines) + note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """
    Parse an ``add-checkpoint`` request body strictly.

    Args:
        body: The request body.

    Returns:
        The old size, the consistency proof hashes and the signed checkpoint note.

    Raises:
        CosignatureError: If the body breaks the format: the old size line, more than 63 proof
            lines, a proof line that is not base64 of 32 bytes, or a missing empty line.

    .. versionadded:: 0.2.0
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CosignatureError("The body is not UTF-8.") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise CosignatureError("The body has no empty line before the checkpoint.")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
        raise CosignatureError(f"The first line must be 'old <decimal size>', got {first[:40]!r}.")
    old = int(first[4:])
    if old >= 1 << 64:
        raise CosignatureError("The old size is not a uint64.")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise CosignatureError(f"The consistency proof has {len(lines) - 1} lines; at most {MAX_PROOF_LINES}.")
    proof = []
    for number, line in enumerate(lines[1:], 2):
        raw = _b64(line)
        if raw is None or len(raw) != 32:
            raise CosignatureError(f"Line {number} is not a base64 SHA-256 hash.")
        proof.append(raw)
    return old, proof, note


def check_quorum(note: str, witnesses: Sequence[WitnessVerifier], quorum: int
                 ) -> tuple[list[Cosignature], list[WitnessVerifier]]:
    """
    Count the valid cosignatures on a checkpoint note by the given witnesses.

    A line by a listed witness that does not verify counts as missing (and is not trusted);
    lines by other keys are ignored.

    Args:
        note: The signed checkpoint, with cosignature lines.
        witnesses: The witnesses the caller trusts.
        quorum: How many must have cosigned.

    Returns:
        The valid cosignatures found and the witnesses without one. The quorum is met when
        ``len(found) >= quorum``.

    Raises:
        CosignatureError: If the note itself is malformed, or ``quorum`` is not positive.

    .. versionadded:: 0.2.0
    """
    if quorum < 1:
        raise CosignatureError(f"The quorum must be at least 1, got {quorum}.")
    split_note(note)
    found: list[Cosignature] = []
    missing: list[WitnessVerifier] = []
    for witness in dict.fromkeys(witnesses):
        try:
            cosignature = witness.find(note)
        except CosignatureError:
            cosignature = None
        if cosignature is None:
            missing.append(witness)
        else:
            found.append(cosignature)
    return found, missing
