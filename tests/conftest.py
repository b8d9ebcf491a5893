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


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""The local PostgreSQL every machine here runs (trust auth); tests use a fresh schema each."""


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test database; without it, a local run skips and a CI run (``CI=true``) fails."""
    import os

    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means no database here.
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL}: {exc}")
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema name for one test; dropped (with its tables) afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def make_replica(pg_url: str, pg_schema: str, signer: Signer, master: MasterKey) -> Iterator[Callable[..., Ledger]]:
    """Open replica ledgers on the test schema (each as another process would); closed at teardown."""
    from aiobligations.ledger.replica import ReplicaLedger

    opened: list[Ledger] = []

    def make(**kwargs: Any) -> Ledger:
        kwargs.setdefault("origin", ORIGIN)
        kwargs.setdefault("signer", signer)
        kwargs.setdefault("master_key", master)
        kwargs.setdefault("schema", pg_schema)
        ledger = ReplicaLedger(kwargs.pop("url", pg_url), **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()
