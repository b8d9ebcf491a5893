"""A newcomer's path through the README: the demo, then its command examples as written.

The demo runs as `scripts/demo` runs it (the real `aiobligations demo`, from a `demo` folder under
a fresh "repository root" in a temporary folder), serves a chat and an image, and stops on SIGTERM.
Then every command in the README's shell blocks after `scripts/demo` and `scripts/test` runs from
that root with the real console script, so the test fails if the README drifts from the code.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiobligations.demo.models import ToyChatModel, ToyImageModel

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
CLI = VENV_BIN / "aiobligations"


def readme_commands() -> list[str]:
    """The command lines of the README's ``sh`` blocks, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def cli_examples() -> list[str]:
    """The README's commands a newcomer runs after the demo: all but the two scripts."""
    return [line for line in readme_commands() if not line.startswith("scripts/")]


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "AIOBLIGATIONS_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository root where the demo has run: its profile, keys and ledger in ``demo/``."""
    root = tmp_path_factory.mktemp("repo")
    (root / "demo").mkdir()
    process = subprocess.Popen([str(CLI), "demo", "--port", "0"], cwd=root / "demo", env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail("the demo did not announce its address:\n" + "".join(seen))
            seen.append(line)
            if "serving on " in line:
                url = line.split("serving on ")[1].split()[0].rstrip("/")
        with httpx.Client(base_url=url, timeout=30) as client:
            chat = client.post("/v1/chat/completions",
                               json={"model": ToyChatModel.name, "messages": [{"role": "user", "content": "hi"}]})
            assert 200 == chat.status_code, chat.text
            image = client.post("/v1/images/generations", json={"model": ToyImageModel.name, "prompt": "a fox"})
            assert 200 == image.status_code, image.text
            unknown = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": []})
            assert 404 == unknown.status_code
            assert ToyChatModel.name in unknown.text and ToyImageModel.name in unknown.text
        # "in another terminal": the README's first check works while the demo still serves.
        while_serving = run(cli_examples()[0], root)
        assert 0 == while_serving.returncode and while_serving.stdout.startswith("intact: "), while_serving.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Drain what the demo said while stopping.
    while (line := lines.get(timeout=5)) is not None:
        seen.append(line)
    process.stderr.close()
    assert 0 == process.returncode, "".join(seen)
    assert any("ledger flushed and closed" in line for line in seen), "".join(seen)
    assert (root / "demo" / "aiobligations.toml").is_file()
    yield root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A README command line as a newcomer types it, with ``.venv/bin/`` this test's virtualenv."""
    words = shlex.split(command)
    if words[0].startswith(".venv/bin/"):
        words[0] = str(VENV_BIN / words[0].removeprefix(".venv/bin/"))
    return subprocess.run(words, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120)


def test_scripts_demo_serves_from_the_demo_folder_under_the_root() -> None:
    """What the fixture reproduces: scripts/demo runs `aiobligations demo` from ./demo."""
    script = (ROOT / "scripts" / "demo").read_text(encoding="utf-8")

    assert 'cd "$(dirname "$0")/.."' in script
    assert re.search(r"^mkdir -p demo$", script, re.M) and re.search(r"^cd demo$", script, re.M)
    assert re.search(r"^exec \.\./\.venv/bin/aiobligations demo ", script, re.M)


def test_the_readme_names_the_demo_models_and_its_commands_cover_the_newcomer_path() -> None:
    text = README.read_text(encoding="utf-8")
    commands = cli_examples()

    assert f"`{ToyChatModel.name}`" in text and f"`{ToyImageModel.name}`" in text
    assert ["scripts/demo", "scripts/test"] == [line for line in readme_commands() if line.startswith("scripts/")]
    for verb in ("export", "verify", "label", "inspect"):
        assert any(f"aiobligations {verb} " in line for line in commands), verb


def test_the_readme_commands_work_as_written_from_the_root(root: Path) -> None:
    """Each command exits 0, uses the demo's profile by itself and says so, and prints what the README says."""
    outputs = {}
    for command in cli_examples():
        result = run(command, root)
        assert 0 == result.returncode, f"{command}\n{result.stdout}\n{result.stderr}"
        if "aiobligations " in command:
            assert "aiobligations: using profile demo/aiobligations.toml (the demo's)" in result.stderr.splitlines(), command
        outputs[command] = result.stdout

    for command, out in outputs.items():
        words = command.split()
        if "verify" in words:
            assert out.startswith("intact: ") and "records" in out, out
        elif "export" in words:
            assert out.startswith("wrote demo/bundle.tar.gz: "), out
        elif "label" in words:
            lines = out.splitlines()
            assert [line.split(" — ")[0] for line in lines[1:]] == [
                "applied: implicit label (GB 45438 metadata)", "applied: explicit label", "applied: watermark",
                "applied: C2PA manifest"], out
        elif "inspect" in words:
            report = json.loads(out)  # Standard output is the JSON alone: the profile line went to stderr.
            assert report["labelled"] is True
            assert report["explicit"]["caption"]["present"] is True, report["explicit"]
            assert report["watermark"]["present"] is True, report["watermark"]
            assert report["c2pa"] is not None and report["gb45438"], report


def test_the_ledger_holds_the_demo_interactions_and_the_labels(root: Path) -> None:
    """The bundle the README exports carries what the demo and `label` did."""
    result = run(f"{CLI} verify demo/ledger.db --json", root)

    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    assert report["intact"] is True and report["end"] - report["start"] >= 3, report


class TestProfileDiscovery:
    """One rule for every command: --config, $AIOBLIGATIONS_CONFIG, ./aiobligations.toml, ./demo/aiobligations.toml."""

    @pytest.fixture
    def folders(self, tmp_path: Path) -> tuple[Path, Path, Path]:
        """Three profiles, each with a ledger of one record signed by its own key."""
        from aiobligations import Obligations
        from aiobligations.keys import init_project

        here, demo, other = tmp_path / "here", tmp_path / "here" / "demo", tmp_path / "other"
        for folder, origin in ((here, "example.com/here"), (demo, "example.com/demo"), (other, "example.com/other")):
            with Obligations.from_file(init_project(folder, origin=origin)) as hub:
                hub.ledger.append({"kind": "risk", "summary": origin})
        return here, demo, other

    def verify(self, cwd: Path, ledger: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """`verify LEDGER` with the key of whichever profile the CLI finds: exit 0 only with that ledger's own."""
        result = subprocess.run([str(CLI), "verify", str(ledger), *args], cwd=cwd, env=environment() | (env or {}),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), result.stderr
        assert result.returncode == 0 or "another key" in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if "using profile" in line]
        return result.returncode, lines[0] if lines else ""

    def test_each_source_in_order(self, folders: tuple[Path, Path, Path]) -> None:
        here, demo, other = folders
        named = {"AIOBLIGATIONS_CONFIG": str(other / "aiobligations.toml")}

        assert (0, f"aiobligations: using profile {other / 'aiobligations.toml'} (from $AIOBLIGATIONS_CONFIG)") == (
            self.verify(here, other / "ledger.db", env=named))
        assert 1 == self.verify(here, here / "ledger.db", env=named)[0]
        assert (0, "") == self.verify(here, here / "ledger.db")  # ./aiobligations.toml: in plain sight, unannounced.
        assert 1 == self.verify(here, demo / "ledger.db")[0]
        (here / "aiobligations.toml").unlink()
        assert (0, "aiobligations: using profile demo/aiobligations.toml (the demo's)") == (
            self.verify(here, demo / "ledger.db"))

    def test_an_explicit_config_comes_first_and_is_not_announced(self, folders: tuple[Path, Path, Path]) -> None:
        here, _, other = folders

        assert (0, "") == self.verify(here, other / "ledger.db", "--config", str(other / "aiobligations.toml"),
                                      env={"AIOBLIGATIONS_CONFIG": str(here / "aiobligations.toml")})

    def test_inspect_keeps_stdout_json_and_labels_use_the_found_profile(self, folders: tuple[Path, Path, Path]) -> None:
        here, demo, _ = folders
        (here / "aiobligations.toml").unlink()
        from PIL import Image

        Image.radial_gradient("L").resize((640, 480)).convert("RGB").save(here / "in.png")
        labelled = subprocess.run([str(CLI), "label", "in.png", "out.png"], cwd=here, env=environment(),
                                  capture_output=True, text=True, timeout=120)
        inspected = subprocess.run([str(CLI), "inspect", "out.png"], cwd=here, env=environment(),
                                   capture_output=True, text=True, timeout=120)

        assert 0 == labelled.returncode, labelled.stderr
        assert "aiobligations: using profile demo/aiobligations.toml (the demo's)" in labelled.stderr
        assert 0 == inspected.returncode, inspected.stderr
        report = json.loads(inspected.stdout)
        (entry,) = report["gb45438"]
        assert entry["reserved_code1"].startswith("verified"), entry  # The demo profile's key.
        assert (demo / "ledger.db").exists()

    def test_no_profile_anywhere_is_one_line_naming_the_rule(self, tmp_path: Path) -> None:
        result = subprocess.run([str(CLI), "export", "--out", "b.tar.gz"], cwd=tmp_path, env=environment(),
                                capture_output=True, text=True, timeout=60)

        assert 2 == result.returncode
        (line,) = result.stderr.splitlines()
        assert line.startswith("aiobligations: no profile: looked for ./aiobligations.toml and "
                               "./demo/aiobligations.toml; give --config PATH, set AIOBLIGATIONS_CONFIG"), line

    def test_the_help_states_the_rule(self) -> None:
        result = subprocess.run([str(CLI), "--help"], env=environment(), capture_output=True, text=True, timeout=60)

        text = " ".join(result.stdout.split())
        assert ("--config PATH, else $AIOBLIGATIONS_CONFIG, else ./aiobligations.toml, else "
                "./demo/aiobligations.toml") in text
        assert 'One named by $AIOBLIGATIONS_CONFIG, or the demo\'s, is said on standard error: "aiobligations: using profile PATH"' in text


def test_scripts_test_says_what_it_installs_and_why_before_and_what_to_do_without(tmp_path: Path) -> None:
    """scripts/test, with stand-ins for the install steps: the announcement comes first, then the advice."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    stubs = {
        "scripts/test": (ROOT / "scripts" / "test").read_text(encoding="utf-8"),
        "scripts/bootstrap": "#!/usr/bin/env bash\necho BOOTSTRAP >&2\n",
        "scripts/install-chromium": "#!/usr/bin/env bash\necho INSTALL-CHROMIUM >&2\nexit 1\n",
        ".venv/bin/python": '#!/usr/bin/env bash\necho "PYTEST $*"\n',
    }
    for name, text in stubs.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        (tmp_path / name).chmod(0o755)

    local = subprocess.run([str(tmp_path / "scripts" / "test"), "-q"], env=environment() | {"CI": ""},
                           capture_output=True, text=True, timeout=60)
    ci = subprocess.run([str(tmp_path / "scripts" / "test"), "-q"], env=environment() | {"CI": "true"},
                        capture_output=True, text=True, timeout=60)

    assert 0 == local.returncode and "PYTEST -m pytest -q" == local.stdout.strip()
    said = local.stderr
    announced = said.index("test: checking for Chromium and a CJK font (the browser tests need them)")
    assert said.index("BOOTSTRAP") < announced < said.index("INSTALL-CHROMIUM")
    assert "chromium, fonts-wqy-microhei" in said[announced:said.index("INSTALL-CHROMIUM")]
    after = said[said.index("INSTALL-CHROMIUM"):]
    assert "the browser tests will be skipped" in after and "Without apt-get or sudo" in after
    assert 1 == ci.returncode and "PYTEST" not in ci.stdout
    assert "error: CI needs Chromium and the font" in ci.stderr


def test_install_chromium_says_what_and_why_before_apt_get_and_what_to_do_without_it(tmp_path: Path) -> None:
    """With neither Chromium nor a CJK font on PATH: the packages and the reason come before apt-get runs."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "head"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    script = str(ROOT / "scripts" / "install-chromium")
    bash = shutil.which("bash")
    assert bash is not None

    without_apt = subprocess.run([bash, script], env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                                 timeout=60)
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f'#!{bash}\necho "$*" >> {calls}\nexit 1\n', encoding="utf-8")
    (bin_dir / "apt-get").chmod(0o755)
    failing_apt = subprocess.run([bash, script], env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                                 timeout=60)

    assert 1 == without_apt.returncode
    assert "apt-get is not available; install a Chromium (the chromium command) and a CJK font" in without_apt.stderr
    assert 1 == failing_apt.returncode
    said = failing_apt.stderr
    if os.geteuid() == 0:  # As root, apt-get runs directly (elsewhere sudo, which this PATH lacks).
        intro = said.index("install-chromium: installing Debian's chromium fonts-wqy-microhei")
        assert intro < said.index("running: apt-get")
        assert "headless Chromium for the browser tests, and a font so their Chinese text renders" in said
        assert calls.read_text(encoding="utf-8").startswith("-o DPkg::Lock::Timeout=300 update")
    else:
        assert "installing needs root (or sudo)" in said and not calls.exists()


def test_quickstart_runs_as_its_docstring_says(tmp_path: Path) -> None:
    """From a repository root, with no argument: it works in ./demo/quickstart, not in the demo's own files."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "aiobligations.toml").write_text("# the demo's profile, left alone\n", encoding="utf-8")

    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path,
                            env=environment(), capture_output=True, text=True, timeout=180)

    assert 0 == result.returncode, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("1. wrote demo/quickstart/aiobligations.toml and development keys in demo/quickstart/keys")
    assert 3 == out.count("\n2. interaction ")
    assert "3. bob erased (record 6)" in out and "the ledger holds 7 records" in out
    assert "wrote demo/quickstart/audit-bundle.tar.gz: 7 records [0, 7)" in out
    assert "intact: 7 records [0, 7) of localhost/aiobligations/quickstart" in out
    assert "# the demo's profile, left alone\n" == (tmp_path / "demo" / "aiobligations.toml").read_text(encoding="utf-8")
    assert not (tmp_path / "demo" / "ledger.db").exists()
