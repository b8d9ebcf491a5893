"""RFC 3161 trusted timestamps on checkpoints: another anchor beside witnesses.

A timestamp authority (TSA) signs the SHA-256 of a checkpoint's note text (origin, size, root and
any extension lines, without signature lines) with its time. The response is kept beside the
checkpoint, shipped in bundles (``timestamps.json``) and checked by ``aiobligations verify
--tsa-root``: the log had at least this content at that time, by the word of a party the provider
does not control. Requests and verification use ``rfc3161-client`` (``pip install
'aiobligations[timestamps]'``).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from ..errors import ConfigurationError, ObligationError
from ..ledger.reader import checkpoint_of
from ._rounds import Rounds, check_seconds

__all__ = [
    "TimestampClient",
    "TimestampError",
    "TimestampSettings",
    "checkpoint_text",
    "request_timestamp",
    "verify_timestamp",
]

log = structlog.get_logger("aiobligations.witness")

_MAX_RESPONSE = 1 << 16


class TimestampError(ObligationError, ValueError):
    """A timestamp could not be obtained, or does not verify for this checkpoint.

    .. versionadded:: 0.2.0
    """


def _rfc3161() -> Any:
    try:
        import rfc3161_client
    except ImportError:
        raise TimestampError("RFC 3161 timestamps need rfc3161-client: pip install 'aiobligations[timestamps]'") from None
    return rfc3161_client


def checkpoint_text(note: str) -> bytes:
    """
    The bytes a checkpoint's timestamp covers: its note text, without signature lines.

    Args:
        note: A signed checkpoint note (cosignature lines may follow).

    Returns:
        The note text in UTF-8, ending in a newline.

    Raises:
        TimestampError: If the note has no checkpoint text.

    .. versionadded:: 0.2.0
    """
    text, sep, _ = note.partition("\n\n")
    if not sep:
        raise TimestampError("a signed note needs a blank line before its signatures")
    return (text + "\n").encode("utf-8")


def request_timestamp(url: str, note: str, *, timeout: float = 10.0) -> bytes:
    """
    Ask a timestamp authority to timestamp a checkpoint.

    Args:
        url: The TSA's URL (HTTP POST of ``application/timestamp-query``).
        note: The signed checkpoint note.
        timeout: Seconds to wait for the answer.

    Returns:
        The DER ``TimeStampResp``, checked to be granted, for this checkpoint's text and this
        request's nonce (its signature is checked by :func:`verify_timestamp`).

    Raises:
        TimestampError: If the TSA cannot be reached, refuses, or answers for something else.

    .. versionadded:: 0.2.0
    """
    rfc = _rfc3161()
    message = checkpoint_text(note)
    query = rfc.TimestampRequestBuilder().data(message).nonce(nonce=True).cert_request(cert_request=True).build()
    nonce = query.nonce
    request = urllib.request.Request(url, data=query.as_bytes(), method="POST",
                                     headers={"Content-Type": "application/timestamp-query"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - an operator's URL.
            body: bytes = response.read(_MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        raise TimestampError(f"the timestamp authority {url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise TimestampError(f"the timestamp authority {url} cannot be reached ({exc})") from None
    if len(body) > _MAX_RESPONSE:
        raise TimestampError(f"the timestamp authority {url} answered more than {_MAX_RESPONSE} bytes")
    try:
        decoded = rfc.decode_timestamp_response(body)
    except Exception as exc:  # The decoder raises its own types for malformed DER.
        raise TimestampError(f"the timestamp authority {url} answered something else ({exc})") from None
    if decoded.status != rfc.PKIStatus.GRANTED and decoded.status != rfc.PKIStatus.GRANTED_WITH_MODS:
        raise TimestampError(f"the timestamp authority {url} refused (status {decoded.status})")
    info = decoded.tst_info
    if info.nonce != nonce or bytes(info.message_imprint.message) != bytes(query.message_imprint.message):
        raise TimestampError(f"the timestamp authority {url} answered for another request")
    return body


def verify_timestamp(response: bytes, note: str, roots: Sequence[Any], *,
                     intermediates: Sequence[Any] = ()) -> datetime:
    """
    Verify a TSA's response for a checkpoint and return the time it asserts.

    Args:
        response: The DER ``TimeStampResp`` (as :func:`request_timestamp` returns it).
        note: The signed checkpoint note it should cover.
        roots: The TSA root certificates to trust (``cryptography.x509.Certificate``).
        intermediates: Further certificates of the TSA's chain, if the response lacks them.

    Returns:
        The ``genTime`` of the timestamp.

    Raises:
        TimestampError: If the response is malformed, not for this checkpoint, or its signature or
            certificate chain does not verify against ``roots``.

    .. versionadded:: 0.2.0
    """
    rfc = _rfc3161()
    if not roots:
        raise TimestampError("no TSA root certificate to verify the timestamp with")
    try:
        decoded = rfc.decode_timestamp_response(bytes(response))
        builder = rfc.VerifierBuilder(roots=list(roots), intermediates=list(intermediates))
        builder.build().verify_message(decoded, checkpoint_text(note))
    except TimestampError:
        raise
    except Exception as exc:  # VerificationError, or a decoder error for malformed DER.
        raise TimestampError(f"the timestamp does not verify for this checkpoint ({exc})") from None
    gen_time: datetime = decoded.tst_info.gen_time
    return gen_time


@dataclass(frozen=True)
class TimestampSettings:
    """The profile's ``[timestamps]``: the TSAs that timestamp the ledger's checkpoints.

    Attributes:
        urls: The TSAs' URLs.
        interval: Seconds between rounds (at most one checkpoint timestamped per round and TSA).
        timeout: Seconds to wait for one TSA.
        max_backoff: The longest wait before retrying a TSA that failed.

    .. versionadded:: 0.2.0
    """

    urls: tuple[str, ...]
    interval: float = 60.0
    timeout: float = 10.0
    max_backoff: float = 600.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigurationError("[timestamps] urls must list at least one timestamp authority")
        for url in self.urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigurationError(f"[timestamps] urls must be http(s):// URLs, got {url!r}")
        check_seconds("timestamps", self, ("interval", "timeout", "max_backoff"))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TimestampSettings:
        """
        Read the profile's ``[timestamps]`` table (or :meth:`as_dict`'s output).

        Args:
            raw: ``{"urls": [...], "interval": …, "timeout": …, "max_backoff": …}``.

        Returns:
            The settings.

        Raises:
            ConfigurationError: If a value is missing or invalid.
        """
        if not isinstance(raw, Mapping) or not isinstance(raw.get("urls"), list):
            raise ConfigurationError('[timestamps] needs urls = ["https://tsa.example/…"]')
        options = {name: raw[name] for name in ("interval", "timeout", "max_backoff") if name in raw}
        return cls(tuple(raw["urls"]), **options)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a writer process's configuration."""
        return {"urls": list(self.urls), "interval": self.interval, "timeout": self.timeout,
                "max_backoff": self.max_backoff}


