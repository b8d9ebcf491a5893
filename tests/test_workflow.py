"""The request desk: explanation requests and complaints as ledger records, with deadlines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from aiobligations import Obligations
from aiobligations.errors import ObligationError
from aiobligations.interaction import uuid7
from aiobligations.keys import init_project
from aiobligations.requests import ChinaCalendar, add_working_days
from aiobligations.requests.workflow import (
    Explanation,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RequestDesk,
)

# A Monday in Beijing, before the 2026 National Day break (10月1日至7日, 10月10日 worked).
START = datetime(2026, 9, 21, 2, 0, tzinfo=UTC)
CANARY = "canary-question-7f3a9"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return init_project(tmp_path / "project")


@pytest.fixture
def hub(config: Path) -> Iterator[Obligations]:
    with Obligations.from_file(config) as obligations:
        yield obligations


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def interaction(hub: Obligations, subject: str = "alice", **personal: Any) -> str:
    interaction_id = str(uuid7())
    hub.ledger.append({
        "kind": "interaction",
        "interaction_id": interaction_id,
        "subject": subject,
        "personal": personal or {"input": "what is my score?", "output": "42"},
    })
    return interaction_id


def db_bytes(config: Path) -> bytes:
    return b"".join(path.read_bytes() for path in config.parent.rglob("*.db*") if path.is_file())


def test_full_flow_leaves_a_sealed_record_per_step(hub: Obligations, config: Path, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    iid = interaction(hub)

    asked = desk.ask(iid, "alice", f"why? {CANARY}", contact="alice@example.com")
    assert "received" == asked.state
    assert add_working_days(START, 15, ChinaCalendar()) == asked.due
    clock.now += timedelta(days=1)
    desk.start_review(asked.id, by="op-1")
    answered = desk.answer(asked.id, "because of canary-answer-1", factors={"score": 0.9}, by="op-1")
    assert ("answered", "because of canary-answer-1", {"score": 0.9}) == (
        answered.state, answered.answer, dict(answered.factors or {}))
    assert clock.now == answered.answered_at
    complained = desk.complain(asked.id, "alice", "not convinced canary-complaint-1")
    assert "complained" == complained.state
    assert complained.complaint_due is not None and complained.complaint_due > complained.due
    resolved = desk.resolve(asked.id, "reviewed canary-outcome-1", by="op-2")

    assert "resolved" == resolved.state
    assert ["received", "in_review", "answered", "complained", "resolved"] == [s.step for s in resolved.history]
    records = [hub.ledger.read(s.index) for s in resolved.history]
    assert all(r["kind"] == "explanation" and r["request_id"] == asked.id for r in records)
    assert f"why? {CANARY}" == records[0]["personal"]["question"]
    assert hub.ledger.pseudonym("alice") == records[0]["subject"]
    assert records[2]["on_time"] is True
    hub.ledger.flush()
    stored = db_bytes(config)
    for secret in (CANARY, b"canary-answer-1", b"canary-complaint-1", b"canary-outcome-1", b"alice@example.com"):
        assert (secret.encode() if isinstance(secret, str) else secret) not in stored
    assert asked.id.encode() in stored


def test_reject_then_complain(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    request = desk.ask(interaction(hub), "alice", "why?")
    desk.start_review(request.id, by="op")
    rejected = desk.reject(request.id, "trade secret", by="op")
    assert ("rejected", "trade secret") == (rejected.state, rejected.reason)
    assert "complained" == desk.complain(request.id, "alice", "unfair").state


def test_explainer_answers_with_the_sealed_personal_part(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    seen: list[dict[str, Any]] = []

    @desk.register_explainer
    def explain(record: dict[str, Any]) -> Explanation:
        seen.append(record)
        return Explanation(f"you asked {record['personal']['input']}", {"rule": "r1"})

    request = desk.ask(interaction(hub, input="secret prompt"), "alice", "why?")
    done = desk.process(request.id)

    assert "secret prompt" == seen[0]["personal"]["input"]
    assert ("answered", "you asked secret prompt", True) == (done.state, done.answer, done.automated)
    assert ["received", "in_review", "answered"] == [s.step for s in done.history]
    assert "explainer" == done.history[-1].by


def test_declining_or_failing_explainer_leaves_it_queued(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    request = desk.ask(interaction(hub), "alice", "why?")
    assert "received" == desk.process(request.id).state  # No explainer at all.
    desk.register_explainer(lambda record: None)
    assert "received" == desk.process(request.id).state

    def broken(record: dict[str, Any]) -> Explanation:
        raise RuntimeError("model down")

    desk.register_explainer(broken)
    with capture_logs() as logs:
        assert "received" == desk.process(request.id).state
    assert ["explainer_failed"] == [e["event"] for e in logs]
    assert [request.id] == [r.id for r in desk.open_requests()]


def test_foreign_and_unknown_ids_are_the_same_not_found(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    iid = interaction(hub, "alice")
    with pytest.raises(NotFound) as foreign:
        desk.ask(iid, "mallory", "why?")
    with pytest.raises(NotFound) as unknown:
        desk.ask(str(uuid7()), "mallory", "why?")
    assert str(foreign.value) == str(unknown.value)

    request = desk.ask(iid, "alice", "why?")
    with pytest.raises(NotFound) as foreign:
        desk.get(request.id, "mallory")
    with pytest.raises(NotFound) as unknown:
        desk.get(str(uuid7()), "mallory")
    assert str(foreign.value) == str(unknown.value)
    with pytest.raises(NotFound):
        desk.complain(request.id, "mallory", "x")
    assert request == desk.get(request.id, "alice")
    assert isinstance(foreign.value, ObligationError) and isinstance(foreign.value, LookupError)


def test_an_interaction_without_subject_is_nobodys(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    iid = str(uuid7())
    hub.ledger.submit({"kind": "interaction", "interaction_id": iid})  # Queued, not yet stored.
    with pytest.raises(NotFound):
        desk.ask(iid, "alice", "why?")


def test_illegal_transitions_raise(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    request = desk.ask(interaction(hub), "alice", "why?")
    with pytest.raises(InvalidTransition, match="received; it cannot become answered"):
        desk.answer(request.id, "x", by="op")
    with pytest.raises(InvalidTransition):
        desk.complain(request.id, "alice", "x")
    with pytest.raises(InvalidTransition):
        desk.resolve(request.id, "x", by="op")
    desk.start_review(request.id, by="op")
    with pytest.raises(InvalidTransition):
        desk.start_review(request.id, by="op")
    desk.answer(request.id, "x", by="op")
    with pytest.raises(InvalidTransition):
        desk.answer(request.id, "again", by="op")
    with pytest.raises(InvalidRequest):
        desk.ask(interaction(hub), "alice", "  ")
    with pytest.raises(NotFound):
        desk.start_review("nope", by="op")


def test_deadline_is_15_working_days_by_the_china_calendar(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    request = desk.ask(interaction(hub), "alice", "why?")
    # 22-24 Sep and 28-30 Sep: 6 (中秋 25-27 Sep off); 1-7 Oct off; 8, 9, 10 (a Saturday, worked): 9;
    # 12-16 Oct: 14; Monday 19 Oct: the 15th, ending at midnight Beijing time.
    assert datetime(2026, 10, 19, 15, 59, 59, 999999, tzinfo=UTC) == request.due
    assert date(2026, 10, 19) == request.due.astimezone(ZoneInfo("Asia/Shanghai")).date()

    short = RequestDesk(hub, clock=clock, deadline_days=1)
    assert datetime(2026, 9, 22, 15, 59, 59, 999999, tzinfo=UTC) == short.ask(interaction(hub), "alice", "q").due


def test_overdue_and_reminders(hub: Obligations, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    late = desk.ask(interaction(hub), "alice", "why?")
    clock.now = late.due - timedelta(days=5)
    fresh = desk.ask(interaction(hub), "alice", "why now?")

    assert [] == desk.overdue(late.due)
    later = late.due + timedelta(hours=1)
    assert [late.id] == [r.id for r in desk.overdue(later)]
    with capture_logs() as logs:
        sent = desk.remind(late.due - timedelta(days=1))
    assert [("explanation_due_soon", late.id)] == [(e, r.id) for e, r in sent]
    assert {"event": "explanation_due_soon", "request_id": late.id, "state": "received"}.items() <= logs[0].items()
    with capture_logs() as logs:
        desk.remind(later)
    assert [("explanation_overdue", late.id)] == [(e["event"], e["request_id"]) for e in logs]
    assert all("why" not in str(e) for e in logs)

    # Answer the late one after its due, the fresh one in time.
    clock.now = later
    desk.start_review(late.id, by="op")
    assert desk.answer(late.id, "sorry", by="op").history[-1].index >= 0
    desk.start_review(fresh.id, by="op")
    desk.answer(fresh.id, "here", by="op")
    assert 0.5 == desk.on_time_ratio()
    assert 1.0 == desk.on_time_ratio(since=fresh.received)
    assert None is desk.on_time_ratio(since=later + timedelta(days=1))


def test_restart_mid_flow_loses_nothing(config: Path, clock: Clock) -> None:
    with Obligations.from_file(config) as hub:
        desk = RequestDesk(hub, clock=clock)
        first = desk.ask(interaction(hub), "alice", "first?")
        second = desk.ask(interaction(hub, "bob"), "bob", "second?")
        desk.start_review(first.id, by="op")
        complaint = desk.complaint("carol", "general", "slow")

    with Obligations.from_file(config) as hub:
        desk = RequestDesk(hub, clock=clock)
        assert desk.get(first.id, "alice") == desk.request(first.id)
        again = desk.get(first.id, "alice")
        assert ("in_review", first.due, "first?") == (again.state, again.due, again.question)
        assert [first.id, second.id] == [r.id for r in desk.open_requests()]
        assert second.due == desk.get(second.id, "bob").due
        assert "slow" == desk.get_complaint(complaint.id, "carol").text

        clock.now += timedelta(days=20)  # Deadlines come from the records, not from the new clock.
        assert second.due == desk.get(second.id, "bob").due
        answered = desk.answer(first.id, "because", by="op")
        assert "answered" == answered.state
        assert answered.history[:2] == first.history + (again.history[1],)
        desk.complain(first.id, "alice", "no")
        desk.resolve(first.id, "ok", by="op")

    with Obligations.from_file(config) as hub:
        final = RequestDesk(hub, clock=clock).get(first.id, "alice")
        assert ("resolved", "because", "no", "ok") == (final.state, final.answer, final.complaint, final.outcome)


def test_general_and_ip_complaints(hub: Obligations, config: Path, clock: Clock) -> None:
    desk = RequestDesk(hub, clock=clock)
    general = desk.complaint("dave", "general", "rude bot")
    ip = desk.complaint("erin", "ip", "copied my novel", work="canary-work-9", right_holder="canary-holder-9",
                        output_ref="interaction 123")
    report = desk.complaint("frank", "report", "illegal content", output_ref="https://x.example/o/1")

    assert ["general", "ip", "report"] == [c.category for c in desk.complaints()]
    assert ("canary-work-9", "canary-holder-9") == (ip.work, ip.right_holder)
    record = hub.ledger.read(ip.history[0].index)
    assert ("complaint", "ip", "received") == (record["kind"], record["category"], record["step"])
    assert "canary-work-9" == record["personal"]["work"]
    hub.ledger.flush()
    stored = db_bytes(config)
    assert b"canary-work-9" not in stored and b"canary-holder-9" not in stored
    with pytest.raises(InvalidRequest, match="work"):
        desk.complaint("erin", "ip", "copied")
    with pytest.raises(InvalidRequest, match="category"):
        desk.complaint("erin", "spam", "x")
    with pytest.raises(NotFound):
        desk.get_complaint(general.id, "erin")
    assert "resolved" == desk.resolve_complaint(report.id, "removed", by="op").state
    with pytest.raises(InvalidTransition):
        desk.resolve_complaint(report.id, "again", by="op")


def test_erasure_keeps_facts_but_not_texts(config: Path, clock: Clock) -> None:
    with Obligations.from_file(config) as hub:
        desk = RequestDesk(hub, clock=clock)
        request = desk.ask(interaction(hub), "alice", "why?", contact="a@x")
        desk.start_review(request.id, by="op")
        desk.answer(request.id, "because", factors={"f": 1}, by="op")
        complaint = desk.complaint("alice", "ip", "mine", work="w", right_holder="h", output_ref="o")
        desk.erase_subject("alice")
        forgotten = desk.request(request.id)
        assert (None, None, None) == (forgotten.question, forgotten.answer, forgotten.factors)

    with Obligations.from_file(config) as hub:
        desk = RequestDesk(hub, clock=clock)
        rebuilt = desk.get(request.id, "alice")
        assert (request.id, request.interaction_id, "answered", request.due) == (
            rebuilt.id, rebuilt.interaction_id, rebuilt.state, rebuilt.due)
        assert (None, None, None, None) == (rebuilt.question, rebuilt.contact, rebuilt.answer, rebuilt.factors)
        assert None is desk.get_complaint(complaint.id, "alice").work
        # The flow can go on; later texts have no key to be sealed under and are not kept.
        complained = desk.complain(request.id, "alice", "new text")
        assert ("complained", None) == (complained.state, complained.complaint)
        assert "personal" not in hub.ledger.read(complained.history[-1].index)


def test_the_hub_erases_through_the_desk_once_it_is_in_use(hub: Obligations, clock: Clock) -> None:
    """``Obligations.erase_subject`` shreds the key and, with a desk in use, drops its texts too."""
    request = hub.requests.ask(interaction(hub), "alice", "why?", contact="a@x")
    assert "why?" == hub.requests.request(request.id).question
    index = hub.erase_subject("alice")
    assert "subject.erased" == hub.ledger.read(index)["kind"]
    assert (None, None) == (hub.requests.request(request.id).question, hub.requests.request(request.id).contact)


def test_the_hub_erases_in_the_ledger_without_a_desk(hub: Obligations) -> None:
    interaction_id = interaction(hub, "bob", secret="x")
    index = hub.erase_subject("bob")
    assert "subject.erased" == hub.ledger.read(index)["kind"]
    assert hub._requests is None  # Erasure did not build a desk it did not need.
    records = [hub.ledger.read(i) for i in range(hub.ledger.size)]
    record = next(r for r in records if r.get("interaction_id") == interaction_id)
    assert "personal" not in record and "sealed" in record


def test_an_altered_request_record_is_skipped_not_fatal_to_every_later_request(
        hub: Obligations, config: Path, clock: Clock) -> None:
    """A row altered in the store (its mac no longer checks) is logged and skipped; the desk goes on."""
    import sqlite3

    from aiobligations.ledger import merkle

    desk = RequestDesk(hub, clock=clock)
    first = desk.ask(interaction(hub), "alice", "why?")
    second = desk.ask(interaction(hub, "bob"), "bob", "why not?")
    hub.ledger.flush()
    index = first.history[0].index
    db = sqlite3.connect(config.parent / "ledger.db")
    data = db.execute("SELECT data FROM records WHERE idx = ?", (index,)).fetchone()[0]
    altered = data.replace(b'"step":"received"', b'"step":"answered"')
    assert altered != data
    with db:
        db.execute("UPDATE records SET data = ?, leaf = ? WHERE idx = ?", (altered, merkle.leaf_hash(altered), index))
    db.close()

    with capture_logs() as logs:
        rebuilt = RequestDesk(hub, clock=clock)
    assert [index] == [e["index"] for e in logs if e["event"] == "requests.record_altered"]
    assert "received" == rebuilt.request(second.id).state
    with pytest.raises(NotFound):
        rebuilt.request(first.id)
