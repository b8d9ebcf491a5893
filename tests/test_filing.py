"""Filing status (Art. 47): thresholds, authority, the due date in working days, the filing's fields."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from aiobligations.controls.errors import InvalidControl
from aiobligations.controls.filing import FILING_DAYS, FilingStatus, filing_status
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project
from aiobligations.profile import Profile, load_profile
from aiobligations.requests import WeekdayCalendar

FILING_TABLE = """
[filing]
form = "API and website"
domain = "customer service"
algorithm_type = "generative language model"
self_assessment_report = "docs/self-assessment.pdf"
public_content = "Example Assistant answers customers' questions."
"""


def make_profile(tmp_path: Path, extra: str = "", *, service: str = "") -> Path:
    config = init_project(tmp_path / "site")
    text = config.read_text().replace('writer = "process"', 'writer = "thread"')
    if service:
        text = text.replace('filing_number = ""\n', "").replace('licence_number = ""\n', "")
        text = text.replace("[service]\n", f"[service]\n{service}\n", 1)
    config.write_text(text + extra)
    return config


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    return load_profile(make_profile(tmp_path))


class TestThresholds:
    @pytest.mark.parametrize(
        ("users", "authority"),
        [
            (0, None),
            (10_000, None),  # "超过1万": 10,000 itself is not more than 10,000.
            (10_001, "provincial"),
            (999_999, "provincial"),
            (1_000_000, "provincial"),  # In neither range; treated as provincial, with a note.
            (1_000_001, "national"),
            (50_000_000, "national"),
        ],
    )
    def test_the_authority_follows_article_47(self, profile: Profile, users: int, authority: str | None) -> None:
        """
        More than 1,000,000: national; more than 10,000: provincial; otherwise no filing.
        """
        status = filing_status(profile, users, crossed_on=date(2026, 9, 1), today=date(2026, 9, 1))

        assert authority == status.authority
        assert (authority is not None) == status.due
        assert {"national": "国家人工智能主管机关", "provincial": "省级人工智能主管机关", None: ""}[authority] == \
            status.authority_zh

    def test_exactly_one_million_says_the_article_leaves_it_open(self, profile: Profile) -> None:
        """
        At exactly 1,000,000 a note names the gap between the article's two ranges.
        """
        status = filing_status(profile, 1_000_000, today=date(2026, 9, 1))

        assert any("neither" in note for note in status.notes)

    def test_bad_counts_and_days_are_refused(self, profile: Profile) -> None:
        """
        A negative, fractional or boolean count, or a datetime for a day, is an InvalidControl.
        """
        for bad in (-1, 1.5, True, "12000"):
            with pytest.raises(InvalidControl, match="registered_users"):
                filing_status(profile, bad)  # type: ignore[arg-type]
        from datetime import datetime

        with pytest.raises(InvalidControl, match="crossed_on"):
            filing_status(profile, 20_000, crossed_on=datetime(2026, 1, 1))  # type: ignore[arg-type]


class TestDueDate:
    def test_ten_working_days_after_the_day_the_threshold_was_passed(self, profile: Profile) -> None:
        """
        Passed on Tuesday 2026-09-01: 10 working days on mainland China's calendar end on Tuesday 2026-09-15.
        """
        status = filing_status(profile, 20_000, crossed_on=date(2026, 9, 1), today=date(2026, 9, 2))

        assert date(2026, 9, 15) == status.due_by
        assert not status.overdue
        assert not status.crossed_on_assumed

    def test_holidays_push_the_date_out(self, profile: Profile) -> None:
        """
        Passed on 2026-09-28: the National Day break (1-7 October) does not count; 10 October (a Saturday) does.
        """
        status = filing_status(profile, 2_000_000, crossed_on=date(2026, 9, 28), today=date(2026, 9, 28))

        # 29, 30 Sep; 8, 9, 10 (Saturday, a working day), 12, 13, 14, 15, 16 Oct.
        assert date(2026, 10, 16) == status.due_by
        weekdays = filing_status(profile, 2_000_000, crossed_on=date(2026, 9, 28), today=date(2026, 9, 28),
                                 calendar=WeekdayCalendar())
        assert date(2026, 10, 12) == weekdays.due_by

    def test_without_crossed_on_today_is_assumed_and_said(self, profile: Profile) -> None:
        """
        Without the day of crossing, today is used, the status says it was assumed, and the summary tells how to pass it.
        """
        status = filing_status(profile, 20_000, today=date(2026, 9, 1))

        assert (date(2026, 9, 1), True) == (status.crossed_on, status.crossed_on_assumed)
        assert "--crossed-on" in status.summary()

    def test_overdue_until_a_filing_number_is_set(self, tmp_path: Path) -> None:
        """
        Past the date with no filing number the status is overdue; with one, it is not.
        """
        late = filing_status(load_profile(make_profile(tmp_path / "a")), 20_000, crossed_on=date(2026, 9, 1),
                             today=date(2026, 10, 30))
        filed = filing_status(load_profile(make_profile(tmp_path / "b", service='filing_number = "京ICP-AI-0001"')),
                              20_000, crossed_on=date(2026, 9, 1), today=date(2026, 10, 30))

        assert late.overdue and "OVERDUE" in late.summary()
        assert not filed.overdue
        assert "京ICP-AI-0001" == filed.filing_number
        assert any("change" in note for note in filed.notes)

    def test_the_profile_calendar_is_used(self, tmp_path: Path) -> None:
        """
        A day off from the profile's holiday file moves the due date.
        """
        config = make_profile(tmp_path)
        (config.parent / "company.ics").write_bytes(
            b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:\xe4\xbc\x91\r\n"  # 休
            b"DTSTART;VALUE=DATE:20260915\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
        config.write_text(config.read_text().replace("[requests]\n", '[requests]\ncalendar = "company.ics"\n', 1))

        status = filing_status(load_profile(config), 20_000, crossed_on=date(2026, 9, 1), today=date(2026, 9, 1))

        assert date(2026, 9, 16) == status.due_by


class TestFields:
    def test_a_fresh_profile_names_what_is_missing(self, profile: Profile) -> None:
        """
        The article's items without a profile value are listed as missing, by setting.
        """
        status = filing_status(profile, 20_000, today=date(2026, 9, 1))

        assert ["[filing] form", "[filing] domain", "[filing] algorithm_type", "[filing] self_assessment_report",
                "[filing] public_content"] == status.missing
        assert {"provider_name", "provider_contact", "service_name"} == {f.name for f in status.fields if f.present}

    def test_a_complete_filing_table_leaves_nothing_missing(self, tmp_path: Path) -> None:
        """
        With [filing] filled in and the self-assessment report on disk, nothing is missing; a named but absent report is.
        """
        config = make_profile(tmp_path, FILING_TABLE)
        status = filing_status(load_profile(config), 20_000, today=date(2026, 9, 1))
        assert ["[filing] self_assessment_report"] == status.missing

        (config.parent / "docs").mkdir()
        (config.parent / "docs" / "self-assessment.pdf").write_bytes(b"%PDF-1.7\n")
        status = filing_status(load_profile(config), 20_000, today=date(2026, 9, 1))
        assert [] == status.missing

    def test_the_filing_section_is_not_warned_about(self, tmp_path: Path) -> None:
        """
        [filing] is a known section: loading it logs no unknown-key warning.
        """
        from structlog.testing import capture_logs

        with capture_logs() as logs:
            load_profile(make_profile(tmp_path, FILING_TABLE))
        assert [] == [entry for entry in logs if entry["event"] == "profile.unknown_keys"]

    def test_as_dict_is_json(self, profile: Profile) -> None:
        """
        as_dict gives JSON-ready data with dates as text and the missing settings.
        """
        data = json.loads(json.dumps(filing_status(profile, 20_000, crossed_on=date(2026, 9, 1),
                                                   today=date(2026, 9, 1)).as_dict()))

        assert ("provincial", "2026-09-01", "2026-09-15") == (data["authority"], data["crossed_on"], data["due_by"])
        assert "[filing] form" in data["missing"]
        assert isinstance(FilingStatus, type)


class TestNumbers:
    def test_numbers_under_provider_are_read(self, tmp_path: Path) -> None:
        """
        [provider] filing_number and licence_number are the same settings as under [service].
        """
        config = make_profile(tmp_path)
        text = config.read_text().replace('filing_number = ""\n', "").replace('licence_number = ""\n', "")
        config.write_text(text.replace("[provider]\n", '[provider]\nfiling_number = "F-1"\nlicence_number = "L-2"\n', 1))

        service = load_profile(config).service

        assert ("F-1", "L-2") == (service.filing_number, service.licence_number)

    def test_two_different_numbers_are_refused(self, tmp_path: Path) -> None:
        """
        The same number set differently in both tables is a configuration error naming it.
        """
        config = make_profile(tmp_path, service='filing_number = "F-1"')
        config.write_text(config.read_text().replace("[provider]\n", '[provider]\nfiling_number = "F-2"\n', 1))

        with pytest.raises(ConfigurationError, match="filing_number .* differ"):
            load_profile(config)

    def test_the_numbers_reach_the_header_the_document_and_the_page(self, tmp_path: Path) -> None:
        """
        Once set, AI-Disclosure carries filing="…" and licence="…", and the transparency document and page show both.
        """
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        from aiobligations import Obligations
        from aiobligations.middleware import ObligationsMiddleware

        config = make_profile(tmp_path)
        config.write_text(config.read_text().replace("[provider]\n", '[provider]\nfiling_number = "Beijing-AI-0042"\n'
                                                     'licence_number = "LIC-7"\n', 1))

        async def chat(request: object) -> JSONResponse:
            return JSONResponse({"object": "chat.completion", "choices": []})

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        with Obligations.from_file(config) as hub, TestClient(ObligationsMiddleware(app, obligations=hub)) as client:
            header = client.post("/v1/chat/completions", json={}).headers["ai-disclosure"]
            document = client.get("/.well-known/ai-transparency", headers={"accept": "application/json"}).json()
            page = client.get("/.well-known/ai-transparency", headers={"accept": "text/html"}).text

        assert 'filing="Beijing-AI-0042"' in header and 'licence="LIC-7"' in header
        assert {"filing_number": "Beijing-AI-0042", "licence_number": "LIC-7"} == document["registration"]
        assert "Beijing-AI-0042" in page and "LIC-7" in page


class TestCommand:
    def test_status_prints_a_summary(self, tmp_path: Path) -> None:
        """
        The command prints the authority, the date, and what is missing, and exits 0.
        """
        config = make_profile(tmp_path)

        done = run_cli("filing", "status", "--registered-users", "1500000", "--crossed-on", "2026-09-01",
                       "--today", "2026-09-02", "--config", str(config), cwd=tmp_path)

        assert 0 == done.returncode, done.stderr
        assert "national AI authority" in done.stdout
        assert "File by: 2026-09-15" in done.stdout
        assert "MISSING" in done.stdout and "[filing] algorithm_type" in done.stdout

    def test_status_as_json(self, tmp_path: Path) -> None:
        """
        --json prints the status as data.
        """
        config = make_profile(tmp_path)

        done = run_cli("filing", "status", "--registered-users", "5000", "--json", "--config", str(config), cwd=tmp_path)

        assert 0 == done.returncode, done.stderr
        data = json.loads(done.stdout)
        assert (False, None, None) == (data["due"], data["authority"], data["due_by"])

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--registered-users", "-5"], "registered_users must be"),
            (["--registered-users", "20000", "--crossed-on", "1 Sept"], "--crossed-on must be a date"),
            (["--registered-users", "20000", "--config", "missing.toml"], "no such file"),
        ],
    )
    def test_unusable_input_is_one_line_and_exit_2(self, tmp_path: Path, args: list[str], message: str) -> None:
        """
        A bad count, a bad date or a missing profile: one line on stderr, exit status 2.
        """
        make_profile(tmp_path)
        if "--config" not in args:
            args = [*args, "--config", str(tmp_path / "site" / "aiobligations.toml")]

        done = run_cli("filing", "status", *args, cwd=tmp_path)

        assert 2 == done.returncode
        assert message in done.stderr
        assert 1 == len(done.stderr.strip().splitlines())
        assert FILING_DAYS == 10


def test_a_due_date_in_an_uncovered_year_is_noted(profile: Profile) -> None:
    """
    Crossed in late December 2026, the date falls in 2027, which the calendar does not cover: a note says so.
    """
    status = filing_status(profile, 20_000, crossed_on=date(2026, 12, 28), today=date(2026, 12, 28))

    assert 2027 == status.due_by.year  # type: ignore[union-attr]
    assert any("does not cover" in note for note in status.notes)


def test_the_hub_answers_with_its_calendar(tmp_path: Path) -> None:
    """
    obligations.filing_status(n) is filing_status with the hub's profile and calendar.
    """
    from aiobligations import Obligations

    with Obligations.from_file(make_profile(tmp_path)) as hub:
        status = hub.filing_status(1_500_000, crossed_on=date(2026, 9, 1), today=date(2026, 9, 1))

    assert ("national", date(2026, 9, 15)) == (status.authority, status.due_by)
