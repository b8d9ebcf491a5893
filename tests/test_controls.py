"""Operator controls (issue 13): security incidents (Art. 37) and the takeover switch (Art. 52(4)).

Real components only: SQLite ledgers made by ``init_project``, the real middleware over a small raw
ASGI app, the ``aiobligations`` console script in subprocesses (one more process on the ledger).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_workers import until

from aiobligations import Obligations
from aiobligations.controls import (
    IncidentClosed,
    IncidentNotFound,
    InvalidControl,
    authority_notice,
    close_incident,
    open_incident,
    takeover_on,
    update_incident,
    user_notice,
    user_notice_html,
)
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project
from aiobligations.middleware import ObligationsMiddleware

CLI = str(Path(sys.executable).with_name("aiobligations"))
TOKEN = "ops-token-canary-5e1f0a2b9c"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
FIELDS = {
    "title": "Leaked conversation titles",
    "scope": "Users who signed in on 3 December between 10:00 and 11:00 (about 40 people)",
    "measures": "We fixed the cache bug and cleared the affected cache",
    "user_actions": "Sign out and in again; tell us if you saw someone else's titles",
    "contact": "security@example.com",
}
CHAT = "/v1/chat/completions"
CHAT_BODY = {"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]}


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every path with a JSON naming it (the AI route, the human fallback, any other page)."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    body = json.dumps({"path": scope["path"], "human": scope["path"] == "/human"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return init_project(tmp_path / "site")


@pytest.fixture
def hub(config: Path) -> Iterator[Obligations]:
    obligations = Obligations.from_file(config)
    yield obligations
    obligations.close()


@pytest.fixture
def app(hub: Obligations, monkeypatch: pytest.MonkeyPatch) -> ObligationsMiddleware:
    monkeypatch.setenv("AIOBLIGATIONS_OPERATOR_TOKENS", f"op-7:{TOKEN}")
    return ObligationsMiddleware(raw_app, obligations=hub)


def run(app: Any, flow: Any) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await flow(http)

    return asyncio.run(main())


def get(app: Any, path: str, **options: Any) -> httpx.Response:
    async def flow(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(path, **options)
    return run(app, flow)


def post(app: Any, path: str, **options: Any) -> httpx.Response:
    async def flow(http: httpx.AsyncClient) -> httpx.Response:
        return await http.post(path, **options)
    return run(app, flow)


ENVELOPE = ("v", "idx", "ts", "mac")  # What the ledger adds to every record.


def records(hub: Obligations, kind: str) -> list[dict[str, Any]]:
    """The records of ``kind`` as they were appended (the ledger's envelope fields left out)."""
    hub.ledger.flush()
    found = [hub.ledger.read(i) for i in hub.ledger.indices_of((kind,), 0, hub.ledger.durable_size())]
    return [{k: v for k, v in record.items() if k not in ENVELOPE} for record in found]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args, "--config", str(config)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=config.parent)


# -- functions, records, idempotency, restart ------------------------------------------------------------


def test_incident_steps_are_ledger_records_with_the_agreed_shape(hub: Obligations) -> None:
    """open, update (only what changes) and close each append one ``incident`` record, nothing personal."""
    incident = open_incident(hub, by="op-1", severity="high", **FIELDS)
    assert incident.open and incident.id.startswith("INC-") and incident.course is None
    updated = update_incident(hub, incident.id, by="op-2", course="A cache served one user's list to another",
                              scope=FIELDS["scope"])
    assert "A cache served one user's list to another" == updated.course
    closed = close_incident(hub, incident.id, resolution="Fixed; no further exposure", by="op-1")
    assert not closed.open and "Fixed; no further exposure" == closed.resolution

    opened, changed, ended = records(hub, "incident")
    assert {"kind": "incident", "incident_id": incident.id, "step": "open", **FIELDS, "severity": "high",
            "suspend": False, "by": "op-1"} == {k: v for k, v in opened.items() if k != "at"}
    assert opened["at"].endswith("Z")
    # The update carries only the field that changed (the scope given was the same).
    assert {"kind", "incident_id", "step", "course", "by", "at"} == set(changed)
    assert {"kind", "incident_id", "step", "resolution", "by", "at"} == set(ended)
    assert ["open", "update", "close"] == [s.step for s in closed.history]
    assert ["op-1", "op-2", "op-1"] == [s.by for s in closed.history]


