"""The documentation's examples run, and every public name is exported and documented."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from pathlib import Path

import pytest

from aiobligations.keys import init_project

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = [
    "aiobligations",
    "aiobligations.adapters",
    "aiobligations.controls",
    "aiobligations.controls.cli",
    "aiobligations.controls.cli_filing",
    "aiobligations.controls.cli_terminate",
    "aiobligations.controls.errors",
    "aiobligations.controls.filing",
    "aiobligations.controls.incidents",
    "aiobligations.controls.notices",
    "aiobligations.controls.state",
    "aiobligations.controls.takeover",
    "aiobligations.controls.termination",
    "aiobligations.demo",
    "aiobligations.disclosure",
    "aiobligations.disclosure.document",
    "aiobligations.disclosure.header",
    "aiobligations.disclosure.notices",
    "aiobligations.disclosure.page",
    "aiobligations.disclosure.securitytxt",
    "aiobligations.disclosure.settings",
    "aiobligations.errors",
    "aiobligations.inference",
    "aiobligations.interaction",
    "aiobligations.keys",
    "aiobligations.labels",
    "aiobligations.labels.annex_e",
    "aiobligations.labels.audio",
    "aiobligations.labels.c2pa",
    "aiobligations.labels.certs",
    "aiobligations.labels.conformance",
    "aiobligations.labels.explicit",
    "aiobligations.labels.fonts",
    "aiobligations.labels.formats.gif",
    "aiobligations.labels.formats.jpeg",
    "aiobligations.labels.formats.markdown",
    "aiobligations.labels.formats.mp3",
    "aiobligations.labels.formats.mp4",
    "aiobligations.labels.formats.ooxml",
    "aiobligations.labels.formats.pdf",
    "aiobligations.labels.formats.png",
    "aiobligations.labels.formats.tiff",
    "aiobligations.labels.formats.wav",
    "aiobligations.labels.formats.webp",
    "aiobligations.labels.labeller",
    "aiobligations.labels.settings",
    "aiobligations.labels.video",
    "aiobligations.labels.watermark",
    "aiobligations.labels.xmp",
    "aiobligations.ledger",
    "aiobligations.ledger.bundle",
    "aiobligations.ledger.crypto",
    "aiobligations.ledger.daemon",
    "aiobligations.ledger.follow",
    "aiobligations.ledger.ledger",
    "aiobligations.ledger.merkle",
    "aiobligations.ledger.note",
    "aiobligations.ledger.otlp",
    "aiobligations.ledger.postgres",
    "aiobligations.ledger.process",
    "aiobligations.ledger.reader",
    "aiobligations.ledger.receipts",
    "aiobligations.ledger.records",
    "aiobligations.ledger.replica",
    "aiobligations.ledger.retention",
    "aiobligations.ledger.sequencer",
    "aiobligations.ledger.spool",
    "aiobligations.ledger.store",
    "aiobligations.ledger.verify",
    "aiobligations.ledger.writer",
    "aiobligations.obligations",
    "aiobligations.replicastate",
    "aiobligations.testing",
    "aiobligations.middleware",
    "aiobligations.middleware.asgi",
    "aiobligations.middleware.capture",
    "aiobligations.middleware.controls",
    "aiobligations.middleware.endpoints",
    "aiobligations.middleware.policy",
    "aiobligations.middleware.openapi",
    "aiobligations.middleware.request_pages",
    "aiobligations.middleware.requests",
    "aiobligations.middleware.termination",
    "aiobligations.middleware.operators",
    "aiobligations.middleware.ratelimits",
    "aiobligations.middleware.types",
    "aiobligations.middleware.views",
    "aiobligations.profile",
    "aiobligations.records",
    "aiobligations.report",
    "aiobligations.report.build",
    "aiobligations.report.cli",
    "aiobligations.report.collect",
    "aiobligations.report.render",
    "aiobligations.requests",
    "aiobligations.requests.calendar",
    "aiobligations.requests.cli",
    "aiobligations.requests.workflow",
    "aiobligations.sharedstate",
    "aiobligations.witness",
    "aiobligations.witness.client",
    "aiobligations.witness.command",
    "aiobligations.witness.cosignature",
    "aiobligations.witness.server",
    "aiobligations.witness.timestamp",
]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_has_a_runnable_example(page: Path, tmp_path: Path, monkeypatch) -> None:
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no runnable example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})


def test_readme_integration_runs(tmp_path: Path, monkeypatch) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks(ROOT / "README.md")
    from starlette.responses import JSONResponse
    from starlette.routing import Route as StarletteRoute

    async def completions(request):  # A 2xx answer: an unknown path's 404 is no AI content, not disclosed.
        return JSONResponse({"object": "chat.completion", "choices": []})

    namespace: dict = {"app": Starlette(routes=[StarletteRoute("/v1/chat/completions", completions, methods=["POST"])])}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
        assert 1 == namespace["obligations"].ledger.flush()
        with TestClient(namespace["app"]) as client:
            assert "AI-Disclosure" in client.post("/v1/chat/completions", json={}).headers
    finally:
        namespace["obligations"].close()


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_complete_and_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    # isort style, as ruff's RUF022: CONSTANTS, then Classes, then functions, each alphabetical.
    def group(n: str) -> tuple[int, str]:
        return (0 if n.isupper() else 1 if n[0].isupper() else 2, n)

    assert sorted(exported, key=group) == list(exported), f"{name}.__all__ is not sorted"
    assert module.__doc__, f"{name} has no module docstring"
    for public in exported:
        obj = getattr(module, public)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{public} has no docstring"
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    assert member.__doc__, f"{name}.{public}.{attr} has no docstring"
    defined = {
        n for n, o in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))
        and getattr(o, "__module__", None) == name
    }
    assert defined <= set(exported), f"{name} defines public names missing from __all__: {defined - set(exported)}"


def test_scripts_are_executable() -> None:
    for script in ("scripts/demo", "scripts/test", "scripts/bootstrap", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), script


def test_the_repository_stands_alone() -> None:
    """No tracked file points outside the repository: a fresh clone with nothing beside it is complete."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.fail(f"git ls-files failed: {listed.stderr.decode(errors='replace')}", pytrace=False)
    # A parent folder named shared, paths into its design notes, or a path joined from that name.
    outside = re.compile(rb"\.\./shared|(?<![\w/])shared/(?:DESIGN|LABELS|STYLE|vectors|law)|/ *[\"']shared[\"'] */")
    offenders = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        if outside.search(path.read_bytes()):
            offenders.append(name)
    assert [] == offenders, f"these files refer to a folder outside the repository: {offenders}"


