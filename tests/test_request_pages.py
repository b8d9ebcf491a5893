"""The HTML pages for asking for an explanation: form, 303 to the status page, errors, and a real browser."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from _serve import serve

from aiobligations import Obligations
from aiobligations.interaction import uuid7
from aiobligations.keys import init_project
from aiobligations.middleware.request_pages import MAX_FORM_BODY, RequestPages

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "requests"
WINDOW = (1280, 900)
CONSOLE_LINE = re.compile(r':CONSOLE[:(]\d*\)?\]\s*"(?P<message>.*)", source: (?P<source>\S*) \(\d+\)')
FORM = {"content-type": "application/x-www-form-urlencoded"}
COOKIE = "test_subject"


def cookie_subject(scope: dict[str, Any]) -> str | None:
    """The test's identity hook: the subject is the ``test_subject`` cookie."""
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, found = part.strip().partition("=")
                if name == COOKIE and found:
                    return found
    return None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Obligations]:
    obligations = Obligations.from_file(init_project(tmp_path / "site"))
    yield obligations
    obligations.close()


def interaction(hub: Obligations, subject: str) -> str:
    interaction_id = str(uuid7())
    hub.ledger.append({"kind": "interaction", "interaction_id": interaction_id, "subject": subject,
                       "personal": {"input": "may I have a loan?", "output": "no"}})
    return interaction_id


def pages(hub: Obligations, language: str = "zh") -> RequestPages:
    return RequestPages(lambda: hub.requests, prefix="/ai", subject_of=cookie_subject, language=language)


def client(app: Any, subject: str | None = "alice") -> httpx.AsyncClient:
    cookies = {COOKIE: subject} if subject else None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies)


def text_of(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.DOTALL | re.IGNORECASE)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.mark.parametrize(("lang", "html_lang", "title"), [
    ("zh", "zh-CN", "要求解释人工智能的决定"), ("en", "en", "Ask for an explanation of an AI decision")])
@pytest.mark.anyio
async def test_the_form_page(hub: Obligations, lang: str, html_lang: str, title: str) -> None:
    async with client(pages(hub)) as http:
        response = await http.get(f"/ai/requests?lang={lang}")
    page = response.text
    assert 200 == response.status_code
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "form-action 'self'" in response.headers["content-security-policy"]
    assert f'<html lang="{html_lang}">' in page
    assert title in text_of(page)
    assert "<script" not in page.lower()
    assert f'<form method="post" action="/ai/requests?lang={lang}"' in page
    assert "<fieldset><legend>" in page
    for field in ("interaction_id", "question", "contact"):
        assert f'<label for="{field}">' in page and f'id="{field}" name="{field}"' in page
        assert f'aria-describedby="{field}_help"' in page
    assert '<a href="/ai/transparency?lang=' in page


@pytest.mark.anyio
async def test_accept_language_chooses_the_language(hub: Obligations) -> None:
    async with client(pages(hub, "zh")) as http:
        english = await http.get("/ai/requests", headers={"accept-language": "en-GB,en;q=0.8"})
        default = await http.get("/ai/requests")
    assert '<html lang="en">' in english.text and "Accept-Language" in english.headers["vary"]
    assert '<html lang="zh-CN">' in default.text


@pytest.mark.parametrize(("lang", "status", "due_word"), [("zh", "已收到", "北京时间"), ("en", "Received", "Beijing time")])
@pytest.mark.anyio
async def test_submit_then_follow_the_request(hub: Obligations, lang: str, status: str, due_word: str) -> None:
    interaction_id = interaction(hub, "alice")
    async with client(pages(hub)) as http:
        posted = await http.post(f"/ai/requests?lang={lang}", headers=FORM, content=(
            f"interaction_id={interaction_id}&question=Why+%E4%B8%BA%E4%BB%80%E4%B9%88%3F&contact="))
        location = posted.headers["location"]
        shown = await http.get(location)
    assert 303 == posted.status_code
    assert re.fullmatch(rf"/ai/requests/[0-9a-f-]{{36}}\?lang={lang}", location)
    request_id = location.split("/")[-1].split("?")[0]
    request = hub.requests.get(request_id, "alice")
    assert ("received", "Why 为什么?", None) == (request.state, request.question, request.contact)
    assert 200 == shown.status_code
    text = text_of(shown.text)
    assert status in text and due_word in text and "Why 为什么?" in text
    assert request_id in text and interaction_id in text
    assert f'<time datetime="{request.due.isoformat()}">' in shown.text
    assert "<form" not in shown.text  # Nothing to complain about before an answer.


