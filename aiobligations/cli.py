"""The ``aiobligations`` command line.

Every command that uses a profile finds it by one rule (:func:`find_config`): ``--config PATH``,
else ``$AIOBLIGATIONS_CONFIG``, else ``./aiobligations.toml``, else ``./demo/aiobligations.toml``
(where ``scripts/demo`` writes the demo's, so the README's commands work from the repository
root); the environment's or the demo's profile is named on standard error. Every error is one clear
line on standard error. Exit statuses: 0 success, 1 a break found by ``verify``, 2 unusable input
or configuration.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from ._cli import DEFAULT_CONFIG, fail
from .errors import ConfigurationError, LabelError, LedgerBroken, ObligationError, UnusableInput
from .keys import init_project, load_signer
from .ledger.bundle import export_bundle
from .ledger.verify import verify_path
from .profile import load_profile

if TYPE_CHECKING:
    from .ledger.note import Signer

__all__ = ["CONFIG_ENV", "find_config", "label_report", "main"]

DEMO_CONFIG = Path("demo") / DEFAULT_CONFIG  # Where scripts/demo writes the demo's profile.

CONFIG_ENV = "AIOBLIGATIONS_CONFIG"
"""The environment variable naming the profile when ``--config`` is not given (as for the middleware)."""


_fail = fail


def _config_option(function: Any) -> Any:
    return click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"The profile to use (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG}, else ./{DEMO_CONFIG}).",
    )(function)


def find_config(config: Path | None, *, required: bool = True) -> Path | None:
    """The profile a command uses: ``config``, else ``$AIOBLIGATIONS_CONFIG``, else the first that exists
    of ``./aiobligations.toml`` and ``./demo/aiobligations.toml``.

    A profile that is not in plain sight (named by the environment variable, or the demo's) is
    announced on standard error as one line, ``aiobligations: using profile PATH (from
    $AIOBLIGATIONS_CONFIG)`` or ``... PATH (the demo's)``, so standard output stays the command's
    answer (``inspect`` prints JSON there). ``--config`` and ``./aiobligations.toml``, which the
    user typed or sees, are not announced, so that an error stays one line. A path named by
    ``config`` or the environment is used even if it does not exist (loading it then says so).

    Args:
        config: The ``--config`` option's value, ``None`` when not given.
        required: When no profile is found: exit 2 with one line saying where it looked
            (``True``), or return ``None`` (``False``: the command can do without one).

    Returns:
        The profile's path, or ``None`` when none was found and ``required`` is false.

    .. versionadded:: 0.2.0
    """
    if config is not None:
        return config
    named = os.environ.get(CONFIG_ENV, "").strip()
    if named:
        click.echo(f"aiobligations: using profile {named} (from ${CONFIG_ENV})", err=True)
        return Path(named)
    if Path(DEFAULT_CONFIG).is_file():
        # The profile in the folder the command runs in: what the user sees; named nowhere else.
        return Path(DEFAULT_CONFIG)
    if DEMO_CONFIG.is_file():
        click.echo(f"aiobligations: using profile {DEMO_CONFIG} (the demo's)", err=True)
        return DEMO_CONFIG
    if required:
        _fail(f"no profile: looked for ./{DEFAULT_CONFIG} and ./{DEMO_CONFIG}; give --config PATH, set "
              f"{CONFIG_ENV}, or write one with `aiobligations init`")
    return None


def _parse_time(value: str | None, name: str) -> float | None:
    """Accept RFC 3339 (``2026-11-28T12:00:00Z``) or a date (``2026-11-28``, midnight UTC)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{name} must be an RFC 3339 time or a date like 2026-11-28, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _read_text_arg(value: str, name: str) -> str:
    """A value given either inline or as the path of a file holding it."""
    path = Path(value)
    try:
        if path.is_file():
            with open(path, "rb") as handle:
                data = handle.read(MAX_TEXT_ARG + 1)
            if len(data) > MAX_TEXT_ARG:
                _fail(f"{name} {value}: larger than {MAX_TEXT_ARG >> 10} KiB")
            return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{name} {value} cannot be read ({exc})")
    return value


class _Group(click.Group):
    """Report usage errors as one line, like every other error, and exit 2."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Run as the program: standard output is the command's answer (scripts parse --json), so the
        # library's log lines (a PostgreSQL ledger's ledger_sequencer_elected) go to standard error.
        if not structlog.is_configured():
            structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
        return super().__call__(*args, **kwargs)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - click's own entry point.
        # click's overloads say standalone_mode=True never returns; here it is False, so it does.
        run: Callable[..., Any] = super().main
        try:
            return run(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            _fail("aborted")
        except click.ClickException as exc:
            _fail(exc.format_message())


def _read_file_arg(value: str | None, name: str) -> str | None:
    """The text of the file an option names, or ``None`` when the option was not given."""
    if value is None:
        return None
    path = Path(value)
    try:
        if path.exists() and not path.is_file():
            _fail(f"{name} {value}: not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_TEXT_ARG + 1)  # A checkpoint or a key: a few hundred bytes.
        if len(data) > MAX_TEXT_ARG:
            _fail(f"{name} {value}: larger than {MAX_TEXT_ARG >> 10} KiB")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{name} {value} cannot be read ({getattr(exc, 'strerror', None) or exc})")


MAX_TEXT_ARG = 1 << 20


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aiobligations")
def main() -> None:
    """Provider obligations under the AI Model Law 2.0: disclosure, labels, evidence ledger.

    \b
    The profile (aiobligations.toml) of every command that uses one:
    --config PATH, else $AIOBLIGATIONS_CONFIG, else ./aiobligations.toml,
    else ./demo/aiobligations.toml (the demo's, made by scripts/demo, when run
    from the repository root). One named by $AIOBLIGATIONS_CONFIG, or the
    demo's, is said on standard error: "aiobligations: using profile PATH".
    """


@main.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing configuration and keys.")
@click.option("--origin", default=None, help="The ledger's origin (default: derived from the folder name).")
@_config_option
def init(folder: Path, force: bool, origin: str | None, config: Path | None) -> None:
    """Write a commented aiobligations.toml and development keys (0600) into FOLDER."""
    try:
        written = init_project(folder, origin=origin, force=force)
    except ObligationError as exc:
        _fail(str(exc))
    click.echo(f"wrote {written} and keys in {written.parent / 'keys'}")
    click.echo("edit the [provider] and [service] sections before going live")


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="The port to serve on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to serve on.")
@_config_option
def demo(port: int, host: str, config: Path | None) -> None:
    """Serve the demo AI service, wrapped, creating a config and keys here if there are none.

    OpenAI-compatible: point the official openai client at http://HOST:PORT/v1. Ctrl-C or SIGTERM
    flushes the ledger and exits.
    """
    from .demo import (
        run_demo,  # Imported here: it needs the server extra (starlette, uvicorn).
    )

    try:
        run_demo(config=find_config(config, required=False) or Path(DEFAULT_CONFIG), port=port, host=host)
    except ObligationError as exc:
        _fail(str(exc))


@main.command()
@click.argument("path")
@click.option("--schema", default="aiobligations", show_default=True,
              help="With a postgresql:// URL: the PostgreSQL schema holding the ledger.")
@click.option("--key", default=None, help="The verifier key to trust: name+id+key, or a file holding it.")
@click.option(
    "--since-checkpoint",
    "since",
    default=None,
    help="An earlier signed checkpoint you accepted (a file); the log must be consistent with it.",
)
@click.option("--trust-bundle-key", "trust_bundle_key", is_flag=True,
              help="Without --key: trust the key the bundle or database carries (proves nothing against "
                   "whoever could rewrite it).")
@click.option("--mac-key", "mac_key", default=None,
              help="The record key (64 hex digits, or a file holding them) the provider gave you: every "
                   "record's mac is checked, so an altered record is named exactly. Default: derived from "
                   "the configured signing key, when there is one.")
@click.option("--witness", "witness_keys", multiple=True,
              help="A witness's verifier key (name+id+key, type 0x04) or a file holding it; repeat for more. "
                   "Then the checkpoint must carry --quorum valid cosignatures by them.")
@click.option("--quorum", type=int, default=None,
              help="How many --witness cosignatures are required (default: all of them).")
@click.option("--tsa-root", "tsa_roots", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A PEM file of timestamp-authority root certificates; repeat for more. Then the checkpoint "
                   "must carry an RFC 3161 timestamp that verifies against one of them.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_config_option
def verify(path: str, schema: str, key: str | None, since: str | None, trust_bundle_key: bool, mac_key: str | None,
           witness_keys: tuple[str, ...], quorum: int | None, tsa_roots: tuple[Path, ...], as_json: bool,
           config: Path | None) -> None:
    """Verify a ledger database or an audit bundle: every record, the root, the signature.

    PATH is a bundle (folder or .tar.gz), a SQLite ledger file, or a PostgreSQL URL
    (postgresql://user@host:5432/database). The verifier key must be pinned: --key, or the
    configured signing key (--config or ./aiobligations.toml); --trust-bundle-key uses the key the
    bundle carries instead. With --witness (and --quorum) the checkpoint must also carry that many
    valid witness cosignatures, and with --tsa-root a timestamp that verifies. Exits 0 when intact
    (and witnessed), 1 on a break (naming the first bad index, or the table and row), a checkpoint
    signed by another key than the pinned one, or missing cosignatures or timestamps, 2 on unusable
    input or no pinned key.
    """
    from .witness.command import checks_from_options, report_checks

    checks = checks_from_options(witness_keys, quorum, tsa_roots)
    if key is not None and not key.strip():
        _fail("--key is not a verifier key: it is empty (give name+id+key, or a file holding it)")
    if config is None and (key is None or mac_key is None):
        config = find_config(None, required=False)  # Once: it says which profile it found.
    # The profile's signer pins the key unless --key does (then a broken profile is not this command's
    # business) and gives the record key unless --mac-key does.
    signer = _configured_signer(config, quiet=key is not None) if key is None or mac_key is None else None
    if key is not None:
        trusted: str | None = _read_text_arg(key, "--key").strip()
    else:
        trusted = signer.verifier_key if signer is not None else None
    record_key = _record_key(mac_key, signer)
    earlier = _read_file_arg(since, "--since-checkpoint")
    try:
        target: str | Path = path if path.startswith(("postgresql://", "postgres://")) else Path(path)
        report = verify_path(target, key=trusted, since_checkpoint=earlier, schema=schema,
                             trust_shipped_key=trust_bundle_key, mac_key=record_key)
    except LedgerBroken as exc:
        if as_json:
            click.echo(json.dumps({"intact": False, "first_bad_index": exc.index, "reason": exc.reason}))
        where = f"first bad index {exc.index}: " if exc.index is not None else ""
        _fail(f"BROKEN: {where}{exc.reason}", 1)
    except (UnusableInput, ConfigurationError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"intact": True, **report.as_dict()}, indent=1))
    else:
        click.echo(
            f"intact: {report.end - report.start} records [{report.start}, {report.end}) of "
            f"{report.origin}, tree size {report.checkpoint_size}, signed by {report.key}"
        )
        if report.since is not None:
            click.echo(f"consistent with the earlier checkpoint of size {report.since}")
        if report.unsigned:
            click.echo(f"{report.unsigned} newer records match their hashes but no checkpoint signs them yet")
        for note in report.notes:
            click.echo(f"note: {note}")
    if checks is not None:
        report_checks(checks, report.checkpoint_note, report.checkpoint_timestamps, err=as_json)


def _record_key(value: str | None, signer: Signer | None) -> bytes | None:
    """The record key: given (hex, or a file holding it), else derived from the configured signing key."""
    from .ledger.records import record_mac_key

    if value is None:
        return record_mac_key(signer.private_key) if signer is not None else None
    text = _read_text_arg(value, "--mac-key").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        _fail("--mac-key is not a record key: give its 64 hex digits, or a file holding them")
    return key


@main.command("record-key")
@_config_option
def record_key_command(config: Path | None) -> None:
    """Print the record key (64 hex digits), derived from the configured signing key.

    Give it to an auditor, apart from the bundle, so that `verify --mac-key` names an altered record
    exactly. It cannot sign checkpoints, but whoever holds it can make a record's mac: share it only
    with those you would let check your records.
    """
    signer = _configured_signer(find_config(config, required=True))
    key = _record_key(None, signer)
    assert key is not None  # A profile was found, so there is a signer.
    click.echo(key.hex())


def _configured_signer(config: Path | None, *, quiet: bool = False) -> Signer | None:
    """The configured ledger's signer, if a profile is at hand; a broken profile exits 2 (``None`` if quiet)."""
    path = find_config(config, required=False)
    if path is None:
        return None
    try:
        profile = load_profile(path)
        return load_signer(profile.ledger.signing_key, profile.ledger.origin)
    except ConfigurationError as exc:
        if quiet:
            return None
        _fail(str(exc))


@main.command()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="A new folder, or a file ending in .tar.gz.")
@click.option("--from", "start", default=None, help="Only records sequenced at or after this time.")
@click.option("--to", "end", default=None, help="Only records sequenced before this time.")
@click.option(
    "--since-checkpoint",
    "since",
    default=None,
    help="Include a consistency proof from this earlier signed checkpoint (a file).",
)
@_config_option
def export(out: Path, start: str | None, end: str | None, since: str | None, config: Path | None) -> None:
    """Write an audit bundle of the configured ledger (up to its latest signed checkpoint)."""
    begin = _parse_time(start, "--from")
    finish = _parse_time(end, "--to")
    if begin is not None and finish is not None and finish < begin:
        _fail("--to is before --from")
    earlier = _read_file_arg(since, "--since-checkpoint")
    try:
        profile = load_profile(find_config(config) or Path(DEFAULT_CONFIG))
        source: Any = profile.ledger.path
        if profile.ledger.url is not None:
            from .ledger.postgres import PostgresStore

            source = PostgresStore(profile.ledger.url, schema=profile.ledger.schema, readonly=True)
        try:
            manifest = export_bundle(source, out, start_time=begin, end_time=finish, since_checkpoint=earlier)
        finally:
            if not isinstance(source, Path):
                source.close()
    except ObligationError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {out} ({exc.strerror or exc})")
    click.echo(
        f"wrote {out}: {manifest['records']} records [{manifest['start']}, {manifest['end']}) "
        f"against the checkpoint of size {manifest['checkpoint_size']}"
    )


@main.group(cls=_Group)
def db() -> None:
    """The ledger's PostgreSQL schema (with [ledger] url): versions and migrations."""


def _on_schema(config: Path | None, action: Any) -> tuple[str, Any]:
    """Run ``action(store)`` on the configured PostgreSQL ledger's store; return (schema, result)."""
    from .ledger.postgres import PostgresStore

    try:
        profile = load_profile(find_config(config) or Path(DEFAULT_CONFIG))
        if profile.ledger.url is None:
            _fail("the profile's ledger is a SQLite file, which has no schema versions; set [ledger] url")
        store = PostgresStore(profile.ledger.url, schema=profile.ledger.schema)
        try:
            return profile.ledger.schema, action(store)
        finally:
            store.close()
    except ObligationError as exc:
        _fail(str(exc))


@db.command()
@_config_option
def upgrade(config: Path | None) -> None:
    """Apply the pending schema migrations of the configured PostgreSQL ledger (each runs once)."""
    from .ledger.postgres import MIGRATIONS

    schema, applied = _on_schema(config, lambda store: store.upgrade())
    latest = MIGRATIONS[-1][0]
    if applied:
        click.echo(f"applied migrations {', '.join(map(str, applied))}: schema {schema} is at version {latest}")
    else:
        click.echo(f"schema {schema} is at version {latest}: nothing to do")


@db.command()
@_config_option
def version(config: Path | None) -> None:
    """Print the schema version of the configured PostgreSQL ledger and the one this code needs."""
    from .ledger.postgres import MIGRATIONS

    schema, current = _on_schema(config, lambda store: store.version())
    click.echo(f"schema {schema}: version {current}; this aiobligations needs {MIGRATIONS[-1][0]}")


@main.command("verify-receipt")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", required=True, help="The ledger's verifier key (name+id+key), or a file holding it.")
@click.option("--record", "record", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="The record's bytes, when the receipt does not carry them.")
@click.option("--witness", "witness_keys", multiple=True,
              help="A witness's verifier key (name+id+key) or a file holding it; repeat for more. Then the "
                   "receipt's checkpoint must carry --quorum valid cosignatures by them.")
@click.option("--quorum", type=int, default=None,
              help="How many --witness cosignatures are required (default: all of them).")
def verify_receipt_command(file: Path, key: str, record: Path | None, witness_keys: tuple[str, ...],
                           quorum: int | None) -> None:
    """Check a receipt (C2SP tlog-proof) offline: the record was in the signed log.

    With --witness (and --quorum), its checkpoint must also carry that many valid witness
    cosignatures. Exits 0 when it verifies, 1 when it does not, 2 on unusable input.
    """
    from .ledger.receipts import InvalidReceipt, parse_receipt, verify_receipt
    from .witness.command import checks_from_options, report_checks

    checks = checks_from_options(witness_keys, quorum)

    # Read like a media file (a FIFO hung here, /dev/zero ran out of memory), with a receipt's bound.
    raw = _read_input(file, limit=MAX_RECEIPT)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"receipt {file} cannot be read ({exc})")
    if not text.strip():
        _fail(f"receipt {file} is empty")
    trusted = _read_text_arg(key, "--key").strip()
    data = _read_input(record) if record is not None else None
    try:
        checkpoint = verify_receipt(text, trusted, record=data)
    except InvalidReceipt:
        _fail("BROKEN: the receipt does not verify", 1)
    except (ConfigurationError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"verified: the record is in {checkpoint.origin} at tree size {checkpoint.size}")
    if checks is not None:
        report_checks(checks, parse_receipt(raw).checkpoint, [])


def _read_input(path: Path, *, limit: int | None = None) -> bytes:
    """The file's bytes, read with a bound; anything but a regular file is refused before opening.

    A link to ``/dev/zero`` would be read forever and a FIFO would hang, so only what ``stat``
    says is a regular file (a link to one is fine) is opened. ``limit`` is the bound in bytes
    (default :data:`MAX_LABEL_INPUT`).
    """
    bound = MAX_LABEL_INPUT if limit is None else limit
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            _fail(f"{path}: is a folder")
        if not stat.S_ISREG(info.st_mode):
            _fail(f"{path}: not a regular file (a device, FIFO or socket is never a media file or a receipt)")
        if info.st_size > bound:
            _fail(f"{path}: larger than {bound >> 20} MiB")
        with open(path, "rb") as handle:
            # read(n) allocates n bytes first: ask for the size stat gave (plus one, to see growth),
            # not for the 2 GiB bound, which a small file's process may not even be allowed to map.
            data = handle.read(info.st_size + 1)
            if len(data) > info.st_size:
                parts = [data]
                while (size := sum(map(len, parts))) <= bound and (
                    part := handle.read(min(1 << 24, bound + 1 - size))
                ):
                    parts.append(part)
                data = b"".join(parts)
        if len(data) > bound:
            _fail(f"{path}: larger than {bound >> 20} MiB")
        return data
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except IsADirectoryError:
        _fail(f"{path}: is a folder")
    except OSError as exc:
        _fail(f"{path}: cannot be read ({exc.strerror})")


MAX_LABEL_INPUT = 2 << 30
MAX_RECEIPT = 1 << 20  # A receipt is a few KiB: its checkpoint and up to 63 hashes.


def _is_bomb(exc: BaseException) -> bool:
    """Whether Pillow refused an image whose pixel count could exhaust memory (a decompression bomb)."""
    return type(exc).__name__ == "DecompressionBombError"


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--media-type", default=None, help="The declared media type (checked against the content).")
@click.option("--interaction-id", default=None, help="The interaction that produced the file (its ProduceID).")
@_config_option
def label(source: Path, target: Path, media_type: str | None, interaction_id: str | None,
          config: Path | None) -> None:
    """Label SOURCE as the profile's [labels] section says, writing TARGET (a new file).

    Each label part is on or off in the profile ([labels] explicit, watermark, implicit, c2pa) and
    goes on in this order: the explicit label (a caption in the bottom-right corner of PNG, JPEG,
    WebP, GIF and TIFF images; the rhythm cue at the start of WAV, MP3 and audio-only MP4; a
    caption on the opening 2 s of an MP4 video; a text line at the end of Markdown; none for PDF
    and Office files), the invisible watermark (PNG, JPEG and WebP images large enough), the GB
    45438 implicit label in the file's metadata, then the C2PA manifest (every format but Markdown
    and Office files). A label record goes into the ledger.

    Prints one line per part: "applied: PART — what" or "skipped: PART — why" (off in the profile,
    not for this format, an image too small, no CJK font, ...). Exits 0 when TARGET is written,
    even with parts skipped; 2 on unusable input or configuration.
    """
    from .obligations import Obligations

    data = _read_input(source)
    if target.exists():
        _fail(f"{target} already exists; choose a new path")
    try:
        with Obligations.from_file(find_config(config) or Path(DEFAULT_CONFIG)) as obligations:
            labelled = obligations.label_with_evidence(data, media_type, interaction_id=interaction_id)
    except ObligationError as exc:
        _fail(f"{source}: {exc}" if isinstance(exc, LabelError) else str(exc))
    except Exception as exc:
        if not _is_bomb(exc):
            raise
        _fail(f"{source}: an image too large to decode safely ({exc})")
    try:
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(labelled.data)
        tmp.replace(target)
    except OSError as exc:
        _fail(f"cannot write {target} ({exc.strerror})")
    click.echo(f"wrote {target}: {len(data)} → {len(labelled.data)} bytes")
    settings = obligations.label_settings
    for line in label_report(labelled.evidence, {"implicit": settings.implicit, "explicit": settings.explicit,
                                                 "watermark": settings.watermark, "c2pa": settings.c2pa}):
        click.echo(line)


_PARTS = (
    ("implicit", "gb45438", "implicit label (GB 45438 metadata)"),
    ("explicit", "explicit", "explicit label"),
    ("watermark", "watermark", "watermark"),
    ("c2pa", "c2pa", "C2PA manifest"),
)


def _applied_detail(part: str, entry: dict[str, Any]) -> str:
    """A short account of one applied label part, from its evidence entry."""
    if part == "implicit":
        signed = "ReservedCode1 signed" if entry.get("ReservedCode1") else "ReservedCode1 empty (no content digest)"
        return f"ContentProducer {entry.get('ContentProducer')}, ProduceID {entry.get('ProduceID')}, {signed}"
    if part == "explicit":
        kind = entry.get("kind", "?")
        if kind == "caption":
            where = f"{entry['seconds']:g} s at the start" if "seconds" in entry else entry.get("corner", "")
            return f"caption {entry.get('wording', '')!r}, {where}".rstrip(", ")
        if kind == "rhythm cue":
            return f"rhythm cue ·−·· ({entry.get('pattern', '')}) at the {entry.get('at', 'start')}"
        return f"{kind} {entry.get('wording', '')!r} at the {entry.get('at', 'end')}"
    if part == "watermark":
        return f"payload {entry.get('payload')} ({entry.get('alg')})"
    bound = ", bound to the watermark" if entry.get("watermarked") else ""
    return f"{entry.get('action')}, {entry.get('digital_source_type')}{bound}"


def label_report(evidence: dict[str, Any], enabled: dict[str, bool]) -> list[str]:
    """One line per label part: ``applied: PART — what`` or ``skipped: PART — why``.

    Args:
        evidence: What :meth:`aiobligations.Obligations.label_with_evidence` returned as evidence.
        enabled: Which parts the profile turned on (``implicit``, ``explicit``, ``watermark``, ``c2pa``).

    Returns:
        The lines: implicit, explicit, watermark, C2PA.

    .. versionadded:: 0.2.0
    """
    lines = []
    for part, key, name in _PARTS:
        entry = evidence.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("skipped"), str):
            lines.append(f"skipped: {name} — {entry['skipped']}")
        elif isinstance(entry, dict):
            lines.append(f"applied: {name} — {_applied_detail(part, entry)}")
        elif not enabled.get(part, False):
            lines.append(f"skipped: {name} — off in the profile ([labels] {part} = false)")
        else:  # The labeller records every part it was asked for; say so if one ever is not.
            lines.append(f"skipped: {name} — the labeller recorded nothing for it")
    return lines


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--media-type", default=None, help="The declared media type (checked against the content).")
@click.option("--produce-id", default=None,
              help="Check the watermark's payload against this ProduceID (when the metadata is gone).")