class TimestampClient(Rounds):
    """The background thread that has the ledger's latest checkpoint timestamped by each TSA.

    Args:
        store: The ledger's store (read for the latest checkpoint, written for the responses).
        settings: The TSAs and intervals.
        request: How a timestamp is asked for (default :func:`request_timestamp`).

    .. versionadded:: 0.2.0
    """

    NAME = "timestamp"

    def __init__(self, store: Any, settings: TimestampSettings, *,
                 request: Callable[..., bytes] = request_timestamp) -> None:
        self.store = store
        self.settings = settings
        self.request = request
        self._failures = dict.fromkeys(settings.urls, 0)
        self._next_try = dict.fromkeys(settings.urls, 0.0)
        self._start_rounds(settings.interval)

    def round(self) -> int:
        """
        Timestamp the latest checkpoint with every TSA that has not (and is not backing off).

        Returns:
            How many TSAs have timestamped the latest checkpoint after this round.
        """
        _, note = self.store.tree_head()
        if note is None:
            return 0
        size = checkpoint_of(note).size
        done = {tsa for _, tsa, kept, _ in self.store.timestamps(size) if kept == note}
        now = time.monotonic()
        for url in self.settings.urls:
            if url in done or self._next_try[url] > now or self._stop.is_set():
                continue
            try:
                response = self.request(url, note, timeout=self.settings.timeout)
            except TimestampError as exc:
                self._failures[url] += 1
                delay = min(self.settings.max_backoff,
                            self.settings.interval * 2 ** min(self._failures[url] - 1, 16))
                self._next_try[url] = time.monotonic() + delay
                log.warning("timestamp.failed", tsa=url, error=str(exc), retry_in=round(delay, 3))
                continue
            self.store.add_timestamp(size, url, note, response)
            self._failures[url] = 0
            self._next_try[url] = 0.0
            done.add(url)
        return len(done)
