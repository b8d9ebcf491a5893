"""Headless Chromium against the wrapped demo: the transparency page and an AI page with its banner.

Chromium is Debian's ``chromium``, installed by ``scripts/install-chromium`` (with a Chinese font, so
Chinese text renders as text). Missing, it fails these tests under CI and skips them elsewhere.
Screenshots, DOM dumps and Chromium's logs are kept under ``test-artifacts/browser/`` (git-ignored)
for CI to collect.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _serve import serve

from aiobligations import Obligations
from aiobligations.demo import build_app
from aiobligations.keys import init_project
from aiobligations.middleware import DEFAULT_AI_ROUTES, ObligationsMiddleware, Route, RoutePolicy

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
WINDOW = (1280, 900)
# The banner's ground colour (aiobligations/disclosure/notices.py): pale amber, #fff8e1.
BANNER_GROUND = (0xFF, 0xF8, 0xE1)
# One line of Chromium's log that relays a page's console message, for example
# [123:123:1128/131710.028881:INFO:CONSOLE:1] "Uncaught ReferenceError: x is not defined", source: http://h/ (1)
# (older builds write CONSOLE(1) instead of CONSOLE:1).
CONSOLE_LINE = re.compile(r':CONSOLE[:(]\d*\)?\]\s*"(?P<message>.*)", source: (?P<source>\S*) \(\d+\)')


def _missing_tools() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium is not on PATH"
    fc_list = shutil.which("fc-list")
    if fc_list is None or not subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True,
                                             text=True, timeout=60).stdout.strip():
        return "no Chinese font is installed (Chinese text would render as boxes)"
    return None


@pytest.fixture(scope="module", name="chromium")
def fixture_chromium() -> str:
    missing = _missing_tools()
    if missing is not None:
        message = f"{missing}: run scripts/install-chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (scripts/test does, before pytest); CI never skips the browser tests")
        pytest.skip(message)
    return shutil.which("chromium") or "chromium"


@dataclass
class Service:
    url: str
    hub: Obligations
    middleware: ObligationsMiddleware


@pytest.fixture(scope="module", name="service")
def fixture_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The demo, wrapped, with its HTML home page ``GET /`` made an AI route so it gets the banner."""
    hub = Obligations.from_file(init_project(tmp_path_factory.mktemp("browser") / "site"))
    policy = RoutePolicy([*DEFAULT_AI_ROUTES, Route("/", methods=frozenset({"GET"}))])
    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=hub, policy=policy)
    try:
        with serve(app, "browser-demo") as url:
            yield Service(url, hub, app)
    finally:
        hub.close()


@dataclass
class Visit:
    dom: str
    """The DOM after load, as Chromium serialises it (``--dump-dom``)."""
    console: list[tuple[str, str]]
    """(message, source) of every console message the page's origin produced."""
    screenshot: Path


def visit(chromium: str, url: str, name: str, profile: Path, origin: str) -> Visit:
    """Load ``url`` in headless Chromium once: dump the DOM, save a screenshot, collect console messages."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{name}.png"
    screenshot.unlink(missing_ok=True)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", url,
    ]
    # Chromium's start-up can take seconds on a busy machine: a generous limit, not a sleep.
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=profile.parent)
    (ARTIFACTS / f"{name}.html").write_text(result.stdout)
    (ARTIFACTS / f"{name}.log").write_text(result.stderr)
    assert 0 == result.returncode, f"chromium exited with {result.returncode}:\n{result.stderr[-3000:]}"
    return Visit(result.stdout, page_console(result.stderr, origin), screenshot)


def page_console(log: str, origin: str) -> list[tuple[str, str]]:
    """The console messages in Chromium's log that came from ``origin``.

    Chromium's own noise (D-Bus, GPU, sandbox warnings) is not a console message and never matches;
    console lines from Chromium's internal pages (chrome://…) are left out too.
    """
    found = []
    for line in log.splitlines():
        match = CONSOLE_LINE.search(line)
        if match and (match["source"].startswith(origin) or not match["source"]):
            found.append((match["message"], match["source"]))
    return found


def read_rgb_rows(png: bytes, rows: int) -> tuple[int, int, list[bytes]]:
    """Decode the first ``rows`` rows of an 8-bit RGB or RGBA PNG (what Chromium writes) to RGB bytes."""
    assert b"\x89PNG\r\n\x1a\n" == png[:8], "not a PNG"
    pos, data, header = 8, bytearray(), b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, chunk = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        assert zlib.crc32(kind + chunk) == struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])[0]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            data += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (8, 0) == (depth, interlace) and colour in (2, 6), f"unexpected PNG format {depth=} {colour=}"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompressobj().decompress(bytes(data), (stride + 1) * min(rows, height))
    previous = bytearray(stride)
    decoded = []
    for y in range(min(rows, height)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = previous[i], previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        previous = line
        decoded.append(bytes(line) if channels == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, decoded


def banner_rows(screenshot: Path, rows: int = 300) -> tuple[tuple[int, int], int, int]:
    """Measure the banner in a screenshot's top ``rows``.

    Returns the image size, the number of rows mostly (over half their width) painted in the
    banner's ground colour, and the number of dark (text) pixels within those rows.
    """
    width, height, lines = read_rgb_rows(screenshot.read_bytes(), rows)
    ground, painted, dark = bytes(BANNER_GROUND), 0, 0
    for line in lines:
        pixels = [line[i : i + 3] for i in range(0, len(line), 3)]
        if sum(1 for p in pixels if p == ground) > width // 2:
            painted += 1
            dark += sum(1 for p in pixels if max(p) < 96)
    return (width, height), painted, dark


def visible_text(dom: str) -> str:
    """The DOM's text with tags removed and entities decoded, whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.fixture(name="profile")