@_config_option
def inspect(file: Path, media_type: str | None, produce_id: str | None, config: Path | None) -> None:
    """Print every label found in FILE as JSON: GB 45438 metadata, C2PA manifest and its validation.

    Also the visible caption of an image, found in its pixels ("explicit": {"caption": {"present":
    true, "text", "corner", "box", "how"}}; present null with a reason when it cannot tell, e.g.
    another wording or font), the audible cue of a WAV, and with a profile the watermark. Exits 0
    when a label was found, 1 when none, 2 on unusable input. With a profile, the provider's keys
    verify ReservedCode1 and find the watermark, its trust anchors validate C2PA, and its
    [labels] explicit_wording is the caption looked for (default AI生成).
    """
    from .labels.labeller import Labeller

    data = _read_input(file)
    labeller = Labeller(producer="-")
    wording = "AI生成"
    path = find_config(config, required=False)
    if path is not None:
        # The profile's keys, but not its ledger: inspect runs beside a service that holds it.
        from .labels.settings import LabelSettings, build_labeller

        try:
            profile = load_profile(path)
            key = load_signer(profile.ledger.signing_key, profile.ledger.origin).private_key
            settings = LabelSettings.from_profile(profile)
            labeller = build_labeller(profile, settings, key)
            wording = settings.explicit_wording
        except ObligationError as exc:
            _fail(str(exc))
    try:
        report = labeller.inspect(data, media_type, produce_id=produce_id, wording=wording)
    except ObligationError as exc:
        _fail(f"{file}: {exc}")
    except Exception as exc:
        if not _is_bomb(exc):
            raise
        _fail(f"{file}: an image too large to decode safely ({exc})")
    click.echo(json.dumps(report, ensure_ascii=False, indent=1))
    sys.exit(0 if report["labelled"] else 1)


