"""The witness: cosignature/v1 and add-checkpoint formats (with the C2SP specs' own examples), and
the witness server, served by uvicorn on a loopback port, under honest and hostile requests."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _serve import serve
from click.testing import CliRunner
from test_workers import free_port, until

from aiobligations.cli import main
from aiobligations.ledger.merkle import MemoryTree
from aiobligations.ledger.note import Checkpoint, Signer, Verifier, sign_checkpoint
from aiobligations.witness.cosignature import (
    MAX_PROOF_LINES,
    CosignatureError,
    WitnessSigner,
    WitnessVerifier,
    add_cosignatures,
    check_quorum,
    cosigned_message,
    format_add_checkpoint,
    parse_add_checkpoint,
    split_note,
)
from aiobligations.witness.server import WitnessApp, WitnessState

ORIGIN = "example.com/witnessed/log"


# -- the specs' own examples -------------------------------------------------------------------


def test_the_spec_request_body_parses_and_formats_back_byte_for_byte(vectors: Path) -> None:
    """tlog-witness's example add-checkpoint body: old size, four proof lines, the checkpoint."""
    body = (vectors / "c2sp-witness" / "add-checkpoint-request.txt").read_bytes()
    old, proof, note = parse_add_checkpoint(body)
    assert 20852014 == old
    assert 4 == len(proof)
    assert base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=") == proof[0]
    assert note.startswith("example.com/behind-the-sofa\n20852163\n")
    text, lines = split_note(note)
    assert 2 == len(lines)
    assert Checkpoint.parse(text).size == 20852163
    assert body == format_add_checkpoint(old, proof, note)


def test_the_spec_cosignature_line_carries_its_key_id_and_timestamp(vectors: Path) -> None:
    """tlog-cosignature's example: 4-byte key ID, then the 8-byte big-endian time 1679315147 of its
    signed-message example, then a 64-byte Ed25519 signature; the message format matches the spec's."""
    folder = vectors / "c2sp-witness"
    text, lines = split_note((folder / "cosigned-checkpoint.txt").read_text(encoding="utf-8"))
    witness_line = next(line for line in lines if line.startswith("\u2014 witness.example.com/w1 "))
    raw = base64.b64decode(witness_line.split(" ")[2])
    assert 4 + 8 + 64 == len(raw)
    assert 1679315147 == int.from_bytes(raw[4:12], "big")
    assert (folder / "cosigned-message.txt").read_bytes() == cosigned_message(text, 1679315147)
    # A cosignature line made here has the same layout: key ID, timestamp, signature.
    ours = WitnessSigner.generate("witness.example.com/w1").cosign(text, 1679315147)
    assert base64.b64decode(ours.split(" ")[2])[4:12] == raw[4:12]


def test_the_spec_signed_note_example_verifies_with_the_log_verifier(vectors: Path) -> None:
    folder = vectors / "c2sp-witness"
    verifier = Verifier.from_key((folder / "signed-note-example.vkey").read_text().strip())
    assert "This is an example message.\n" == verifier.verify((folder / "signed-note-example.txt").read_text())


def test_a_foreign_witness_line_is_ignored_and_a_spec_note_without_our_witness_misses_quorum(vectors: Path) -> None:
    note = (vectors / "c2sp-witness" / "cosigned-checkpoint.txt").read_text(encoding="utf-8")
    ours = WitnessSigner.generate("witness.example.com/w1")  # Same name, another key: another key ID.
    found, missing = check_quorum(note, [ours.verifier], 1)
    assert [] == found
    assert [ours.verifier] == missing


# -- keys and cosignatures ------------------------------------------------------------------------


