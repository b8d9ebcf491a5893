"""The provider's profile: who provides the service, what it is, and how its evidence is kept.

The profile lives in ``aiobligations.toml`` (``aiobligations init`` writes a commented one). Loading
validates everything at once and names each missing or wrong field, so a provider fixes the file in
one pass rather than one error at a time. Relative paths are resolved against the file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .errors import ConfigurationError
from .ledger.retention import Retention

__all__ = ["PROVIDER_CODE", "LedgerSettings", "Profile", "ProviderInfo", "ServiceInfo", "load_profile", "parse_profile"]

PROVIDER_CODE = re.compile(r"^[0-9A-Z]{27}$")
"""GB 45438 service provider code: 27 digits or upper-case letters (网安秘字〔2025〕29号)."""

log = structlog.get_logger("aiobligations.profile")

# Every top-level table a feature reads; each must be a table when present. Another name is
# most likely a typo (``[ledgr]``) and is warned about, not refused: an older release must still
# start on a newer profile.
_SECTIONS = ("provider", "service", "ledger", "transparency", "security", "disclosure", "labels",
             "requests", "server", "otlp", "controls", "witnesses", "timestamps", "report", "filing")
_KEYS = {
    "provider": ("name", "contact", "name_zh", "code", "website", "filing_number", "licence_number"),
    "service": ("name", "description", "model", "filing_number", "licence_number"),
    "ledger": ("path", "origin", "signing_key", "master_key", "checkpoint_interval", "queue_size",
               "on_full", "max_batch", "retention", "writer", "url", "schema", "sequencer", "migrate"),
}
# A checkpoint's first line: printable, no white space and no '+' (the verifier key's separator).
_ORIGIN = re.compile(r"[^\s+\x00-\x1f\x7f-\x9f\u2028\u2029]{1,255}")


@dataclass(frozen=True)
class ProviderInfo:
    """Who provides the AI service (Art. 38(3), 31, 47)."""

    name: str
    contact: str
    name_zh: str = ""
    code: str = ""
    """The 27-character GB 45438 provider code, from the provider's registration; never generated."""
    website: str = ""


@dataclass(frozen=True)
class ServiceInfo:
    """What the AI service is (Art. 38(3))."""

    name: str
    description: str = ""
    model: str = ""
    filing_number: str = ""
    licence_number: str = ""


@dataclass(frozen=True)
class LedgerSettings:
    """How the ledger is kept. Paths are absolute once loaded."""

    path: Path
    origin: str
    signing_key: Path | str
    """The signing key's PEM file, or ``"env:NAME"``: the PEM text in that environment variable."""
    master_key: Path | str
    """The master key file, or ``"env:NAME"``: the key file's line in that environment variable."""
    checkpoint_interval: float = 0.0
    queue_size: int = 65536
    on_full: str = "raise"
    max_batch: int = 4096
    retention: Retention = field(default_factory=Retention)
    writer: str = "process"
    """``"process"``: seal and commit in a writer process; ``"thread"``: in this process."""
    url: str | None = None
    """A PostgreSQL URL (``postgresql://…``): the ledger is shared by every replica through it, and
    ``path`` only names where this host keeps its spool and shared counters."""
    schema: str = "aiobligations"
    """The PostgreSQL schema of the ledger's tables (with ``url``)."""
    sequencer: bool = True
    """With ``url``: whether this process may be elected to sequence the log."""
    migrate: bool = True
    """With ``url``: apply pending schema migrations on start-up (else ``aiobligations db upgrade``)."""


@dataclass(frozen=True)
class Profile:
    """The whole profile, as loaded from ``aiobligations.toml``.

    Attributes:
        provider: Who provides the service.
        service: What the service is.
        ledger: How evidence is kept.
        path: The file it was loaded from, if any.
        raw: The parsed TOML, for sections later features read.

    .. versionadded:: 0.1.0
    """

    provider: ProviderInfo
    service: ServiceInfo
    ledger: LedgerSettings
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Profile:
        """Load and validate a profile file. See :func:`load_profile`."""
        return load_profile(path)


