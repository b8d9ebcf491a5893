"""Offline receipts: proof that one record is in the ledger, in the C2SP ``tlog-proof`` format.

A receipt is the text of c2sp.org/tlog-proof@v1 (C2SP/C2SP ``tlog-proof.md``):

.. code-block:: text

    c2sp.org/tlog-proof@v1
    extra <base64 of the record's exact leaf bytes>
    index <decimal index, no leading zeros>
    <base64 inclusion proof hash, leaf's sibling first>
    ...
    <blank line>
    <the signed checkpoint note, verbatim: origin, size, root, blank line, signature lines>

The first line is the format's version marker. By default ``extra`` carries the record itself, so
the person holding the receipt holds both what was logged and the proof that it was logged; the
verifier hashes it (RFC 9162 leaf hash) and checks the inclusion proof against the root of the
signed checkpoint. A record never holds personal data in clear: it carries the subject only as a
keyed pseudonym and the personal data only as ``sealed`` AES-GCM ciphertext under the subject's own
key. Handing the record out therefore reveals nothing the pseudonym and ciphertext do not, and a
receipt for an erased (crypto-shredded) subject still verifies, because erasure deletes the key, not
the record.

The receipt carries its checkpoint, so it verifies on its own forever; an auditor links it to any
later checkpoint of the same log with a consistency proof.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, LedgerBroken, LedgerError, ObligationError
from . import merkle
from .note import Checkpoint, NoteError, Verifier
from .reader import checkpoint_of

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "HEADER",
    "InvalidReceipt",
    "Receipt",
    "make_receipt",
    "parse_receipt",
    "receipt_for_interaction",
    "verify_receipt",
]

HEADER = "c2sp.org/tlog-proof@v1"
"""The first line of every receipt: the format and its version."""


class InvalidReceipt(ObligationError):
    """A receipt failed verification. Deliberately says no more."""

    # The lead may move this class to aiobligations/errors.py; import it from there then.


# Plain decimal, no sign, no leading zeros, at most 20 digits (uint64 is checked separately).
_DECIMAL = re.compile("0|[1-9][0-9]{0,19}")
# An inclusion proof in a tree of at most 2**64 leaves has at most 64 hashes.
_MAX_HASHES = 64
_GENERIC = "the receipt does not verify"


@dataclass(frozen=True)
class Receipt:
    """
    A parsed receipt; nothing in it is verified yet (see :func:`verify_receipt`).

    Args:
        index: The record's index in the log.
        hashes: The inclusion proof, 32-byte hashes from the leaf's sibling up.
        extra: The ``extra`` data (by default the record's exact bytes), or ``None``.
        checkpoint: The signed checkpoint note, verbatim, ending in a newline.

    .. versionadded:: 0.1.0
    """

    index: int
    hashes: tuple[bytes, ...]
    extra: bytes | None
    checkpoint: str

    def to_text(self) -> str:
        """
        Format the receipt as c2sp.org/tlog-proof@v1 text.

        Returns:
            The receipt text; :func:`parse_receipt` gives back an equal :class:`Receipt`.
        """
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {_b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(_b64(h) for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def make_receipt(ledger: Ledger, index: int, *, extra: bytes | None = None) -> str:
    """
    Write the receipt of record ``index`` against the ledger's latest signed checkpoint.

    When the latest checkpoint does not cover ``index`` yet, a fresh one is signed first. Before it
    is returned, the receipt is verified with the ledger's own public key, so a damaged store never
    hands out a receipt that would fail later.

    Args:
        ledger: The ledger holding the record.
        index: The record's index (as returned by :meth:`Ledger.append`).
        extra: The ``extra`` data. By default the record's exact stored bytes. When given it must be
            those same bytes (its leaf hash must equal the stored record's), because verification
            hashes ``extra`` as the leaf.

    Returns:
        The receipt text (see the module documentation for the format).

    Raises:
        TypeError: ``index`` is not an int, or ``extra`` is not bytes.
        IndexError: no record ``index`` is stored (not yet sequenced, or pruned).
        ValueError: ``extra`` is not the record's bytes.
        LedgerError: the receipt does not verify against the ledger's own checkpoint (damaged store).

    .. versionadded:: 0.1.0
    """
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"index must be an int, got {type(index).__name__}.")
    if extra is not None and not isinstance(extra, (bytes, bytearray)):
        raise TypeError(f"extra must be bytes, got {type(extra).__name__}.")
    if index < 0:
        raise IndexError(f"no record {index} in the ledger; indices start at 0.")
    found = ledger.leaf(index)
    if found is None or index < ledger.first_index:
        raise IndexError(f"no record {index} is stored in the ledger (not yet written, or pruned).")
    data = found
    if extra is None:
        extra = data
    elif merkle.leaf_hash(bytes(extra)) != merkle.leaf_hash(data):
        raise ConfigurationError(f"extra must be the exact bytes of record {index}; it hashes differently.")
    # The latest checkpoint witnesses cosigned, when it covers the record (and this process has heard
    # of its size, which the proof needs): the receipt then carries their cosignatures. Otherwise the
    # latest signed one (a fresh record is not witnessed yet).
    note = ledger.witnessed_checkpoint
    if note is None or not index < checkpoint_of(note).size <= ledger.size:
        note = ledger.checkpoint
    if note is None or checkpoint_of(note).size <= index:
        note = ledger.sign_checkpoint()
    size = checkpoint_of(note).size
    receipt = Receipt(index, tuple(ledger.inclusion_proof(index, size)), bytes(extra), note)
    text = receipt.to_text()
    try:
        verify_receipt(text, ledger.verifier, record=data)
    except InvalidReceipt:
        raise LedgerError(
            f"the receipt of record {index} does not verify against the ledger's own checkpoint "
            f"of size {size}; run `aiobligations verify` on the ledger"
        ) from None
    return text


def parse_receipt(text: str | bytes) -> Receipt:
    """
    Parse a receipt strictly, without verifying anything.

    Args:
        text: The receipt; bytes must be UTF-8.

    Returns:
        The parsed receipt.

    Raises:
        TypeError: ``text`` is neither ``str`` nor ``bytes``.
        InvalidReceipt: the text breaks the format: a header other than exactly
            ``c2sp.org/tlog-proof@v1``, an index that is not plain decimal, a hash that is not
            canonical base64 of 32 bytes, a missing blank line, or no checkpoint note after it.

    .. versionadded:: 0.1.0
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidReceipt("A receipt must be valid UTF-8.") from None
    if not isinstance(text, str):
        raise TypeError(f"text must be a str or bytes, got {type(text).__name__}.")
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise InvalidReceipt("A receipt needs a blank line between its proof and its checkpoint.")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise InvalidReceipt(f"A receipt starts with the line {HEADER!r}, got {lines[0][:40]!r}.")
    position = 1
    extra = None
    if position < len(lines) and lines[position].startswith("extra "):
        extra = _unb64(lines[position][len("extra "):])
        if not extra:
            raise InvalidReceipt("The receipt's extra line is not canonical, non-empty base64.")
        position += 1
    if position >= len(lines) or not lines[position].startswith("index "):
        raise InvalidReceipt("The receipt has no 'index <n>' line after its header (and extra).")
    number = lines[position][len("index "):]
    if not _DECIMAL.fullmatch(number) or int(number) >= 1 << 64:
        raise InvalidReceipt(f"The receipt's index must be decimal, no leading zeros: {number[:24]!r}.")
    hash_lines = lines[position + 1:]
    if len(hash_lines) > _MAX_HASHES:
        raise InvalidReceipt(f"The receipt has {len(hash_lines)} proof hashes; at most {_MAX_HASHES}.")
    hashes = []
    for line in hash_lines:
        value = _unb64(line)
        if value is None or len(value) != 32:
            raise InvalidReceipt(f"A proof line is not base64 of a 32-byte hash: {line[:48]!r}.")
        hashes.append(value)
    if not note.endswith("\n") or note.startswith("\n"):
        raise InvalidReceipt("The receipt must end with a signed checkpoint note.")
    try:
        checkpoint_of(note)
    except NoteError:
        raise InvalidReceipt("The text after the blank line is not a signed checkpoint note.") from None
    return Receipt(int(number), tuple(hashes), extra, note)


def verify_receipt(
    text: str | bytes,
    verifier_key: str | Verifier,
    *,
    record: bytes | None = None,
    origin: str | None = None,
) -> Checkpoint:
    """
    Verify a receipt: the checkpoint's signature, then the record's inclusion in that checkpoint.

    The verifier key is the only trust root. The tree size and root come from the checkpoint it
    signed and the index from the receipt's index line, never from anywhere else; the leaf is
    ``record`` or, without it, the receipt's ``extra``.

    Args:
        text: The receipt.
        verifier_key: The log's public verifier key, ``<name>+<key id>+<base64 key>`` (or a
            :class:`Verifier`).
        record: The record's exact bytes, when the verifier holds them. If the receipt also carries
            ``extra``, the two must be equal.
        origin: The log's expected origin; by default the key's name (the ledger's signer is named
            after its origin).

    Returns:
        The verified checkpoint (origin, size, root).

    Raises:
        TypeError: an argument has the wrong type (``record`` must be bytes, not str).
        ConfigurationError: ``verifier_key`` is malformed.
        InvalidReceipt: the receipt is malformed or does not verify, for whatever reason.

    .. versionadded:: 0.1.0
    """
    if record is not None and not isinstance(record, (bytes, bytearray)):
        raise TypeError(f"record must be bytes, got {type(record).__name__}; encode it first.")
    verifier = _verifier(verifier_key)
    expected_origin = verifier.name if origin is None else origin
    try:
        receipt = parse_receipt(text)
        checkpoint = Checkpoint.parse(verifier.verify(receipt.checkpoint))
        if checkpoint.origin != expected_origin:
            raise InvalidReceipt(_GENERIC)
        if record is not None and receipt.extra is not None and bytes(record) != receipt.extra:
            raise InvalidReceipt(_GENERIC)
        leaf = bytes(record) if record is not None else receipt.extra
        if leaf is None or not receipt.index < checkpoint.size:
            raise InvalidReceipt(_GENERIC)
        merkle.verify_inclusion(
            merkle.leaf_hash(leaf), receipt.index, checkpoint.size, receipt.hashes, checkpoint.root
        )
    except (InvalidReceipt, NoteError, merkle.InvalidProof, ValueError):
        # One message for every failure: which check failed helps a forger, not the holder.
        raise InvalidReceipt(_GENERIC) from None
    return checkpoint


def receipt_for_interaction(ledger: Ledger, interaction_id: str) -> str | None:
    """
    Write the receipt of the ``interaction`` record of ``interaction_id``.

    The record is found through the store's index of interaction ids: one lookup, whatever the
    size of the log. Records still queued (from :meth:`Ledger.submit`) are not found; call
    :meth:`Ledger.flush` first to include them.

    Args:
        ledger: The ledger.
        interaction_id: The interaction's id (the ``AI-Interaction-Id`` header).

    Returns:
        The receipt text, or ``None`` when no stored ``interaction`` record has that id.

    Raises:
        TypeError: ``interaction_id`` is not a str.
        LedgerBroken: the index names a record that is not the ``interaction`` record of this id
            (the ``interactions`` table was edited); no receipt is written for another record.

    .. versionadded:: 0.1.0
    """
    if not isinstance(interaction_id, str):
        raise TypeError(f"interaction_id must be a str, got {type(interaction_id).__name__}.")
    index = _find_interaction(ledger, interaction_id)
    return None if index is None else make_receipt(ledger, index)


def _find_interaction(ledger: Ledger, interaction_id: str) -> int | None:
    # One indexed lookup: a scan of the log per request would let anyone make the service read it all.
    index = ledger.find_interaction(interaction_id)
    if index is None or index < ledger.first_index:
        return None
    found = ledger.leaf(index)
    if found is None:
        return None
    try:
        value = json.loads(found)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("kind") != "interaction" or value.get("interaction_id") != interaction_id:
        # The index is written with the record it names: the table was edited. A receipt must never
        # prove a different record, so refuse rather than prove whatever the row points at.
        raise LedgerBroken(
            "the interaction index points at a record that is not this interaction's (the interactions table "
            "was altered); run `aiobligations verify` on the ledger",
            index=index,
        )
    return index


def _verifier(key: str | Verifier) -> Verifier:
    if isinstance(key, Verifier):
        return key
    if not isinstance(key, str):
        raise TypeError(f"verifier_key must be a str, got {type(key).__name__}.")
    try:
        return Verifier.from_key(key)
    except ValueError as exc:
        raise ConfigurationError(f"The verifier key is invalid: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    # Standard base64 with padding, canonical only, so that one receipt has exactly one encoding.
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw if _b64(raw) == text else None
