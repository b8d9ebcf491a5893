"""``aiobligations requests …``: work the explanation-request queue from the command line.

Each command opens the configured ledger itself. While the service runs, the command joins the
ledger's shared writer process like one more worker, and the desk follows the log: a step taken here
is seen by every worker of the service at once, and a step no longer allowed (another operator took
it meanwhile) is refused with one line.

Exit statuses: 0 success, 1 no such request, 2 unusable input, configuration or a refused step.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .._cli import fail, open_hub
from .workflow import NotFound, Request, RequestDesk

__all__ = ["requests_group"]

DEFAULT_CONFIG = "aiobligations.toml"


_fail = fail


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment is not None else None


def _view(request: Request, now: datetime) -> dict[str, Any]:
    """Everything an operator sees of a request, as JSON values."""
    due = request.current_due
    return {
        "id": request.id,
        "interaction_id": request.interaction_id,
        "status": request.state,
        "received": _iso(request.received),
        "due": _iso(due),
        "overdue": due is not None and now > due,
        "question": request.question,
        "contact": request.contact,
        "answered_at": _iso(request.answered_at),
        "answer": request.answer,
        "factors": dict(request.factors) if request.factors else None,
        "reason": request.reason,
        "automated": request.automated,
        "complaint": request.complaint,
        "complained_at": _iso(request.complained_at),
        "outcome": request.outcome,
        "resolved_at": _iso(request.resolved_at),
        "history": [{"step": s.step, "at": _iso(s.at), "index": s.index, "by": s.by} for s in request.history],
    }


@contextlib.contextmanager
def _desk(config: Path | None) -> Iterator[RequestDesk]:
    """The configured hub's request desk; closes (flushing) the ledger afterwards."""
    with open_hub(config) as hub:
        try:
            yield hub.requests
        except NotFound:
            _fail("no such request", 1)


def _config_option(function: Any) -> Any:
    return click.option(
        "--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=f"The profile to use (default: $AIOBLIGATIONS_CONFIG, else ./{DEFAULT_CONFIG}, else ./demo/{DEFAULT_CONFIG}).",
    )(function)


def _by_option(function: Any) -> Any:
    return click.option("--by", "by", required=True, help="Your operator id (recorded with the step).")(function)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no requests"
    header = ("ID", "STATE", "DUE", "")
    lines = [header] + [(r["id"], r["status"], r["due"] or "-", "OVERDUE" if r["overdue"] else "") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(line)).rstrip()
        for line in lines
    )


def _show(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, indent=1))
        return
    click.echo(_table([view]))
    for name in ("interaction_id", "received", "question", "contact", "answered_at", "answer", "factors",
                 "reason", "complaint", "complained_at", "outcome", "resolved_at"):
        value = view[name]
        if value is not None:
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
            click.echo(f"{name}: {shown}")
    for step in view["history"]:
        by = f" by {step['by']}" if step["by"] else ""
        click.echo(f"  {step['at']}  {step['step']}{by}  (ledger index {step['index']})")


@click.group("requests")
def requests_group() -> None:
    """Work the explanation requests (Art. 39): list, show, review, answer, reject, resolve.

    Works whether the service runs or not: it joins the ledger's writer like one more worker.
    """


@requests_group.command("list")
@click.option("--all", "every", is_flag=True, help="Every request, oldest first (default: open ones, most urgent first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
def list_command(every: bool, as_json: bool, config: Path | None) -> None:
    """List open requests (or --all) with their deadlines; OVERDUE marks a passed one."""
    with _desk(config) as desk:
        now = datetime.now(UTC)
        views = [_view(r, now) for r in (desk.requests() if every else desk.open_requests())]
    if as_json:
        click.echo(json.dumps(views, ensure_ascii=False, indent=1))
    else:
        click.echo(_table(views))


@requests_group.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_config_option
def show_command(request_id: str, as_json: bool, config: Path | None) -> None:
    """Show one request, its texts and its history."""
    with _desk(config) as desk:
        view = _view(desk.request(request_id), datetime.now(UTC))
    _show(view, as_json)


def _stepped(request: Request) -> None:
    view = _view(request, datetime.now(UTC))
    click.echo(f"{view['id']}: {view['status']}" + (f", due {view['due']}" if view["due"] else ""))


@requests_group.command("review")
@click.argument("request_id")
@_by_option
@_config_option
def review_command(request_id: str, by: str, config: Path | None) -> None:
    """Take a received request into review."""
    with _desk(config) as desk:
        request = desk.start_review(request_id, by=by)
    _stepped(request)


@requests_group.command("answer")
@click.argument("request_id")
@click.option("--text", required=True, help="The explanation the person will read.")
@click.option("--factors", default=None, help='Structured factors, a JSON object, e.g. \'{"model": "m-1"}\'.')
@_by_option
@_config_option
def answer_command(request_id: str, text: str, factors: str | None, by: str, config: Path | None) -> None:
    """Answer a request in review."""
    parsed = None
    if factors is not None:
        try:
            parsed = json.loads(factors)
        except ValueError as exc:
            _fail(f"--factors is not JSON ({exc})")
        if not isinstance(parsed, dict):
            _fail("--factors must be a JSON object")
    with _desk(config) as desk:
        request = desk.answer(request_id, text, factors=parsed, by=by)
    _stepped(request)


@requests_group.command("reject")
@click.argument("request_id")
@click.option("--reason", required=True, help="Why, in words the person will read.")
@_by_option
@_config_option
def reject_command(request_id: str, reason: str, by: str, config: Path | None) -> None:
    """Reject a request in review."""
    with _desk(config) as desk:
        request = desk.reject(request_id, reason, by=by)
    _stepped(request)


@requests_group.command("resolve")
@click.argument("request_id")
@click.option("--outcome", required=True, help="The outcome of the complaint, which the person will read.")
@_by_option
@_config_option
def resolve_command(request_id: str, outcome: str, by: str, config: Path | None) -> None:
    """Resolve the complaint about a request."""
    with _desk(config) as desk:
        request = desk.resolve(request_id, outcome, by=by)
    _stepped(request)