def test_repeated_steps_change_nothing_and_bad_ones_are_refused(hub: Obligations) -> None:
    """Switching on twice records once; an update with nothing new records nothing; a closed
    incident cannot be closed or updated again; unknown ids and bad input raise ObligationErrors."""
    controls = hub.controls
    assert controls.takeover_on(by="op-1", reason="model misbehaves") is True
    assert controls.takeover_on(by="op-1", reason="pressed twice") is False
    assert 1 == len(records(hub, "control"))
    assert controls.takeover_off(by="op-1") is True
    assert controls.takeover_off(by="op-1") is False
    assert 2 == len(records(hub, "control"))

    incident = controls.open_incident(by="op-1", **FIELDS)
    assert incident == controls.open_incident(by="op-2", **FIELDS)  # A retry: the same open incident.
    assert incident == controls.update_incident(incident.id, by="op-1", title=FIELDS["title"])
    assert 1 == len(records(hub, "incident"))
    controls.close_incident(incident.id, resolution="done", by="op-1")
    with pytest.raises(IncidentClosed):
        controls.close_incident(incident.id, resolution="again", by="op-1")
    with pytest.raises(IncidentClosed):
        controls.update_incident(incident.id, by="op-1", course="late")
    with pytest.raises(IncidentNotFound):
        controls.incident("INC-20260101-ABCDEF")
    with pytest.raises(IncidentNotFound):
        controls.incident("../../etc/passwd")
    for bad in ({**FIELDS, "title": ""}, {**FIELDS, "scope": "x" * 5001}, {**FIELDS, "contact": None},
                {**FIELDS, "measures": "\ud800"}):
        with pytest.raises(InvalidControl):
            controls.open_incident(by="op-1", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidControl):
        controls.open_incident(by="", **FIELDS)
    for route in ("v1/chat", "/v1/\n", 42):
        with pytest.raises(InvalidControl):
            controls.takeover_on(by="op-1", route=route)  # type: ignore[arg-type]
    with pytest.raises(InvalidControl):
        controls.takeover_on(by="op-1", fallback="/human/*")
    assert 2 == len(records(hub, "incident"))


def test_a_new_hub_over_the_same_ledger_sees_the_state(config: Path) -> None:
    """After a restart the open incident, its suspension and the switches are rebuilt from the ledger."""
    with Obligations.from_file(config) as first:
        incident = takeover_on(first, by="op-1", route="/v1/images/*", fallback="/human") and \
            first.controls.open_incident(by="op-1", suspend=True, **FIELDS)
    with Obligations.from_file(config) as again:
        snapshot = again.controls.snapshot
        assert [incident.id] == [i.id for i in snapshot.open_incidents]
        assert snapshot.open_incidents[0].suspend
        assert [("/v1/images/*", "/human")] == [(t.route, t.fallback) for t in snapshot.takeovers]
        halt = snapshot.halt("/v1/images/generations")
        assert halt is not None and halt.fallback == "/human"
        halt = snapshot.halt(CHAT)
        assert halt is not None and halt.incident is not None and halt.incident.id == incident.id


# -- notices ------------------------------------------------------------------------------------------------


def test_notices_hold_every_art_37_element_in_both_languages(hub: Obligations) -> None:
    incident = hub.controls.open_incident(by="op-1", course="Found by our monitoring at 10:05", **FIELDS)
    headings = {"zh": ("事件发生过程", "影响范围", "已采取的补救措施", "减轻危害的措施", "联系方式"),
                "en": ("What happened", "affected", "What we have done", "reduce harm", "Contact")}
    for lang in ("zh", "en"):
        notice = user_notice(incident, lang, profile=hub.profile)
        text, page = notice["notice"], user_notice_html(incident, lang, profile=hub.profile)
        report = authority_notice(incident, lang, profile=hub.profile)
        assert ["course", "scope", "measures", "user_actions", "contact"] == [s["element"] for s in notice["sections"]]
        for document in (text, page, report):
            for value in (incident.course, *FIELDS.values()):
                assert value.replace("'", "&#x27;") in document or value in document, (lang, value)
            for heading in headings[lang]:
                assert heading in document, (lang, heading)
        # The authority's report names the provider and the ledger index of every step.
        provider = hub.profile.provider.name_zh if lang == "zh" else hub.profile.provider.name
        assert provider in report and incident.id in report
        assert ("[账本序号 " if lang == "zh" else "[ledger index ") + str(incident.history[0].index) in report
    assert "第三十七条" in authority_notice(incident, "zh") and "Art. 37" in authority_notice(incident, "en")


