"""The audit report: verified first, figures right, the same bytes twice, refused on a tampered ledger."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from aiobligations import Obligations
from aiobligations.cli import main
from aiobligations.demo import build_app
from aiobligations.errors import LedgerBroken
from aiobligations.keys import init_project
from aiobligations.ledger.records import format_ts
from aiobligations.middleware import ObligationsMiddleware
from aiobligations.report import Report, build_report
from aiobligations.report.collect import month_of
from aiobligations.requests import RequestDesk

KEYS = {"alice": "Bearer key-of-alice-0123456789", "bob": "Bearer key-of-bob-0123456789"}
NOW = datetime.now(UTC)


def subject_of(name: str) -> str:
    """The subject the middleware names for a request with this person's API key."""
    return "apikey:" + hashlib.sha256(KEYS[name].encode()).hexdigest()[:32]


def png(size: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (120, 160, 200)).save(out, "PNG")
    return out.getvalue()


@dataclass
class Evidence:
    config: Path
    middle: float
    """A Unix time between the interactions and the requests."""
    pruned: int
    live_report: Report
    chats: list[str]


def _site(folder: Path) -> Path:
    config = init_project(folder)
    text = config.read_text().replace('writer = "process"', 'writer = "thread"')
    config.write_text(text.replace("deadline_days = 15", "deadline_days = 10"))
    return config


def incident(step: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "incident", "incident_id": "INC-2026-001", "step": step, "by": "ops-lead",
            "at": format_ts(time.time()), **fields}


