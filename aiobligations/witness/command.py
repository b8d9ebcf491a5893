"""The ``aiobligations witness`` commands, and ``--witness``/``--quorum`` on ``verify`` and ``verify-receipt``.

``aiobligations witness init DIR`` makes a witness key; ``aiobligations witness serve`` runs the
witness (c2sp.org/tlog-witness) with uvicorn. :func:`witness_commands` returns the command group
and adds the witness options to the main group's ``verify`` and ``verify-receipt``.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from ..ledger.note import Verifier
from .cosignature import Cosignature, CosignatureError, WitnessSigner, WitnessVerifier, check_quorum

__all__ = ["witness_commands"]


def _fail(message: str, status: int = 2) -> NoReturn:
    click.echo(f"aiobligations: {message}", err=True)
    sys.exit(status)


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


_WITNESS_OPTION = click.Option(
    ["--witness", "witness_keys"], multiple=True,
    help="A witness's verifier key (name+id+key, type 0x04) or a file holding it; repeat for more. "
         "Then the checkpoint must carry --quorum valid cosignatures by them.")
_QUORUM_OPTION = click.Option(
    ["--quorum"], type=int, default=None,
    help="How many --witness cosignatures are required (default: all of them).")


_TSA_ROOT_OPTION = click.Option(
    ["--tsa-root", "tsa_roots"], multiple=True, type=click.Path(dir_okay=False, path_type=Path),
    help="A PEM file of timestamp-authority root certificates; repeat for more. Then the checkpoint must "
         "carry an RFC 3161 timestamp that verifies against one of them.")


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


def _extend_verify(command: click.Command) -> None:
    """Add --witness/--quorum (and --tsa-root) to ``verify``: checked once the log verified."""
    original = command.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args: Any, witness_keys: tuple[str, ...], quorum: int | None, tsa_roots: tuple[Path, ...],
                 **kwargs: Any) -> Any:
        if not witness_keys and not tsa_roots:
            if quorum is not None:
                _fail("--quorum needs at least one --witness key")
            return original(*args, **kwargs)
        if quorum is not None and not witness_keys:
            _fail("--quorum needs at least one --witness key")
        verifiers, quorum = _witnesses(witness_keys, quorum) if witness_keys else ([], 0)
        roots = _tsa_roots(tsa_roots)
        from .. import cli

        # The report of the verification itself, captured on its way to the command's output.
        # (cli.py is shared by several features: the witness options live here.)
        reports: list[Any] = []
        verify_path = cli.verify_path

        def capturing(*a: Any, **k: Any) -> Any:
            report = verify_path(*a, **k)
            reports.append(report)
            return report

        cli.verify_path = capturing
        try:
            result = original(*args, **kwargs)
        finally:
            cli.verify_path = verify_path
        if not reports:
            # Fail closed: a verification whose report this wrapper did not see was not checked here.
            _fail("the witnesses and timestamps could not be checked (no verification report was seen)", 1)
        if reports:
            report = reports[-1]
            err = bool(kwargs.get("as_json"))
            if verifiers:
                _report_quorum(report.checkpoint_note, verifiers, quorum, err=err)
            if roots:
                _report_timestamps(report.checkpoint_note, report.checkpoint_timestamps, roots, err=err)
        return result

    command.callback = callback
    command.params.extend([_WITNESS_OPTION, _QUORUM_OPTION, _TSA_ROOT_OPTION])


def _extend_verify_receipt(command: click.Command) -> None:
    """Add --witness/--quorum to ``verify-receipt``: the receipt's checkpoint must carry them."""
    original = command.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args: Any, witness_keys: tuple[str, ...], quorum: int | None, **kwargs: Any) -> Any:
        if not witness_keys:
            if quorum is not None:
                _fail("--quorum needs at least one --witness key")
            return original(*args, **kwargs)
        verifiers, quorum = _witnesses(witness_keys, quorum)
        result = original(*args, **kwargs)  # Exits unless the receipt verified.
        from ..ledger.receipts import parse_receipt

        file: Path = kwargs["file"]
        receipt = parse_receipt(file.read_bytes())
        _report_quorum(receipt.checkpoint, verifiers, quorum)
        return result

    command.callback = callback
    command.params.extend([_WITNESS_OPTION, _QUORUM_OPTION])


def witness_commands(main: click.Group) -> click.Group:
    """
    The ``witness`` command group, for ``main.add_command``; also gives ``main``'s ``verify`` and
    ``verify-receipt`` their ``--witness`` and ``--quorum`` options.

    Args:
        main: The ``aiobligations`` command group.

    Returns:
        The ``witness`` group.

    .. versionadded:: 0.2.0
    """
    extenders: dict[str, Callable[[click.Command], None]] = {
        "verify": _extend_verify, "verify-receipt": _extend_verify_receipt}
    for name, extend in extenders.items():
        command = main.commands.get(name)
        if command is not None and not any(p.name == "witness_keys" for p in command.params):
            extend(command)
    return witness_group