def test_a_notice_without_a_course_says_it_is_being_established_and_escapes_html(hub: Obligations) -> None:
    incident = hub.controls.open_incident(by="op-1", **{**FIELDS, "title": "<script>alert(1)</script>"})
    assert "正在调查" in user_notice(incident, "zh")["notice"]
    assert "still establishing" in authority_notice(incident, "en")
    page = user_notice_html(incident, "en")
    assert "<script>" not in page and "&lt;script&gt;" in page


# -- the CLI ----------------------------------------------------------------------------------------------


def test_cli_incidents_and_takeover(config: Path) -> None:
    """The console script opens, updates, shows and closes; a second close exits 2, an unknown id 1."""
    opened = cli(config, "incident", "open", "--title", FIELDS["title"], "--scope", FIELDS["scope"], "--measures",
                 FIELDS["measures"], "--user-actions", FIELDS["user_actions"], "--contact", FIELDS["contact"],
                 "--suspend", "--by", "op-1", "--json")
    assert 0 == opened.returncode, opened.stderr
    incident_id = json.loads(opened.stdout)["id"]
    assert json.loads(opened.stdout)["suspend"] is True
    updated = cli(config, "incident", "update", incident_id, "--course", "It began at 10:00", "--no-suspend",
                  "--by", "op-2")
    assert 0 == updated.returncode and f"{incident_id}: open" == updated.stdout.strip(), updated.stderr
    report = cli(config, "incident", "show", incident_id, "--notice", "authority", "--lang", "en")
    assert 0 == report.returncode and "It began at 10:00" in report.stdout and FIELDS["contact"] in report.stdout
    notice = cli(config, "incident", "show", incident_id, "--notice", "user", "--lang", "zh")
    assert "您可以采取的减轻危害的措施" in notice.stdout and FIELDS["user_actions"] in notice.stdout
    listed = cli(config, "incident", "list")
    assert incident_id in listed.stdout and "SUSPENDING" not in listed.stdout

    closed = cli(config, "incident", "close", incident_id, "--resolution", "Fixed", "--by", "op-1")
    assert 0 == closed.returncode and f"{incident_id}: closed" == closed.stdout.strip()
    again = cli(config, "incident", "close", incident_id, "--resolution", "Fixed", "--by", "op-1")
    assert 2 == again.returncode and "closed already" in again.stderr and len(again.stderr.splitlines()) <= 2
    unknown = cli(config, "incident", "show", "INC-20260101-ABCDEF")
    assert 1 == unknown.returncode and "no incident" in unknown.stderr
    bad = cli(config, "incident", "open", "--title", "", "--scope", "s", "--measures", "m", "--user-actions", "u",
              "--contact", "c", "--by", "op-1")
    assert 2 == bad.returncode and "title" in bad.stderr

    first = cli(config, "takeover", "on", "--route", "/v1/images/*", "--reason", "bad images", "--by", "op-1")
    second = cli(config, "takeover", "on", "--route", "/v1/images/*", "--by", "op-1")
    assert 0 == first.returncode and "ledger index" in first.stdout, first.stderr
    assert 0 == second.returncode and "nothing recorded" in second.stdout
    status = json.loads(cli(config, "takeover", "status", "--json").stdout)
    assert ["/v1/images/*"] == [t["route"] for t in status["takeovers"]] and status["halting"]
    off = cli(config, "takeover", "off", "--by", "op-1")
    assert 0 == off.returncode and "nothing recorded" not in off.stdout
    assert "AI routes are served" in cli(config, "takeover", "status").stdout
    # Without --config, the CLI's profile rule: $AIOBLIGATIONS_CONFIG, named on stderr.
    import os

    found = subprocess.run([CLI, "takeover", "status", "--json"], capture_output=True, text=True, timeout=120,
                           check=False, cwd=config.parent.parent, env={**os.environ, "AIOBLIGATIONS_CONFIG": str(config)})
    assert 0 == found.returncode and json.loads(found.stdout)["halting"] is False, found.stderr
    assert f"using profile {config}" in found.stderr
    with Obligations.from_file(config) as hub:
        assert ["on", "off"] == [r["state"] for r in records(hub, "control")]
        assert ["open", "update", "close"] == [r["step"] for r in records(hub, "incident")]


