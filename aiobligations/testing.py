"""Helpers for your own test suite: a throwaway hub, and what your code put into its ledger.

Like ``structlog.testing`` or ``httpx.MockTransport``: test the obligations of *your* service
without writing keys, profiles and ledgers by hand. :func:`hub` makes a complete hub in a temporary
folder (real keys, a real SQLite ledger written by a thread of the test process, no writer
process), and the :class:`TestHub` it yields reads back every record and every disclosure the
code under test produced.

Example:
    >>> from aiobligations.testing import hub
    >>> with hub(service={"model": "my-model"}) as test_hub:
    ...     test_hub.obligations.submit({"kind": "risk", "summary": "a test"})
    ...     [record["kind"] for record in test_hub.records()]
    ['risk']

With pytest, a fixture is three lines::

    @pytest.fixture
    def obligations_hub():
        with aiobligations.testing.hub() as test_hub:
            yield test_hub

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .keys import init_project
from .obligations import Obligations
from .profile import parse_profile

if TYPE_CHECKING:  # pragma: no cover
    from .ledger.verify import VerifyReport

__all__ = ["Disclosure", "TestHub", "hub"]


@dataclass(frozen=True)
class Disclosure:
    """How one interaction was disclosed, as its ``interaction`` record says.

    Attributes:
        interaction_id: The interaction's id (the ``AI-Interaction-Id`` header).
        status: The HTTP status of the response (``None`` for a decorated function's call).
        header: Whether the ``AI-Disclosure`` header was sent.
        body_notice: Where the notice went in the body (``"none"`` when nowhere), as recorded.
        first_contact: Whether the person's first-contact notice was shown.
        record: The whole record.
    """

    interaction_id: str
    status: int | None
    header: bool
    body_notice: str
    first_contact: bool
    record: dict[str, Any]


class TestHub:
    """A hub made by :func:`hub`, and readers of what the code under test recorded.

    Attributes:
        obligations: The :class:`~aiobligations.Obligations` to hand to your app or middleware.
        folder: The temporary folder holding the profile, keys and ledger (removed afterwards).
    """

    __test__ = False  # Not a test class, whatever pytest's collection thinks of the name.

    def __init__(self, obligations: Obligations, folder: Path) -> None:
        self.obligations = obligations
        self.folder = folder

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every record stored so far (after a flush), oldest first, personal data opened.

        Args:
            kind: Only records of this kind (``"interaction"``, ``"label"``, ``"log"``…).
        """
        ledger = self.obligations.ledger
        size = ledger.flush(timeout=30)
        found: list[dict[str, Any]] = []
        for index in range(ledger.first_index, size):
            record = ledger.read(index)
            if kind is None or record.get("kind") == kind:
                found.append(record)
        return found

    def interactions(self) -> list[dict[str, Any]]:
        """The ``interaction`` records: one per AI response or decorated call."""
        return self.records("interaction")

    def disclosures(self) -> list[Disclosure]:
        """How each interaction was disclosed, oldest first."""
        found: list[Disclosure] = []
        for record in self.interactions():
            disclosure = record.get("disclosure")
            if not isinstance(disclosure, dict):
                disclosure = {}
            found.append(Disclosure(
                interaction_id=str(record.get("interaction_id", "")),
                status=record.get("status"),
                header=bool(disclosure.get("header", False)),
                body_notice=str(disclosure.get("body", "none")),
                first_contact=disclosure.get("notice") == "first-contact",
                record=record,
            ))
        return found

    def verify(self) -> VerifyReport:
        """Sign a checkpoint and verify the whole ledger as an auditor would; return the report.

        Raises:
            LedgerBroken: the ledger does not verify.
        """
        from .ledger.verify import verify_database

        ledger = self.obligations.ledger
        ledger.sign_checkpoint()
        return verify_database(self.obligations.profile.ledger.path, key=ledger.signer.verifier_key)

    def __repr__(self) -> str:
        return f"TestHub({self.folder})"


@contextlib.contextmanager
def hub(**sections: Mapping[str, Any]) -> Iterator[TestHub]:
    """A complete, throwaway hub for one test; everything is removed when the block ends.

    Args:
        **sections: Profile tables to merge over the defaults ``aiobligations init`` writes, e.g.
            ``disclosure={"language": "en"}`` or ``labels={"explicit": True}``. The ledger is
            always written by a thread of this process (``[ledger] writer = "thread"``).

    Yields:
        A :class:`TestHub`.

    Raises:
        ConfigurationError: a merged table is invalid (the message says which key).
    """
    folder = Path(tempfile.mkdtemp(prefix="aiobligations-test-"))
    obligations = None
    try:
        config = init_project(folder / "project")
        with open(config, "rb") as handle:
            data = tomllib.load(handle)
        for name, table in sections.items():
            if not isinstance(table, Mapping):
                raise ConfigurationError(f"hub({name}=…) must be a table (a dict), got {type(table).__name__}")
            data[name] = {**data.get(name, {}), **table}
        data["ledger"] = {**data.get("ledger", {}), "writer": "thread"}
        profile = dataclasses.replace(
            parse_profile(data, base=config.parent, source="aiobligations.testing.hub()"), path=config, raw=data)
        obligations = Obligations(profile)
        yield TestHub(obligations, config.parent)
    finally:
        if obligations is not None:
            obligations.close()
        shutil.rmtree(folder, ignore_errors=True)