def test_key_id_vkey_and_private_key_file(tmp_path: Path) -> None:
    signer = WitnessSigner.generate("witness.example.org/w1")
    public = base64.b64decode(signer.verifier_key.split("+", 2)[2])
    assert 0x04 == public[0]
    expected = hashlib.sha256(b"witness.example.org/w1\n\x04" + public[1:]).digest()[:4]
    assert expected == signer.key_id
    assert f"witness.example.org/w1+{expected.hex()}+" == signer.verifier_key[: len("witness.example.org/w1") + 10]
    assert WitnessVerifier.from_key(signer.verifier_key) == signer.verifier
    path = tmp_path / "witness.key"
    signer.save(path)
    assert 0o600 == stat.S_IMODE(os.stat(path).st_mode)
    assert WitnessSigner.load(path).verifier_key == signer.verifier_key
    with pytest.raises(FileExistsError):
        signer.save(path)


def test_the_reference_implementation_s_keys_and_timestamp(vectors: Path) -> None:
    """transparency-dev/formats' own vectors: a native 0x04 key (its key ID computed as ours), a plain
    Ed25519 key taken as a cosignature/v1 key, its malformed keys refused, a cosignature's time."""
    import json

    data = json.loads((vectors / "c2sp-witness" / "transparency-dev-formats.json").read_text())
    native = data["verifier_keys"]["native_cosignature_v1"]
    assert native == WitnessVerifier.from_key(native).verifier_key
    plain = WitnessVerifier.from_key(data["verifier_keys"]["ed25519_converted_to_cosignature_v1"])
    public = base64.b64decode(data["verifier_keys"]["ed25519_converted_to_cosignature_v1"].split("+", 2)[2])[1:]
    assert hashlib.sha256(b"TEST\n\x04" + public).digest()[:4] == plain.key_id
    for bad in data["invalid_verifier_keys"]:
        with pytest.raises(CosignatureError):
            WitnessVerifier.from_key(bad)
    raw = base64.b64decode(data["cosignature_timestamp"]["signature_base64"])
    assert data["cosignature_timestamp"]["timestamp"] == int.from_bytes(raw[4:12], "big")


def test_a_plain_ed25519_key_cosigns_as_the_reference_implementation_does() -> None:
    """A witness whose key is a plain Ed25519 note key (0x01, as omniwitness keys are) signs and is
    verified as cosignature/v1, with the 0x04 key ID; its vkey's own 0x01 key ID must be right."""
    plain_signer = Signer.generate("witness.example/plain")
    seed = plain_signer.private_key.private_bytes_raw()
    encoded_seed = base64.b64encode(bytes([1]) + seed).decode()
    private = f"PRIVATE+KEY+witness.example/plain+{plain_signer.key_id.hex()}+{encoded_seed}"
    witness = WitnessSigner.from_private_text(private)
    verifier = WitnessVerifier.from_key(plain_signer.verifier_key)
    assert witness.verifier == verifier
    text = "example.com/log\n3\n" + base64.b64encode(b"\x00" * 32).decode() + "\n"
    assert 5 == verifier.verify_line(text, witness.cosign(text, 5)).timestamp
    name, key_id, encoded = plain_signer.verifier_key.split("+", 2)
    with pytest.raises(CosignatureError):
        WitnessVerifier.from_key(f"{name}+00000000+{encoded}")


@pytest.mark.parametrize("mangle", ["ecdsa_type", "wrong_id", "short", "no_plus", "bad_base64"])
def test_malformed_witness_keys_are_refused(mangle: str) -> None:
    vkey = WitnessSigner.generate("w.example/w").verifier_key
    name, key_id, encoded = vkey.split("+", 2)
    short = base64.b64encode(bytes([4]) + b"x" * 31).decode()
    bad = {
        "ecdsa_type": f"{name}+{key_id}+{base64.b64encode(bytes([2]) + b'x' * 32).decode()}",
        "wrong_id": f"{name}+00000000+{encoded}",
        "short": f"{name}+{key_id}+{short}",
        "no_plus": name,
        "bad_base64": f"{name}+{key_id}+!!!!",
    }[mangle]
    with pytest.raises(CosignatureError):
        WitnessVerifier.from_key(bad)


