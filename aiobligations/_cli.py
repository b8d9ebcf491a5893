"""What the command groups share: one-line failures, and the configured hub opened beside a running service."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from .errors import LedgerError, ObligationError

if TYPE_CHECKING:
    from .obligations import Obligations

DEFAULT_CONFIG = "aiobligations.toml"


def fail(message: str, status: int = 2) -> NoReturn:
    """Say what went wrong as one line on standard error (``aiobligations: …``) and exit ``status``."""
    click.echo(f"aiobligations: {message}", err=True)
    sys.exit(status)


@contextlib.contextmanager
def open_hub(config: Path | None) -> Iterator[Obligations]:
    """The hub of the profile the CLI finds (``find_config``); its ledger is flushed and closed afterwards.

    It joins a running service's ledger as another worker would, so ``requests``, ``incident``,
    ``takeover`` and ``terminate`` work while the service runs. Any :class:`ObligationError` that
    escapes the block is one line and exit 2.
    """
    from .cli import find_config  # The one rule every command finds its profile by.
    from .obligations import Obligations

    try:
        hub = Obligations.from_file(find_config(config) or Path(DEFAULT_CONFIG))
    except LedgerError as exc:
        fail(f"cannot open the ledger: {exc}")
    except ObligationError as exc:
        fail(str(exc))
    try:
        yield hub
    except ObligationError as exc:
        fail(str(exc))
    finally:
        try:
            hub.close()
        except ObligationError as exc:
            fail(f"closing the ledger failed: {exc}")
