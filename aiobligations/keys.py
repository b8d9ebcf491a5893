"""Key files and ``aiobligations init``: a commented profile and development keys, all 0600.

Development keys are real keys, generated locally; in production the same files come from the
provider's key management, and the profile points at them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .disclosure import TEMPLATE as DISCLOSURE_TEMPLATE
from .errors import ConfigurationError
from .labels.settings import TEMPLATE as LABELS_TEMPLATE
from .ledger.crypto import MasterKey
from .ledger.note import Signer

__all__ = ["CONFIG_TEMPLATE", "REQUESTS_TEMPLATE", "WITNESSES_TEMPLATE", "init_project", "load_signer",
           "write_private_files"]

REQUESTS_TEMPLATE = """
[requests]
# Explanation requests and complaints (Art. 39, 32, 70). The law says "in time" (及时) and sets no
# number of days: this is your policy, counted in working days on mainland China's calendar.
deadline_days = 15
# Holiday calendars for years this release does not know (iCalendar files, see calendars/README.md
# in the source): e.g. calendar = "calendars/china-2027.ics", once the State Council's notice is out.
# Operators sign in to /ai/operator/... with bearer tokens from this environment variable, as
# "id1:token1,id2:token2" (tokens of 16 characters or more). Never put tokens in this file.
operator_tokens_env = "AIOBLIGATIONS_OPERATOR_TOKENS"

# [controls]
# Security incidents and the takeover switch (Art. 37, 52(4)): `aiobligations incident …` and
# `aiobligations takeover on|off`. While AI routes are taken over they answer 503 with Retry-After,
# or, with a fallback, the request goes to that path of your app (a human-staffed route).
# fallback = "/human"
# retry_after = 120
"""

# Doubled braces: CONFIG_TEMPLATE goes through str.format.
WITNESSES_TEMPLATE = """
# [witnesses]
# Independent witnesses that cosign the ledger's checkpoints (C2SP tlog-witness; docs/witnesses.md):
# the provider can then no longer rewrite its log unnoticed. Run one with `aiobligations witness serve`.
# quorum = 1
# servers = [{{ url = "http://127.0.0.1:7380", key = "witness.example.org/w1+…" }}]
# interval = 10
# lagging_after = 300

# [timestamps]
# RFC 3161 timestamp authorities that timestamp the checkpoints (needs aiobligations[timestamps]).
# urls = ["https://tsa.example.org/tsr"]
"""


CONFIG_TEMPLATE = """\
# aiobligations.toml: the provider's profile. Written by `aiobligations init`; edit it.
# Paths are relative to this file's folder.

[provider]
# Who provides the AI service (AI Model Law 2.0, Art. 38(3)).
name = "Example Co"
name_zh = "示例科技有限公司"
contact = "compliance@example.com"
website = "https://example.com"
# GB 45438 service provider code: 27 characters from your registration (网安秘字〔2025〕29号).
# Never invent one; leave it empty until you have it.
code = ""

[service]
name = "Example Assistant"
description = "A demonstration AI assistant."
model = "toy-1"
# Filing (备案) or licence (许可) number, shown prominently on every disclosure (Art. 31, 47).
filing_number = ""
licence_number = ""

[ledger]
# The tamper-evident evidence log (Art. 49(2), 41, 34, 36).
path = "ledger.db"
# The log's name: the first line of every signed checkpoint. Use a URL-like name you control.
origin = "{origin}"
signing_key = "keys/ledger.key"     # Ed25519 key that signs checkpoints
master_key = "keys/master.key"      # wraps the per-subject keys that seal personal data
# 0: sign a checkpoint after every batch; N: at most every N seconds.
checkpoint_interval = 0
queue_size = 65536
# When the queue is full: "raise" (fail at once, the request path's choice) or "wait".
on_full = "raise"
# Where records are sealed, hashed and committed: "process" (a writer process beside the service,
# so the serving process's core and GIL stay free for requests) or "thread" (inside the service).
writer = "process"
# Replicas on several hosts: keep the ledger in PostgreSQL instead (pip install 'aiobligations[postgres]').
# Every replica gets the same profile and keys; `path` then only names this host's spool and counters.
# url = "env:AIOBLIGATIONS_DATABASE_URL"   # or "postgresql://ledger@db.internal:5432/evidence"
# schema = "aiobligations"                 # one PostgreSQL schema per ledger
# sequencer = true                         # may this process be elected to sequence the log?
# migrate = true                           # apply schema migrations on start-up (else: aiobligations db upgrade)
# Keys may come from the environment instead of files: signing_key = "env:AIOBLIGATIONS_SIGNING_KEY".

