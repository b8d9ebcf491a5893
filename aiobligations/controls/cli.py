"""``aiobligations incident …`` and ``aiobligations takeover …``: the operator controls from a shell.

Each command opens the configured ledger itself, as ``aiobligations requests`` does: while the
service runs, it joins the ledger's shared writer process (or, for a PostgreSQL ledger, the
replicas) like one more worker, and every worker folds the record in within about half a second.

Exit statuses: 0 success (also when nothing had to change: switching on twice records once),
1 no such incident, 2 unusable input or configuration, or a step that is no longer allowed
(closing a closed incident).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .._cli import fail, open_hub
from .errors import IncidentNotFound
from .incidents import Incident
from .notices import authority_notice, user_notice
from .state import ControlState

__all__ = ["incident_group", "takeover_group"]

DEFAULT_CONFIG = "aiobligations.toml"


_fail = fail


@contextlib.contextmanager
def _controls(config: Path | None) -> Iterator[tuple[ControlState, Any]]:
    """The configured hub's controls (and its profile); closes (flushing) the ledger afterwards."""
    with open_hub(config) as hub:
        try:
            yield hub.controls, hub.profile
        except IncidentNotFound as exc:
            _fail(str(exc), 1)


def _config_option(function: Any) -> Any:
    return click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=f"The profile to use (default: $AIOBLIGATIONS_CONFIG, else ./{DEFAULT_CONFIG}, "
                        f"else ./demo/{DEFAULT_CONFIG}).")(function)


def _by_option(function: Any) -> Any:
    return click.option("--by", "by", required=True, help="Your operator id (recorded with the step).")(function)


def _json_option(function: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


def _print(incident: Incident, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(incident.as_dict(), ensure_ascii=False, indent=1))
        return
    suspended = ", AI routes suspended" if incident.open and incident.suspend else ""
    click.echo(f"{incident.id}: {'open' if incident.open else 'closed'}{suspended}")


@click.group("incident")
def incident_group() -> None:
    """Security incidents (Art. 37): open, update, close, list, show (with the notices).

    While an incident is open its user notice is served at {prefix}/incidents/ID and listed in
    /.well-known/ai-transparency. Works whether the service runs or not.
    """


@incident_group.command("open")
@click.option("--title", required=True, help="A short title users will read.")
@click.option("--scope", required=True, help="Who and what is affected.")
@click.option("--measures", required=True, help="The remedial measures taken.")
@click.option("--user-actions", "user_actions", required=True, help="What users can do to reduce harm.")
@click.option("--contact", required=True, help="How users and the authority reach you about it.")
@click.option("--course", default=None, help="The course of events so far (may come later, with update).")
@click.option("--severity", default=None, help="A severity label, e.g. high.")
@click.option("--suspend", is_flag=True, help="Suspend every AI route while the incident is open.")
@_by_option
@_json_option
@_config_option
def open_command(title: str, scope: str, measures: str, user_actions: str, contact: str, course: str | None,
                 severity: str | None, suspend: bool, by: str, as_json: bool, config: Path | None) -> None:
    """Open an incident; prints its id."""
    with _controls(config) as (controls, _):
        incident = controls.open_incident(title=title, scope=scope, measures=measures, user_actions=user_actions,
                                          contact=contact, course=course, severity=severity, suspend=suspend, by=by)
    _print(incident, as_json)


@incident_group.command("update")
@click.argument("incident_id")
@click.option("--title", default=None, help="A new title.")
@click.option("--scope", default=None, help="Who and what is affected, as known now.")
@click.option("--measures", default=None, help="The remedial measures taken so far.")
@click.option("--user-actions", "user_actions", default=None, help="What users can do to reduce harm.")
@click.option("--contact", default=None, help="How to reach you about it.")
@click.option("--course", default=None, help="The course of events so far.")
@click.option("--severity", default=None, help="A severity label.")
@click.option("--suspend/--no-suspend", "suspend", default=None, help="Start or end the suspension of AI routes.")
@_by_option
@_json_option
@_config_option
def update_command(incident_id: str, suspend: bool | None, by: str, as_json: bool, config: Path | None,
                   **fields: str | None) -> None:
    """Update an open incident; only the fields that change are recorded."""
    with _controls(config) as (controls, _):
        incident = controls.update_incident(incident_id, by=by, suspend=suspend, **fields)
    _print(incident, as_json)


@incident_group.command("close")
@click.argument("incident_id")
@click.option("--resolution", required=True, help="How it was resolved, in words users will read.")
@_by_option
@_json_option
@_config_option
def close_command(incident_id: str, resolution: str, by: str, as_json: bool, config: Path | None) -> None:
    """Close an open incident (closing a closed one is refused, exit 2)."""
    with _controls(config) as (controls, _):
        incident = controls.close_incident(incident_id, resolution=resolution, by=by)
    _print(incident, as_json)


@incident_group.command("list")
@click.option("--all", "every", is_flag=True, help="Closed incidents too.")
@_json_option
@_config_option
def list_command(every: bool, as_json: bool, config: Path | None) -> None:
    """List open incidents (or --all), oldest first."""
    with _controls(config) as (controls, _):
        found = controls.incidents(open_only=not every)
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in found], ensure_ascii=False, indent=1))
        return
    if not found:
        click.echo("no incidents")
    for incident in found:
        flags = " SUSPENDING" if incident.open and incident.suspend else ""
        click.echo(f"{incident.id}  {'open' if incident.open else 'closed'}{flags}  {incident.title}")


