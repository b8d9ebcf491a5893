"""The profile, ``aiobligations init`` and the CLI's happy paths (bad input: test_bad_input.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import structlog.testing

from aiobligations import Obligations
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project
from aiobligations.profile import load_profile

_VALID = """\
[provider]
name = "Example Co"
contact = "ai@example.com"

[service]
name = "Example"

[ledger]
origin = "example.com/ai/ledger"
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


class TestInit:
    def test_init_writes_a_loadable_profile_and_private_keys(self, tmp_path: Path) -> None:
        result = run_cli("init", str(tmp_path / "svc"))

        assert 0 == result.returncode, result.stderr
        folder = tmp_path / "svc"
        for name in ("aiobligations.toml", "keys/ledger.key", "keys/master.key"):
            assert 0o600 == stat.S_IMODE((folder / name).stat().st_mode), name
        assert 0o700 == stat.S_IMODE((folder / "keys").stat().st_mode)
        profile = load_profile(folder / "aiobligations.toml")
        assert "localhost/aiobligations/svc" == profile.ledger.origin
        assert folder / "ledger.db" == profile.ledger.path

    def test_init_refuses_to_overwrite_without_force(self, tmp_path: Path) -> None:
        init_project(tmp_path)
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

        result = run_cli("init", str(tmp_path))

        assert 2 == result.returncode
        assert "already exist" in result.stderr and "--force" in result.stderr
        assert 1 == len(result.stderr.strip().splitlines())
        assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert 0 == run_cli("init", "--force", str(tmp_path)).returncode
        assert before[tmp_path / "keys" / "master.key"] != (tmp_path / "keys" / "master.key").read_bytes()


class TestProfile:
    def write(self, tmp_path: Path, text: str) -> Path:
        path = tmp_path / "aiobligations.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def test_every_problem_is_named_at_once(self, tmp_path: Path) -> None:
        path = self.write(
            tmp_path,
            '[provider]\ncode = "abc"\n[service]\n[ledger]\norigin = "has space"\nqueue_size = 0\n'
            '[ledger.retention]\nrisk = "1y"\n',
        )

        with pytest.raises(ConfigurationError) as caught:
            load_profile(path)

        message = str(caught.value)
        for expected in ("[provider] name is missing", "[provider] contact is missing", "27-character",
                         "[service] name is missing", "origin must be at most 255 printable characters",
                         "queue_size",
                         "below its legal floor"):
            assert expected in message

    @pytest.mark.parametrize("origin", ["tab\there", "line\u2028break", "nul\x00", "plus+sign", "x" * 256])
    def test_an_origin_that_cannot_be_a_checkpoint_line_is_refused(self, tmp_path: Path, origin: str) -> None:
        text = _VALID.replace('origin = "example.com/ai/ledger"', f"origin = {json.dumps(origin)}")
        with pytest.raises(ConfigurationError, match="origin must be"):
            load_profile(self.write(tmp_path, text))

    @pytest.mark.parametrize("section", ["requests", "labels", "disclosure", "server", "otlp", "ledger"])
    def test_a_known_section_that_is_not_a_table_is_named(self, tmp_path: Path, section: str) -> None:
        text = f"{section} = 5\n" + _VALID.replace(f"[{section}]", "[unused_table]")
        with pytest.raises(ConfigurationError, match=rf"\[{section}\] must be a table, got int 5"):
            load_profile(self.write(tmp_path, text))

    def test_unknown_sections_and_keys_are_warned_about_by_name(self, tmp_path: Path) -> None:
        text = _VALID.replace("[service]", "[ledgr]\nx = 1\n[service]\nmodle = \"m\"")
        with structlog.testing.capture_logs() as logs:
            load_profile(self.write(tmp_path, text))
        [warning] = [entry for entry in logs if entry["event"] == "profile.unknown_keys"]
        assert warning["keys"] == ["ledgr", "service.modle"]

    def test_missing_and_invalid_files(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="aiobligations init"):
            load_profile(tmp_path / "nope.toml")
        with pytest.raises(ConfigurationError, match="not valid TOML"):
            load_profile(self.write(tmp_path, "[provider\n"))

    def test_keys_readable_by_others_are_refused(self, tmp_path: Path) -> None:
        config = init_project(tmp_path)
        os.chmod(tmp_path / "keys" / "master.key", 0o644)

        with pytest.raises(ConfigurationError, match="chmod 600"):
            Obligations.from_file(config)


class TestExportVerify:
    def test_export_then_verify_with_a_pinned_key(self, tmp_path: Path) -> None:
        config = init_project(tmp_path)
        with Obligations.from_file(config) as obligations:
            for i in range(12):
                obligations.ledger.append({"kind": "interaction", "n": i, "subject": f"s{i % 3}",
                                           "personal": {"prompt": "hi"}})
            vkey = obligations.ledger.signer.verifier_key

        exported = run_cli("export", "--config", str(config), "--out", str(tmp_path / "b.tar.gz"))
        verified = run_cli("verify", "--key", vkey, "--json", str(tmp_path / "b.tar.gz"))
        live = run_cli("verify", "--config", str(config), str(tmp_path / "ledger.db"))

        assert 0 == exported.returncode, exported.stderr
        assert "12 records [0, 12)" in exported.stdout
        assert 0 == verified.returncode, verified.stderr
        report = json.loads(verified.stdout)
        assert (True, 12, True) == (report["intact"], report["records_checked"], report["key_pinned"])
        assert 0 == live.returncode, live.stderr
        assert "intact: 12 records" in live.stdout

    def test_export_of_a_time_range(self, tmp_path: Path) -> None:
        config = init_project(tmp_path)
        with Obligations.from_file(config) as obligations:
            obligations.ledger.append({"kind": "log"})

        result = run_cli("export", "--config", str(config), "--out", str(tmp_path / "b"),
                         "--from", "2000-01-01", "--to", "2000-01-02T00:00:00Z")

        assert 0 == result.returncode, result.stderr
        assert "0 records [0, 0)" in result.stdout
        assert 0 == run_cli("verify", "--config", str(config), str(tmp_path / "b")).returncode


def test_quickstart_example_runs_end_to_end(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"

    result = subprocess.run([sys.executable, str(example), str(tmp_path / "demo")], capture_output=True,
                            text=True, timeout=120)

    assert 0 == result.returncode, result.stderr
    assert "intact: 7 records" in result.stdout  # 3 interactions, 3 log lines, 1 erasure
    assert "bob erased" in result.stdout
