"""``aiobligations report``: the audit report of the configured ledger, as HTML (and PDF).

Exit statuses: 0 written; 1 the ledger does not verify (nothing is written); 2 unusable input or
configuration.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from .._cli import fail
from ..errors import LedgerBroken, ObligationError

__all__ = ["PDF_TIMEOUT", "print_pdf", "report_command"]

DEFAULT_CONFIG = "aiobligations.toml"
PDF_TIMEOUT = 180.0
"""Seconds Chromium may take to print the PDF."""


_fail = fail


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{name} must be an RFC 3339 time or a date like 2026-11-28, got {value!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_pdf(html_path: Path, pdf_path: Path) -> None:
    """Print an HTML file to PDF with headless Chromium (``chromium`` on PATH).

    Raises:
        ObligationError: Chromium is missing, fails or times out.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise ObligationError("--pdf needs Chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="aiob-pdf-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", "--no-pdf-header-footer",
                   f"--print-to-pdf={pdf_path.resolve()}", html_path.resolve().as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise ObligationError(f"Chromium did not print the PDF within {PDF_TIMEOUT:.0f} s") from None
    if result.returncode != 0 or not pdf_path.is_file():
        tail = result.stderr.strip().splitlines()[-1:] or ["no message"]
        raise ObligationError(f"Chromium could not print the PDF (exit {result.returncode}: {tail[0][:200]})")


@click.command("report")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write (replaced if it exists).")
@click.option("--from", "start", default=None, help="Only records sequenced at or after this time (RFC 3339 or a date).")
@click.option("--to", "end", default=None, help="Only records sequenced before this time; deadlines are judged then.")
@click.option("--key", default=None, help="The verifier key to pin (name+id+key, or a file holding it); "
                                          "default: the configured signing key's.")
@click.option("--checkpoint", "checkpoint", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="A signed checkpoint note (a file) to compute against instead of the latest: "
                   "recompute a report you were given.")
@click.option("--pdf", "pdf", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also print the report to this PDF file with headless Chromium.")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"The profile to use (default ./{DEFAULT_CONFIG}).")
def report_command(out: Path, start: str | None, end: str | None, key: str | None, checkpoint: Path | None,
                   pdf: Path | None, config: Path | None) -> None:
    """Verify the configured ledger, then write its audit report (Art. 36, 49(5)) as HTML.

    The report shows, per article, what the profile does and the ledger's evidence, computed against
    the signed checkpoint it names (origin, size, root). It refuses (exit 1) when the ledger does
    not verify. The same checkpoint and window always give the same bytes.
    """
    from . import build_report

    begin, finish = _time(start, "--from"), _time(end, "--to")
    if begin is not None and finish is not None and finish < begin:
        _fail("--to is before --from")
    trusted = None
    if key is not None:
        path = Path(key)
        try:
            trusted = path.read_text(encoding="utf-8").strip() if path.is_file() else key.strip()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--key {key} cannot be read ({exc})")
        if not trusted:
            _fail("--key is not a verifier key: it is empty")
    note = None
    if checkpoint is not None:
        try:
            with open(checkpoint, "rb") as handle:
                note = handle.read(1 << 16).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--checkpoint {checkpoint} cannot be read ({getattr(exc, 'strerror', None) or exc})")
    from ..cli import find_config  # The one rule every command finds its profile by.

    profile = find_config(config) or Path(DEFAULT_CONFIG)
    try:
        report = build_report(profile, start=begin, end=finish, key=trusted, checkpoint=note)
        page = report.html().encode("utf-8")
    except LedgerBroken as exc:
        where = f"first bad index {exc.index}: " if exc.index is not None else ""
        _fail(f"report refused: the ledger does not verify ({where}{exc.reason}); nothing was written", 1)
    except ObligationError as exc:
        _fail(str(exc))
    try:
        _write(out, page)
    except OSError as exc:
        _fail(f"cannot write {out} ({exc.strerror or exc})")
    if pdf is not None:
        try:
            print_pdf(out, pdf)
        except ObligationError as exc:
            _fail(f"wrote {out}, but not the PDF: {exc}")
    signed = report.checkpoint
    click.echo(f"wrote {out}{f' and {pdf}' if pdf is not None else ''}: {report.records} records against the "
               f"checkpoint of {signed.origin}, size {signed.size}, root {signed.root}")