@incident_group.command("show")
@click.argument("incident_id")
@click.option("--notice", type=click.Choice(["user", "authority"]), default=None,
              help="Print the notice for users or the report for the authority instead.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", help="The notice's language.")
@_json_option
@_config_option
def show_command(incident_id: str, notice: str | None, lang: str, as_json: bool, config: Path | None) -> None:
    """Show an incident and its steps, or render one of its notices."""
    with _controls(config) as (controls, profile):
        incident = controls.incident(incident_id)
    if notice == "user":
        click.echo(user_notice(incident, lang, profile=profile)["notice"], nl=False)
    elif notice == "authority":
        click.echo(authority_notice(incident, lang, profile=profile), nl=False)
    elif as_json:
        _print(incident, True)
    else:
        view = incident.as_dict()
        for name in ("id", "status", "title", "severity", "suspend", "opened", "updated", "closed", "course",
                     "scope", "measures", "user_actions", "contact", "resolution"):
            if view[name] is not None:
                click.echo(f"{name}: {view[name]}")
        for step in view["history"]:
            changed = f" ({', '.join(step['changed'])})" if step["step"] == "update" else ""
            click.echo(f"  {step['at']}  {step['step']}{changed} by {step['by']}  (ledger index {step['index']})")


def _recorded(controls: ControlState) -> str:
    if controls.last_appended is None:
        return ""
    index, at = controls.last_appended
    return f" (recorded at {at}, ledger index {index})"


@click.group("takeover")
def takeover_group() -> None:
    """The takeover switch (Art. 52(4)): answer AI routes with 503, or hand them to a human fallback.

    Reaches every worker and replica within about a second. Works while the service runs.
    """


@takeover_group.command("on")
@click.option("--route", default=None, help="A glob of AI paths, e.g. '/v1/images/*' (default: every AI route).")
@click.option("--reason", default="", help="Why (recorded; not shown to users).")
@click.option("--fallback", default=None,
              help="The app path that gets the requests instead of a 503 (default: [controls] fallback).")
@_by_option
@_config_option
def on_command(route: str | None, reason: str, fallback: str | None, by: str, config: Path | None) -> None:
    """Take AI routes over. Switching on what is on already records nothing."""
    with _controls(config) as (controls, _):
        changed = controls.takeover_on(by=by, route=route, reason=reason, fallback=fallback)
        current = next(t for t in controls.takeovers() if t.route == route)
    where = route or "every AI route"
    fallback = current.fallback or controls.settings.fallback
    target = f"handed to {fallback}" if fallback else "answered 503"
    click.echo(f"takeover on: {where}, {target}" + (_recorded(controls) if changed
                                                     else " (already on; nothing recorded)"))


@takeover_group.command("off")
@click.option("--route", default=None, help="End only the switch on this pattern (default: every switch).")
@click.option("--reason", default="", help="Why (recorded).")
@_by_option
@_config_option
def off_command(route: str | None, reason: str, by: str, config: Path | None) -> None:
    """End the takeover. Switching off what is off records nothing."""
    with _controls(config) as (controls, _):
        changed = controls.takeover_off(by=by, route=route, reason=reason)
        left = controls.takeovers()
    suffix = _recorded(controls) if changed else " (was not on; nothing recorded)"
    click.echo(f"takeover off: {route or 'every switch'}{suffix}" + (f"; still on: {len(left)}" if left else ""))


@takeover_group.command("status")
@_json_option
@_config_option
def status_command(as_json: bool, config: Path | None) -> None:
    """Show the switches that are on, and the open incidents that suspend AI routes."""
    with _controls(config) as (controls, _):
        snapshot = controls.refresh()
    suspending = [i for i in snapshot.open_incidents if i.suspend]
    if as_json:
        click.echo(json.dumps({"takeovers": [t.as_dict() for t in snapshot.takeovers],
                               "suspending_incidents": [i.id for i in suspending],
                               "halting": snapshot.halting}, ensure_ascii=False, indent=1))
        return
    if not snapshot.halting:
        click.echo("takeover off: AI routes are served")
    for takeover in snapshot.takeovers:
        fallback = takeover.fallback or controls.settings.fallback
        target = f"handed to {fallback}" if fallback else "503"
        click.echo(f"on: {takeover.route or 'every AI route'} -> {target} (by {takeover.by}, "
                   f"{takeover.as_dict()['at']}){': ' + takeover.reason if takeover.reason else ''}")
    for incident in suspending:
        click.echo(f"suspended by incident {incident.id}: {incident.title}")
