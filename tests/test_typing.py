"""The package type-checks: mypy, configured by pyproject.toml's ``[tool.mypy]``, runs in the suite.

Running mypy here rather than as a step of scripts/test means that ``pytest`` alone, which is what a
developer runs, fails on a type error too, and so does CI (``.ci/run`` runs the suite). mypy keeps
its cache in ``.mypy_cache``: a run after the first checks only what changed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def test_the_package_type_checks() -> None:
    """``python -m mypy`` finds no error in the package, its middleware and adapters, or tests/typing."""
    result = mypy()

    assert 0 == result.returncode, f"mypy found errors:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


def test_mypy_reads_the_real_types_of_the_mapped_folders(tmp_path: Path) -> None:
    """A user's wrong annotation is an error naming our types (the API is not ``Any``), middleware included."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text("\n".join([
        "from aiobligations import Obligations",
        "from aiobligations.middleware import ObligationsMiddleware",
        "from aiobligations.adapters.otel import current_trace_ids",
        "hub: int = Obligations.from_file('aiobligations.toml')",
        "wrapped: str = ObligationsMiddleware(app=None, obligations=hub)",
        "ids: bytes = current_trace_ids()",
    ]), encoding="utf-8")

    result = mypy(str(snippet))

    assert 1 == result.returncode, result.stdout + result.stderr
    assert "snippet.py:4: error" in result.stdout, result.stdout
    assert 'expression has type "Obligations", variable has type "int"' in result.stdout
    assert 'Argument "app" to "ObligationsMiddleware" has incompatible type "None"' in result.stdout
    assert 'expression has type "ObligationsMiddleware", variable has type "str"' in result.stdout
    assert 'variable has type "bytes"' in result.stdout
    assert "import-not-found" not in result.stdout


def test_every_folder_mapped_into_the_package_is_checked() -> None:
    """Each folder setuptools installs under ``aiobligations.`` has its link in typings/ and is in mypy's files.

    mypy cannot read setuptools' ``package-dir`` mapping from the editable install; the links under
    typings/aiobligations/ give it the installed names. A new mapped folder without its link would
    go unchecked, or be checked under the wrong name.
    """
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    checked = config["tool"]["mypy"]["files"]

    mapped = {package: folder for package, folder in mapping.items() if package != folder}
    assert mapped, "the test expects folders mapped into the package (middleware/, adapters/)"
    for package, folder in mapped.items():
        link = ROOT / "typings" / Path(*package.split("."))
        assert link.is_symlink(), f"{link.relative_to(ROOT)} should link to {folder}/"
        assert (ROOT / folder).resolve() == link.resolve()
        assert link.relative_to(ROOT).as_posix() in checked
