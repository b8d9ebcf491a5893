"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing half-written.

The CLI runs through :class:`click.testing.CliRunner` (stderr apart from stdout), and a few cases
through a real ``python -m aiobligations.cli`` process. The last two classes cover the library's
own answers to pressure: a full queue (``on_full``) and a store that fails for a while.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import random
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aiobligations.cli import main
from aiobligations.errors import LedgerError, LedgerFull
from aiobligations.keys import init_project, load_signer
from aiobligations.ledger import Ledger, MasterKey, SQLiteStore, export_bundle, verify_database
from aiobligations.ledger.store import Batch
from aiobligations.profile import load_profile

from conftest import ORIGIN

# -- helpers -----------------------------------------------------------------------------------


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_refused(result: Result, *needles: str, status: int = 2) -> str:
    """The command failed with ``status`` and exactly one ``aiobligations: ...`` line on stderr."""
    assert status == result.exit_code, f"stdout={result.stdout!r} stderr={result.stderr!r}"
    # An exception other than SystemExit would be a crash the runner caught for us.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    line = lines[0]
    assert line.startswith("aiobligations: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiobligations.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes, or None for a folder."""
    return {
        str(p.relative_to(folder)): (None if p.is_dir() and not p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


@dataclass(frozen=True)
class Project:
    folder: Path
    config: Path
    db: Path
    bundle: Path
    tarball: Path
    verifier_key: str


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """An initialised project with a small ledger and its bundles (a folder and a .tar.gz)."""
    folder = tmp_path_factory.mktemp("project")
    config = init_project(folder, origin="bad-input.example/ledger")
    profile = load_profile(config)
    signer = load_signer(profile.ledger.signing_key, profile.ledger.origin)
    store = SQLiteStore(profile.ledger.path)
    with Ledger(store, origin=profile.ledger.origin, signer=signer, master_key=MasterKey.load(profile.ledger.master_key)) as ledger:
        for i in range(12):
            ledger.append({"kind": "interaction", "n": i, "subject": f"s{i % 3}", "personal": {"p": i}})
    export_bundle(profile.ledger.path, folder / "bundle")
    export_bundle(profile.ledger.path, folder / "bundle.tar.gz")
    assert 0 == cli("verify", str(folder / "bundle.tar.gz"), "--key", signer.verifier_key).exit_code
    return Project(folder, config, profile.ledger.path, folder / "bundle", folder / "bundle.tar.gz", signer.verifier_key)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in an empty folder, with a private temporary folder to check for leftovers."""
    work = tmp_path / "work"
    work.mkdir()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    yield work
    assert [] == list(private_tmp.iterdir()), "a temporary file or folder was left behind"


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def member(name: str, *, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = 0o644
    return info


def bundle_members(project: Project) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(member(p.name), p.read_bytes()) for p in sorted(project.bundle.iterdir())]


# -- verify ------------------------------------------------------------------------------------


class TestVerifyRefuses:
    def test_a_file_of_random_bytes(self, tmp_path: Path) -> None:
        seed = 20261128
        data = random.Random(seed).randbytes(4096)
        assert not data.startswith((b"\x1f\x8b", b"SQLite format 3"))
        path = tmp_path / "noise.bin"
        path.write_bytes(data)

        assert_refused(cli("verify", str(path)), str(path), "neither an audit bundle nor a ledger database")
        assert data == path.read_bytes()

    def test_an_empty_file(self, tmp_path: Path) -> None:
        path = tmp_path / "empty"
        path.write_bytes(b"")

        assert_refused(cli("verify", str(path)), "neither an audit bundle nor a ledger database")
        assert b"" == path.read_bytes()

    def test_a_missing_path(self, tmp_path: Path) -> None:
        assert_refused(cli("verify", str(tmp_path / "nowhere.db")), "no such file or folder")

    def test_a_foreign_sqlite_database_is_refused_and_left_untouched(self, tmp_path: Path) -> None:
        path = tmp_path / "app.db"
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("INSERT INTO users VALUES (1, 'ada')")
        conn.close()
        before = snapshot(tmp_path)

        assert_refused(cli("verify", str(path)), "not an aiobligations ledger database")
        assert before == snapshot(tmp_path)

    def test_an_empty_sqlite_database(self, tmp_path: Path) -> None:
        path = tmp_path / "blank.db"
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version=7")
        conn.close()
        before = snapshot(tmp_path)

        assert_refused(cli("verify", str(path)), "not an aiobligations ledger")
        assert before == snapshot(tmp_path)

    def test_a_ledger_of_an_unknown_schema_version(self, project: Project, tmp_path: Path) -> None:
        path = tmp_path / "future.db"
        shutil.copyfile(project.db, path)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE meta SET value=? WHERE key='schema'", (b"99",))
        conn.close()

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), "schema version not supported")

    @pytest.mark.parametrize(
        ("extra", "needle"),
        [
            ((member("../evil-aiobligations-test"), b"owned\n"), "unexpected member '../evil-aiobligations-test'"),
            ((member("/tmp/abs-evil-aiobligations-test"), b"owned\n"), "unexpected member"),
            ((member("notes.txt"), b"hello\n"), "unexpected member 'notes.txt'"),
            ((member("keys", kind=tarfile.DIRTYPE), None), "unexpected member 'keys'"),
            ((member("records.jsonl"), b"again\n"), "appears twice"),
        ],
        ids=["dotdot", "absolute", "extra-file", "folder", "duplicate"],
    )
    def test_a_tarball_with_unexpected_members(self, project: Project, tmp_path: Path, extra, needle: str) -> None:
        path = tarball(tmp_path / "b.tar.gz", [*bundle_members(project), extra])
        before = snapshot(tmp_path)

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), needle)
        assert before == snapshot(tmp_path)
        assert not Path("/tmp/abs-evil-aiobligations-test").exists()

    @pytest.mark.parametrize("target", ["/etc/passwd", "checkpoint"])
    def test_a_tarball_with_a_symlink_member(self, project: Project, tmp_path: Path, target: str) -> None:
        members = [m for m in bundle_members(project) if m[0].name != "records.jsonl"]
        members.append((member("records.jsonl", kind=tarfile.SYMTYPE, target=target), None))
        path = tarball(tmp_path / "b.tar.gz", members)

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), "unexpected member 'records.jsonl'")

    def test_a_hard_link_member(self, project: Project, tmp_path: Path) -> None:
        members = [m for m in bundle_members(project) if m[0].name != "hashes.bin"]
        members.append((member("hashes.bin", kind=tarfile.LNKTYPE, target="records.jsonl"), None))
        path = tarball(tmp_path / "b.tar.gz", members)

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), "unexpected member 'hashes.bin'")

    @pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
    def test_a_tarball_cut_in_the_middle(self, project: Project, tmp_path: Path, fraction: float) -> None:
        data = project.tarball.read_bytes()
        path = tmp_path / "cut.tar.gz"
        path.write_bytes(data[: int(len(data) * fraction)])

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), "not a readable .tar.gz bundle")

    @pytest.mark.parametrize("cut", [1, 8, 24])
    def test_a_tarball_cut_in_its_gzip_trailer(self, project: Project, tmp_path: Path, cut: int) -> None:
        data = project.tarball.read_bytes()
        path = tmp_path / "cut.tar.gz"
        path.write_bytes(data[:-cut])
        with pytest.raises(EOFError):  # Proof that the file really is truncated.
            gzip.decompress(path.read_bytes())

        assert_refused(cli("verify", str(path), "--key", project.verifier_key), "not a readable .tar.gz bundle")

    def test_a_gzip_file_that_is_not_a_tarball(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.gz"
        path.write_bytes(gzip.compress(b"just some text\n" * 100))

        assert_refused(cli("verify", str(path)), "not a readable .tar.gz bundle")

    def test_a_folder_without_records(self, project: Project, tmp_path: Path) -> None:
        folder = tmp_path / "partial"
        shutil.copytree(project.bundle, folder)
        (folder / "records.jsonl").unlink()

        assert_refused(cli("verify", str(folder), "--key", project.verifier_key), "not an audit bundle")

    def test_an_empty_folder(self, tmp_path: Path) -> None:
        (tmp_path / "nothing").mkdir()

        assert_refused(cli("verify", str(tmp_path / "nothing")), "not an audit bundle")

    @pytest.mark.parametrize(
        "key",
        [
            "not-a-key",
            "name+zzzzzzzz+AAAA",
            "bad-input.example/ledger+00000000+" + "A" * 44,
            "bad-input.example/ledger+0123abcd+AbTa5xZnR0V8R7d2PH1QuEo93VddUEOQ==",
            "   ",
        ],
        ids=["one-word", "bad-id", "wrong-type", "wrong-length", "blank"],
    )
    def test_a_malformed_key(self, project: Project, key: str) -> None:
        assert_refused(cli("verify", str(project.bundle), "--key", key), "--key is not a verifier key")

    def test_an_empty_key_is_refused(self, project: Project) -> None:
        assert_refused(cli("verify", str(project.bundle), "--key", ""), "--key")

    def test_a_malformed_key_for_a_database(self, project: Project) -> None:
        assert_refused(cli("verify", str(project.db), "--key", "garbage"), "--key is not a verifier key")

    def test_a_key_file_that_is_not_text(self, project: Project, tmp_path: Path) -> None:
        path = tmp_path / "key.bin"
        path.write_bytes(b"\xff\xfe\x00binary")

        assert_refused(cli("verify", str(project.bundle), "--key", str(path)), "--key", "cannot be read")

    def test_a_missing_earlier_checkpoint(self, project: Project, tmp_path: Path) -> None:
        result = cli("verify", str(project.bundle), "--key", project.verifier_key, "--since-checkpoint", str(tmp_path / "no"))

        assert_refused(result, "--since-checkpoint", "cannot be read")

    def test_a_real_process_prints_one_line_and_no_traceback(self, project: Project, tmp_path: Path) -> None:
        noise = tmp_path / "noise.bin"
        noise.write_bytes(random.Random(7).randbytes(999))
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes(project.tarball.read_bytes()[:300])

        for path in (noise, cut):
            result = run_cli("verify", str(path), "--key", project.verifier_key, cwd=tmp_path)

            assert 2 == result.returncode, result.stderr
            assert "Traceback" not in result.stderr
            assert 1 == len(result.stderr.strip().splitlines()), result.stderr
            assert "" == result.stdout


# -- export ------------------------------------------------------------------------------------


def write_config(target: Path, project: Project, *, drop: str | None = None, **overrides: str) -> Path:
    """A copy of the project's profile with absolute paths, the first line starting with ``drop``
    dropped, or values replaced."""
    lines = []
    for line in project.config.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if drop is not None and line.startswith(drop):
            drop = None
            continue
        if key in overrides:
            line = f"{key} = {overrides[key]!r}".replace("'", '"')
        elif key in ("path", "signing_key", "master_key"):
            value = line.split('"')[1]
            line = f'{key} = "{project.folder / value}"'
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    return target


class TestExportRefuses:
    def test_a_missing_default_config(self, tmp_path: Path) -> None:
        out = tmp_path / "out"

        assert_refused(cli("export", "--out", str(out)), "no profile: looked for ./aiobligations.toml", "aiobligations init")
        assert not out.exists()

    def test_a_missing_config(self, tmp_path: Path) -> None:
        assert_refused(cli("export", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")), "nope.toml")
        assert not (tmp_path / "o").exists()

    def test_a_config_that_is_not_toml(self, tmp_path: Path) -> None:
        config = tmp_path / "bad.toml"
        config.write_text('[provider\nname = "x"\n')

        assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o")), "not valid TOML")
        assert not (tmp_path / "o").exists()

    def test_a_config_that_is_not_utf8(self, tmp_path: Path) -> None:
        config = tmp_path / "bad.toml"
        config.write_bytes(b"\xff\xfe\x00\x01")

        assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o")), str(config))

    def test_a_config_missing_the_provider_name_names_the_field(self, project: Project, tmp_path: Path) -> None:
        config = write_config(tmp_path / "c.toml", project, drop="name = ")

        line = assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o")))

        assert line.endswith("c.toml: [provider] name is missing"), line
        assert not (tmp_path / "o").exists()

    def test_a_config_with_an_invalid_value_names_it(self, project: Project, tmp_path: Path) -> None:
        config = write_config(tmp_path / "c.toml", project, on_full="sometimes")

        assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o")), "on_full", "sometimes")

    def test_a_config_whose_ledger_is_missing(self, project: Project, tmp_path: Path) -> None:
        config = write_config(tmp_path / "c.toml", project, path=str(tmp_path / "absent.db"))

        assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o")), "absent.db", "no such ledger")
        assert not (tmp_path / "absent.db").exists(), "export must not create the database"
        assert not (tmp_path / "o").exists()

    def test_a_config_whose_ledger_is_foreign(self, project: Project, tmp_path: Path) -> None:
        foreign = tmp_path / "foreign.db"
        conn = sqlite3.connect(foreign)
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        config = write_config(tmp_path / "c.toml", project, path=str(foreign))

        assert_refused(cli("export", "--config", str(config), "--out", str(tmp_path / "o.tar.gz")), "not an aiobligations")
        assert [] == [p.name for p in tmp_path.iterdir() if p.name.startswith(("o", ".o", ".bundle"))]

    def test_a_config_whose_signing_key_is_missing_stops_verify(self, project: Project, tmp_path: Path) -> None:
        config = write_config(tmp_path / "c.toml", project, signing_key=str(tmp_path / "keys" / "gone.key"))

        assert_refused(cli("verify", str(project.bundle), "--config", str(config)), "gone.key", "does not exist")

    def test_a_config_whose_signing_key_is_readable_by_others(self, project: Project, tmp_path: Path) -> None:
        key = tmp_path / "open.key"
        shutil.copyfile(project.folder / "keys" / "ledger.key", key)
        key.chmod(0o644)
        config = write_config(tmp_path / "c.toml", project, signing_key=str(key))

        assert_refused(cli("verify", str(project.bundle), "--config", str(config)), "readable by others")

    @pytest.mark.parametrize("name", ["existing", "existing.tar.gz"])
    def test_an_out_that_already_exists_is_left_alone(self, project: Project, tmp_path: Path, name: str) -> None:
        out = tmp_path / "exports" / name
        out.parent.mkdir()
        if name.endswith(".tar.gz"):
            out.write_bytes(b"precious")
        else:
            out.mkdir()
            (out / "keep.txt").write_bytes(b"precious")
        before = snapshot(out.parent)

        assert_refused(cli("export", "--config", str(project.config), "--out", str(out)), "already exists")
        assert before == snapshot(out.parent)

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--from", "yesterday"], "--from must be an RFC 3339 time"),
            (["--from", "2026-13-45"], "--from"),
            (["--to", "12:00"], "--to must be"),
            (["--from", "2026-11-28", "--to", "2026-11-27"], "--to is before --from"),
        ],
        ids=["word", "bad-date", "time-only", "reversed"],
    )
    def test_bad_times(self, project: Project, tmp_path: Path, args: list[str], needle: str) -> None:
        out = tmp_path / "o"

        assert_refused(cli("export", "--config", str(project.config), "--out", str(out), *args), needle)
        assert not out.exists()

    def test_export_still_works_after_all_that(self, project: Project, tmp_path: Path) -> None:
        """
        The refusals above are refusals of the input, not of the project: a good call succeeds.
        """
        result = cli("export", "--config", str(project.config), "--out", str(tmp_path / "good.tar.gz"))

        assert 0 == result.exit_code, result.output
        assert 0 == cli("verify", str(tmp_path / "good.tar.gz"), "--key", project.verifier_key).exit_code


# -- init --------------------------------------------------------------------------------------


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Make folders immutable with ``chattr +i`` (root ignores permission bits); undone at teardown."""
    done: list[Path] = []

    def make(path: Path) -> None:
        try:
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("chattr is not installed, so a folder cannot be made unwritable for root")
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.strip()}")
        done.append(path)
        try:
            (path / ".probe").touch()
        except OSError:
            return
        (path / ".probe").unlink()
        pytest.skip("chattr +i did not stop writes into the folder")

    yield make
    for path in reversed(done):
        subprocess.run(["chattr", "-i", str(path)], check=True, timeout=30)


class TestInitRefuses:
    def test_an_existing_config_is_kept_byte_for_byte(self, tmp_path: Path) -> None:
        folder = tmp_path / "svc"
        init_project(folder)
        before = snapshot(folder)

        assert_refused(cli("init", str(folder)), "already exist", "--force")
        assert before == snapshot(folder)

    def test_an_existing_config_alone_also_refuses(self, tmp_path: Path) -> None:
        folder = tmp_path / "svc"
        folder.mkdir()
        (folder / "aiobligations.toml").write_bytes(b"# mine\n")
        before = snapshot(folder)

        assert_refused(cli("init", str(folder)), "aiobligations.toml", "already exist")
        assert before == snapshot(folder)

    def test_keys_being_a_file_fails_before_writing_anything(self, tmp_path: Path) -> None:
        folder = tmp_path / "svc"
        folder.mkdir()
        (folder / "keys").write_bytes(b"not a folder")
        before = snapshot(folder)

        assert_refused(cli("init", str(folder)), "cannot write into")
        assert before == snapshot(folder)

    def test_a_new_folder_is_removed_when_init_fails(self, tmp_path: Path) -> None:
        """
        The folder init creates is removed again: ``keys`` cannot be made inside it.
        """
        parent = tmp_path / "p"
        parent.mkdir()
        target = parent / "svc" / "deeper"
        # A file where init wants its folder's parent: mkdir(parents=True) fails at once.
        (parent / "svc").write_bytes(b"file")
        before = snapshot(parent)

        assert_refused(cli("init", str(target)), "cannot write into")
        assert before == snapshot(parent)

    def test_a_failure_after_the_keys_were_written_leaves_nothing(self, tmp_path: Path) -> None:
        """
        The config's temporary name is taken by a folder, so writing fails on the third file,
        after both key files were written under their temporary names.
        """
        folder = tmp_path / "svc"
        folder.mkdir()
        (folder / ".aiobligations.toml.tmp").mkdir()
        before = snapshot(folder)

        assert_refused(cli("init", str(folder)), "cannot write into")
        assert before == snapshot(folder), "the keys folder or a key file was left behind"

    def test_an_immutable_folder_fails_part_way_and_leaves_nothing(self, tmp_path: Path, immutable) -> None:
        """
        ``keys/`` is writable but its parent is not: the key files are written, the config fails.
        """
        folder = tmp_path / "svc"
        (folder / "keys").mkdir(parents=True)
        before = snapshot(folder)
        immutable(folder)

        assert_refused(cli("init", str(folder)), "cannot write into", "Operation not permitted")
        assert before == snapshot(folder)

    def test_an_immutable_parent_creates_nothing(self, tmp_path: Path, immutable) -> None:
        parent = tmp_path / "locked"
        parent.mkdir()
        immutable(parent)

        assert_refused(cli("init", str(parent / "svc")), "cannot write into")
        assert [] == list(parent.iterdir())

    def test_a_real_process_reports_the_failure_in_one_line(self, tmp_path: Path) -> None:
        folder = tmp_path / "svc"
        folder.mkdir()
        (folder / "keys").write_bytes(b"x")

        result = run_cli("init", str(folder), cwd=tmp_path)

        assert 2 == result.returncode
        assert "Traceback" not in result.stderr
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr
        assert ["keys"] == sorted(p.name for p in folder.iterdir())

    @pytest.mark.parametrize(
        "args", [["export"], ["verify", "--bogus", "x"], ["init", "FILE"]], ids=["no-out", "unknown-option", "init-file"]
    )
    def test_usage_errors_are_one_line_too(self, tmp_path: Path, args: list[str]) -> None:
        (tmp_path / "FILE").write_bytes(b"")
        args = [str(tmp_path / a) if a == "FILE" else a for a in args]

        assert_refused(cli(*args))


# -- the library: a full queue -------------------------------------------------------------------


class GatedStore(SQLiteStore):
    """A SQLite store whose ``write_batch`` waits for ``gate``; ``entered`` tells a batch arrived."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write_batch(self, batch: Batch) -> None:
        self.entered.set()
        if not self.gate.wait(60):
            raise AssertionError("the test never opened the gate")
        super().write_batch(batch)


@pytest.fixture
def gated(make_ledger, tmp_path: Path) -> Iterator[Callable[..., tuple[Ledger, GatedStore]]]:
    stores: list[GatedStore] = []

    def make(**kwargs) -> tuple[Ledger, GatedStore]:
        store = GatedStore(tmp_path / f"gated-{len(stores)}.db")
        stores.append(store)
        return make_ledger(store, **kwargs), store

    yield make
    # Open the gates before make_ledger's teardown closes the ledgers (which writes).
    for store in stores:
        store.gate.set()


def record(n: int) -> dict:
    return {"kind": "interaction", "n": n, "subject": f"user-{n % 2}", "personal": {"n": n}}


def fill(ledger: Ledger, store: GatedStore) -> None:
    """One record held by the blocked writer, then a full queue of two."""
    ledger.submit(record(0))
    assert store.entered.wait(10), "the writer never started the first batch"
    ledger.submit(record(1))
    ledger.submit(record(2))


def stored(ledger: Ledger) -> list[int]:
    return [ledger.read(i)["n"] for i in range(ledger.size)]


class TestFullQueue:
    def test_raise_policy_refuses_at_once_and_keeps_what_it_accepted(self, gated) -> None:
        ledger, store = gated(queue_size=2, on_full="raise")
        fill(ledger, store)

        started = time.monotonic()
        with pytest.raises(LedgerFull, match=r"queue is full \(2 records waiting\)"):
            ledger.submit(record(3))
        with pytest.raises(LedgerFull):
            ledger.append(record(4), timeout=10)
        assert time.monotonic() - started < 1.0, "the raise policy must not wait"

        store.gate.set()
        assert 3 == ledger.flush(timeout=10)
        assert [0, 1, 2] == stored(ledger)
        assert {"n": 2} == ledger.read(2)["personal"]

    def test_wait_policy_gives_up_after_the_timeout(self, gated) -> None:
        ledger, store = gated(queue_size=2, on_full="wait", full_timeout=0.3)
        fill(ledger, store)

        started = time.monotonic()
        with pytest.raises(LedgerFull, match="stayed full for 0.3 s"):
            ledger.submit(record(3))
        waited = time.monotonic() - started

        assert 0.3 <= waited < 5.0
        store.gate.set()
        assert 3 == ledger.flush(timeout=10)
        assert [0, 1, 2] == stored(ledger)

    def test_wait_policy_succeeds_once_the_writer_drains(self, gated) -> None:
        ledger, store = gated(queue_size=2, on_full="wait", full_timeout=30)
        fill(ledger, store)
        outcome: dict[str, object] = {}
        about_to_submit = threading.Event()

        def submit_two() -> None:
            about_to_submit.set()
            try:
                ledger.submit(record(3))
                outcome["index"] = ledger.append(record(4), timeout=30)
            except BaseException as exc:  # Reported to the test below.
                outcome["error"] = exc

        thread = threading.Thread(target=submit_two)
        thread.start()
        assert about_to_submit.wait(10)
        thread.join(0.5)
        assert thread.is_alive(), f"submit did not wait for room: {outcome}"

        store.gate.set()
        thread.join(30)

        assert not thread.is_alive()
        assert {"index": 4} == outcome
        assert 5 == ledger.flush(timeout=10)
        assert [0, 1, 2, 3, 4] == stored(ledger)

    def test_many_threads_waiting_lose_nothing(self, gated) -> None:
        ledger, store = gated(queue_size=2, on_full="wait", full_timeout=30)
        fill(ledger, store)
        errors: list[BaseException] = []
        ready = threading.Barrier(9)

        def worker(base: int) -> None:
            ready.wait(10)
            try:
                for k in range(25):
                    ledger.submit(record(base + k))
            except BaseException as exc:  # Reported to the test below.
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(100 * (w + 1),)) for w in range(8)]
        for thread in threads:
            thread.start()
        ready.wait(10)
        store.gate.set()
        for thread in threads:
            thread.join(30)

        assert [] == errors
        assert 3 + 8 * 25 == ledger.flush(timeout=30)
        expected = {0, 1, 2} | {100 * (w + 1) + k for w in range(8) for k in range(25)}
        assert expected == set(stored(ledger))


# -- the library: a store that fails for a while -------------------------------------------------


class FlakyStore(SQLiteStore):
    """A SQLite store whose first ``failures`` batches fail as a locked database would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.left = failures
        self.calls = 0
        self.exhausted = threading.Event()

    def write_batch(self, batch: Batch) -> None:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            if self.left == 0:
                self.exhausted.set()
            raise sqlite3.OperationalError("database is locked")
        super().write_batch(batch)


class TestFailingStore:
    def test_waiting_callers_get_the_error_and_submitted_records_all_land(self, make_ledger, tmp_path: Path) -> None:
        store = FlakyStore(tmp_path / "flaky.db", failures=3)
        ledger = make_ledger(store)

        with pytest.raises(LedgerError, match="could not store the record: OperationalError: database is locked"):
            ledger.append(record(-1))
        with pytest.raises(LedgerError, match="database is locked"):
            asyncio.run(ledger.aappend(record(-2)))
        assert 0 == ledger.size
        for n in range(20):
            ledger.submit(record(n))
        assert store.exhausted.wait(10), "the third failure never came"

        assert 20 == ledger.flush(timeout=10)
        assert list(range(20)) == stored(ledger)
        assert all({"n": n} == ledger.read(n)["personal"] for n in range(20))
        assert 3 + 1 <= store.calls

    def test_the_database_verifies_after_the_failures(self, make_ledger, tmp_path: Path, signer) -> None:
        store = FlakyStore(tmp_path / "flaky.db", failures=2)
        ledger = make_ledger(store)
        for n in range(10):
            ledger.submit(record(n))
        assert store.exhausted.wait(10)
        ledger.flush(timeout=10)
        ledger.erase_subject("user-1")
        ledger.close()

        report = verify_database(tmp_path / "flaky.db", key=signer.verifier_key)

        assert (0, 11, 0) == (report.start, report.end, report.unsigned)

    def test_close_returns_once_the_store_recovers(self, tmp_path: Path, signer, master) -> None:
        store = RecoveringStore(tmp_path / "recovering.db")
        ledger = Ledger(store, origin=ORIGIN, signer=signer, master_key=master)
        ledger.submit(record(0))
        with pytest.raises(LedgerError, match="did not confirm"):
            ledger.flush(timeout=0.2)  # The batch keeps failing; the record waits to be retried.

        def close() -> None:
            store.closing.set()
            ledger.close()

        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        try:
            assert store.retried_while_closing.wait(10), "the writer stopped retrying"
            store.recovered.set()
            closer.join(10)

            assert not closer.is_alive(), "close() hangs although the store works again"
        finally:
            if closer.is_alive():
                # Unstick the writer so that the thread and the store do not outlive the test.
                ledger._writer.give_up = True
                closer.join(40)
        assert 1 == verify_database(tmp_path / "recovering.db", key=signer.verifier_key).end

    def test_close_gives_up_after_its_timeout_and_says_how_much_was_lost(
        self, tmp_path: Path, signer, master, capsys
    ) -> None:
        store = RecoveringStore(tmp_path / "broken.db")
        ledger = Ledger(store, origin=ORIGIN, signer=signer, master_key=master)
        for i in range(3):
            ledger.submit(record(i))

        ledger.close(timeout=0.3)

        assert not ledger._writer.thread.is_alive()
        assert "ledger_records_lost" in capsys.readouterr().out


class RecoveringStore(SQLiteStore):
    """Fails every batch until ``recovered`` is set; notes two failed retries once ``closing`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.closing = threading.Event()
        self.recovered = threading.Event()
        self.retried_while_closing = threading.Event()
        self._closing_failures = 0

    def write_batch(self, batch: Batch) -> None:
        if not self.recovered.is_set():
            # Two failures seen after close() began: the writer keeps retrying the queued record.
            if self.closing.is_set():
                self._closing_failures += 1
                if self._closing_failures == 2:
                    self.retried_while_closing.set()
            raise sqlite3.OperationalError("disk I/O error")
        super().write_batch(batch)
