"""Termination (Art. 50): the plan, its announcement, the end of AI routes, and shredding every subject."""

from __future__ import annotations

import json
import subprocess
import sys
import time as clock_time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aiobligations import Obligations
from aiobligations.controls.errors import InvalidControl
from aiobligations.controls.termination import (
    DELETE_DAYS,
    NOTICE_DAYS,
    TerminationError,
    TerminationState,
    announcement,
    with_termination,
)
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project
from aiobligations.requests import ChinaCalendar, WeekdayCalendar, working_days_between

BEIJING = ZoneInfo("Asia/Shanghai")


def beijing(day: date, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BEIJING)


class FakeClock:
    """A clock the test moves; TerminationState reads it."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def make_config(tmp_path: Path, *, writer: str = "thread", extra: str = "") -> Path:
    config = init_project(tmp_path / "site")
    config.write_text(config.read_text().replace('writer = "process"', f'writer = "{writer}"') + extra)
    return config


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = clock_time.monotonic() + timeout
    while clock_time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        clock_time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Obligations]:
    with Obligations.from_file(make_config(tmp_path)) as obligations:
        yield obligations


TODAY = date(2026, 11, 2)  # A Monday.


def state(hub: Obligations, clock: FakeClock) -> TerminationState:
    hub._termination = TerminationState(hub, clock=clock)
    return hub._termination


class TestPlan:
    def test_fewer_than_30_working_days_is_refused(self, hub: Obligations) -> None:
        """
        An end that leaves fewer than 30 whole working days after today is refused, naming the earliest end.
        """
        termination = state(hub, FakeClock(beijing(TODAY)))
        earliest = termination.earliest_end()

        assert NOTICE_DAYS == working_days_between(beijing(TODAY), beijing(earliest - timedelta(days=1)),
                                                    ChinaCalendar())
        with pytest.raises(TerminationError, match=f"earliest end is {earliest.isoformat()}"):
            termination.plan_termination(earliest - timedelta(days=1), by="ops")
        assert None is termination.plan
        plan = termination.plan_termination(earliest, by="ops")
        assert (earliest, TODAY) == (plan.end, plan.announced)

    def test_holidays_do_not_count_as_notice(self, hub: Obligations) -> None:
        """
        Announced on 2026-09-21, the National Day break (1-7 October) pushes the earliest end past a weekday count.
        """
        termination = state(hub, FakeClock(beijing(date(2026, 9, 21))))
        weekdays = TerminationState(hub, clock=FakeClock(beijing(date(2026, 9, 21))), calendar=WeekdayCalendar())

        assert termination.earliest_end() > weekdays.earliest_end()

    def test_the_deletion_day_is_30_working_days_from_the_end(self, hub: Obligations) -> None:
        """
        delete_by is the 30th working day counting the end day itself.
        """
        termination = state(hub, FakeClock(beijing(TODAY)))
        end = date(2026, 12, 21)  # A Monday.

        plan = termination.plan_termination(end, by="ops")

        assert DELETE_DAYS == working_days_between(beijing(end - timedelta(days=1)), beijing(plan.delete_by),
                                                   ChinaCalendar())
        assert plan.delete_by == termination.deletion_day(end)

    def test_the_profile_may_delete_sooner(self, tmp_path: Path) -> None:
        """
        [termination] delete_days shortens the deletion deadline; more than 30 is refused.
        """
        with Obligations.from_file(make_config(tmp_path / "a", extra="\n[termination]\ndelete_days = 5\n")) as hub:
            plan = state(hub, FakeClock(beijing(TODAY))).plan_termination(date(2026, 12, 21), by="ops")
            assert date(2026, 12, 25) == plan.delete_by
        with Obligations.from_file(make_config(tmp_path / "b", extra="\n[termination]\ndelete_days = 31\n")) as hub:
            with pytest.raises(ConfigurationError, match="delete_days"):
                TerminationState(hub)

    def test_planning_is_idempotent_and_one_plan_stands(self, hub: Obligations) -> None:
        """
        The same end twice records once; another end while one stands is refused.
        """
        termination = state(hub, FakeClock(beijing(TODAY)))
        first = termination.plan_termination(date(2026, 12, 21), by="ops")
        size = hub.ledger.flush()

        assert first == termination.plan_termination(date(2026, 12, 21), by="ops")
        assert size == hub.ledger.flush()
        with pytest.raises(TerminationError, match="planned already"):
            termination.plan_termination(date(2026, 12, 28), by="ops")

    def test_cancel_before_the_end_only(self, hub: Obligations) -> None:
        """
        Cancel withdraws the plan (recorded once); after the end day it is refused.
        """
        clock = FakeClock(beijing(TODAY))
        termination = state(hub, clock)
        termination.plan_termination(date(2026, 12, 21), by="ops")

        assert True is termination.cancel(by="ops")
        assert None is termination.plan
        assert False is termination.cancel(by="ops")
        termination.plan_termination(date(2026, 12, 21), by="ops")
        clock.moment = beijing(date(2026, 12, 21), 0, 1)
        with pytest.raises(TerminationError, match="cannot be cancelled after its end"):
            termination.cancel(by="ops")

    def test_records_have_the_agreed_shape(self, hub: Obligations) -> None:
        """
        A plan record is {kind: control, control: termination, action: plan, end, announced, delete_by, by, at}.
        """
        termination = state(hub, FakeClock(beijing(TODAY)))
        plan = termination.plan_termination(date(2026, 12, 21), by="ops")

        record = hub.ledger.read(plan.index)

        assert {"kind": "control", "control": "termination", "action": "plan", "end": "2026-12-21",
                "announced": "2026-11-02", "delete_by": plan.delete_by.isoformat(), "by": "ops"} == \
            {key: record[key] for key in ("kind", "control", "action", "end", "announced", "delete_by", "by")}
        assert record["at"].endswith("Z")

    def test_bad_arguments(self, hub: Obligations) -> None:
        """
        A datetime for the end or an empty operator id is an InvalidControl.
        """
        termination = state(hub, FakeClock(beijing(TODAY)))

        with pytest.raises(InvalidControl, match="end must be a date"):
            termination.plan_termination(datetime(2027, 1, 1), by="ops")  # type: ignore[arg-type]
        with pytest.raises(InvalidControl, match="operator id"):
            termination.plan_termination(date(2027, 1, 1), by=" ")

    def test_a_plan_survives_a_restart(self, tmp_path: Path) -> None:
        """
        A hub opened again on the same ledger knows the plan.
        """
        config = make_config(tmp_path)
        with Obligations.from_file(config) as hub:
            state(hub, FakeClock(beijing(TODAY))).plan_termination(date(2026, 12, 21), by="ops")
        with Obligations.from_file(config) as hub:
            assert date(2026, 12, 21) == hub.termination.plan.end  # type: ignore[union-attr]


class TestAnnouncement:
    def test_the_document_carries_the_announcement_without_changing_its_version(self) -> None:
        """
        with_termination adds the notice in both languages; document_version ignores it.
        """
        from aiobligations.controls.termination import TerminationPlan
        from aiobligations.disclosure import document_version

        plan = TerminationPlan(end=date(2026, 12, 21), announced=TODAY, delete_by=date(2027, 2, 3), by="ops",
                               at="2026-11-02T01:00:00.000Z", index=7)
        document = {"purpose": "x", "version": "v"}

        changed = with_termination(document, plan, provider={"zh": "示例", "en": "Example"}, service="Svc", url="/ai/t")

        assert "2026-12-21" in changed["termination"]["notice"]["en"]
        assert "2026年12月21日" in changed["termination"]["notice"]["zh"]
        assert document_version(changed) == document_version(document)
        assert "termination" not in with_termination(changed, None)
        assert "Example" in announcement(plan, "en", provider="Example")


class TestLedgerShredding:
    @pytest.mark.parametrize("writer", ["thread", "process"])
    def test_erase_pseudonym_shreds_a_subject_whose_id_is_unknown(self, tmp_path: Path, writer: str) -> None:
        """
        Ledger.erase_pseudonym deletes the key behind a pseudonym: the subject's sealed records no longer open.
        """
        with Obligations.from_file(make_config(tmp_path, writer=writer)) as hub:
            ledger = hub.ledger
            index = ledger.append({"kind": "interaction", "subject": "alice", "personal": {"prompt": "hi"}})
            other = ledger.append({"kind": "interaction", "subject": "bob", "personal": {"prompt": "yo"}})
            assert {"prompt": "hi"} == ledger.read(index)["personal"]

            erased = ledger.erase_pseudonym(ledger.pseudonym("alice"))

            assert "subject.erased" == ledger.read(erased)["kind"]
            assert ledger.pseudonym("alice") == ledger.read(erased)["subject"]
            assert "personal" not in ledger.read(index) and "sealed" in ledger.read(index)
            assert {"prompt": "yo"} == ledger.read(other)["personal"]
            assert [ledger.pseudonym("bob")] == ledger.subject_pseudonyms()

    def test_many_pseudonyms_are_erased_in_batches(self, hub: Obligations) -> None:
        """
        erase_pseudonyms erases every one given, in order, across chunks; one bad pseudonym erases none.
        """
        ledger = hub.ledger
        for number in range(7):
            ledger.append({"kind": "interaction", "subject": f"user-{number}", "personal": {"n": number}})
        pseudonyms = ledger.subject_pseudonyms()

        with pytest.raises(ValueError, match="not a pseudonym"):
            ledger.erase_pseudonyms([*pseudonyms[:3], "user-4"])
        assert 7 == len(ledger.subject_pseudonyms())
        indices = ledger.erase_pseudonyms(pseudonyms, chunk=3)

        assert pseudonyms == [ledger.read(index)["subject"] for index in indices]
        assert indices == sorted(indices)
        assert [] == ledger.subject_pseudonyms()

    def test_a_subject_id_cannot_name_a_pseudonym(self, hub: Obligations) -> None:
        """
        erase_subject refuses an id starting with NUL (the pseudonym marker); erase_pseudonym refuses a non-pseudonym.
        """
        with pytest.raises(ValueError, match="NUL"):
            hub.ledger.erase_subject("\x00pseudonym:" + hub.ledger.pseudonym("alice"))
        with pytest.raises(ValueError, match="not a pseudonym"):
            hub.ledger.erase_pseudonym("alice")

    def test_erase_pseudonym_on_replicas(self, make_replica: Callable[..., Any]) -> None:
        """
        On a PostgreSQL ledger, a pseudonym erased through one replica is gone for the other.
        """
        first, second = make_replica(), make_replica()
        index = first.append({"kind": "interaction", "subject": "alice", "personal": {"prompt": "hi"}})
        until(lambda: second.durable_size() > index)
        assert [first.pseudonym("alice")] == second.subject_pseudonyms()

        second.erase_pseudonym(second.subject_pseudonyms()[0])

        assert [] == first.subject_pseudonyms()
        assert "personal" not in first.read(index)


class TestScheduler:
    def test_run_waits_for_the_deletion_day_then_shreds_once(self, hub: Obligations) -> None:
        """
        Before the deletion day run does nothing; on it, every key goes and one shredded record counts them.
        """
        clock = FakeClock(beijing(TODAY))
        termination = state(hub, clock)
        plan = termination.plan_termination(date(2026, 12, 21), by="ops")
        indices = [hub.ledger.append({"kind": "interaction", "subject": who, "personal": {"p": who}})
                   for who in ("alice", "bob", "carol")]

        clock.moment = beijing(plan.end, 10)
        assert None is termination.run()
        assert 3 == len(hub.ledger.subject_pseudonyms())
        clock.moment = beijing(plan.delete_by, 0, 5)
        assert 3 == termination.run()
        size = hub.ledger.flush()
        assert 3 == termination.run()
        assert size == hub.ledger.flush()

        assert [] == hub.ledger.subject_pseudonyms()
        assert all("personal" not in hub.ledger.read(i) for i in indices)
        shredded = [hub.ledger.read(i) for i in hub.ledger.indices_of(("control",), 0, size)][-1]
        assert ("shredded", 3) == (shredded["action"], shredded["subjects"])

    def test_receipts_still_verify_after_shredding(self, hub: Obligations) -> None:
        """
        A receipt handed out before the shredding, and one made after it, both verify: the proofs do not depend on the keys.
        """
        from aiobligations.ledger.receipts import make_receipt, verify_receipt

        clock = FakeClock(beijing(TODAY))
        termination = state(hub, clock)
        plan = termination.plan_termination(date(2026, 12, 21), by="ops")
        index = hub.ledger.append({"kind": "interaction", "subject": "alice", "personal": {"prompt": "hi"}})
        before = make_receipt(hub.ledger, index)
        clock.moment = beijing(plan.delete_by, 1)

        assert 1 == termination.run()
        after = make_receipt(hub.ledger, index)

        key = hub.ledger.signer.verifier_key
        assert verify_receipt(before, key).size <= verify_receipt(after, key).size
        assert "personal" not in hub.ledger.read(index)

    def test_early_run_from_the_end_day(self, hub: Obligations) -> None:
        """
        run(early=True) shreds from the end day on, not before it.
        """
        clock = FakeClock(beijing(TODAY))
        termination = state(hub, clock)
        plan = termination.plan_termination(date(2026, 12, 21), by="ops")
        hub.ledger.append({"kind": "interaction", "subject": "alice", "personal": {"p": 1}})

        assert None is termination.run(early=True)
        clock.moment = beijing(plan.end, 0, 1)
        assert 1 == termination.run(early=True)

    def test_the_background_check_shreds_on_the_deletion_day(self, hub: Obligations) -> None:
        """
        The follower thread (as the service runs it) shreds by itself once the deletion day comes.
        """
        clock = FakeClock(beijing(TODAY))
        termination = state(hub, clock)
        plan = termination.plan_termination(date(2026, 12, 21), by="ops")
        hub.ledger.append({"kind": "interaction", "subject": "alice", "personal": {"p": 1}})
        termination.follow()

        clock.moment = beijing(plan.delete_by, 0, 1)

        assert 1 == until(lambda: termination.plan is not None and termination.plan.shredded)
        assert [] == hub.ledger.subject_pseudonyms()


class TestEndToEnd:
    def test_announce_end_shred_verify(self, tmp_path: Path) -> None:
        """
        Plan (CLI) → the announcement on the transparency page → after the end, AI routes answer 410 →
        on the deletion day `terminate run` (CLI, another process) shreds every subject → verify exits 0.
        """
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        from aiobligations.middleware import ObligationsMiddleware

        config = make_config(tmp_path, writer="process")
        site = config.parent
        at = beijing(TODAY).isoformat()
        refused = run_cli("terminate", "plan", "--end", "2026-12-01", "--by", "ops", "--at", at,
                          "--config", str(config), cwd=site)
        assert 2 == refused.returncode and "fewer than 30 working days" in refused.stderr
        planned = run_cli("terminate", "plan", "--end", "2026-12-21", "--by", "ops", "--at", at, "--json",
                          "--config", str(config), cwd=site)
        assert 0 == planned.returncode, planned.stderr
        delete_by = date.fromisoformat(json.loads(planned.stdout)["plan"]["delete_by"])

        async def chat(request: Any) -> JSONResponse:
            return JSONResponse({"object": "chat.completion", "choices": [{"message": {"content": "hello"}}]})

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        users = iter(["alice", "bob", "carol"])
        with Obligations.from_file(config) as hub:
            clock = FakeClock(beijing(TODAY, 10))
            state(hub, clock)
            middleware = ObligationsMiddleware(app, obligations=hub, identity=lambda scope: next(users))
            with TestClient(middleware) as client:
                for _ in range(3):
                    assert 200 == client.post("/v1/chat/completions", json={"messages": [{"content": "hi"}]}).status_code
                page = client.get("/ai/transparency?lang=en").text
                document = client.get("/.well-known/ai-transparency").json()
                assert "Notice of the end of this service" in page and "2026-12-21" in page
                assert "2026-12-21" == document["termination"]["end"]
                assert "2026年12月21日" in client.get("/ai/transparency?lang=zh").text

                clock.moment = beijing(date(2026, 12, 21), 0, 1)
                gone = client.post("/v1/chat/completions", json={})
                assert 410 == gone.status_code
                assert "service_terminated" == gone.json()["error"]["code"]
                assert "2026-12-21" in client.get("/ai/transparency?lang=en").text  # Still announced.

                hub.ledger.flush()
                interactions = hub.ledger.indices_of(("interaction",), 0, hub.ledger.durable_size())
                assert 3 == len(interactions) and all("personal" in hub.ledger.read(i) for i in interactions)
                assert 3 == len(hub.ledger.subject_pseudonyms())

                early = run_cli("terminate", "run", "--at", beijing(delete_by - timedelta(days=1), 23).isoformat(),
                                "--config", str(config), cwd=site)
                assert 0 == early.returncode and "Nothing to do" in early.stdout
                done = run_cli("terminate", "run", "--at", beijing(delete_by, 0, 1).isoformat(),
                               "--config", str(config), cwd=site)
                assert 0 == done.returncode, done.stderr
                assert done.stdout.startswith("3 subjects shredded")
                again = run_cli("terminate", "run", "--at", beijing(delete_by, 1).isoformat(), "--json",
                                "--config", str(config), cwd=site)
                assert 3 == json.loads(again.stdout)["shredded"]

                assert [] == hub.ledger.subject_pseudonyms()
                assert all("personal" not in hub.ledger.read(i) and "sealed" in hub.ledger.read(i)
                           for i in interactions)
                hub.termination.refresh()
                assert "personal information has been deleted" in client.get("/ai/transparency?lang=en").text
        verified = run_cli("verify", str(site / "ledger.db"), "--config", str(config), cwd=site)
        assert 0 == verified.returncode, verified.stdout + verified.stderr
        status = run_cli("terminate", "status", "--json", "--config", str(config), cwd=site)
        assert 3 == json.loads(status.stdout)["plan"]["shredded"]


class TestAnotherProcess:
    def test_a_plan_from_the_cli_reaches_a_running_service(self, tmp_path: Path) -> None:
        """
        A plan recorded by another process (the CLI) is followed by the service's process within moments, and a cancel too.
        """
        config = make_config(tmp_path, writer="process")
        with Obligations.from_file(config) as hub:
            termination = hub.termination
            termination.follow()
            at = datetime.now(UTC).isoformat()
            end = termination.earliest_end()
            planned = run_cli("terminate", "plan", "--end", end.isoformat(), "--by", "ops", "--at", at,
                              "--config", str(config), cwd=config.parent)
            assert 0 == planned.returncode, planned.stderr

            assert end == until(lambda: termination.plan and termination.plan.end)

            cancelled = run_cli("terminate", "cancel", "--by", "ops", "--config", str(config), cwd=config.parent)
            assert 0 == cancelled.returncode, cancelled.stderr
            until(lambda: termination.plan is None)

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["plan", "--end", "soon", "--by", "ops"], "--end must be a date"),
            (["plan", "--end", "2026-12-21", "--by", "ops", "--at", "yesterday"], "--at must be"),
            (["plan", "--end", "2026-12-21", "--by", "ops", "--at", "2026-11-02T09:00"], "offset"),
        ],
    )
    def test_unusable_input_is_one_line_and_exit_2(self, tmp_path: Path, args: list[str], message: str) -> None:
        """
        A bad date or time: one line on stderr, exit status 2.
        """
        config = make_config(tmp_path)

        done = run_cli("terminate", *args, "--config", str(config), cwd=config.parent)

        assert 2 == done.returncode
        assert message in done.stderr and 1 == len(done.stderr.strip().splitlines())


def test_a_plan_into_an_uncovered_year_warns(hub: Obligations) -> None:
    """
    A plan whose deletion day falls in a year the calendar does not cover logs termination_calendar_uncovered.
    """
    from structlog.testing import capture_logs

    termination = state(hub, FakeClock(beijing(date(2026, 12, 1))))
    with capture_logs() as logs:
        plan = termination.plan_termination(termination.earliest_end(), by="ops")

    assert 2027 == plan.delete_by.year
    assert [[2027]] == [entry["years"] for entry in logs if entry["event"] == "termination_calendar_uncovered"]


class TestOperatorEndpoint:
    TOKEN = "op-7-token-0123456789abcdef"

    @pytest.fixture
    def client(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FakeClock]]:
        from starlette.applications import Starlette
        from starlette.testclient import TestClient

        from aiobligations.middleware import ObligationsMiddleware

        monkeypatch.setenv("AIOBLIGATIONS_OPERATOR_TOKENS", f"op-7:{self.TOKEN}")
        clock = FakeClock(beijing(TODAY))
        with Obligations.from_file(make_config(tmp_path)) as hub:
            state(hub, clock)
            with TestClient(ObligationsMiddleware(Starlette(), obligations=hub)) as client:
                yield client, clock

    def test_steps_need_an_operator_token(self, client: tuple[Any, FakeClock]) -> None:
        """
        Without a token 401, with a wrong one 403; nothing is planned.
        """
        http, _ = client

        assert 401 == http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-21"}).status_code
        assert 403 == http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-21"},
                                headers={"authorization": "Bearer wrong-token-0123456789"}).status_code
        assert None is http.get("/ai/operator/termination",
                                headers={"authorization": f"Bearer {self.TOKEN}"}).json()["plan"]

    def test_plan_cancel_and_refusals(self, client: tuple[Any, FakeClock]) -> None:
        """
        An operator plans (idempotently), is refused a second end (409) or a bad body (422), and cancels.
        """
        http, _ = client
        auth = {"authorization": f"Bearer {self.TOKEN}"}

        planned = http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-21"}, headers=auth)
        again = http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-21"}, headers=auth)
        other = http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-28"}, headers=auth)
        soon = http.post("/ai/operator/termination", json={"action": "cancel"}, headers=auth)
        early = http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-11-20"}, headers=auth)

        assert (200, "2026-12-21", "op-7") == (planned.status_code, planned.json()["plan"]["end"],
                                              planned.json()["plan"]["by"])
        assert planned.json()["plan"] == again.json()["plan"]
        assert 409 == other.status_code
        assert (200, True) == (soon.status_code, soon.json()["changed"])
        assert 409 == early.status_code and "earliest end" in early.json()["error"]["message"]
        for body in ({"action": "plan"}, {"action": "plan", "end": "soon"}, {"action": ["plan"]},
                     {"action": "cancel", "end": "2026-12-21"}, {"action": "run", "early": "yes"}):
            assert 422 == http.post("/ai/operator/termination", json=body, headers=auth).status_code, body

    def test_run_shreds_through_the_endpoint(self, client: tuple[Any, FakeClock]) -> None:
        """
        After the end, POST run with early shreds and says how many.
        """
        http, clock = client
        auth = {"authorization": f"Bearer {self.TOKEN}"}
        http.post("/ai/operator/termination", json={"action": "plan", "end": "2026-12-21"}, headers=auth)

        assert None is http.post("/ai/operator/termination", json={"action": "run", "early": True},
                                 headers=auth).json()["shredded"]
        clock.moment = beijing(date(2026, 12, 21), 8)
        done = http.post("/ai/operator/termination", json={"action": "run", "early": True}, headers=auth).json()
        assert (0, True) == (done["shredded"], done["ended"])
