"""``Obligations``: the hub that wires the provider's profile to the ledger and, later, the rest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .keys import load_signer
from .ledger.crypto import MasterKey
from .ledger.ledger import Ledger
from .ledger.store import SQLiteStore
from .profile import Profile, load_profile

__all__ = ["Obligations"]


class Obligations:
    """A provider's obligations, as code: its profile and its evidence ledger.

    Use it as a context manager so that leaving flushes and closes the ledger:

    Example:
        >>> with Obligations.from_file("aiobligations.toml") as obligations:  # doctest: +SKIP
        ...     obligations.ledger.append({"kind": "risk", "summary": "prompt injection seen"})

    Args:
        profile: The provider's validated profile.
        ledger: A ledger to use instead of the one the profile describes (tests, custom stores).

    .. versionadded:: 0.1.0
    """

    def __init__(self, profile: Profile, *, ledger: Ledger | None = None) -> None:
        self.profile = profile
        self.ledger = ledger if ledger is not None else self._open_ledger(profile)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] = "aiobligations.toml", **kwargs: Any) -> Obligations:
        """Load ``aiobligations.toml`` and open the ledger it names.

        Raises:
            ConfigurationError: the file or a key is missing or invalid; the message says which.
        """
        return cls(load_profile(path), **kwargs)

    @staticmethod
    def _open_ledger(profile: Profile) -> Ledger:
        settings = profile.ledger
        signer = load_signer(settings.signing_key, settings.origin)
        master = MasterKey.load(settings.master_key)
        folder = Path(settings.path).parent
        if not folder.is_dir():
            raise ConfigurationError(f"the ledger's folder {folder} does not exist")
        return Ledger(
            SQLiteStore(settings.path),
            origin=settings.origin,
            signer=signer,
            master_key=master,
            queue_size=settings.queue_size,
            on_full=settings.on_full,
            max_batch=settings.max_batch,
            checkpoint_interval=settings.checkpoint_interval,
            retention=settings.retention,
        )

    def close(self) -> None:
        """Flush and close the ledger. Idempotent."""
        self.ledger.close()

    def __enter__(self) -> Obligations:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Obligations(provider={self.profile.provider.name!r}, ledger={self.ledger!r})"
