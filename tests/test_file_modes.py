"""The ledger's files are readable by their owner only, like the keys (issue 12): the database
holds pseudonyms, times and record kinds, the spool sealed records."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aiobligations import Obligations
from aiobligations.keys import init_project
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore

ORIGIN = "modes.example/ledger"


def _modes(folder: Path) -> dict[str, int]:
    found = {}
    for path in folder.iterdir():
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            found[path.name] = stat.S_IMODE(info.st_mode)
    return found


def test_a_thread_ledger_creates_private_files(tmp_path: Path) -> None:
    """Database, WAL, shared memory and lock file: 0600, whatever the umask allows."""
    old = os.umask(0o022)
    try:
        ledger = Ledger(SQLiteStore(tmp_path / "ledger.db"), origin=ORIGIN, signer=Signer.generate(ORIGIN),
                        master_key=MasterKey.generate())
        ledger.append({"kind": "x"})
        modes = _modes(tmp_path)
        ledger.close()
    finally:
        os.umask(old)
    assert {"ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db.lock"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    """A database made readable by others (an old version, a copy) is made 0600 when opened for writing."""
    path = tmp_path / "ledger.db"
    signer, master = Signer.generate(ORIGIN), MasterKey.generate()
    Ledger(SQLiteStore(path), origin=ORIGIN, signer=signer, master_key=master).close()
    path.chmod(0o644)
    Ledger(SQLiteStore(path), origin=ORIGIN, signer=signer, master_key=master).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_service_keeps_every_file_beside_the_ledger_private(tmp_path: Path) -> None:
    """The default profile (a writer process), the spool and the shared counters: every file 0600."""
    config = init_project(tmp_path / "site")
    old = os.umask(0o022)
    try:
        with Obligations.from_file(config) as obligations:
            assert obligations.ledger.writer_pid is not None  # The default: a writer process.
            obligations.spool.put({"kind": "spooled"}, reason="test")  # The spool's file exists now.
            obligations.submit({"kind": "x"})
            obligations.ledger.flush()
            from aiobligations.sharedstate import FirstContacts, shared_state_of

            path, secret = shared_state_of(obligations)
            FirstContacts(path, secret).close()
            modes = _modes(config.parent)
    finally:
        os.umask(old)
    ledger_files = {name: mode for name, mode in modes.items() if name.startswith("ledger.db")}
    assert {"ledger.db", "ledger.db.shared"} <= set(ledger_files)
    assert {name: oct(mode) for name, mode in ledger_files.items() if mode != 0o600} == {}
