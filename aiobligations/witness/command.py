"""The ``aiobligations witness`` commands, and the checks behind ``--witness``/``--quorum``/``--tsa-root``.

``aiobligations witness init DIR`` makes a witness key; ``aiobligations witness serve`` runs the
witness (c2sp.org/tlog-witness) with uvicorn. :func:`witness_commands` returns the command group;
``verify`` and ``verify-receipt`` (in :mod:`aiobligations.cli`) read their witness options with
:func:`checks_from_options` and check the verified checkpoint with :func:`report_checks`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .._cli import fail
from ..ledger.note import Verifier
from .cosignature import (
    Cosignature,
    CosignatureError,
    WitnessSigner,
    WitnessVerifier,
    check_quorum,
)

__all__ = ["Checks", "checks_from_options", "report_checks", "witness_commands"]


_fail = fail


@click.group("witness")
def witness_group() -> None:
    """Run a transparency-log witness (C2SP tlog-witness) that cosigns a ledger's checkpoints.

    A witness checks that each checkpoint a log shows it extends the last one it cosigned, and
    cosigns it; a provider can then no longer rewrite its log, or show auditors different logs,
    without the witness noticing.
    """


@witness_group.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None,
              help="The witness's key name, a schema-less URL (default: <hostname>/witness).")
def init_command(folder: Path, name: str | None) -> None:
    """Make a witness key in FOLDER/witness.key (readable by its owner only).

    Prints the witness's verifier key as the last line: give it to the logs that will ask this
    witness, and to the auditors who will check its cosignatures.
    """
    name = name or f"{socket.gethostname() or 'localhost'}/witness"
    try:
        signer = WitnessSigner.generate(name)
    except CosignatureError as exc:
        _fail(str(exc))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        signer.save(folder / "witness.key")
    except FileExistsError:
        _fail(f"{folder / 'witness.key'} already exists; a witness keeps its key")
    except OSError as exc:
        _fail(f"{folder / 'witness.key'}: cannot be written ({exc.strerror})")
    click.echo(f"wrote {folder / 'witness.key'} (keep it secret); the witness's verifier key:")
    click.echo(signer.verifier_key)


@witness_group.command("serve")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The witness key file (from `aiobligations witness init`).")
@click.option("--port", default=7380, show_default=True, type=click.IntRange(0, 65535), help="The port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to serve on.")
@click.option("--log", "logs", multiple=True, required=True,
              help="A log's verifier key (name+id+key, as its /.well-known/ai-transparency publishes); "
                   "repeat for more logs. Its origin is the key's name, or give ORIGIN=VKEY.")
@click.option("--state", "state_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="The witness's SQLite state (default: witness.db beside the key).")
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Requests per second allowed per client address.")
def serve_command(key_path: Path, port: int, host: str, logs: tuple[str, ...], state_path: Path | None,
                  rate: float) -> None:
    """Serve POST /add-checkpoint (and GET /<origin hash>/checkpoint) until stopped."""
    from .server import WitnessApp, WitnessState

    try:
        signer = WitnessSigner.load(key_path)
    except CosignatureError as exc:
        _fail(str(exc))
    verifiers: list[tuple[str, Verifier]] = []
    for text in logs:
        verifiers.append(_log_key(text.strip()))
    try:
        import uvicorn
    except ImportError:
        _fail("serving needs uvicorn: pip install 'aiobligations[server]'")
    try:
        state = WitnessState(state_path or key_path.with_name("witness.db"))
    except OSError as exc:
        _fail(f"the witness state cannot be opened ({exc})")
    app = WitnessApp(signer, verifiers, state, rate=rate, burst=max(2 * rate, 10.0))
    click.echo(f"witness {signer.verifier_key} for {', '.join(origin for origin, _ in verifiers)} "
               f"on http://{host}:{port}", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
    finally:
        state.close()


def _log_key(text: str) -> tuple[str, Verifier]:
    """``VKEY`` (the origin is the key's name) or ``ORIGIN=VKEY``; exit 2 when it is neither."""
    try:
        verifier = Verifier.from_key(text)
        return verifier.name, verifier
    except ValueError as exc:
        origin, sep, key = text.partition("=")
        if sep and origin and not any(c.isspace() for c in origin):
            try:
                return origin, Verifier.from_key(key)
            except ValueError:
                pass
        _fail(f"--log {text!r} is not a log's verifier key ({exc})")


def _witnesses(keys: tuple[str, ...], quorum: int | None) -> tuple[list[WitnessVerifier], int]:
    """The --witness keys (or files holding them) and the quorum, or exit 2 naming what is wrong."""
    verifiers = []
    for key in keys:
        text = key.strip()
        if text and Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8").strip()
        try:
            verifiers.append(WitnessVerifier.from_key(text))
        except CosignatureError as exc:
            _fail(f"--witness {key!r} is not a witness verifier key ({exc})")
    if quorum is None:
        quorum = len(verifiers)
    if not 1 <= quorum <= len(verifiers):
        _fail(f"--quorum must be between 1 and the number of --witness keys ({len(verifiers)}), got {quorum}")
    return verifiers, quorum


def _when(cosignature: Cosignature) -> str:
    return datetime.fromtimestamp(cosignature.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _report_quorum(note: str, verifiers: list[WitnessVerifier], quorum: int, *, err: bool = False) -> None:
    """Print who cosigned; exit 1 naming what is missing when fewer than ``quorum`` did."""
    try:
        found, missing = check_quorum(note, verifiers, quorum)
    except CosignatureError as exc:
        _fail(f"BROKEN: the checkpoint cannot carry cosignatures ({exc})", 1)
    for cosignature in found:
        click.echo(f"cosigned by {cosignature.name}+{cosignature.key_id.hex()} at {_when(cosignature)}", err=err)
    if len(found) < quorum:
        names = ", ".join(f"{w.name}+{w.key_id.hex()}" for w in missing)
        _fail(f"NOT WITNESSED: {len(found)} of the required {quorum} valid cosignatures on the checkpoint; "
              f"missing: {names}", 1)
    click.echo(f"witnessed: {len(found)} of {len(verifiers)} witnesses cosigned (quorum {quorum})", err=err)


def _tsa_roots(paths: tuple[Path, ...]) -> list[Any]:
    from cryptography import x509

    roots: list[Any] = []
    for path in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            _fail(f"--tsa-root {path}: not a PEM file of certificates ({exc})")
    return roots


def _report_timestamps(note: str, timestamps: list[tuple[str, bytes]], roots: list[Any], *, err: bool) -> None:
    """Print the timestamps that verify; exit 1 when none does."""
    from .timestamp import TimestampError, verify_timestamp

    good = 0
    for tsa, response in timestamps:
        try:
            when = verify_timestamp(response, note, roots)
        except TimestampError as exc:
            click.echo(f"timestamp by {tsa} does not verify: {exc}", err=True)
            continue
        good += 1
        click.echo(f"timestamped by {tsa} at {when.strftime('%Y-%m-%dT%H:%M:%SZ')}", err=err)
    if not good:
        _fail(f"NOT TIMESTAMPED: none of the {len(timestamps)} RFC 3161 timestamps on the checkpoint verifies "
              "against the --tsa-root certificates", 1)


@dataclass(frozen=True)
class Checks:
    """What ``verify --witness/--quorum/--tsa-root`` (or ``verify-receipt --witness``) asks of a checkpoint."""

    verifiers: list[WitnessVerifier]
    quorum: int
    roots: list[Any]


def checks_from_options(keys: tuple[str, ...], quorum: int | None, tsa_roots: tuple[Path, ...] = ()) -> Checks | None:
    """The checks the options ask for (``None``: none), or exit 2 naming what is wrong with them.

    Called before verifying, so that a bad key or quorum is unusable input whatever the log holds.
    """
    if quorum is not None and not keys:
        _fail("--quorum needs at least one --witness key")
    if not keys and not tsa_roots:
        return None
    verifiers, required = _witnesses(keys, quorum) if keys else ([], 0)
    return Checks(verifiers, required, _tsa_roots(tsa_roots))


def report_checks(checks: Checks, note: str, timestamps: list[tuple[str, bytes]], *, err: bool = False) -> None:
    """Print who cosigned and timestamped the verified checkpoint ``note``; exit 1 naming what is missing."""
    if checks.verifiers:
        _report_quorum(note, checks.verifiers, checks.quorum, err=err)
    if checks.roots:
        _report_timestamps(note, timestamps, checks.roots, err=err)


def witness_commands(main: click.Group) -> click.Group:
    """
    The ``witness`` command group, for ``main.add_command``.

    Args:
        main: The ``aiobligations`` command group (kept for compatibility; nothing is added to it).

    Returns:
        The ``witness`` group.

    .. versionadded:: 0.2.0
    """
    return witness_group