def test_a_cosignature_verifies_and_any_change_breaks_it() -> None:
    signer = WitnessSigner.generate("w.example/w")
    log = Signer.generate(ORIGIN)
    note = _note(log, _tree(5))
    text, _ = split_note(note)
    line = signer.cosign(text, 1_700_000_000)
    cosigned = add_cosignatures(note, [line])
    assert cosigned == add_cosignatures(cosigned, [line])  # No duplicate line.
    found = signer.verifier.find(cosigned)
    assert found is not None and 1_700_000_000 == found.timestamp
    assert 5 == Checkpoint.parse(Verifier.from_key(log.verifier_key).verify(cosigned)).size
    other = text.replace("\n5\n", "\n6\n")
    with pytest.raises(CosignatureError):
        signer.verifier.verify_line(other, line)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[7] ^= 1  # Another timestamp: the signature no longer covers it.
    forged = f"\u2014 w.example/w {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CosignatureError):
        signer.verifier.verify_line(text, forged)
    found_list, missing = check_quorum(add_cosignatures(note, [forged]), [signer.verifier], 1)
    assert ([], [signer.verifier]) == (found_list, missing)


def test_a_proof_longer_than_63_lines_is_refused_both_ways() -> None:
    note = _note(Signer.generate(ORIGIN), _tree(3))
    with pytest.raises(CosignatureError):
        format_add_checkpoint(1, [b"\x00" * 32] * (MAX_PROOF_LINES + 1), note)
    body = ("old 1\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n" + note).encode()
    with pytest.raises(CosignatureError):
        parse_add_checkpoint(body)


# -- the server ---------------------------------------------------------------------------------


def _tree(size: int, prefix: bytes = b"record") -> MemoryTree:
    return MemoryTree(prefix + b"-%d" % i for i in range(size))


def _note(log: Signer, tree: MemoryTree, size: int | None = None) -> str:
    size = tree.size if size is None else size
    return sign_checkpoint(log, Checkpoint(log.name, size, tree.root(size)))


def _body(old: int, tree: MemoryTree, note: str, size: int | None = None) -> bytes:
    size = tree.size if size is None else size
    proof = tree.consistency_proof(old, size) if 0 < old < size else []
    return format_add_checkpoint(old, proof, note)


class Witness:
    def __init__(self, app: WitnessApp, url: str) -> None:
        self.app = app
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=10)

    def add(self, body: bytes) -> httpx.Response:
        return self.client.post("/add-checkpoint", content=body)


@pytest.fixture
def log() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def witness(tmp_path: Path, log: Signer) -> Iterator[Witness]:
    signer = WitnessSigner.generate("witness.test/w1")
    state = WitnessState(tmp_path / "witness.db")
    app = WitnessApp(signer, [Verifier.from_key(log.verifier_key)], state, rate=1000, burst=1000)
    with serve(app, "witness") as url:
        w = Witness(app, url)
        yield w
        w.client.close()
    state.close()


def test_the_witness_cosigns_from_zero_then_only_with_a_consistency_proof(witness: Witness, log: Signer) -> None:
    tree = _tree(7)
    first = _note(log, tree, 4)
    response = witness.add(_body(0, tree, first, 4))
    assert 200 == response.status_code, response.text
    assert 1 == len(response.text.splitlines())
    assert witness.app.signer.verifier.find(first + response.text) is not None
    second = _note(log, tree)
    assert 200 == witness.add(_body(4, tree, second)).status_code
    assert 7 == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]
    # The monitoring endpoint serves the latest checkpoint with both signatures.
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    served = witness.client.get(f"/{origin_hash}/checkpoint").text
    assert served.startswith(second)
    assert witness.app.signer.verifier.find(served) is not None
    # The same checkpoint again (old == size, same root) is cosigned again, nothing changes.
    assert 200 == witness.add(_body(7, tree, second)).status_code
    assert 7 == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]