@pytest.mark.anyio
async def test_answer_and_complaint(hub: Obligations) -> None:
    interaction_id = interaction(hub, "alice")
    request = hub.requests.ask(interaction_id, "alice", "Why?")
    hub.requests.start_review(request.id, by="op")
    hub.requests.answer(request.id, "Your income was too low.", factors={"income": "low"}, by="op")
    async with client(pages(hub)) as http:
        answered = await http.get(f"/ai/requests/{request.id}?lang=en")
        complained = await http.post(f"/ai/requests/{request.id}/complaint?lang=en", headers=FORM,
                                     content="text=That+is+not+true.")
        after = await http.get(complained.headers["location"])
        again = await http.post(f"/ai/requests/{request.id}/complaint?lang=en", headers=FORM, content="text=Again")
    assert "Answered" in text_of(answered.text) and "Your income was too low." in text_of(answered.text)
    assert f'action="/ai/requests/{request.id}/complaint?lang=en"' in answered.text
    assert 303 == complained.status_code and complained.headers["location"] == f"/ai/requests/{request.id}?lang=en"
    assert "Complaint received" in text_of(after.text) and "That is not true." in text_of(after.text)
    assert "complained" == hub.requests.get(request.id, "alice").state
    assert 409 == again.status_code and "only once" in again.text


@pytest.mark.anyio
async def test_foreign_unknown_and_anonymous_get_the_same_404(hub: Obligations) -> None:
    interaction_id = interaction(hub, "alice")
    request = hub.requests.ask(interaction_id, "alice", "Why?")
    app = pages(hub)
    async with client(app, "mallory") as http:
        foreign = await http.get(f"/ai/requests/{request.id}")
        unknown = await http.get(f"/ai/requests/{uuid7()}")
        foreign_ask = await http.post("/ai/requests", headers=FORM,
                                      content=f"interaction_id={interaction_id}&question=Mine%3F")
        foreign_complaint = await http.post(f"/ai/requests/{request.id}/complaint", headers=FORM, content="text=x")
        odd_path = await http.get(f"/ai/requests/{request.id}/other")
    async with client(app, None) as http:
        anonymous = await http.get(f"/ai/requests/{request.id}")
    statuses = {r.status_code for r in (foreign, unknown, foreign_ask, foreign_complaint, odd_path, anonymous)}
    assert {404} == statuses
    assert foreign.text == unknown.text == anonymous.text
    assert "Why?" not in foreign.text and request.id not in foreign.text
    assert 1 == len(hub.requests.requests())