def test_every_error_a_caller_can_catch_is_in_the_tree() -> None:
    """Every exception class our public modules define derives from ObligationError (issue 12)."""
    from aiobligations.errors import ObligationError

    outside = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attribute in getattr(module, "__all__", ()):
            value = getattr(module, attribute)
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                if not issubclass(value, ObligationError):
                    outside.append(f"{name}.{attribute}")
    assert outside == []


def test_no_bare_value_error_is_raised() -> None:
    """A bad argument or value is a ConfigurationError (still a ValueError), never a bare ValueError (issue 12).

    A wrong *type* stays a TypeError: a programming error, like Python's own.
    """
    root = Path(__file__).resolve().parent.parent
    bare = re.compile(r"\braise (ValueError|Exception|RuntimeError)\(")
    found = [f"{path.relative_to(root)}:{number}"
             for folder in ("aiobligations", "middleware", "adapters")
             for path in sorted((root / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if bare.search(line)]
    assert found == []


def test_every_package_folder_is_installed() -> None:
    """A wheel holds every package: a folder with __init__.py missing from pyproject's list broke installs once."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapped = config["package-dir"]
    found = set()
    for name, folder in mapped.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            if "__pycache__" not in relative:
                found.add(".".join((name, *relative)))
    assert sorted(found - set(config["packages"])) == []