def test_a_stale_old_size_gets_409_with_the_witness_size(witness: Witness, log: Signer) -> None:
    tree = _tree(9)
    assert 200 == witness.add(_body(0, tree, _note(log, tree, 5), 5)).status_code
    response = witness.add(_body(0, tree, _note(log, tree)))
    assert 409 == response.status_code
    assert "text/x.tlog.size" == response.headers["content-type"]
    assert "5\n" == response.text


def _refused_without_change(witness: Witness, body: bytes, status: int) -> None:
    before = witness.app.state.snapshot()
    response = witness.add(body)
    assert status == response.status_code, response.text
    assert before == witness.app.state.snapshot()


def test_a_rollback_and_a_replayed_old_checkpoint_change_nothing(witness: Witness, log: Signer) -> None:
    tree = _tree(12)
    assert 200 == witness.add(_body(0, tree, _note(log, tree, 6), 6)).status_code
    assert 200 == witness.add(_body(6, tree, _note(log, tree))).status_code
    old_note = _note(log, tree, 6)
    _refused_without_change(witness, _body(0, tree, old_note, 6), 409)  # Replay of an old checkpoint.
    _refused_without_change(witness, _body(6, tree, old_note, 6), 409)  # Its old size again.
    _refused_without_change(witness, format_add_checkpoint(12, [], old_note), 400)  # old > size.
    assert 12 == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]


def test_a_fork_from_the_same_key_gets_a_conflict_and_is_recorded(witness: Witness, log: Signer) -> None:
    honest = _tree(8)
    assert 200 == witness.add(_body(0, honest, _note(log, honest))).status_code
    forked = _tree(8, b"rewritten")  # A second tree, signed with the same key.
    # Shown with the witness's size and a proof from it: the proof cannot lead to the cosigned root.
    forked_big = _tree(11, b"rewritten")
    response = witness.add(_body(8, forked_big, _note(log, forked_big)))
    assert 422 == response.status_code
    # Shown at the same size: a 409 (old 0 is stale), and the contradiction is kept as evidence.
    response = witness.add(_body(0, forked, _note(log, forked)))
    assert 409 == response.status_code and "8\n" == response.text
    forks = witness.app.state.forks(ORIGIN)
    assert 2 == len(forks)
    assert forks[0].reason.startswith("inconsistent")
    assert "same size, different root" == forks[1].reason
    assert forks[1].note == _note(log, forked)
    assert forks[1].known_note == _note(log, honest)
    assert 8 == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]
    assert honest.root() == witness.app.state.latest(ORIGIN)[1]  # type: ignore[index]


