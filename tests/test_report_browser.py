"""The audit report in headless Chromium: it renders, its charts are drawn, the console stays silent.

Chromium is Debian's ``chromium`` (``scripts/install-chromium``), launched as tests/test_browser.py
does; missing, these tests fail under CI and skip elsewhere. The screenshot, the DOM and Chromium's
log are kept under ``test-artifacts/report/`` (git-ignored) for CI to collect.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_browser import CONSOLE_LINE, fixture_chromium  # noqa: F401 - the chromium fixture.
from test_report import Evidence, fixture_evidence  # noqa: F401 - the ledger fixture, "evidence".

from aiobligations.cli import main

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "report"
WINDOW = (1280, 7000)
# Colours only the charts use (aiobligations/report/render.py COLOURS): on time / applied, late,
# erasures. The page's other ornaments are blue and orange.
CHART_ONLY = {"on time": (0x2E, 0x7D, 0x32), "late": (0xC6, 0x28, 0x28), "erasures": (0x6A, 0x1B, 0x9A)}


@pytest.fixture(scope="module", name="page")
def fixture_page(evidence: Evidence, chromium: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The report written by the CLI, loaded once in Chromium: DOM, console lines, screenshot."""
    folder = tmp_path_factory.mktemp("report-browser")
    out = folder / "report.html"
    result = CliRunner().invoke(main, ["report", "--config", str(evidence.config), "--out", str(out)])
    assert 0 == result.exit_code, result.output
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={folder / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", out.as_uri(),
    ]
    # Chromium's start-up can take seconds on a busy machine: a generous limit, not a sleep.
    run = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=folder)
    (ARTIFACTS / "report.dom.html").write_text(run.stdout)
    (ARTIFACTS / "report.log").write_text(run.stderr)
    assert 0 == run.returncode, f"chromium exited with {run.returncode}:\n{run.stderr[-3000:]}"
    console = [m.group("message") for line in run.stderr.splitlines() if (m := CONSOLE_LINE.search(line))]
    return {"dom": run.stdout, "console": console, "screenshot": screenshot, "folder": folder, "html": out}


def test_renders_without_console_messages(page: dict[str, object]) -> None:
    """The page loads, titled, with every section, and Chromium's console has nothing from it."""
    dom = str(page["dom"])
    assert "<title>Audit report: Example Assistant" in dom
    for section in ("disclosure", "labels", "requests", "incidents", "takeovers", "termination", "retention",
                    "erasures", "records"):
        assert f'<section id="{section}">' in dom
    assert [] == page["console"]


def test_charts_are_drawn_and_visible(page: dict[str, object]) -> None:
    """The inline SVG charts are in the DOM and their colours are painted in the screenshot."""
    from PIL import Image

    dom = str(page["dom"])
    assert dom.count('<svg class="chart"') >= 5
    with Image.open(str(page["screenshot"])) as image:
        assert WINDOW == image.size
        colours = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=1 << 20) or []}
    for name, rgb in CHART_ONLY.items():
        assert rgb in colours, f"no {name} chart segment painted"


def test_pdf_is_printed(evidence: Evidence, page: dict[str, object], chromium: str) -> None:
    """--pdf prints the same page to PDF with the same Chromium."""
    folder = Path(str(page["folder"]))
    pdf = folder / "report.pdf"
    result = CliRunner().invoke(main, ["report", "--config", str(evidence.config), "--out",
                                       str(folder / "again.html"), "--pdf", str(pdf)])
    assert 0 == result.exit_code, result.output
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 20_000
    assert (folder / "again.html").read_bytes() == Path(str(page["html"])).read_bytes()
