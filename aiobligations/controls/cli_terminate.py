"""``aiobligations terminate …``: plan, cancel, show and carry out the service's termination (Art. 50).

Each command opens the configured ledger itself, as ``aiobligations incident`` does: while the
service runs, it joins the ledger's shared writer process (or the replicas) like one more worker,
and every worker follows the plan within about half a second.

``run`` is the scheduler's step for cron (the running service does the same in the background):
from the deletion day it shreds every subject once; before, it does nothing.

Exit statuses: 0 success (also when nothing had to change, or ``run`` found it is not time yet),
2 unusable input or configuration, or a step that is not allowed (too little notice, a plan
already standing, cancelling after the end).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from .._cli import fail, open_hub
from .termination import TerminationPlan, TerminationState

__all__ = ["terminate_group"]

DEFAULT_CONFIG = "aiobligations.toml"


_fail = fail


def _clock(at: str | None) -> Callable[[], datetime] | None:
    if at is None:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        _fail(f"--at must be an ISO 8601 time with its offset, got {at[:40]!r}")
    if moment.tzinfo is None:
        _fail(f"--at must carry its offset (e.g. 2027-01-04T09:00+08:00), got {at[:40]!r}")
    return lambda: moment.astimezone(UTC)


@contextlib.contextmanager
def _termination(config: Path | None, at: str | None) -> Iterator[TerminationState]:
    """The configured hub's termination state; closes (flushing) the ledger afterwards."""
    clock = _clock(at)
    with open_hub(config) as hub:
        yield TerminationState(hub, clock=clock) if clock is not None else hub.termination


def _options(function: Any) -> Any:
    function = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="The profile to use (default: $AIOBLIGATIONS_CONFIG, else ./aiobligations.toml, else the demo's).")(function)
    function = click.option("--at", "at", default=None, hidden=True,
                            help="Act as of this time (ISO 8601 with offset): tests and rehearsals.")(function)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


def _print(plan: TerminationPlan | None, as_json: bool, **extra: Any) -> None:
    if as_json:
        click.echo(json.dumps({"plan": plan.as_dict() if plan else None, **extra}, ensure_ascii=False, indent=1))
        return
    if plan is None:
        click.echo("No termination is planned.")
        return
    click.echo(f"Service ends on {plan.end.isoformat()} (announced {plan.announced.isoformat()}, by {plan.by}).")
    if plan.shredded is None:
        click.echo(f"Users' personal information is deleted by {plan.delete_by.isoformat()}.")
    else:
        click.echo(f"{plan.shredded} subjects shredded at {plan.shredded_at}.")


@click.group("terminate")
def terminate_group() -> None:
    """Terminate the service (Art. 50): plan with 30 working days' notice, cancel, status, run the deletion."""


@terminate_group.command("plan")
@click.option("--end", "end", required=True, metavar="YYYY-MM-DD",
              help="The termination day: the first day without service (Beijing time).")
@click.option("--by", "by", required=True, help="Your operator id (recorded with the step).")
@_options
def plan_command(end: str, by: str, config: Path | None, at: str | None, as_json: bool) -> None:
    """Plan the end and publish the announcement; refused with fewer than 30 working days' notice."""
    try:
        day = date.fromisoformat(end)
    except ValueError:
        _fail(f"--end must be a date YYYY-MM-DD, got {end[:40]!r}")
    with _termination(config, at) as termination:
        plan = termination.plan_termination(day, by=by)
    _print(plan, as_json)


@terminate_group.command("cancel")
@click.option("--by", "by", required=True, help="Your operator id (recorded with the step).")
@_options
def cancel_command(by: str, config: Path | None, at: str | None, as_json: bool) -> None:
    """Cancel the plan before its end; the announcement is withdrawn."""
    with _termination(config, at) as termination:
        changed = termination.cancel(by=by)
    if as_json:
        click.echo(json.dumps({"changed": changed}))
    else:
        click.echo("Termination cancelled." if changed else "No termination was planned; nothing changed.")


@terminate_group.command("status")
@_options
def status_command(config: Path | None, at: str | None, as_json: bool) -> None:
    """Show the plan, the deletion day, and whether the deletion is done."""
    with _termination(config, at) as termination:
        plan = termination.refresh()
        ended = termination.ended() is not None
        earliest = termination.earliest_end()
        left = len(termination.ledger.subject_pseudonyms())
    _print(plan, as_json, ended=ended, earliest_end=earliest.isoformat(), subjects_left=left)
    if not as_json and plan is not None and plan.shredded is not None and left:
        click.echo(f"{left} subjects have keys made since; the service's check or `terminate run` shreds them.")
    if not as_json and plan is None:
        click.echo(f"Planned today, the earliest end would be {earliest.isoformat()}.")


@terminate_group.command("run")
@click.option("--by", "by", default="scheduler", show_default=True, help="Who runs it.")
@click.option("--early", is_flag=True, help="Shred from the end day on, without waiting for the deletion day.")
@_options
def run_command(by: str, early: bool, config: Path | None, at: str | None, as_json: bool) -> None:
    """Shred every subject once the deletion day has come (for cron); does nothing before, or twice."""
    with _termination(config, at) as termination:
        count = termination.run(by=by, early=early)
        plan = termination.plan
    if as_json:
        _print(plan, True, shredded=count)
    elif count is None:
        click.echo("Nothing to do: no plan stands, or its deletion day has not come.")
    else:
        click.echo(f"{count} subjects shredded; their sealed records no longer open, and every proof still verifies.")
