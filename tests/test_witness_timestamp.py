"""RFC 3161 timestamps on checkpoints, against a local timestamp authority made with `openssl ts`."""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from _tsa import local_tsa
from click.testing import CliRunner
from structlog.testing import capture_logs
from test_workers import until

from aiobligations.cli import main
from aiobligations.errors import ConfigurationError
from aiobligations.ledger import SQLiteStore, export_bundle
from aiobligations.ledger.note import Checkpoint, Signer, sign_checkpoint
from aiobligations.ledger.reader import checkpoint_of
from aiobligations.witness.timestamp import (
    TimestampError,
    TimestampSettings,
    checkpoint_text,
    request_timestamp,
    verify_timestamp,
)


def _note(size: int = 3) -> str:
    log = Signer.generate("ts.example/log")
    return sign_checkpoint(log, Checkpoint(log.name, size, bytes([size]) * 32))


def test_a_checkpoint_is_timestamped_and_verifies_only_for_itself(tmp_path: Path) -> None:
    with local_tsa(tmp_path / "tsa") as (url, root, _):
        note = _note()
        response = request_timestamp(url, note)
        when = verify_timestamp(response, note, [root])
        assert when.tzinfo is not None
        # Cosignature lines appended to the note do not change what is timestamped.
        assert when == verify_timestamp(response, note + "\u2014 w.example/w AAAAAAAA\n", [root])
        with pytest.raises(TimestampError):
            verify_timestamp(response, _note(4), [root])  # Another checkpoint.
        with local_tsa(tmp_path / "other", "Other TSA") as (_, other_root, _):
            with pytest.raises(TimestampError):
                verify_timestamp(response, note, [other_root])  # Another authority's root.
        with pytest.raises(TimestampError):
            verify_timestamp(b"\x30\x03\x02\x01\x00", note, [root])  # Not a timestamp.
        assert checkpoint_text(note) == note.split("\n\n")[0].encode() + b"\n"


def test_an_unreachable_or_refusing_authority_is_a_timestamp_error(tmp_path: Path) -> None:
    with local_tsa(tmp_path / "tsa") as (url, _, app):
        app.down = True
        with pytest.raises(TimestampError, match="HTTP 503"):
            request_timestamp(url, _note())
    with pytest.raises(TimestampError, match="cannot be reached"):
        request_timestamp(url, _note(), timeout=2)


def test_settings_are_checked() -> None:
    assert ("http://tsa",) == TimestampSettings.from_dict({"urls": ["http://tsa"]}).urls
    settings = TimestampSettings(("https://a",), interval=5)
    assert settings == TimestampSettings.from_dict(settings.as_dict())
    for bad in ({}, {"urls": []}, {"urls": ["ftp://x"]}, {"urls": ["http://x"], "interval": -1}):
        with pytest.raises(ConfigurationError):
            TimestampSettings.from_dict(bad)


def test_the_ledger_timestamps_its_checkpoints_and_bundles_carry_them(make_ledger: Any, signer: Signer,
                                                                      tmp_path: Path) -> None:
    with local_tsa(tmp_path / "tsa") as (url, root, app):
        app.down = True
        with capture_logs() as logs:
            ledger = make_ledger(timestamps=TimestampSettings((url,), interval=0.05, max_backoff=0.1))
            for i in range(4):
                ledger.append({"kind": "log", "i": i})
            size = checkpoint_of(ledger.sign_checkpoint()).size
            until(lambda: any(e["event"] == "timestamp.failed" for e in logs), 10, "a failed timestamp")
        app.down = False  # The authority comes back: the latest checkpoint gets its timestamp.
        until(lambda: ledger.timestamps(size), 20, "the checkpoint's timestamp")
        (tsa, response), = ledger.timestamps(size)
        assert url == tsa
        verify_timestamp(response, ledger.checkpoint or "", [root])
        ledger.close()
    (tmp_path / "ca.pem").write_bytes((tmp_path / "tsa" / "ca.pem").read_bytes())
    export_bundle(tmp_path / "ledger.db", tmp_path / "bundle.tar.gz")
    with tarfile.open(tmp_path / "bundle.tar.gz") as tar:
        member = tar.extractfile("timestamps.json")
        assert member is not None
        kept = json.loads(member.read())
    assert url == kept[0]["tsa"] and base64.b64decode(kept[0]["response"]) == response
    runner = CliRunner()
    good = runner.invoke(main, ["verify", str(tmp_path / "bundle.tar.gz"), "--key", signer.verifier_key,
                                "--tsa-root", str(tmp_path / "ca.pem")])
    assert 0 == good.exit_code, good.output
    assert f"timestamped by {url} at " in good.output
    database = runner.invoke(main, ["verify", str(tmp_path / "ledger.db"), "--key", signer.verifier_key,
                                    "--tsa-root", str(tmp_path / "ca.pem")])
    assert 0 == database.exit_code, database.output
    with local_tsa(tmp_path / "other", "Other TSA"):
        pass
    refused = runner.invoke(main, ["verify", str(tmp_path / "bundle.tar.gz"), "--key", signer.verifier_key,
                                   "--tsa-root", str(tmp_path / "other" / "ca.pem")])
    assert 1 == refused.exit_code, refused.output
    assert "NOT TIMESTAMPED" in refused.output


def test_a_bundle_without_timestamps_fails_the_tsa_check(make_ledger: Any, signer: Signer, tmp_path: Path) -> None:
    ledger = make_ledger()
    ledger.append({"kind": "log"})
    ledger.sign_checkpoint()
    ledger.close()
    export_bundle(tmp_path / "ledger.db", tmp_path / "plain")
    with local_tsa(tmp_path / "tsa"):
        pass
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "plain"), "--key", signer.verifier_key,
                                       "--tsa-root", str(tmp_path / "tsa" / "ca.pem")])
    assert 1 == result.exit_code
    assert "none of the 0 RFC 3161 timestamps" in result.output


def test_stores_keep_timestamps(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    store.open()
    try:
        store.add_timestamp(2, "http://a", "note", b"\x30\x00")
        store.add_timestamp(2, "http://a", "note", b"\x30\x01")
        assert [(2, "http://a", "note", b"\x30\x01")] == store.timestamps(2) == store.timestamps()
    finally:
        store.close()


def test_the_profile_s_timestamps_are_asked_by_the_writer_process(tmp_path: Path) -> None:
    from aiobligations import Obligations
    from aiobligations.keys import init_project

    config = init_project(tmp_path / "service")
    with local_tsa(tmp_path / "tsa") as (url, root, _):
        with open(config, "a", encoding="utf-8") as handle:
            handle.write(f'\n[timestamps]\nurls = ["{url}"]\ninterval = 0.05\n')
        obligations = Obligations.from_file(config)
        try:
            ledger = obligations.ledger
            assert ledger.writer_pid is not None  # The shared writer process signs, and asks.
            ledger.append({"kind": "log"})
            note = ledger.sign_checkpoint()
            size = checkpoint_of(note).size
            (_, response), = until(lambda: ledger.timestamps(size), 20, "the writer process's timestamp")
            verify_timestamp(response, note, [root])
        finally:
            obligations.close()
