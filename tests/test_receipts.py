"""Offline receipts (c2sp.org/tlog-proof@v1): making, parsing, verifying and tampering."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import ORIGIN

from aiobligations.errors import ConfigurationError, ObligationError
from aiobligations.ledger import Ledger, Signer, merkle
from aiobligations.ledger.note import open_checkpoint
from aiobligations.ledger.receipts import (
    HEADER,
    InvalidReceipt,
    Receipt,
    make_receipt,
    parse_receipt,
    receipt_for_interaction,
    verify_receipt,
)

MakeLedger = Callable[..., Ledger]


def fill(ledger: Ledger, count: int, **fields: Any) -> None:
    """Append ``count`` records in few commits and wait until they are stored."""
    for number in range(count):
        ledger.submit({"kind": "log", "n": number, **fields})
    ledger.flush()


def record_bytes(ledger: Ledger, index: int) -> bytes:
    found = ledger._store.get_record(index)
    assert found is not None
    return bytes(found[2])


def replace_line(text: str, number: int, line: str | None) -> str:
    """Replace (or, with ``None``, drop) line ``number`` of ``text``."""
    lines = text.split("\n")
    if line is None:
        del lines[number]
    else:
        lines[number] = line
    return "\n".join(lines)


def flip(encoded: str, byte: int = 0, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(encoded))
    raw[byte] ^= 1 << bit
    return base64.b64encode(bytes(raw)).decode()


class TestMakeAndVerify:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100])
    def test_first_middle_last_verify(self, make_ledger: MakeLedger, size: int) -> None:
        """
        Receipts of the first, a middle and the last record verify against the ledger's key.
        """
        ledger = make_ledger()
        fill(ledger, size)
        vkey = ledger.signer.verifier_key

        for index in sorted({0, size // 2, size - 1}):
            text = make_receipt(ledger, index)

            checkpoint = verify_receipt(text, vkey)

            assert checkpoint.size == size
            assert checkpoint.origin == ORIGIN
            receipt = parse_receipt(text)
            assert receipt.index == index
            assert receipt.extra == record_bytes(ledger, index)
            assert verify_receipt(text, vkey, record=receipt.extra) == checkpoint

    def test_text_format(self, make_ledger: MakeLedger) -> None:
        """
        The text is the header, extra, index, the hashes, a blank line and the checkpoint note.
        """
        ledger = make_ledger()
        fill(ledger, 3)

        text = make_receipt(ledger, 2)

        lines = text.split("\n")
        assert lines[0] == HEADER == "c2sp.org/tlog-proof@v1"
        assert lines[1] == "extra " + base64.b64encode(record_bytes(ledger, 2)).decode()
        assert lines[2] == "index 2"
        proof = ledger.inclusion_proof(2, 3)
        assert lines[3 : 3 + len(proof)] == [base64.b64encode(h).decode() for h in proof]
        assert lines[3 + len(proof)] == ""
        assert text.endswith(ledger.checkpoint or "?")
        assert "\n".join(lines[4 + len(proof) :]) == ledger.checkpoint

    def test_parse_round_trips(self, make_ledger: MakeLedger) -> None:
        """
        Formatting a parsed receipt gives back the same text.
        """
        ledger = make_ledger()
        fill(ledger, 9)
        text = make_receipt(ledger, 5)

        receipt = parse_receipt(text)

        assert receipt.to_text() == text
        assert parse_receipt(text.encode()) == receipt
        assert all(len(h) == 32 for h in receipt.hashes)

    def test_tree_of_one_has_no_hashes(self, make_ledger: MakeLedger) -> None:
        """
        The only record of a tree of one has an empty proof: the index line is followed by the blank line.
        """
        ledger = make_ledger()
        fill(ledger, 1)

        text = make_receipt(ledger, 0)

        assert text.split("\n")[2:4] == ["index 0", ""]
        assert parse_receipt(text).hashes == ()
        verify_receipt(text, ledger.signer.verifier_key)

    def test_signs_a_fresh_checkpoint_when_needed(self, make_ledger: MakeLedger) -> None:
        """
        A record newer than the latest checkpoint gets a freshly signed checkpoint that covers it.
        """
        ledger = make_ledger(checkpoint_interval=3600)
        ledger.append({"kind": "log", "n": 0})
        index = ledger.append({"kind": "log", "n": 1})
        assert ledger.checkpoint is not None
        assert open_checkpoint(ledger.verifier, ledger.checkpoint).size == 1

        text = make_receipt(ledger, index)

        assert verify_receipt(text, ledger.signer.verifier_key).size == 2

    def test_accepts_a_verifier_object(self, make_ledger: MakeLedger) -> None:
        """
        The key may be given as a Verifier as well as a verifier key string.
        """
        ledger = make_ledger()
        fill(ledger, 2)

        verify_receipt(make_receipt(ledger, 1), ledger.verifier)

    def test_record_without_extra(self, make_ledger: MakeLedger) -> None:
        """
        A receipt without extra verifies when the verifier brings the record, and not without it.
        """
        ledger = make_ledger()
        fill(ledger, 7)
        receipt = parse_receipt(make_receipt(ledger, 4))
        bare = Receipt(receipt.index, receipt.hashes, None, receipt.checkpoint).to_text()
        vkey = ledger.signer.verifier_key

        verify_receipt(bare, vkey, record=record_bytes(ledger, 4))
        with pytest.raises(InvalidReceipt):
            verify_receipt(bare, vkey)
        with pytest.raises(InvalidReceipt):
            verify_receipt(bare, vkey, record=record_bytes(ledger, 3))

    def test_explicit_extra_must_be_the_record(self, make_ledger: MakeLedger) -> None:
        """
        An explicit extra equal to the record is used; any other bytes are refused.
        """
        ledger = make_ledger()
        fill(ledger, 3)

        assert make_receipt(ledger, 1, extra=record_bytes(ledger, 1)) == make_receipt(ledger, 1)
        with pytest.raises(ValueError, match="exact bytes"):
            make_receipt(ledger, 1, extra=record_bytes(ledger, 2))
        with pytest.raises(TypeError):
            make_receipt(ledger, 1, extra="text")  # type: ignore[arg-type]

    def test_missing_record(self, make_ledger: MakeLedger) -> None:
        """
        No receipt for an index that is not stored.
        """
        ledger = make_ledger()
        fill(ledger, 2)

        for index in (-1, 2, 10):
            with pytest.raises(IndexError):
                make_receipt(ledger, index)


class TestTamper:
    @pytest.fixture
    def setup(self, make_ledger: MakeLedger) -> tuple[Ledger, str, str]:
        ledger = make_ledger()
        fill(ledger, 9)
        return ledger, make_receipt(ledger, 5), ledger.signer.verifier_key

    def assert_invalid(self, text: str, vkey: str, **kwargs: Any) -> None:
        with pytest.raises(InvalidReceipt) as caught:
            verify_receipt(text, vkey, **kwargs)
        assert str(caught.value) == "the receipt does not verify"
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    def test_untouched_verifies(self, setup: tuple[Ledger, str, str]) -> None:
        _, text, vkey = setup

        verify_receipt(text, vkey)

    def test_every_bit_of_every_hash(self, setup: tuple[Ledger, str, str]) -> None:
        """
        Flipping any bit of any proof hash breaks the receipt.
        """
        _, text, vkey = setup
        lines = text.split("\n")
        count = len(parse_receipt(text).hashes)
        assert count == 4  # Index 5 in a tree of 9.
        for number in range(3, 3 + count):
            for byte in range(32):
                for bit in range(8):
                    self.assert_invalid(
                        replace_line(text, number, flip(lines[number], byte, bit)), vkey
                    )

    @pytest.mark.parametrize("index", ["4", "6", "0", "8", "9", "05", "+5", "-5", "5 ", " 5", "x"])
    def test_index(self, setup: tuple[Ledger, str, str], index: str) -> None:
        """
        Any other index, an index past the tree, or a non-canonical index fails.
        """
        _, text, vkey = setup

        self.assert_invalid(replace_line(text, 2, f"index {index}"), vkey)

    def test_extra(self, setup: tuple[Ledger, str, str]) -> None:
        """
        A changed, dropped, emptied or non-canonical extra fails; so does a record unequal to extra.
        """
        ledger, text, vkey = setup
        extra = text.split("\n")[1][len("extra "):]
        for byte in (0, 10, len(base64.b64decode(extra)) - 1):
            self.assert_invalid(replace_line(text, 1, "extra " + flip(extra, byte)), vkey)
        other = base64.b64encode(record_bytes(ledger, 4)).decode()
        self.assert_invalid(replace_line(text, 1, "extra " + other), vkey)
        self.assert_invalid(replace_line(text, 1, None), vkey)
        self.assert_invalid(replace_line(text, 1, "extra "), vkey)
        self.assert_invalid(replace_line(text, 1, "extra " + extra + "===="), vkey)
        self.assert_invalid(replace_line(text, 1, "extra " + extra[:-4] + "AA=="), vkey)
        if extra.endswith("="):
            self.assert_invalid(replace_line(text, 1, "extra " + extra.rstrip("=")), vkey)
        self.assert_invalid(text, vkey, record=record_bytes(ledger, 4))
        self.assert_invalid(text, vkey, record=record_bytes(ledger, 5) + b" ")

    def test_drop_or_add_a_hash(self, setup: tuple[Ledger, str, str]) -> None:
        """
        A proof one hash short, one too long, or reordered fails.
        """
        _, text, vkey = setup
        lines = text.split("\n")
        for number in range(3, 7):
            self.assert_invalid(replace_line(text, number, None), vkey)
            self.assert_invalid(replace_line(text, number, lines[number] + "\n" + lines[number]), vkey)
        zero = base64.b64encode(bytes(32)).decode()
        self.assert_invalid(replace_line(text, 6, lines[6] + "\n" + zero), vkey)
        self.assert_invalid(replace_line(replace_line(text, 3, lines[4]), 4, lines[3]), vkey)
        self.assert_invalid(replace_line(text, 3, base64.b64encode(bytes(31)).decode()), vkey)

    def test_checkpoint_text(self, setup: tuple[Ledger, str, str]) -> None:
        """
        Changing the checkpoint's origin, size or root breaks its signature.
        """
        _, text, vkey = setup
        lines = text.split("\n")
        start = lines.index("", 3) + 1
        origin, size, root = lines[start : start + 3]
        assert (origin, size) == (ORIGIN, "9")
        self.assert_invalid(replace_line(text, start, origin + "x"), vkey)
        self.assert_invalid(replace_line(text, start + 1, "10"), vkey)
        self.assert_invalid(replace_line(text, start + 1, "8"), vkey)
        self.assert_invalid(replace_line(text, start + 2, flip(root, 31, 7)), vkey)
        self.assert_invalid(replace_line(text, start + 2, "ext\n" + root), vkey)

    def test_signature(self, setup: tuple[Ledger, str, str]) -> None:
        """
        A flipped signature bit, a dropped signature line or a foreign signature fails.
        """
        ledger, text, vkey = setup
        lines = text.split("\n")
        number = len(lines) - 2
        dash, name, signature = lines[number].split(" ")
        for byte in (0, 3, 4, 40, 67):
            self.assert_invalid(replace_line(text, number, f"{dash} {name} {flip(signature, byte)}"), vkey)
        self.assert_invalid(replace_line(text, number, None), vkey)
        other = Signer.generate(ORIGIN)
        note = other.sign(ledger.checkpoint.split("\n\n")[0] + "\n")  # type: ignore[union-attr]
        forged = text[: text.index("\n\n") + 2] + note
        self.assert_invalid(forged, vkey)
        verify_receipt(forged, other.verifier_key)  # Only the key decides what is trusted.

    def test_wrong_key(self, setup: tuple[Ledger, str, str]) -> None:
        """
        A receipt does not verify under another log's key, even one with the same name.
        """
        _, text, _ = setup

        self.assert_invalid(text, Signer.generate(ORIGIN).verifier_key)
        self.assert_invalid(text, Signer.generate("other.example/log").verifier_key)

    def test_wrong_origin(self, setup: tuple[Ledger, str, str]) -> None:
        """
        The checkpoint's origin must be the expected one (by default the key's name).
        """
        _, text, vkey = setup

        verify_receipt(text, vkey, origin=ORIGIN)
        self.assert_invalid(text, vkey, origin="other.example/log")

    @pytest.mark.parametrize(
        "change",
        [
            lambda t: t.replace(HEADER, "c2sp.org/tlog-proof@v2", 1),
            lambda t: t.replace(HEADER, HEADER + " ", 1),
            lambda t: "\n" + t,
            lambda t: t.replace("\n", "\r\n"),
            lambda t: t.replace("\n\n", "\n", 1),
            lambda t: t.replace("\n\n", "\n\n\n", 1),
            lambda t: t[:-1],
            lambda t: t + "\n",
            lambda t: t + "junk\n",
            lambda t: t[: t.index("\n\n") + 2],
            lambda t: t.replace("extra ", "extra  ", 1),
            lambda t: t.replace("index ", "index  ", 1),
            lambda t: t.replace("index ", "Index ", 1),
            lambda t: "",
        ],
    )
    def test_malformed(self, setup: tuple[Ledger, str, str], change: Callable[[str], str]) -> None:
        """
        Anything but the exact format fails.
        """
        _, text, vkey = setup

        self.assert_invalid(change(text), vkey)

    def test_malformed_parse_errors_are_invalid_receipts(self) -> None:
        """
        The parser names the problem, and its error is an InvalidReceipt and an ObligationError.
        """
        with pytest.raises(InvalidReceipt, match="starts with the line") as caught:
            parse_receipt("hello\n\nworld\n")
        assert isinstance(caught.value, ObligationError)
        with pytest.raises(InvalidReceipt, match="UTF-8"):
            parse_receipt(b"\xff\n\n")

    def test_argument_types(self, setup: tuple[Ledger, str, str]) -> None:
        """
        Wrong types are programming errors, not bad receipts; so is a malformed key.
        """
        _, text, vkey = setup

        with pytest.raises(TypeError):
            verify_receipt(text, vkey, record="a str")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            verify_receipt(42, vkey)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            verify_receipt(text, "not a key")


class TestOverTime:
    def test_old_receipt_verifies_and_is_consistent_with_later_checkpoints(
        self, make_ledger: MakeLedger
    ) -> None:
        """
        A receipt carries its checkpoint: it verifies after more appends, and a consistency proof
        links its checkpoint to the latest one.
        """
        ledger = make_ledger()
        fill(ledger, 7)
        old = make_receipt(ledger, 3)
        fill(ledger, 30)
        vkey = ledger.signer.verifier_key

        earlier = verify_receipt(old, vkey)
        latest = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())

        assert (earlier.size, latest.size) == (7, 37)
        proof = ledger.consistency_proof(earlier.size, latest.size)
        merkle.verify_consistency(earlier.size, latest.size, proof, earlier.root, latest.root)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_consistency(earlier.size, latest.size, proof, bytes(32), latest.root)
        new = make_receipt(ledger, 3)
        assert verify_receipt(new, vkey) == latest
        assert parse_receipt(new).extra == parse_receipt(old).extra

    def test_erased_subject_still_verifies(self, make_ledger: MakeLedger) -> None:
        """
        Crypto-shredding keeps proofs: the receipt of an erased subject's record verifies, and the
        record in it carries a pseudonym and ciphertext, never the personal data in clear.
        """
        ledger = make_ledger()
        fill(ledger, 2)
        index = ledger.append(
            {"kind": "interaction", "interaction_id": "i-1", "subject": "alice@example.com",
             "personal": {"prompt": "my secret question"}}
        )
        fill(ledger, 2)
        before = make_receipt(ledger, index)
        assert ledger.read(index)["personal"] == {"prompt": "my secret question"}

        ledger.erase_subject("alice@example.com")
        after = make_receipt(ledger, index)

        vkey = ledger.signer.verifier_key
        verify_receipt(before, vkey)
        verify_receipt(after, vkey)
        assert "personal" not in ledger.read(index)
        extra = parse_receipt(after).extra or b""
        assert b"alice" not in extra and b"secret" not in extra
        record = json.loads(extra)
        assert record["sealed"] and record["subject"] != "alice@example.com"


class TestReceiptForInteraction:
    def test_finds_the_interaction_record(self, make_ledger: MakeLedger, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        The interaction record of the id is found through the index; other kinds with the id are not.
        """
        ledger = make_ledger()
        wanted = ledger.append({"kind": "interaction", "interaction_id": "id-1", "call": "chat"})
        fill(ledger, 5)
        ledger.append({"kind": "interaction", "interaction_id": "id-2"})
        ledger.append({"kind": "disclosure", "interaction_id": "id-1"})
        ledger.append({"kind": "log", "note": '"interaction_id":"id-1"'})
        fill(ledger, 4)

        text = receipt_for_interaction(ledger, "id-1")

        assert text is not None
        assert parse_receipt(text).index == wanted
        verify_receipt(text, ledger.signer.verifier_key)
        assert receipt_for_interaction(ledger, "id-3") is None
        assert receipt_for_interaction(ledger, "id-") is None

    def test_empty_ledger(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()

        assert receipt_for_interaction(ledger, "nothing") is None
        with pytest.raises(TypeError):
            receipt_for_interaction(ledger, 1)  # type: ignore[arg-type]


def test_the_cli_verifies_a_receipt_offline(make_ledger, signer, tmp_path) -> None:
    import subprocess
    import sys

    from aiobligations.ledger.receipts import make_receipt

    ledger = make_ledger()
    index = ledger.append({"kind": "interaction", "interaction_id": "cli-1"})
    (tmp_path / "r.tlog-proof").write_text(make_receipt(ledger, index))
    (tmp_path / "bad.tlog-proof").write_text(make_receipt(ledger, index).replace("index 0", "index 1"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aiobligations.cli", "verify-receipt", *args],
                              capture_output=True, text=True, timeout=60)

    good = run(str(tmp_path / "r.tlog-proof"), "--key", signer.verifier_key)
    bad = run(str(tmp_path / "bad.tlog-proof"), "--key", signer.verifier_key)
    missing = run(str(tmp_path / "none"), "--key", signer.verifier_key)

    assert (0, 1, 2) == (good.returncode, bad.returncode, missing.returncode), (good.stderr, bad.stderr)
    assert "verified" in good.stdout
    assert 1 == len(missing.stderr.strip().splitlines())
