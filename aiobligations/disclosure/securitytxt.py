"""``/.well-known/security.txt`` (RFC 9116): where to report a vulnerability (Art. 35)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .settings import DisclosureSettings

__all__ = ["DEFAULT_EXPIRY", "security_txt"]

DEFAULT_EXPIRY = timedelta(days=180)
"""How far ahead ``Expires`` lies when ``[security] expires`` is not set (RFC 9116 advises < 1 year)."""


def security_txt(settings: DisclosureSettings, *, now: datetime) -> str:
    """Render the RFC 9116 file.

    Fields come in the RFC's order of importance: ``Contact`` (one line per URI, most preferred
    first), ``Expires`` (RFC 3339 UTC ending in ``Z``: the configured time, or ``now`` plus
    :data:`DEFAULT_EXPIRY`), ``Encryption``, ``Acknowledgments``, ``Preferred-Languages``,
    ``Canonical`` and ``Policy``. Lines end with LF, as the RFC allows, and the file ends with one.

    Args:
        settings: The disclosure settings (their ``security`` part).
        now: The current time (a naive value is taken as UTC).

    Returns:
        The file's text, to send as ``text/plain; charset=utf-8``.
    """
    security = settings.security
    now = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    expires = security.expires or now + DEFAULT_EXPIRY
    lines = [f"Contact: {uri}" for uri in security.contact]
    lines.append(f"Expires: {expires.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
    lines += [f"Encryption: {uri}" for uri in security.encryption]
    lines += [f"Acknowledgments: {uri}" for uri in security.acknowledgments]
    if security.preferred_languages:
        lines.append(f"Preferred-Languages: {security.preferred_languages}")
    lines += [f"Canonical: {uri}" for uri in security.canonical]
    lines += [f"Policy: {uri}" for uri in security.policy]
    return "\n".join(lines) + "\n"