@pytest.mark.anyio
async def test_hostile_input_is_escaped(hub: Obligations) -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>&amp;'
    interaction_id = interaction(hub, "alice")
    request = hub.requests.ask(interaction_id, "alice", hostile, contact=hostile)
    hub.requests.start_review(request.id, by="op")
    hub.requests.answer(request.id, hostile, factors={hostile: hostile}, by="op")
    async with client(pages(hub)) as http:
        shown = await http.get(f"/ai/requests/{request.id}")
        prefilled = await http.get("/ai/requests", params={"interaction_id": hostile, "lang": '"><b>'})
    for page in (shown.text, prefilled.text):
        assert "<script" not in page and "<img" not in page and "onerror=alert" not in page.replace(
            "onerror=alert(2)&gt;", "")
    assert html.escape(hostile) in shown.text
    assert 4 <= shown.text.count(html.escape(hostile))  # question, answer, factor name and value
    assert f'value="{html.escape(hostile)}"' in prefilled.text


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"content-type": "application/json"}, '{"interaction_id": "x", "question": "y"}', 415),
    ({"content-type": "text/plain"}, "interaction_id=x&question=y", 415),
    ({}, "interaction_id=x&question=y", 415),
    ({**FORM, "content-type": "application/x-www-form-urlencoded; charset=iso-8859-1"}, "question=y", 415),
    (FORM, "interaction_id=x&interaction_id=y&question=z", 400),
    (FORM, "question=%FF%FE&interaction_id=x", 400),
    (FORM, "interaction_id=&question=y", 422),
    (FORM, "interaction_id=x&question=++", 422),
    (FORM, "interaction_id=x&question=" + "q" * 4001, 422),
    ({**FORM, "origin": "https://evil.example"}, "interaction_id=x&question=y", 403),
    ({**FORM, "origin": "null"}, "interaction_id=x&question=y", 403),
    ({**FORM, "referer": "https://evil.example/form"}, "interaction_id=x&question=y", 403),
    ({**FORM, "sec-fetch-site": "cross-site"}, "interaction_id=x&question=y", 403),
], ids=["json", "text", "none", "latin1", "duplicate", "bad-utf8", "no-id", "blank-question", "too-long",
        "foreign-origin", "null-origin", "foreign-referer", "cross-site"])
@pytest.mark.anyio
async def test_bad_posts(hub: Obligations, headers: dict[str, str], body: str, status: int) -> None:
    async with client(pages(hub)) as http:
        response = await http.post("/ai/requests?lang=en", headers=headers, content=body)
    assert status == response.status_code
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<div class="error" role="alert">' in response.text
    assert [] == hub.requests.requests()


@pytest.mark.anyio
async def test_same_origin_posts_pass(hub: Obligations) -> None:
    interaction_id = interaction(hub, "alice")
    body = f"interaction_id={interaction_id}&question=ok"
    async with client(pages(hub)) as http:
        by_origin = await http.post("/ai/requests", content=body, headers={
            **FORM, "origin": "http://t", "sec-fetch-site": "same-origin"})
        by_referer = await http.post("/ai/requests", content=body, headers={**FORM, "referer": "http://t/ai/requests"})
    assert (303, 303) == (by_origin.status_code, by_referer.status_code)


@pytest.mark.anyio
async def test_oversized_body_is_413(hub: Obligations) -> None:
    big = "interaction_id=x&question=" + "q" * MAX_FORM_BODY
    app = pages(hub)
    async with client(app) as http:
        declared = await http.post("/ai/requests", headers=FORM, content=big)

        async def chunks():  # No Content-Length: the cap holds while reading.
            for _ in range(5):
                yield b"q" * (MAX_FORM_BODY // 4)

        streamed = await http.post("/ai/requests", headers=FORM, content=chunks())
    assert (413, 413) == (declared.status_code, streamed.status_code)
    assert "too long" in declared.text or "太长" in declared.text


@pytest.mark.anyio
async def test_methods(hub: Obligations) -> None:
    async with client(pages(hub)) as http:
        put = await http.put("/ai/requests", headers=FORM, content="x=y")
        get_complaint = await http.get(f"/ai/requests/{uuid7()}/complaint")
        head = await http.head("/ai/requests")
    assert 405 == put.status_code and "POST" in put.headers["allow"]
    assert 405 == get_complaint.status_code and "POST" == get_complaint.headers["allow"]
    assert 200 == head.status_code and b"" == head.content


def test_handles() -> None:
    app = RequestPages(lambda: None, prefix="/ai/", subject_of=lambda scope: None)  # type: ignore[arg-type, return-value]
    assert app.handles("/ai/requests") and app.handles("/ai/requests/abc")
    assert not app.handles("/ai/requestsx") and not app.handles("/ai/explanations")
    assert "/ai/requests" == app.form_url


# -- a real browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="chromium")
def fixture_chromium() -> str:
    missing = None
    if shutil.which("chromium") is None:
        missing = "chromium is not on PATH"
    else:
        fc_list = shutil.which("fc-list")
        if fc_list is None or not subprocess.run([fc_list, ":lang=zh", "family"], check=False, capture_output=True,
                                                 text=True, timeout=60).stdout.strip():
            missing = "no Chinese font is installed (Chinese text would render as boxes)"
    if missing is not None:
        message = f"{missing}: run scripts/install-chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (scripts/test does, before pytest); CI never skips the browser tests")
        pytest.skip(message)
    return shutil.which("chromium") or "chromium"