from .requests.cli import requests_group  # noqa: E402 - registered after the group exists.

main.add_command(requests_group)

from .controls.cli import incident_group, takeover_group  # noqa: E402 - registered after the group exists.

main.add_command(incident_group)
main.add_command(takeover_group)


@main.command("export-otlp")
@click.option("--endpoint", default=None,
              help="The collector's OTLP/HTTP logs URL, e.g. http://collector:4318/v1/logs "
                   "(default: the profile's [otlp] endpoint).")
@click.option("--follow", is_flag=True, help="Keep exporting new records until stopped (SIGTERM or Ctrl-C).")
@_config_option
def export_otlp(endpoint: str | None, follow: bool, config: Path | None) -> None:
    """Send the configured ledger's records to an OpenTelemetry collector, as OTLP/HTTP log records.

    Starts from the ledger's durable cursor, the one the service's own exporter uses, and advances
    it once the collector acknowledges. Exits 0 when done, 1 when the collector did not acknowledge
    or another process is exporting (with --follow it waits for its turn instead), 2 on unusable
    input or configuration.
    """
    import signal
    import threading

    from .errors import LedgerLocked
    from .ledger.otlp import ExportFailed, open_exporter, redact_endpoint

    try:
        exporter = open_exporter(load_profile(find_config(config) or Path(DEFAULT_CONFIG)), endpoint=endpoint)
    except ObligationError as exc:
        _fail(str(exc))
    where = redact_endpoint(exporter.endpoint)
    if not follow:
        try:
            try:
                count = exporter.export_pending()
                cursor = exporter.cursor
            finally:
                exporter.close(0)
        except ExportFailed as exc:
            _fail(f"{exc}; {exc.exported} records were exported before, the rest wait in the ledger", 1)
        except LedgerLocked as exc:
            _fail(str(exc), 1)
        except ObligationError as exc:
            _fail(str(exc))
        click.echo(f"exported {count} records to {where}; next index {cursor}")
        return
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        exporter.start()
        click.echo(f"exporting to {where} until stopped (SIGTERM or Ctrl-C)", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        exporter.close(timeout=10.0)
    click.echo(f"exported {exporter.exported} records to {where}")


from .report.cli import report_command  # noqa: E402 - registered after the group exists.

main.add_command(report_command)

main.add_command(__import__("aiobligations.witness.command", fromlist=["_"]).witness_commands(main))

main.add_command(__import__("aiobligations.controls.cli_filing", fromlist=["_"]).filing_group)

main.add_command(__import__("aiobligations.controls.cli_terminate", fromlist=["_"]).terminate_group)

if __name__ == "__main__":  # pragma: no cover - exercised through the console script.
    main()