def test_hostile_requests_each_get_a_4xx_and_change_nothing(witness: Witness, log: Signer) -> None:
    tree = _tree(10)
    assert 200 == witness.add(_body(0, tree, _note(log, tree, 4), 4)).status_code
    good = _note(log, tree)
    proof = tree.consistency_proof(4, 10)
    other_key = Signer.generate(ORIGIN)
    text = good[: good.index("\n\n") + 1]
    bad_signature = good[:-10] + ("A" if good[-10] != "A" else "B") + good[-9:]
    hostile: list[tuple[str, bytes, int]] = [
        ("no empty line", b"old 4\n" + good.encode().replace(b"\n\n", b"\n"), 400),
        ("leading zero", format_add_checkpoint(4, proof, good).replace(b"old 4", b"old 04"), 400),
        ("negative", format_add_checkpoint(4, proof, good).replace(b"old 4", b"old -4"), 400),
        ("not base64", b"old 4\n!!!!\n\n" + good.encode(), 400),
        ("short hash", b"old 4\nAAAA\n\n" + good.encode(), 400),
        ("64 proof lines", b"old 4\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + good.encode(), 400),
        ("not utf-8", b"old 4\n\n\xff\xfe", 400),
        ("malformed checkpoint", format_add_checkpoint(4, proof, log.sign(f"{ORIGIN}\nten\nroot\n")), 400),
        ("unknown log", format_add_checkpoint(4, proof, sign_checkpoint(Signer.generate("other.example/log"),
                                                                         Checkpoint("other.example/log", 10, tree.root()))), 404),
        ("signed by another key", format_add_checkpoint(4, proof, sign_checkpoint(other_key, Checkpoint(ORIGIN, 10, tree.root()))), 403),
        ("unsigned", format_add_checkpoint(4, proof, text + "\n"), 400),
        ("bad signature", format_add_checkpoint(4, proof, bad_signature), 403),
        ("old above size", format_add_checkpoint(11, [], good), 400),
        ("wrong proof", format_add_checkpoint(4, [b"\x01" * 32] * len(proof), good), 422),
        ("proof too short", format_add_checkpoint(4, proof[:-1], good), 422),
        ("huge body", b"old 4\n" + b"A" * (70 * 1024), 413),
    ]
    for what, body, status in hostile:
        before = witness.app.state.snapshot()
        response = witness.add(body)
        assert status == response.status_code, (what, response.text)
        after = witness.app.state.snapshot()
        assert before[0] == after[0], what
        if status != 422:
            assert before[1] == after[1], what  # Only a log-signed contradiction is kept, as evidence.
    assert 405 == witness.client.get("/add-checkpoint").status_code
    assert 404 == witness.client.get("/elsewhere").status_code
    assert 4 == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]
    assert 200 == witness.add(format_add_checkpoint(4, proof, good)).status_code


def test_an_empty_tree_needs_the_empty_root_and_an_empty_proof(witness: Witness, log: Signer) -> None:
    empty = sign_checkpoint(log, Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest()))
    wrong = sign_checkpoint(log, Checkpoint(ORIGIN, 0, b"\x02" * 32))
    _refused_without_change(witness, format_add_checkpoint(0, [], wrong), 422)
    tree = _tree(3)
    _refused_without_change(witness, format_add_checkpoint(0, [b"\x00" * 32], _note(log, tree)), 422)
    assert 200 == witness.add(format_add_checkpoint(0, [], empty)).status_code


def test_a_client_over_its_rate_gets_429(tmp_path: Path, log: Signer) -> None:
    state = WitnessState(tmp_path / "limited.db")
    app = WitnessApp(WitnessSigner.generate("w.test/limited"), [Verifier.from_key(log.verifier_key)], state,
                     rate=0.01, burst=3)
    with serve(app, "limited witness") as url, httpx.Client(base_url=url) as client:
        statuses = [client.post("/add-checkpoint", content=b"old 0\n").status_code for _ in range(5)]
    state.close()
    assert [400, 400, 400, 429, 429] == statuses


def test_the_state_survives_a_restart(tmp_path: Path, log: Signer) -> None:
    signer = WitnessSigner.generate("w.test/durable")
    tree = _tree(6)
    for round_ in range(2):
        state = WitnessState(tmp_path / "durable.db")
        app = WitnessApp(signer, [Verifier.from_key(log.verifier_key)], state, rate=100, burst=100)
        with serve(app, f"witness {round_}") as url, httpx.Client(base_url=url) as client:
            if round_ == 0:
                assert 200 == client.post("/add-checkpoint", content=_body(0, tree, _note(log, tree, 3), 3)).status_code
            else:
                response = client.post("/add-checkpoint", content=_body(0, tree, _note(log, tree)))
                assert (409, "3\n") == (response.status_code, response.text)
        state.close()


# -- the commands -----------------------------------------------------------------------------


def test_witness_init_writes_a_private_key_and_prints_the_vkey_last(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["witness", "init", str(tmp_path / "w"), "--name", "witness.test/cli"])
    assert 0 == result.exit_code, result.output
    vkey = result.output.strip().splitlines()[-1]
    assert WitnessVerifier.from_key(vkey).name == "witness.test/cli"
    assert 0o600 == stat.S_IMODE(os.stat(tmp_path / "w" / "witness.key").st_mode)
    again = CliRunner().invoke(main, ["witness", "init", str(tmp_path / "w")])
    assert 2 == again.exit_code
    assert "already exists" in again.output