@pytest.fixture(scope="module", name="evidence")
def fixture_evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    """A ledger with a realistic mix: pruned logs, chats through the middleware (with an error),
    labelled images, requests on a fake clock, an incident, takeovers, a termination plan, an erasure."""
    config = _site(tmp_path_factory.mktemp("report") / "site")
    hub = Obligations.from_file(config)
    try:
        for n in range(3):  # Pruned later: the report must still verify and say so.
            hub.ledger.append({"kind": "log", "level": "info", "logger": "boot", "n": n})
        app = ObligationsMiddleware(build_app(stream_delay=0), obligations=hub)
        chats = []
        with TestClient(app) as client:
            for name in ("alice", "alice", "bob"):
                response = client.post("/v1/chat/completions", headers={"Authorization": KEYS[name]},
                                       json={"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]})
                assert 200 == response.status_code
                chats.append(response.headers["AI-Interaction-Id"])
            assert 400 == client.post("/v1/chat/completions", content=b"{not json",
                                      headers={"Authorization": KEYS["bob"]}).status_code
        hub.label_with_evidence(png(512), "image/png", explicit=True, watermark=True)
        hub.label_with_evidence(png(48), "image/png", explicit=True, watermark=True)
        hub.ledger.flush()
        time.sleep(0.002)  # Two distinct sequencing times on either side of the mark (not synchronisation).
        middle = time.time()
        time.sleep(0.002)
        clock = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
        desk = RequestDesk(hub, clock=lambda: clock[0], deadline_days=10)
        first = desk.ask(chats[0], subject_of("alice"), "Why this answer? alice@example.com")
        second = desk.ask(chats[1], subject_of("alice"), "And this one?")
        desk.start_review(first.id, by="op")
        clock[0] = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
        desk.answer(first.id, "Because.", by="op")  # On time.
        desk.complain(first.id, subject_of("alice"), "Not enough.")
        clock[0] = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
        desk.resolve(first.id, "Explained again.", by="op")  # The appeal, on time.
        desk.start_review(second.id, by="op")
        clock[0] = datetime(2026, 5, 20, 9, 0, tzinfo=UTC)
        desk.reject(second.id, "Out of scope.", by="op")  # Late.
        clock[0] = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
        desk.ask(chats[2], subject_of("bob"), "Explain?")  # Never answered: late by now.
        general = desk.complaint(subject_of("bob"), "general", "Rude answer.")
        desk.complaint(subject_of("bob"), "ip", "My poem.", work="Poem", right_holder="Bob B.", output_ref=chats[2])
        clock[0] = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
        desk.resolve_complaint(general.id, "Apologised.", by="op")  # On time; the IP one stays open: late.
        clock[0] = NOW
        desk.ask(chats[0], subject_of("alice"), "Pending?")  # Within its deadline at the report's time.
        hub.ledger.append(incident("open", title="Model served stale answers", scope="chat users, 2 hours",
                                   measures="rolled back", user_actions="none needed", contact="sec@example.com",
                                   course="a bad deployment", severity="medium", suspend=True))
        hub.ledger.append(incident("update", measures="rolled back; tests added"))
        hub.ledger.append(incident("close", resolution="fixed in release 1.2"))
        for state in ("on", "off"):
            hub.ledger.append({"kind": "control", "control": "takeover", "state": state, "route": None,
                               "reason": "incident INC-2026-001", "fallback": "/human", "by": "ops-lead",
                               "at": format_ts(time.time())})
        hub.ledger.append({"kind": "control", "control": "termination", "action": "plan", "end": "2027-06-30",
                           "announced": "2027-05-01", "delete_by": "2027-08-12", "by": "ops-lead",
                           "at": format_ts(time.time())})
        desk.erase_subject(subject_of("bob"))
        hub.ledger.flush()
        hub.ledger.sign_checkpoint()
        pruned = hub.ledger.prune(3, now=time.time() + 400 * 86_400)
        live = build_report(hub)  # Beside the running service, through the hub.
    finally:
        hub.close()
    return Evidence(config, middle, pruned, live, chats)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def test_it_names_the_verified_checkpoint(evidence: Evidence) -> None:
    """The report names the origin, size, root and key, and reads from the first record kept."""
    report = build_report(evidence.config)
    checkpoint = report.checkpoint
    assert 3 == evidence.pruned == checkpoint.first_index == report.retention.pruned_before
    assert checkpoint.note.startswith(f"{checkpoint.origin}\n{checkpoint.size}\n{checkpoint.root}\n")
    page = report.html()
    for text in (checkpoint.origin, checkpoint.root, checkpoint.key, f"[3, {checkpoint.size})"):
        assert text in page
    assert report.records == checkpoint.size - 3
    assert "log" not in report.kinds  # All three were pruned.


def test_disclosure_by_route(evidence: Evidence) -> None:
    """Three chats disclosed; the 400 is an error, not disclosed, counted apart."""
    figures = build_report(evidence.config).disclosure
    (route,) = figures.routes
    assert ("/v1/chat/completions", 4, 3, 3, 1) == (route.route, route.interactions, route.answered, route.disclosed,
                                                    route.errors)
    assert 1.0 == route.share
    assert 2 == route.first_contact  # alice's first chat and bob's.


def test_labels_by_format_and_kind(evidence: Evidence) -> None:
    """Two PNGs: every label on the large one; on the small one the caption and watermark are skipped, with why."""
    figures = build_report(evidence.config).labels
    assert 2 == figures.files
    rows = {(row.format, row.label): (row.applied, row.skipped, row.absent) for row in figures.rows}
    assert (2, 0, 0) == rows[("image/png", "implicit")]
    assert (2, 0, 0) == rows[("image/png", "c2pa")]
    assert (1, 1, 0) == rows[("image/png", "explicit")]
    assert (1, 1, 0) == rows[("image/png", "watermark")]
    reasons = {(part, count) for _, part, _, count in figures.skips}
    assert {("explicit", 1), ("watermark", 1)} == reasons
    assert all("small" in reason for _, _, reason, _ in figures.skips)


def test_requests_on_time_per_month(evidence: Evidence) -> None:
    """Per month against the stored deadlines, the same ratio as the desk's own function."""
    figures = build_report(evidence.config).requests
    months = {row.month: row for row in figures.months}
    march, april, now = months["2026-03"], months["2026-04"], months[month_of(NOW)]
    assert (2, 1, 1, 0) == (march.explanations.received, march.explanations.on_time, march.explanations.late,
                            march.explanations.pending)
    assert (1, 0, 1, 0) == (april.explanations.received, april.explanations.on_time, april.explanations.late,
                            april.explanations.pending)
    assert (1, 0, 0, 1) == (now.explanations.received, now.explanations.on_time, now.explanations.late,
                            now.explanations.pending)
    assert (2, 1, 1, 0) == (april.complaints.received, april.complaints.on_time, april.complaints.late,
                            april.complaints.pending)
    assert (1, 1) == (march.appeals.received, march.appeals.on_time)
    assert pytest.approx(1 / 3) == figures.explanations.ratio == figures.desk_ratio
    assert {"general": 1, "ip": 1} == figures.categories
    assert 10 == figures.deadline_days
    assert {10: 4} == figures.recorded_deadlines


def test_incidents_controls_erasures(evidence: Evidence) -> None:
    """The incident folds its update into its notice; takeovers and the plan are listed; one erasure."""
    report = build_report(evidence.config)
    (found,) = report.incidents
    assert "INC-2026-001" == found.incident_id
    assert "rolled back; tests added" == found.notice["measures"]
    assert (1, True, "fixed in release 1.2", []) == (found.updates, found.suspend, found.resolution, found.missing)
    assert found.closed is not None
    assert ["on", "off"] == [event.action for event in report.takeovers]
    assert "all AI routes" == report.takeovers[0].details["route"]
    assert [("plan", "2027-08-12")] == [(e.action, e.details["delete_by"]) for e in report.terminations]
    assert 1 == report.erasures.total
    assert {month_of(NOW): 1} == report.erasures.months


def test_retention_rows(evidence: Evidence) -> None:
    """Configured periods beside their floors; the risk floor is two years."""
    rows = {row.kind: row for row in build_report(evidence.config).retention.rows}
    assert (186.0, 183.0) == (rows["interaction"].period_days, rows["interaction"].floor_days)  # "6m": 6 x 31 days.
    assert 4 == rows["interaction"].records
    assert 732.0 == rows["risk"].floor_days
    assert 0 == rows["interaction"].past_period


def test_no_personal_data_in_the_page(evidence: Evidence) -> None:
    """Questions, texts, subjects and pseudonyms stay out of the report."""
    page = build_report(evidence.config).html()
    for secret in ("alice@example.com", "Why this answer", "Rude answer", "Bob B.", "My poem", "key-of-alice",
                   subject_of("alice"), "Because.", "ops-lead"):
        assert secret not in page
    assert not re.search(r'"subject"|pseudonym:', page)


def test_cli_twice_is_byte_identical(evidence: Evidence, tmp_path: Path) -> None:
    """Two runs over the same checkpoint write the same bytes, equal to the hub's live report."""
    first, second = tmp_path / "a.html", tmp_path / "b.html"
    for out in (first, second):
        result = run("--config", str(evidence.config), "--out", str(out))
        assert 0 == result.exit_code, result.output
    assert first.read_bytes() == second.read_bytes()
    assert evidence.live_report.html().encode() == first.read_bytes()
    assert "size" in result.output and evidence.live_report.checkpoint.root in result.output


def test_window(evidence: Evidence) -> None:
    """--to before the requests keeps only the chats and labels; --from after them only the rest."""
    before = build_report(evidence.config, end=evidence.middle)
    assert 4 == before.disclosure.total.interactions
    assert 0 == before.requests.explanations.received
    assert before.as_of == format_ts(evidence.middle)
    after = build_report(evidence.config, start=datetime.fromtimestamp(evidence.middle, UTC))
    assert 0 == after.disclosure.total.interactions and 0 == after.labels.files
    assert 4 == after.requests.explanations.received
    assert before.checkpoint == after.checkpoint
    result = run("--config", str(evidence.config), "--out", "/dev/null", "--from", "2026-12-31", "--to", "2026-01-01")
    assert 2 == result.exit_code and "--to is before --from" in result.output


def tampered_copy(evidence: Evidence, folder: Path) -> Path:
    """A copy of the site whose database has one record's bytes changed, as an attacker with SQL would."""
    site = folder / "site"
    shutil.copytree(evidence.config.parent, site)
    db = site / "ledger.db"
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM records WHERE idx = 10").fetchone()
        conn.execute("UPDATE records SET data = ? WHERE idx = 10", (bytes(data).replace(b'"kind"', b'"kind" ', 1),))
    return site / evidence.config.name


def test_tampered_ledger_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    """A changed row: exit 1 naming the break, and no report written."""
    config = tampered_copy(evidence, tmp_path)
    out = tmp_path / "report.html"
    result = run("--config", str(config), "--out", str(out))
    assert 1 == result.exit_code
    assert "report refused: the ledger does not verify (first bad index 10" in result.output
    assert 1 == len(result.output.strip().splitlines())
    assert not out.exists()
    with pytest.raises(LedgerBroken):
        build_report(config)


def test_a_foreign_key_is_refused(evidence: Evidence, tmp_path: Path) -> None:
    """A pinned key that did not sign the checkpoint is a break: exit 1."""
    from aiobligations.ledger.note import Signer

    other = Signer.generate(build_report(evidence.config).checkpoint.origin).verifier_key
    result = run("--config", str(evidence.config), "--out", str(tmp_path / "r.html"), "--key", other)
    assert 1 == result.exit_code, result.output
    assert "report refused" in result.output


def test_unusable_input_is_exit_2(tmp_path: Path) -> None:
    """No profile, no ledger yet, a bad time: one line, exit 2."""
    result = run("--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "r.html"))
    assert 2 == result.exit_code and "no such file" in result.output
    config = _site(tmp_path / "empty")
    result = run("--config", str(config), "--out", str(tmp_path / "r.html"))
    assert 2 == result.exit_code and "no ledger there yet" in result.output
    result = run("--config", str(config), "--out", str(tmp_path / "r.html"), "--from", "yesterday")
    assert 2 == result.exit_code and "RFC 3339" in result.output


def test_new_records_make_a_new_checkpoint_and_a_new_report(tmp_path: Path) -> None:
    """The report follows the latest checkpoint; given an earlier note, it recomputes that one's page exactly."""
    config = _site(tmp_path / "site")
    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "risk", "summary": "prompt injection seen"})
        first = build_report(hub)
        hub.ledger.append({"kind": "risk", "summary": "again"})
        second = build_report(hub)
        again = build_report(hub, checkpoint=first.checkpoint.note)
    assert (1, 2) == (first.checkpoint.size, second.checkpoint.size)
    assert first.html() != second.html()
    assert {"risk": 2} == second.kinds
    assert again.html() == first.html()  # Recomputed over the earlier checkpoint: the same bytes.
    note = tmp_path / "checkpoint.txt"
    note.write_text(first.checkpoint.note)
    out = tmp_path / "again.html"
    assert 0 == run("--config", str(config), "--out", str(out), "--checkpoint", str(note)).exit_code
    assert out.read_bytes() == first.html().encode()
    note.write_text("not a note")
    result = run("--config", str(config), "--out", str(out), "--checkpoint", str(note))
    assert 2 == result.exit_code and "not a signed checkpoint note" in result.output


def test_postgres_ledger(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    """On a PostgreSQL ledger ([ledger] url) the report verifies and reads the same way."""
    config = _site(tmp_path / "site")
    config.write_text(config.read_text().replace("[ledger]", f'[ledger]\nurl = "{pg_url}"\nschema = "{pg_schema}"', 1))
    with Obligations.from_file(config) as hub:
        hub.ledger.append(incident("open", title="t", scope="s", measures="m", user_actions="u", contact="c",
                                   suspend=False))
        hub.ledger.append({"kind": "control", "control": "takeover", "state": "on", "route": "/v1/*",
                           "reason": "drill", "by": "op", "at": format_ts(time.time())})
        deadline = time.monotonic() + 60
        while True:  # The elected sequencer signs shortly after the batch: poll with a deadline.
            report = build_report(hub)
            if report.checkpoint.size == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert 2 == report.checkpoint.size
    assert ["INC-2026-001"] == [i.incident_id for i in report.incidents]
    assert "/v1/*" == report.takeovers[0].details["route"]
    result = run("--config", str(config), "--out", str(tmp_path / "r.html"))
    assert 0 == result.exit_code, result.output
    assert (tmp_path / "r.html").read_bytes() == report.html().encode()



def test_past_their_period_counts_a_prefix() -> None:
    """Records older than their kind's period at the report's time are counted, per kind."""
    from aiobligations.ledger.retention import FLOORS
    from aiobligations.report.collect import Collector

    collector = Collector(start=None, end=None)
    day = 86_400.0
    for index, (kind, age) in enumerate([("log", 200), ("log", 190), ("log", 10), ("risk", 200)]):
        collector.feed(index, {"ts": format_ts(1_800_000_000 - age * day), "kind": kind})
    rows = {row.kind: row for row in collector.retention(dict(FLOORS), FLOORS, 1_800_000_000)}
    assert (3, 2) == (rows["log"].records, rows["log"].past_period)  # Floor 183 days: 200 and 190 are past.
    assert (1, 0) == (rows["risk"].records, rows["risk"].past_period)  # Floor two years.


def test_cli_beside_a_running_service(tmp_path: Path) -> None:
    """With the service's writer process running, the CLI reads read-only; the service keeps appending."""
    config = init_project(tmp_path / "site")  # The default writer: a process beside the service.
    out = tmp_path / "live.html"
    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "risk", "summary": "first"})
        result = run("--config", str(config), "--out", str(out))
        assert 0 == result.exit_code, result.output
        assert 2 == hub.ledger.append({"kind": "risk", "summary": "after the report"}) + 1
    assert "tree size</dt><dd>1<" in out.read_text()
    assert 2 == build_report(config).checkpoint.size


