"""The request desk across processes: every worker of a service sees, and takes, the same requests.

Each process opens the same profile (as ``uvicorn --workers N`` does); the ledger's shared writer
orders their steps, and each desk follows the log. Real processes (multiprocessing, spawn), real
SQLite; waits are on results, never on sleeps.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aiobligations import Obligations
from aiobligations.interaction import uuid7
from aiobligations.keys import init_project
from aiobligations.requests import InvalidTransition

DEADLINE = 60.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return init_project(tmp_path)


def _interaction(hub: Obligations, subject: str = "alice") -> str:
    interaction_id = str(uuid7())
    hub.ledger.append({"kind": "interaction", "interaction_id": interaction_id, "subject": subject,
                       "personal": {"input": "score?", "output": "42"}})
    return interaction_id


def _answer_at_once(config: str, request_id: str, operator: str, barrier: Any, results: Any) -> None:
    """A worker: wait for the others, then try to answer the same request."""
    with Obligations.from_file(config) as hub:
        desk = hub.requests
        barrier.wait(DEADLINE)
        try:
            desk.answer(request_id, f"answered by {operator}", by=operator)
            results.put(("answered", operator))
        except InvalidTransition:
            results.put(("refused", operator))


def _ask_and_report(config: str, interaction_id: str, results: Any, go: Any) -> None:
    """Another worker asks; it stays open until the test has looked (so the writer is shared)."""
    with Obligations.from_file(config) as hub:
        results.put(hub.requests.ask(interaction_id, "alice", "Why 42?").id)
        go.wait(DEADLINE)


def test_a_request_made_in_one_process_is_seen_in_another(config: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with Obligations.from_file(config) as hub:
        interaction_id = _interaction(hub)
        desk = hub.requests
        results, go = context.Queue(), context.Event()
        worker = context.Process(target=_ask_and_report, args=(str(config), interaction_id, results, go))
        worker.start()
        try:
            request_id = results.get(timeout=DEADLINE)
            # Stored before the other process answered: this desk sees it on its next read.
            assert "Why 42?" == desk.get(request_id, "alice").question
            assert [request_id] == [r.id for r in desk.open_requests()]
            desk.start_review(request_id, by="op-1")
        finally:
            go.set()
            worker.join(DEADLINE)
        assert 0 == worker.exitcode
        assert "in_review" == desk.request(request_id).state


def test_two_processes_answering_at_once_record_one_answer(config: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with Obligations.from_file(config) as hub:
        desk = hub.requests
        request_ids = []
        for _ in range(5):
            request_id = desk.ask(_interaction(hub), "alice", "Why?").id
            desk.start_review(request_id, by="op-0")
            request_ids.append(request_id)
        for request_id in request_ids:
            barrier, results = context.Barrier(3), context.Queue()
            workers = [context.Process(target=_answer_at_once, args=(str(config), request_id, f"op-{n}", barrier, results))
                       for n in range(3)]
            for worker in workers:
                worker.start()
            outcomes = Counter(results.get(timeout=DEADLINE)[0] for _ in workers)
            for worker in workers:
                worker.join(DEADLINE)
                assert 0 == worker.exitcode
            assert {"answered": 1, "refused": 2} == dict(outcomes)
            request = desk.request(request_id)
            assert "answered" == request.state
            assert 1 == sum(1 for step in request.history if step.step == "answered")
        # The log itself holds one answer per request: a rebuilt desk agrees.
        steps = Counter(
            (record["request_id"], record["step"])
            for record in (hub.ledger.read(i) for i in range(hub.ledger.durable_size()))
            if record["kind"] == "explanation"
        )
        assert all(steps[(request_id, "answered")] == 1 for request_id in request_ids)


def _erase(config: str, subject: str) -> None:
    with Obligations.from_file(config) as hub:
        hub.erase_subject(subject)


def test_an_erasure_in_one_process_empties_every_desk(config: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with Obligations.from_file(config) as hub:
        desk = hub.requests
        request_id = desk.ask(_interaction(hub), "alice", "Why 42?", contact="a@example.com").id
        assert "Why 42?" == desk.request(request_id).question
        worker = context.Process(target=_erase, args=(str(config), "alice"))
        worker.start()
        worker.join(DEADLINE)
        assert 0 == worker.exitcode
        request = desk.request(request_id)
        assert (None, None) == (request.question, request.contact)
        assert "received" == request.state


def _record_interaction(config: str, interaction_id: str, results: Any, go: Any) -> None:
    """A worker records an interaction (submit, as the middleware does), then waits to be let go."""
    with Obligations.from_file(config) as hub:
        hub.ledger.submit({"kind": "interaction", "interaction_id": interaction_id, "subject": "alice",
                           "personal": {"input": "hi", "output": "hello"}})
        results.put(hub.ledger.flush())
        go.wait(DEADLINE)


def test_receipts_and_checkpoints_answer_the_same_in_every_process(config: Path) -> None:
    """An interaction another worker recorded gets a verifiable receipt here; both serve one checkpoint."""
    from aiobligations.ledger.receipts import parse_receipt, receipt_for_interaction, verify_receipt

    context = multiprocessing.get_context("spawn")
    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "log", "n": 0})
        interaction_id = str(uuid7())
        results, go = context.Queue(), context.Event()
        worker = context.Process(target=_record_interaction, args=(str(config), interaction_id, results, go))
        worker.start()
        try:
            size = results.get(timeout=DEADLINE)
            receipt = receipt_for_interaction(hub.ledger, interaction_id)
            assert receipt is not None
            checkpoint = verify_receipt(receipt, hub.ledger.verifier)
            assert checkpoint.size >= size
            assert size - 1 == parse_receipt(receipt).index
            # This process heard of the other's checkpoint without writing anything itself.
            assert hub.ledger.checkpoint is not None and hub.ledger.durable_size() == size
        finally:
            go.set()
            worker.join(DEADLINE)
        assert 0 == worker.exitcode