# -- the middleware and the endpoints ---------------------------------------------------------------------


def test_operator_endpoints_need_a_token(app: ObligationsMiddleware) -> None:
    for path in ("/ai/operator/incidents", "/ai/operator/takeover"):
        assert 401 == post(app, path, json={"state": "on"}).status_code
        assert 403 == post(app, path, json={"state": "on"}, headers={"Authorization": "Bearer " + "x" * 20}).status_code
        assert 401 == get(app, path).status_code
    assert [] == records(app.obligations, "control") + records(app.obligations, "incident")


def test_takeover_answers_503_on_ai_routes_only_and_the_fallback_takes_them(
        app: ObligationsMiddleware, hub: Obligations) -> None:
    switched = post(app, "/ai/operator/takeover", headers=OPERATOR, json={"state": "on", "reason": "drill"})
    assert 200 == switched.status_code and switched.json()["changed"] is True, switched.text
    again = post(app, "/ai/operator/takeover", headers=OPERATOR, json={"state": "on"})
    assert again.json()["changed"] is False

    taken = post(app, CHAT, json=CHAT_BODY)
    assert 503 == taken.status_code and "service_taken_over" == taken.json()["error"]["code"]
    assert int(taken.headers["retry-after"]) > 0 and "ai-disclosure" not in taken.headers
    assert 200 == get(app, "/about").status_code  # Not an AI route.
    assert 200 == get(app, "/ai/health").status_code  # Our own endpoints.
    assert 200 == get(app, "/.well-known/ai-transparency").status_code

    # A switch naming a fallback hands the requests to it.
    post(app, "/ai/operator/takeover", headers=OPERATOR, json={"state": "off"})
    assert 200 == post(app, CHAT, json=CHAT_BODY).status_code
    post(app, "/ai/operator/takeover", headers=OPERATOR, json={"state": "on", "route": "/v1/chat/*",
                                                                 "fallback": "/human"})
    human = post(app, CHAT, json=CHAT_BODY)
    assert 200 == human.status_code and {"path": "/human", "human": True} == human.json()
    assert "ai-disclosure" not in human.headers
    assert 200 == post(app, "/v1/completions", json=CHAT_BODY).status_code  # Another AI route, not covered.
    refused = post(app, "/ai/operator/takeover", headers=OPERATOR, json={"state": "on", "fallback": "/ai/health"})
    assert 422 == refused.status_code
    status = get(app, "/ai/operator/takeover", headers=OPERATOR).json()
    assert [("/v1/chat/*", "/human", "op-7")] == [(t["route"], t["fallback"], t["by"]) for t in status["takeovers"]]
    assert [("on", None), ("off", None), ("on", "/v1/chat/*")] == [
        (r["state"], r["route"]) for r in records(hub, "control")]
    assert all(r["by"] == "op-7" for r in records(hub, "control"))


def test_the_profile_fallback_serves_a_takeover_without_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = init_project(tmp_path / "site")
    config.write_text(config.read_text() + '\n[controls]\nfallback = "/human"\nretry_after = 30\n')
    with Obligations.from_file(config) as hub:
        app = ObligationsMiddleware(raw_app, obligations=hub)
        hub.controls.takeover_on(by="op-1")
        assert {"path": "/human", "human": True} == post(app, CHAT, json=CHAT_BODY).json()
    config.write_text(config.read_text().replace('fallback = "/human"', 'fallback = "human"'))
    hub = Obligations.from_file(config)
    try:
        with pytest.raises(ConfigurationError, match="fallback"):
            hub.controls  # noqa: B018 - building it checks the profile.
    finally:
        hub.close()


