"""Personal data in the ledger: pseudonyms, per-subject keys and sealing.

What a caller passes under ``personal`` never reaches the store in clear. The stored record carries
instead:

- ``subject``: a keyed pseudonym, ``base64url(HMAC-SHA256(pseudonym key, subject)[:16])``. The same
  subject always maps to the same pseudonym, so an auditor can group records without learning who
  the person is;
- ``sealed``: ``base64(key id || nonce || AES-256-GCM ciphertext)`` under the subject's own random
  key; the 4-byte key id tells which of a subject's keys sealed it (a subject who returns after
  being erased gets a new key, and the old data stays unreadable rather than failing). The
  associated data binds the ciphertext to the log, the record's index and the pseudonym, so sealed
  data cannot be moved to another record unnoticed.

Subject keys are random (never derived, so they can be deleted) and are stored wrapped by the master
key, apart from the records. Deleting a subject's wrapped key crypto-shreds everything sealed for
that subject while every Merkle proof still verifies: the leaves hash the ciphertext, not the
plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from collections import OrderedDict
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError, LedgerError

__all__ = ["MasterKey", "SubjectCrypto", "sealing_aad"]

_WRAP_AAD = b"aiobligations/subject-key/v1\n"
_SECRET_AAD = b"aiobligations/ledger-secret/v1\n"
_SEAL_AAD = b"aiobligations/sealed/v1\n"
_KEY_FILE_PREFIX = "aiobligations-master-key-v1:"


def sealing_aad(origin: str, index: int, pseudonym: str) -> bytes:
    """The associated data that binds a sealed value to its record.

    Args:
        origin: The ledger's origin line.
        index: The record's index in the log.
        pseudonym: The record's subject pseudonym.

    Returns:
        The bytes given to AES-GCM as associated data.
    """
    return b"%s%s\n%d\n%s" % (_SEAL_AAD, origin.encode(), index, pseudonym.encode())


class MasterKey:
    """The key that wraps every subject key. It never leaves the provider.

    The key file holds one line, ``aiobligations-master-key-v1:<base64 of 32 bytes>``, and must not be
    readable by others.

    Args:
        key: 32 random bytes.

    Raises:
        ConfigurationError: ``key`` is not 32 bytes.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise ConfigurationError("a master key must be 32 bytes")
        # The raw bytes are kept only for dump(); AESGCM does not expose its key.
        self._raw = key
        self._aead = AESGCM(key)
        # The id names the key in wrapped blobs so that rotation can tell old from new; it is a
        # truncated hash, which reveals nothing useful about the key.
        self.key_id = hashlib.sha256(b"aiobligations/master-key-id\n" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> MasterKey:
        """Return a new random master key."""
        return cls(os.urandom(32))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Read a master key file, or ``"env:NAME"``: the file's line in the environment variable ``NAME``.

        Raises:
            ConfigurationError: the file or variable is missing or malformed, or the file is
                readable by group or others.
        """
        if isinstance(path, str) and path.startswith("env:"):
            text = os.environ.get(path[4:], "").strip()
            if not text:
                raise ConfigurationError(f"master key: the environment variable {path[4:]} is not set")
            return cls.from_text(text, f"the environment variable {path[4:]}")
        path = Path(path)
        try:
            text = path.read_text(encoding="ascii").strip()
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigurationError(f"master key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"master key file {path} cannot be read: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"master key file {path} is readable by others; run: chmod 600 {path}"
            )
        return cls.from_text(text, f"master key file {path}")

    @classmethod
    def from_text(cls, text: str, where: str = "the master key") -> MasterKey:
        """A master key from its file's line, ``aiobligations-master-key-v1:<base64>`` (from a KMS, say).

        Raises:
            ConfigurationError: the text is not a master key.
        """
        text = text.strip()
        if not text.startswith(_KEY_FILE_PREFIX):
            raise ConfigurationError(f"{where} is not an aiobligations master key")
        try:
            key = base64.b64decode(text[len(_KEY_FILE_PREFIX) :], validate=True)
        except ValueError:
            raise ConfigurationError(f"{where} is corrupt") from None
        if len(key) != 32:
            raise ConfigurationError(f"{where} is corrupt")
        return cls(key)

    def export_text(self) -> str:
        """The key file's content. Handle it as the secret it is."""
        return _KEY_FILE_PREFIX + base64.b64encode(self._raw).decode() + "\n"

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write the key to ``path`` with 0600 permissions; never overwrites an existing file."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self.export_text())

    def wrap(self, secret: bytes, label: bytes) -> bytes:
        """Encrypt ``secret`` (a subject key or a ledger secret) bound to ``label``."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret, label)

    def unwrap(self, blob: bytes, label: bytes) -> bytes:
        """Decrypt what :meth:`wrap` produced for the same ``label``.

        Raises:
            LedgerError: the blob was not wrapped by this key for this label.
        """
        try:
            return self._aead.decrypt(blob[:12], blob[12:], label)
        except (InvalidTag, ValueError):
            raise LedgerError(
                "a wrapped key does not open with this master key (wrong master key?)"
            ) from None


class SubjectCrypto:
    """Pseudonyms and sealing for one ledger.

    Args:
        master: The master key.
        pseudonym_secret: The ledger's 32-byte HMAC key for pseudonyms.
        cache_size: How many subjects' pseudonyms and opened keys to keep in memory.
    """

    def __init__(self, master: MasterKey, pseudonym_secret: bytes, *, cache_size: int = 65536) -> None:
        self.master = master
        self._hmac_key = pseudonym_secret
        self._cache_size = cache_size
        self._pseudonyms: dict[str, str] = {}
        self._aeads: OrderedDict[str, tuple[AESGCM, bytes]] = OrderedDict()

    @staticmethod
    def wrap_label(pseudonym: str) -> bytes:
        """The associated data under which a subject key is wrapped."""
        return _WRAP_AAD + pseudonym.encode()

    secret_label = _SECRET_AAD

    def pseudonym(self, subject: str) -> str:
        """Return the keyed pseudonym of ``subject``."""
        cached = self._pseudonyms.get(subject)
        if cached is not None:
            return cached
        digest = hmac.new(self._hmac_key, subject.encode(), hashlib.sha256).digest()[:16]
        value = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if len(self._pseudonyms) >= self._cache_size:
            self._pseudonyms.clear()
        self._pseudonyms[subject] = value
        return value

    @staticmethod
    def key_id(key: bytes) -> bytes:
        """The 4-byte id of a subject key, written in front of what it seals."""
        return hashlib.sha256(b"aiobligations/subject-key-id\n" + key).digest()[:4]

    def cached_aead(self, pseudonym: str) -> tuple[AESGCM, bytes] | None:
        """The opened key of ``pseudonym`` and its id, if cached."""
        aead = self._aeads.get(pseudonym)
        if aead is not None:
            self._aeads.move_to_end(pseudonym)
        return aead

    def remember(self, pseudonym: str, key: bytes) -> tuple[AESGCM, bytes]:
        """Cache the opened key of ``pseudonym``; return its cipher and id."""
        aead = (AESGCM(key), self.key_id(key))
        self._aeads[pseudonym] = aead
        if len(self._aeads) > self._cache_size:
            self._aeads.popitem(last=False)
        return aead

    def forget(self, pseudonym: str) -> None:
        """Drop a subject's key from memory (erasure must not leave it cached)."""
        self._aeads.pop(pseudonym, None)

    def forget_all(self) -> None:
        """Drop every cached key."""
        self._aeads.clear()