[ledger.retention]
# Periods may be lengthened, never set below the legal floors shown.
interaction = "6m"   # Cybersecurity Law Art. 21: at least six months
log = "6m"
risk = "2y"          # Art. 41: at least two years
assessment = "5y"    # Art. 34: at least five years

""" + DISCLOSURE_TEMPLATE + LABELS_TEMPLATE + REQUESTS_TEMPLATE + WITNESSES_TEMPLATE




def write_private_files(files: dict[Path, bytes], *, force: bool = False) -> None:
    """Write several files readable by the owner only (0600): all of them or none.

    Each file is written and synced under a temporary name first; only when every one is written
    are they renamed into place, so a failure (a full disk, a read-only folder) leaves nothing
    half-written.

    Raises:
        ConfigurationError: a file exists and ``force`` is false.
        OSError: a file could not be written; nothing was left behind.
    """
    if not force:
        existing = [str(path) for path in files if path.exists()]
        if existing:
            raise ConfigurationError(f"{', '.join(existing)} already exist (use --force to overwrite)")
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            written.append((tmp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in written:
        os.replace(tmp, path)


def load_signer(path: str | os.PathLike[str], name: str) -> Signer:
    """Load the Ed25519 checkpoint signer from a PEM file, or from ``"env:NAME"``: the PEM text in
    the environment variable ``NAME`` (how a container gets it from a secret store, never baked in).

    Raises:
        ConfigurationError: the file or variable is missing, the file readable by others, or the
            key not an Ed25519 key.
    """
    if isinstance(path, str) and path.startswith("env:"):
        text = os.environ.get(path[4:])
        if not text:
            raise ConfigurationError(f"signing key: the environment variable {path[4:]} is not set")
        return _signer_from_pem(text.encode(), f"the environment variable {path[4:]}", name)
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"signing key {path} does not exist (run `aiobligations init`)") from None
    except OSError as exc:
        raise ConfigurationError(f"signing key {path} cannot be read ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigurationError(f"signing key {path} is readable by others; run: chmod 600 {path}")
    return _signer_from_pem(data, str(path), name)


def _signer_from_pem(data: bytes, where: str, name: str) -> Signer:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"signing key {where} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {where} is not an Ed25519 key")
    return Signer(name, key)


def init_project(folder: str | os.PathLike[str], *, origin: str | None = None, force: bool = False) -> Path:
    """Write ``aiobligations.toml`` and development keys into ``folder``.

    Nothing is written unless everything can be: existing files are refused up front unless
    ``force`` is true.

    Args:
        folder: Where to write; created if missing.
        origin: The ledger's origin; defaults to ``localhost/aiobligations/<folder name>``.
        force: Overwrite existing files.

    Returns:
        The path of the written configuration file.

    Raises:
        ConfigurationError: a file exists and ``force`` is false, or the folder is not writable.
    """
    folder = Path(folder)
    config = folder / "aiobligations.toml"
    keys = folder / "keys"
    if origin is None:
        name = "".join(c for c in folder.resolve().name if c.isalnum() or c in "-_.") or "ledger"
        origin = f"localhost/aiobligations/{name}"
    signing = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {
        keys / "ledger.key": signing,
        keys / "master.key": MasterKey.generate().export_text().encode(),
        config: CONFIG_TEMPLATE.format(origin=origin).encode(),
    }
    if not force:
        existing = [str(path) for path in [*files, keys / "c2pa" / "ca.pem"] if path.exists()]
        if existing:
            raise ConfigurationError(f"{', '.join(existing)} already exist (use --force to overwrite)")
    created = [p for p in (folder, keys) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        keys.mkdir(mode=0o700, exist_ok=True)
        os.chmod(keys, 0o700)
        write_private_files(files, force=True)
        from .labels.certs import generate_dev_ca

        # A local CA and a C2PA signing certificate for development (issue them properly in production).
        (keys / "c2pa").mkdir(mode=0o700, exist_ok=True)
        generate_dev_ca(keys / "c2pa", organisation="aiobligations development", force=True)
    except OSError as exc:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise ConfigurationError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    return config