def test_incident_endpoints_notice_listing_and_suspension(app: ObligationsMiddleware, hub: Obligations) -> None:
    opened = post(app, "/ai/operator/incidents", headers=OPERATOR, json={**FIELDS, "suspend": True})
    assert 201 == opened.status_code, opened.text
    incident_id, url = opened.json()["id"], opened.json()["url"]
    retried = post(app, "/ai/operator/incidents", headers=OPERATOR, json={**FIELDS, "suspend": True})
    assert 200 == retried.status_code and incident_id == retried.json()["id"]
    assert f"/ai/incidents/{incident_id}" == url

    suspended = post(app, CHAT, json=CHAT_BODY)
    assert 503 == suspended.status_code and url in suspended.json()["error"]["message"]
    assert url in suspended.headers["link"]

    document = get(app, "/.well-known/ai-transparency").json()
    assert [{"id": incident_id, "title": FIELDS["title"], "url": url, "opened": opened.json()["opened"]}] == (
        document["incidents"])
    for lang in ("zh", "en"):
        page = get(app, f"/ai/transparency?lang={lang}").text
        assert url in page and FIELDS["title"] in page

    as_json = get(app, url, headers={"Accept": "application/json"})
    assert 200 == as_json.status_code and {"zh", "en"} <= set(as_json.json())
    assert FIELDS["contact"] in as_json.json()["zh"]["notice"] and "What you can do" in as_json.json()["en"]["notice"]
    as_html = get(app, url, headers={"Accept-Language": "en"})
    assert as_html.headers["content-type"].startswith("text/html") and 'lang="en"' in as_html.text
    assert "default-src 'none'" in as_html.headers["content-security-policy"]
    assert 404 == get(app, "/ai/incidents/INC-20260101-ABCDEF").status_code
    assert 405 == post(app, url, json={}).status_code

    shown = get(app, f"/ai/operator/incidents/{incident_id}", headers=OPERATOR).json()
    assert "What users can do" in shown["notices"]["authority"]["en"] and shown["notices"]["user"]["zh"]
    resumed = post(app, f"/ai/operator/incidents/{incident_id}", headers=OPERATOR,
                   json={"suspend": False, "course": "It began at 10:00"})
    assert 200 == resumed.status_code and resumed.json()["suspend"] is False, resumed.text
    assert 200 == post(app, CHAT, json=CHAT_BODY).status_code
    closed = post(app, f"/ai/operator/incidents/{incident_id}", headers=OPERATOR,
                  json={"step": "close", "resolution": "Fixed"})
    assert 200 == closed.status_code and "closed" == closed.json()["status"]
    assert 409 == post(app, f"/ai/operator/incidents/{incident_id}", headers=OPERATOR,
                       json={"step": "close", "resolution": "Fixed"}).status_code
    assert [] == get(app, "/.well-known/ai-transparency").json()["incidents"]
    assert FIELDS["title"] not in get(app, "/ai/transparency?lang=en").text
    listed = get(app, "/ai/operator/incidents?all=1", headers=OPERATOR).json()["incidents"]
    assert [incident_id] == [i["id"] for i in listed]
    assert [] == get(app, "/ai/operator/incidents", headers=OPERATOR).json()["incidents"]
    assert ["open", "update", "close"] == [r["step"] for r in records(hub, "incident")]
    assert {"op-7"} == {r["by"] for r in records(hub, "incident")}