def fixture_profile(tmp_path: Path) -> Path:
    return tmp_path / "chromium-profile"


@pytest.mark.parametrize(("lang", "html_lang", "title", "provider"), [
    ("zh", "zh-CN", "人工智能服务透明度说明", "name_zh"),
    ("en", "en", "AI service transparency notice", "name"),
], ids=["zh", "en"])
def test_transparency_page(chromium: str, service: Service, profile: Path, lang: str, html_lang: str,
                           title: str, provider: str) -> None:
    """The page loads in its language with its title, no console messages, and a real screenshot."""
    page = visit(chromium, f"{service.url}/ai/transparency?lang={lang}", f"transparency-{lang}", profile, service.url)

    assert re.search(rf'<html lang="{html_lang}"', page.dom)
    assert title in visible_text(page.dom)
    assert getattr(service.hub.profile.provider, provider) in visible_text(page.dom)
    assert [] == page.console
    size, painted, _ = banner_rows(page.screenshot)
    assert WINDOW == size
    assert page.screenshot.stat().st_size > 10_000  # Text on a page, not a blank image.
    assert 0 == painted  # Not an AI answer: no banner (and so the banner check below can fail).


def test_ai_page_shows_the_banner(chromium: str, service: Service, profile: Path) -> None:
    """The wrapped HTML page has the banner first in <body>, visible in the screenshot, and no console messages."""
    page = visit(chromium, f"{service.url}/", "demo-home-with-banner", profile, service.url)

    dom = page.dom
    assert re.search(r'<html lang="en"', dom)
    assert '<meta name="ai-disclosure" content="ai-generated">' in dom.split("</head>")[0]
    body = dom.split("<body>", 1)[1]
    assert body.lstrip().startswith('<aside role="note"'), "the banner is not the first thing in <body>"
    aside = body.split("</aside>", 1)[0]
    style = re.search(r'style="([^"]*)"', aside)
    assert style is not None and not re.search(r"display:\s*none|visibility:\s*hidden", style[1])
    banner_text = visible_text(aside + "</aside>")
    endpoints = service.middleware.endpoints
    # Chromium's first visit has no cookie: the person gets the first-contact notice, in the
    # language the browser asks for (headless Chromium sends Accept-Language: en-US).
    from aiobligations.disclosure import first_contact_notice

    expected = first_contact_notice(endpoints.disclosure, "en", transparency_url=endpoints.transparency_url)
    assert expected in banner_text
    assert '<a href="/ai/transparency"' in aside
    interaction_id = re.search(r"<code>([0-9a-f-]{36})</code>", aside)
    assert interaction_id is not None
    assert "aiobligations demo" in visible_text(body.split("</aside>", 1)[1])
    assert [] == page.console

    size, painted, dark = banner_rows(page.screenshot)
    assert WINDOW == size
    assert painted >= 40, f"only {painted} rows show the banner's ground colour: it is hidden or squashed"
    assert dark >= 500, f"only {dark} dark pixels on the banner: its text is not drawn"

    size_now = service.hub.ledger.flush()
    records = [service.hub.ledger.read(i) for i in range(size_now)]
    (record,) = [r for r in records if r.get("interaction_id") == interaction_id[1]]
    assert ("/", "GET", 200, "html-banner", "first-contact") == (
        record["route"], record["method"], record["status"], record["disclosure"]["body"],
        record["disclosure"]["notice"])


def test_console_messages_from_the_page_are_caught(chromium: str, tmp_path: Path, profile: Path) -> None:
    """The console check is not blind: a page that logs an error and throws is caught, Chromium's noise is not."""
    page_file = tmp_path / "broken.html"
    page_file.write_text('<!doctype html><html lang="en"><body><p>x</p><script>console.error("deliberate");'
                         "undefinedFunction();</script></body></html>")

    page = visit(chromium, page_file.as_uri(), "console-check", profile, "file://")

    messages = [message for message, _ in page.console]
    assert "deliberate" in messages
    assert any("undefinedFunction" in message for message in messages)
    log = (ARTIFACTS / "console-check.log").read_text()
    assert len([line for line in log.splitlines() if CONSOLE_LINE.search(line)]) == len(page.console)