class Site:
    """The pages in front of a tiny app that serves the test's helper page (with a cookie) and 404s."""

    def __init__(self, pages: RequestPages) -> None:
        self.pages = pages
        self.helper = b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.pages.handles(scope["path"]):
            await self.pages(scope, receive, send)
            return
        query = parse_qs(scope["query_string"].decode())
        if scope["path"] == "/helper" and "subject" in query:
            headers = [(b"content-type", b"text/html; charset=utf-8"),
                       (b"set-cookie", f"{COOKIE}={query['subject'][0]}; Path=/; HttpOnly; SameSite=Lax".encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.helper})
            return
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"not found"})


def helper_page(form_page: str, values: dict[str, str]) -> bytes:
    """Our real form page, with a script of the test's own appended that fills it in and submits it.

    Our pages carry no script; this copy is served by the test's app, standing in for a person's
    typing and click. The form's markup, action and field names are ours, unchanged.
    """
    fill = "".join(f"document.getElementById({name!r}).value = {value!r};" for name, value in values.items())
    script = f"<script>addEventListener('load', () => {{ {fill} document.forms[0].submit(); }});</script>"
    return form_page.replace("</body>", script + "</body>").encode()


def test_chromium_submits_the_form_and_sees_the_status(chromium: str, hub: Obligations, tmp_path: Path) -> None:
    subject = "browser-person"
    interaction_id = interaction(hub, subject)
    site = Site(pages(hub))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "status-zh.png"
    screenshot.unlink(missing_ok=True)
    with serve(site, "request-pages") as url:
        form_page = httpx.get(f"{url}/ai/requests?lang=zh").text
        site.helper = helper_page(form_page, {"interaction_id": interaction_id, "question": "为什么拒绝了我？<b>",
                                              "contact": "me@example.com"})
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
            # Virtual time lets the form's POST, the 303 and the status page finish before the dump.
            "--virtual-time-budget=10000",
            f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom",
            f"{url}/helper?subject={subject}",
        ]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    (ARTIFACTS / "status-zh.html").write_text(result.stdout)
    (ARTIFACTS / "status-zh.log").write_text(result.stderr)
    assert 0 == result.returncode, f"chromium exited with {result.returncode}:\n{result.stderr[-3000:]}"

    (request,) = hub.requests.requests()
    assert (interaction_id, "received", "为什么拒绝了我？<b>", "me@example.com") == (
        request.interaction_id, request.state, request.question, request.contact)
    assert request.id == hub.requests.get(request.id, subject).id
    dom = result.stdout
    assert '<html lang="zh-CN">' in dom
    assert "<script" not in dom.lower(), "the browser is not on our status page"
    text = text_of(dom)
    assert "您的解释请求" in text and "已收到" in text
    due = re.search(r'<dd id="due"><time datetime="([^"]+)">([^<]+)</time></dd>', dom)
    assert due is not None and due[1] == request.due.isoformat() and "北京时间" in due[2]
    assert request.id in text and "为什么拒绝了我？<b>" in text
    console = [m["message"] for line in result.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]
    assert [] == console
    assert screenshot.stat().st_size > 10_000  # Text on a page, not a blank image.