def test_hostile_bodies_get_clear_4xx(app: ObligationsMiddleware, hub: Obligations) -> None:
    cases = [
        (b"not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (json.dumps(FIELDS).encode(), "text/plain", 415),
        (b"{" + b'"a":"' + b"x" * (70 << 10) + b'"}', "application/json", 413),
        (json.dumps({**FIELDS, "title": 7}).encode(), "application/json", 422),
        (json.dumps({**FIELDS, "suspend": "yes"}).encode(), "application/json", 422),
        (json.dumps({**FIELDS, "admin": "true"}).encode(), "application/json", 422),
        (json.dumps({**FIELDS, "scope": ""}).encode(), "application/json", 422),
        (json.dumps({k: v for k, v in FIELDS.items() if k != "contact"}).encode(), "application/json", 422),
        (b"[" * 60_000, "application/json", 400),
    ]
    for body, content_type, status in cases:
        response = post(app, "/ai/operator/incidents", headers={**OPERATOR, "Content-Type": content_type},
                        content=body)
        assert status == response.status_code, (body[:60], response.text)
        assert "error" in response.json()
    for payload in ({"state": "maybe"}, {"state": "on", "route": "no-slash"}, {"state": "off", "fallback": "/h"},
                    {"state": "on", "route": 5}):
        assert 422 == post(app, "/ai/operator/takeover", headers=OPERATOR, json=payload).status_code, payload
    assert 404 == post(app, "/ai/operator/incidents/INC-20260101-ABCDEF", headers=OPERATOR,
                       json={"course": "x"}).status_code
    assert 422 == post(app, "/ai/operator/incidents/INC-20260101-ABCDEF", headers=OPERATOR,
                       json={"step": "delete"}).status_code
    assert [] == records(hub, "incident") + records(hub, "control")
    # The desk's operator endpoints still answer beside ours.
    assert 200 == get(app, "/ai/operator/requests", headers=OPERATOR).status_code


def test_a_switch_from_another_process_reaches_a_running_middleware(
        app: ObligationsMiddleware, config: Path) -> None:
    """The CLI, a real second process, switches on; this process's follower folds it in within 2 s."""
    assert 200 == post(app, CHAT, json=CHAT_BODY).status_code
    assert app._controls.following
    switched = cli(config, "takeover", "on", "--by", "op-1")
    assert 0 == switched.returncode, switched.stderr
    stored = time.monotonic()
    until(lambda: post(app, CHAT, json=CHAT_BODY).status_code == 503, 5, "the middleware to answer 503")
    assert time.monotonic() - stored < 2.0
    assert 0 == cli(config, "takeover", "off", "--by", "op-1").returncode
    until(lambda: post(app, CHAT, json=CHAT_BODY).status_code == 200, 5, "the middleware to serve again")


def test_two_hubs_switching_at_once_record_one_switch(config: Path) -> None:
    """Two hubs on one ledger (as two workers are) press the same switch at the same moment: the
    check and the append run under the ledger's cross-process lock, so one switch is recorded."""
    import threading

    hubs = [Obligations.from_file(config) for _ in range(2)]
    try:
        for hub in hubs:
            hub.controls  # noqa: B018 - built before the race.
        start = threading.Barrier(len(hubs))
        results: list[bool] = []

        def press(hub: Obligations) -> None:
            start.wait()
            results.append(hub.controls.takeover_on(by="op-1", reason="race"))

        threads = [threading.Thread(target=press, args=(hub,)) for hub in hubs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [False, True] == sorted(results)
        assert 1 == len(records(hubs[0], "control"))
        assert all(len(hub.controls.refresh().takeovers) == 1 for hub in hubs)
    finally:
        for hub in hubs:
            hub.close()


def test_an_altered_control_row_is_skipped_and_later_switches_still_count(config: Path) -> None:
    """A control record altered in the database is not folded in (and is logged); the switches
    recorded after it still reach a new hub, so one bad row cannot freeze the controls."""
    import sqlite3

    from structlog.testing import capture_logs

    with Obligations.from_file(config) as hub:
        hub.controls.takeover_on(by="op-1", route="/v1/images/*")
        hub.ledger.flush()
        altered = hub.ledger.indices_of(("control",), 0, hub.ledger.durable_size())[0]
        hub.controls.takeover_on(by="op-1", route="/v1/audio/*")
        ledger_path = hub.profile.ledger.path
    conn = sqlite3.connect(ledger_path)
    try:
        with conn:
            data = conn.execute("SELECT data FROM records WHERE idx=?", (altered,)).fetchone()[0]
            changed = bytes(data).replace(b"/v1/images/*", b"/v1/videos/*")
            assert changed != bytes(data), "the record is not stored as readable JSON here"
            conn.execute("UPDATE records SET data=? WHERE idx=?", (changed, altered))
    finally:
        conn.close()
    with capture_logs() as logs, Obligations.from_file(config) as again:
        assert ["/v1/audio/*"] == [t.route for t in again.controls.snapshot.takeovers]
    assert [altered] == [e["index"] for e in logs if e["event"] == "controls.record_altered"]
