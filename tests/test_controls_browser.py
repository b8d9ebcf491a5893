"""Headless Chromium against an incident's user notice and the transparency page that lists it (Art. 37).

The same Chromium set-up as :mod:`test_browser` (Debian's ``chromium`` with a Chinese font; missing,
it fails under CI and skips elsewhere): the demo wrapped in the middleware, served on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serve import serve
from test_browser import Service, fixture_chromium, fixture_profile, visible_text, visit

from aiobligations import Obligations
from aiobligations.demo import build_app
from aiobligations.keys import init_project
from aiobligations.middleware import ObligationsMiddleware

__all__ = ["fixture_chromium", "fixture_profile"]  # Fixtures shared with test_browser.

FIELDS = {
    "title": "<b>Leaked</b> conversation titles",
    "scope": "About 40 users who signed in on 3 December, 10:00-11:00",
    "measures": "We fixed the cache bug and cleared the cache",
    "user_actions": "Sign out and in again",
    "contact": "security@example.com",
    "course": "A cache served one user's titles to another",
}


@pytest.fixture(scope="module", name="service")
def fixture_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    hub = Obligations.from_file(init_project(tmp_path_factory.mktemp("controls-browser") / "site"))
    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=hub)
    try:
        with serve(app, "controls-browser") as url:
            yield Service(url, hub, app)
    finally:
        hub.close()


@pytest.mark.parametrize(("lang", "html_lang", "headings"), [
    ("zh", "zh-CN", ["事件发生过程", "影响范围", "已采取的补救措施", "您可以采取的减轻危害的措施", "联系方式"]),
    ("en", "en", ["What happened", "Who and what is affected", "What we have done", "What you can do to reduce harm",
                  "Contact"]),
], ids=["zh", "en"])
def test_the_notice_and_its_listing_render(chromium: str, service: Service, profile: Path, lang: str,
                                          html_lang: str, headings: list[str]) -> None:
    """The notice shows every Art. 37 element under its heading, in its language, the title as text
    (not markup), no console messages; the transparency page links to it."""
    controls = service.hub.controls
    incident = next(iter(controls.incidents(open_only=True)), None) or controls.open_incident(
        by="op-1", suspend=True, **FIELDS)
    url = f"{service.url}/ai/incidents/{incident.id}?lang={lang}"
    page = visit(chromium, url, f"incident-{lang}", profile, service.url)

    assert re.search(rf'<html lang="{html_lang}"', page.dom)
    text = visible_text(page.dom)
    for heading in headings:
        assert heading in text, heading
    for value in FIELDS.values():
        assert value in text, value
    assert "<b>Leaked</b>" not in page.dom.split("<body>", 1)[1].replace("&lt;b&gt;", "")  # Escaped, not bold.
    assert len(re.findall(r"<h1\b", page.dom)) == 1 and len(re.findall(r"<h2\b", page.dom)) == 5
    assert 'role="alert"' in page.dom  # The suspension is announced.
    assert [] == page.console
    assert page.screenshot.stat().st_size > 10_000

    listing = visit(chromium, f"{service.url}/ai/transparency?lang={lang}", f"incident-listed-{lang}", profile,
                    service.url)
    assert f'href="/ai/incidents/{incident.id}"' in listing.dom
    assert FIELDS["title"] in visible_text(listing.dom)
    assert [] == listing.console
