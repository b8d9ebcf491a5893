"""``aiobligations requests …``: the operator's queue from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aiobligations import Obligations
from aiobligations.interaction import uuid7
from aiobligations.keys import init_project
from aiobligations.requests.cli import requests_group


@click.group()
def main() -> None:
    """Stands in for aiobligations.cli.main, which adds the group the same way."""


main.add_command(requests_group)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return init_project(tmp_path)


def _ask(config: Path) -> str:
    with Obligations.from_file(config) as hub:
        interaction_id = str(uuid7())
        hub.ledger.append({"kind": "interaction", "interaction_id": interaction_id, "subject": "alice",
                           "personal": {"input": "score?", "output": "42"}})
        return hub.requests.ask(interaction_id, "alice", "Why 42?", contact="a@example.com").id


def run(config: Path, *args: str):
    return CliRunner().invoke(main, ["requests", *args, "--config", str(config)])


def test_the_whole_flow(config: Path) -> None:
    request_id = _ask(config)
    listed = run(config, "list")
    assert listed.exit_code == 0, listed.output
    assert request_id in listed.output and "received" in listed.output and "OVERDUE" not in listed.output
    assert json.loads(run(config, "list", "--json").output)[0]["id"] == request_id

    assert run(config, "review", request_id, "--by", "op-1").exit_code == 0
    answered = run(config, "answer", request_id, "--text", "Because.", "--factors", '{"model": "m-1"}', "--by", "op-1")
    assert answered.exit_code == 0 and "answered" in answered.output
    assert run(config, "list").output.strip() == "no requests"  # Nothing open.
    assert request_id in run(config, "list", "--all").output

    shown = json.loads(run(config, "show", request_id, "--json").output)
    assert shown["status"] == "answered" and shown["factors"] == {"model": "m-1"} and shown["question"] == "Why 42?"
    assert [s["by"] for s in shown["history"]] == [None, "op-1", "op-1"]
    human = run(config, "show", request_id).output
    assert "answer: Because." in human and "in_review by op-1" in human

    with Obligations.from_file(config) as hub:
        hub.requests.complain(request_id, "alice", "Not enough.")
    resolved = run(config, "resolve", request_id, "--outcome", "It stands.", "--by", "op-2")
    assert resolved.exit_code == 0 and "resolved" in resolved.output


def test_reject(config: Path) -> None:
    request_id = _ask(config)
    run(config, "review", request_id, "--by", "op-1")
    result = run(config, "reject", request_id, "--reason", "Not about you.", "--by", "op-1")
    assert result.exit_code == 0 and "rejected" in result.output


def test_errors_are_one_line(config: Path) -> None:
    request_id = _ask(config)
    missing = run(config, "show", "nope")
    assert missing.exit_code == 1 and missing.output.strip() == "aiobligations: no such request"
    refused = run(config, "answer", request_id, "--text", "x", "--by", "op")  # Not in review yet.
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert "cannot become answered" in refused.output
    bad = run(config, "answer", request_id, "--text", "x", "--factors", "[1]", "--by", "op")
    assert bad.exit_code == 2 and "JSON object" in bad.output
    nothing = run(config.parent / "missing.toml", "list")
    assert nothing.exit_code == 2 and len(nothing.output.strip().splitlines()) == 1


def test_while_the_service_runs(config: Path) -> None:
    """The CLI joins the running service's ledger writer; each side sees the other's steps at once."""
    request_id = _ask(config)
    with Obligations.from_file(config) as service:
        desk = service.requests
        assert run(config, "review", request_id, "--by", "op-1").exit_code == 0
        assert "in_review" == desk.request(request_id).state
        desk.answer(request_id, "Because.", by="op-2")
        shown = json.loads(run(config, "show", request_id, "--json").output)
        assert "answered" == shown["status"] and "Because." == shown["answer"]


def test_overdue_is_marked(config: Path) -> None:
    request_id = _ask(config)
    from aiobligations.requests.cli import _table, _view
    from datetime import UTC, datetime, timedelta

    with Obligations.from_file(config) as hub:
        request = hub.requests.request(request_id)
    view = _view(request, datetime.now(UTC) + timedelta(days=365))
    assert view["overdue"] and "OVERDUE" in _table([view])
