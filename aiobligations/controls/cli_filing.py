"""``aiobligations filing status``: whether Art. 47 asks for a filing, with whom, by when, and what is missing.

Reads the profile only (no ledger). Exit statuses: 0 the status was printed (also when a filing is
due: it is information, not a failure), 2 unusable input or configuration.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import click

from .._cli import fail
from ..errors import ObligationError
from .filing import filing_status

__all__ = ["filing_group"]

DEFAULT_CONFIG = "aiobligations.toml"


_fail = fail


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        _fail(f"{option} must be a date YYYY-MM-DD, got {text[:40]!r}")


@click.group("filing")
def filing_group() -> None:
    """Filing with the AI authority (Art. 47): status by registered users."""


@filing_group.command("status")
@click.option("--registered-users", "registered_users", required=True, type=int,
              help="The number of registered users now.")
@click.option("--crossed-on", "crossed_on", default=None, metavar="YYYY-MM-DD",
              help="The day the count passed the threshold (default: today, said so in the output).")
@click.option("--today", "today", default=None, metavar="YYYY-MM-DD", hidden=True,
              help="Judge as of this day (tests, planning).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The profile to use (default: $AIOBLIGATIONS_CONFIG, else ./aiobligations.toml, else the demo's).")
def status_command(registered_users: int, crossed_on: str | None, today: str | None, as_json: bool,
                   config: Path | None) -> None:
    """Say whether a filing is due, with the national or provincial authority, by which date, and what is missing."""
    from ..cli import find_config  # The one rule every command finds its profile by.
    from ..profile import load_profile

    try:
        profile = load_profile(find_config(config) or Path(DEFAULT_CONFIG))
        status = filing_status(profile, registered_users, crossed_on=_day(crossed_on, "--crossed-on"),
                               today=_day(today, "--today"))
    except ObligationError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(status.as_dict(), ensure_ascii=False, indent=1))
    else:
        click.echo(status.summary())