def test_partial_records_still_render(tmp_path: Path) -> None:
    """An incident seen only from its update and a control of an unknown kind render without guessing."""
    config = _site(tmp_path / "site")
    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "incident", "incident_id": "INC-X", "step": "update", "measures": "patched"})
        hub.ledger.append({"kind": "control", "control": "filing", "action": "status"})
        report = build_report(hub)
    page = report.html()
    assert "INC-X: (no title)" in page and "(no open step in the window)" in page
    assert ["course", "scope", "user_actions", "contact"] == report.incidents[0].missing
    assert "Other control records: 1." in page
    assert [] == report.takeovers == report.terminations


def test_recorded_text_is_escaped(tmp_path: Path) -> None:
    """A hostile path or reason in a record is text in the page and in its SVG, never markup."""
    config = _site(tmp_path / "site")
    hostile = '/v1/<script>alert("x")</script>&<svg onload=alert(1)>'
    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "interaction", "interaction_id": "i-1", "route": hostile, "status": 200,
                           "outcome": "completed", "disclosure": {"header": True, "body": "none", "notice": "short"}})
        hub.ledger.append({"kind": "control", "control": "takeover", "state": "on", "route": None,
                           "reason": "</td><img src=x onerror=alert(2)>", "by": "op", "at": "2026-01-01T00:00:00Z"})
        page = build_report(hub).html()
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_records_changed_after_verification_are_refused(evidence: Evidence) -> None:
    """The pass that counts re-hashes what it reads: bytes that do not give the verified root stop it."""
    from aiobligations.ledger.store import SQLiteStore
    from aiobligations.report.build import _read
    from aiobligations.report.collect import Collector

    store = SQLiteStore(evidence.config.parent / "ledger.db", create=False, readonly=True)
    try:
        state = store.open()
        with pytest.raises(LedgerBroken, match="changed after verification"):
            _read(store, state.pruned_start, state.pruned_frontier, state.size, b"\x00" * 32,
                  Collector(start=None, end=None))
    finally:
        store.close()


def test_cli_window(evidence: Evidence, tmp_path: Path) -> None:
    """--from and --to on the command line select as the function does."""
    out = tmp_path / "window.html"
    mark = format_ts(evidence.middle)
    result = run("--config", str(evidence.config), "--out", str(out), "--to", mark)
    assert 0 == result.exit_code, result.output
    assert out.read_bytes() == build_report(evidence.config, end=evidence.middle).html().encode()
    assert f"from the first record – {mark}" in out.read_text()


def test_decorated_functions_count_as_their_own_route(tmp_path: Path) -> None:
    """Calls of an @obligations.inference function are one row, 'call NAME', disclosed to the caller."""
    config = _site(tmp_path / "site")
    with Obligations.from_file(config) as hub:

        @hub.inference(name="classify")
        def classify(text: str) -> str:
            return "ok"

        for _ in range(2):
            assert "ok" == classify("x")
        report = build_report(hub)
    (row,) = report.disclosure.routes
    assert ("call classify", 2, 2, 2, 0) == (row.route, row.interactions, row.answered, row.disclosed, row.errors)
