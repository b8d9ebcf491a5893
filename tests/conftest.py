"""Fixtures for every test: keys, ledgers in temporary folders, and the test vectors (tests/vectors)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore

ORIGIN = "test.example/aiobligations/ledger"


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def make_ledger(tmp_path: Path, signer: Signer, master: MasterKey) -> Iterator[Callable[..., Ledger]]:
    """Open ledgers on ``tmp_path/ledger.db`` (or a given store); all are closed at teardown."""
    opened: list[Ledger] = []

    def make(store: Any = None, **kwargs: Any) -> Ledger:
        kwargs.setdefault("origin", ORIGIN)
        kwargs.setdefault("signer", signer)
        kwargs.setdefault("master_key", master)
        ledger = Ledger(store if store is not None else SQLiteStore(tmp_path / "ledger.db"), **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture(scope="session")
def vectors() -> Path:
    path = Path(__file__).resolve().parent / "vectors"
    if not path.is_dir():
        pytest.fail(f"the test vectors are missing: looked for {path}")
    return path