class _Errors:
    """Collects every problem in a file so that one message lists them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigurationError(f"{self.source}: " + "; ".join(self.items))


def _text(section: Mapping[str, Any], name: str, key: str, errors: _Errors, *, required: bool) -> str:
    value = section.get(key)
    if value is None or value == "":
        if required:
            errors.add(f"[{name}] {key} is missing")
        return ""
    if not isinstance(value, str):
        errors.add(f"[{name}] {key} must be a string, got {type(value).__name__}")
        return ""
    return value.strip()


def _section(data: Mapping[str, Any], name: str, errors: _Errors) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        errors.add(f"the [{name}] section is missing")
        return {}
    if not isinstance(value, Mapping):
        errors.add(f"[{name}] must be a table")
        return {}
    return value


def _number(section: Mapping[str, Any], key: str, default: float, errors: _Errors, *, integer: bool) -> Any:
    value = section.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0 or (integer and value == 0):
        want = "a positive integer" if integer else "a number >= 0"
        errors.add(f"[ledger] {key} must be {want}, got {value!r}")
        return default
    return value


def _check_layout(data: Mapping[str, Any], source: str, errors: _Errors) -> None:
    """Known sections must be tables; unknown sections and keys are warned about (likely typos)."""
    unknown = []
    for name, value in data.items():
        if name not in _SECTIONS:
            unknown.append(name)
        elif not isinstance(value, Mapping):
            errors.add(f"[{name}] must be a table, got {type(value).__name__} {value!r}"[:200])
        else:
            unknown.extend(f"{name}.{key}" for key in value if name in _KEYS and key not in _KEYS[name])
    if unknown:
        log.warning("profile.unknown_keys", source=source, keys=sorted(unknown),
                    hint="not read by this release: a typo, or a setting of a newer one")


def parse_profile(data: Mapping[str, Any], *, base: Path, source: str = "profile") -> Profile:
    """Build a :class:`Profile` from parsed TOML, resolving paths against ``base``.

    Raises:
        ConfigurationError: one message listing every problem found.
    """
    errors = _Errors(source)
    _check_layout(data, source, errors)
    p = _section(data, "provider", errors)
    provider = ProviderInfo(
        name=_text(p, "provider", "name", errors, required=True),
        contact=_text(p, "provider", "contact", errors, required=True),
        name_zh=_text(p, "provider", "name_zh", errors, required=False),
        code=_text(p, "provider", "code", errors, required=False),
        website=_text(p, "provider", "website", errors, required=False),
    )
    if provider.code and not PROVIDER_CODE.match(provider.code):
        errors.add(
            f"[provider] code must be the 27-character GB 45438 provider code (digits and "
            f"upper-case letters), got {provider.code!r}"
        )
    s = _section(data, "service", errors)
    numbers = {}
    for key in ("filing_number", "licence_number"):
        # The numbers may sit under [provider] (they are the provider's registration) or [service]:
        # one value, in either table; two different values are refused.
        in_service = _text(s, "service", key, errors, required=False)
        in_provider = _text(p, "provider", key, errors, required=False)
        if in_service and in_provider and in_service != in_provider:
            errors.add(f"[provider] {key} and [service] {key} differ; set it in one table")
        numbers[key] = in_service or in_provider
    service = ServiceInfo(
        name=_text(s, "service", "name", errors, required=True),
        description=_text(s, "service", "description", errors, required=False),
        model=_text(s, "service", "model", errors, required=False),
        **numbers,
    )
    lg = _section(data, "ledger", errors)

    def resolve(key: str, default: str, *, env: bool = False) -> Any:
        value = lg.get(key, default)
        if not isinstance(value, str) or not value:
            errors.add(f"[ledger] {key} must be a path")
            value = default
        if env and value.startswith("env:"):
            if not value[4:].isidentifier():
                errors.add(f"[ledger] {key} = 'env:NAME' needs a variable name, got {value!r}")
            return value  # The key is read from that environment variable when the ledger opens.
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else base / path

    origin = _text(lg, "ledger", "origin", errors, required=True)
    if origin and not _ORIGIN.fullmatch(origin):
        errors.add(f"[ledger] origin must be at most 255 printable characters with no white space or '+', "
                   f"got {origin!r}")
    on_full = lg.get("on_full", "raise")
    if on_full not in ("raise", "wait"):
        errors.add(f"[ledger] on_full must be 'raise' or 'wait', got {on_full!r}")
    writer = lg.get("writer", "process")
    if writer not in ("process", "thread"):
        errors.add(f"[ledger] writer must be 'process' or 'thread', got {writer!r}")
    url = lg.get("url")
    if isinstance(url, str) and url.startswith("env:"):
        url = os.environ.get(url[4:])
        if not url:
            errors.add(f"[ledger] url names the environment variable {lg['url'][4:]}, which is not set")
    if url is not None and not (isinstance(url, str) and url.startswith(("postgresql://", "postgres://"))):
        errors.add("[ledger] url must be a PostgreSQL URL, postgresql://user@host:port/database (or env:NAME)")
        url = None
    schema = lg.get("schema", "aiobligations")
    if not isinstance(schema, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", schema):
        errors.add(f"[ledger] schema must be a lower-case identifier of at most 40 characters, got {schema!r}")
        schema = "aiobligations"
    flags = {}
    for flag in ("sequencer", "migrate"):
        value = lg.get(flag, True)
        if not isinstance(value, bool):
            errors.add(f"[ledger] {flag} must be true or false, got {value!r}")
            value = True
        flags[flag] = value
    retention_table = lg.get("retention", {})
    retention = Retention()
    if not isinstance(retention_table, Mapping):
        errors.add("[ledger.retention] must be a table")
    else:
        try:
            retention = Retention(retention_table)
        except ConfigurationError as exc:
            errors.add(f"[ledger.retention] {exc}")
    ledger = LedgerSettings(
        path=resolve("path", "ledger.db"),
        origin=origin,
        signing_key=resolve("signing_key", "keys/ledger.key", env=True),
        master_key=resolve("master_key", "keys/master.key", env=True),
        checkpoint_interval=float(_number(lg, "checkpoint_interval", 0.0, errors, integer=False)),
        queue_size=_number(lg, "queue_size", 65536, errors, integer=True),
        on_full=on_full if on_full in ("raise", "wait") else "raise",
        max_batch=_number(lg, "max_batch", 4096, errors, integer=True),
        retention=retention,
        writer=writer if writer in ("process", "thread") else "process",
        url=url,
        schema=schema,
        sequencer=flags["sequencer"],
        migrate=flags["migrate"],
    )
    errors.raise_if_any()
    return Profile(provider=provider, service=service, ledger=ledger, raw=data)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate ``aiobligations.toml``.

    Args:
        path: The file.

    Returns:
        The profile, with paths resolved against the file's folder.

    Raises:
        ConfigurationError: the file is missing, not TOML, or has missing or invalid fields; one
            message names every problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(
            f"{path}: no such file (run `aiobligations init` to create one)"
        ) from None
    except IsADirectoryError:
        raise ConfigurationError(f"{path}: is a folder, not a configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not UTF-8 text, so not a configuration file") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror})") from None
    profile = parse_profile(data, base=path.resolve().parent, source=str(path))
    return Profile(
        provider=profile.provider, service=profile.service, ledger=profile.ledger, path=path, raw=data
    )