def test_witness_serve_runs_as_a_process_and_cosigns(tmp_path: Path, log: Signer) -> None:
    result = CliRunner().invoke(main, ["witness", "init", str(tmp_path), "--name", "witness.test/proc"])
    vkey = result.output.strip().splitlines()[-1]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiobligations.cli", "witness", "serve", "--key", str(tmp_path / "witness.key"),
         "--port", str(port), "--log", log.verifier_key],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        tree = _tree(5)
        note = _note(log, tree)

        def post() -> httpx.Response | None:
            try:
                return httpx.post(f"http://127.0.0.1:{port}/add-checkpoint", content=_body(0, tree, note), timeout=5)
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                return None

        response = until(post, 30, "the witness process to answer")
        assert 200 == response.status_code, response.text
        assert WitnessVerifier.from_key(vkey).find(note + response.text) is not None
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert (tmp_path / "witness.db").exists()


def test_witness_serve_refuses_a_witness_key_as_a_log_key(tmp_path: Path) -> None:
    CliRunner().invoke(main, ["witness", "init", str(tmp_path), "--name", "witness.test/x"])
    vkey = WitnessSigner.generate("w.test/y").verifier_key
    result = CliRunner().invoke(main, ["witness", "serve", "--key", str(tmp_path / "witness.key"), "--log", vkey])
    assert 2 == result.exit_code
    assert "not a log's verifier key" in result.output


def test_a_log_whose_origin_is_not_its_key_name_is_configured_as_origin_equals_key(tmp_path: Path) -> None:
    key = Signer.generate("keys.example/log-key")
    tree = _tree(4)
    note = sign_checkpoint(key, Checkpoint("origin.example/log", 4, tree.root()))
    state = WitnessState(tmp_path / "origin.db")
    app = WitnessApp(WitnessSigner.generate("w.test/o"), [("origin.example/log", Verifier.from_key(key.verifier_key))],
                     state)
    assert 200 == app.add_checkpoint(format_add_checkpoint(0, [], note))[0]
    by_name = WitnessApp(WitnessSigner.generate("w.test/n"), [Verifier.from_key(key.verifier_key)],
                         WitnessState(tmp_path / "name.db"))
    assert 404 == by_name.add_checkpoint(format_add_checkpoint(0, [], note))[0]  # Its origin is unknown there.
    state.close()
    by_name.state.close()
    CliRunner().invoke(main, ["witness", "init", str(tmp_path / "k"), "--name", "w.test/k"])
    bad = CliRunner().invoke(main, ["witness", "serve", "--key", str(tmp_path / "k" / "witness.key"),
                                    "--log", "origin.example/log=not-a-key"])
    assert 2 == bad.exit_code
    assert "not a log's verifier key" in bad.output


def test_concurrent_requests_from_one_size_cosign_exactly_one(witness: Witness, log: Signer) -> None:
    """The check of the old size and the update are atomic: of many checkpoints sent from the same old
    size at once, one is cosigned and every other gets 409 with that one's size (no rollback)."""
    import concurrent.futures

    tree = _tree(20)
    assert 200 == witness.add(_body(0, tree, _note(log, tree, 4), 4)).status_code
    bodies = [_body(4, tree, _note(log, tree, size), size) for size in range(5, 17)]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool, \
            httpx.Client(base_url=witness.url, timeout=20) as client:
        responses = list(pool.map(lambda body: client.post("/add-checkpoint", content=body), bodies))
    winners = [size for size, r in zip(range(5, 17), responses, strict=True) if r.status_code == 200]
    assert 1 == len(winners)
    assert all(r.status_code == 409 and r.text == f"{winners[0]}\n" for r in responses if r.status_code != 200)
    assert winners[0] == witness.app.state.latest(ORIGIN)[0]  # type: ignore[index]
