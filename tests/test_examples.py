"""The runnable examples: each one disclosing and leaving evidence, in process and as ``python examples/x.py``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from aiobligations import ConfigurationError, Obligations
from aiobligations.demo import ToyChatModel
from aiobligations.disclosure import parse_dictionary
from aiobligations.keys import init_project
from aiobligations.middleware import CONFIG_ENV, ObligationsMiddleware

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MESSAGES = [{"role": "user", "content": "Please summarise the obligations a provider of an AI service has."}]
LINK = '</.well-known/ai-transparency>; rel="describedby"'


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the folder is not a package)."""
    module_name = f"aiobligations_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves the request model's annotations through it.
    spec.loader.exec_module(module)
    return module


@pytest.fixture(name="hub")
def fixture_hub(tmp_path: Path) -> Iterator[Obligations]:
    hub = Obligations.from_file(init_project(tmp_path / "site"))
    yield hub
    hub.close()


def interactions(hub: Obligations) -> list[dict[str, Any]]:
    """Every ``interaction`` record in the hub's ledger, after waiting for what is queued."""
    size = hub.ledger.flush()
    return [r for r in (hub.ledger.read(i) for i in range(size)) if r["kind"] == "interaction"]


def ledger_interactions(config: Path) -> list[dict[str, Any]]:
    """The interaction records of the ledger a profile names (the writer has exited)."""
    with Obligations.from_file(config) as hub:
        return interactions(hub)


def assert_disclosed(headers: httpx.Headers) -> str:
    """Check the three disclosure headers; return the interaction id."""
    disclosure = parse_dictionary(headers["ai-disclosure"])
    assert ("ai-originated", "Example Co") == (disclosure["mode"], disclosure["provider"])
    assert LINK == headers["link"]
    interaction_id = headers["ai-interaction-id"]
    assert 7 == uuid.UUID(interaction_id).version
    return interaction_id


def sse_events(text: str) -> tuple[list[str], list[str]]:
    """Split an event stream into its comment lines and its ``data:`` payloads."""
    comments = [line[1:].strip() for line in text.splitlines() if line.startswith(":")]
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return comments, data


class Served:
    """An example running as ``python examples/x.py FOLDER --port 0``."""

    url: str | None = None
    returncode: int | None = None
    output: str = ""


@contextmanager
def serve_example(script: str, folder: Path) -> Iterator[Served]:
    """Run an example server on a free loopback port; on leaving, SIGTERM it and wait for it to exit."""
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), str(folder), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # The process closed its output: it has exited.

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    served, seen = Served(), []
    try:
        deadline = time.monotonic() + 30
        while served.url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"{script} did not announce its address:\n" + "".join(seen))
            seen.append(line)
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                served.url = found.group(1)
        yield served
        process.send_signal(signal.SIGTERM)
        served.returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
        while not lines.empty():
            seen.append(lines.get() or "")
        served.output = "".join(seen)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("name", ["fastapi_app", "starlette_app", "batch_job"])
class TestProfiles:
    """Each example finds its profile the same way: the environment, a given folder, or a new temporary one."""

    def test_writes_a_profile_into_the_folder_it_is_given(self, name: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        with load_example(name).open_obligations(tmp_path / "given") as hub:
            assert tmp_path / "given" / "ledger.db" == hub.profile.ledger.path
        assert (tmp_path / "given" / "aiobligations.toml").is_file()
        assert (tmp_path / "given" / "keys" / "ledger.key").is_file()

    def test_reuses_an_existing_profile(self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        config = init_project(tmp_path / "existing")
        written = config.read_bytes()
        with load_example(name).open_obligations(tmp_path / "existing") as hub:
            assert tmp_path / "existing" / "ledger.db" == hub.profile.ledger.path
        assert written == config.read_bytes()

    def test_reads_the_profile_named_by_the_environment(self, name: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        config = init_project(tmp_path / "from-env")
        monkeypatch.setenv(CONFIG_ENV, str(config))
        with load_example(name).open_obligations(tmp_path / "ignored") as hub:
            assert tmp_path / "from-env" / "ledger.db" == hub.profile.ledger.path
        assert not (tmp_path / "ignored").exists()

    def test_uses_a_new_temporary_folder_without_one(self, name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CONFIG_ENV, raising=False)
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
        with load_example(name).open_obligations() as hub:
            folder = hub.profile.ledger.path.parent
        assert tmp_path == folder.parent
        assert (folder / "aiobligations.toml").is_file()


class TestFastAPIExample:
    @pytest.fixture(name="client")
    def fixture_client(self, hub: Obligations) -> Iterator[TestClient]:
        # Not entered as a context manager: the lifespan would close the hub the test still reads.
        client = TestClient(load_example("fastapi_app").create_app(hub))
        yield client
        client.close()

    def test_the_middleware_is_added_in_one_line(self) -> None:
        source = (EXAMPLES / "fastapi_app.py").read_text()
        assert 1 == source.count("app.add_middleware(ObligationsMiddleware, obligations=obligations)")

    def test_chat_completion_discloses_and_is_recorded(self, client: TestClient, hub: Obligations) -> None:
        response = client.post("/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES})

        assert 200 == response.status_code
        interaction_id = assert_disclosed(response.headers)
        body = response.json()
        assert ToyChatModel().complete(MESSAGES) == body["choices"][0]["message"]["content"]
        assert interaction_id == body["ai_disclosure"]["interaction_id"]
        (record,) = interactions(hub)
        assert (interaction_id, "/v1/chat/completions", 200, "completed", "toy-1", "json-field") == (
            record["interaction_id"], record["route"], record["status"], record["outcome"], record["model"],
            record["disclosure"]["body"])
        usage = ToyChatModel().usage(MESSAGES, ToyChatModel().complete(MESSAGES))
        assert {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]} == record["usage"]

    def test_stream_gets_a_first_comment_and_the_same_text(self, client: TestClient, hub: Obligations) -> None:
        response = client.post("/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES, "stream": True})

        interaction_id = assert_disclosed(response.headers)
        assert response.text.startswith(": ")
        comments, data = sse_events(response.text)
        assert f"{hub.notice} ({interaction_id})" == comments[0]
        assert "[DONE]" == data[-1]
        deltas = [json.loads(event)["choices"][0]["delta"]["content"] for event in data[:-1]]
        assert ToyChatModel().complete(MESSAGES) == "".join(deltas)
        (record,) = interactions(hub)
        assert (interaction_id, True, "sse-comment") == (
            record["interaction_id"], record["stream"], record["disclosure"]["body"])

    def test_other_routes_are_left_alone(self, client: TestClient, hub: Obligations) -> None:
        response = client.get("/health")

        assert {"status": "ok"} == response.json()
        assert "ai-disclosure" not in response.headers
        assert [] == interactions(hub)

    def test_transparency_endpoints_are_served(self, client: TestClient) -> None:
        document = client.get("/.well-known/ai-transparency")
        page = client.get("/ai/transparency", params={"lang": "en"})

        assert "Example Co" in json.dumps(document.json(), ensure_ascii=False)
        assert page.headers["content-type"].startswith("text/html")
        assert '<html lang="en">' in page.text

    def test_runs_as_a_script_and_flushes_the_ledger_on_sigterm(self, tmp_path: Path) -> None:
        folder = tmp_path / "served"
        with serve_example("fastapi_app.py", folder) as served:
            reply = httpx.post(f"{served.url}/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES},
                               timeout=10)
            interaction_id = assert_disclosed(reply.headers)

        assert served.returncode in (0, -signal.SIGTERM), served.output
        assert f"ledger: {folder / 'ledger.db'}" in served.output
        assert [interaction_id] == [r["interaction_id"] for r in ledger_interactions(folder / "aiobligations.toml")]


class TestStarletteExample:
    @pytest.fixture(name="client")
    def fixture_client(self, hub: Obligations) -> Iterator[TestClient]:
        client = TestClient(load_example("starlette_app").create_app(hub))
        yield client
        client.close()

    def test_answer_page_gets_a_banner(self, client: TestClient, hub: Obligations) -> None:
        response = client.get("/ask", params={"q": "Hello there"})

        interaction_id = assert_disclosed(response.headers)
        page = response.text
        assert page.index("<body>") < page.index('<aside role="note"') < page.index("<main")
        assert '<meta name="ai-disclosure"' in page.split("</head>")[0]
        assert interaction_id in page.split("</aside>")[0]
        assert ToyChatModel().complete([{"role": "user", "content": "Hello there"}]) in page
        assert str(len(response.content)) == response.headers["content-length"]
        (record,) = interactions(hub)
        assert (interaction_id, "/ask", "GET", "html-banner") == (
            record["interaction_id"], record["route"], record["method"], record["disclosure"]["body"])

    def test_chat_completion_discloses(self, client: TestClient, hub: Obligations) -> None:
        response = client.post("/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES})

        interaction_id = assert_disclosed(response.headers)
        assert ToyChatModel().complete(MESSAGES) == response.json()["choices"][0]["message"]["content"]
        assert interaction_id == response.json()["ai_disclosure"]["interaction_id"]
        assert [interaction_id] == [r["interaction_id"] for r in interactions(hub)]

    def test_runs_as_a_script_and_flushes_the_ledger_on_sigterm(self, tmp_path: Path) -> None:
        folder = tmp_path / "served"
        with serve_example("starlette_app.py", folder) as served:
            reply = httpx.get(f"{served.url}/ask", params={"q": "你好"}, timeout=10)
            interaction_id = assert_disclosed(reply.headers)
            assert '<aside role="note"' in reply.text

        assert served.returncode in (0, -signal.SIGTERM), served.output
        (record,) = ledger_interactions(folder / "aiobligations.toml")
        assert (interaction_id, "/ask") == (record["interaction_id"], record["route"])


class TestBatchExample:
    def test_one_sealed_record_per_call_with_the_notice_inside(self, hub: Obligations) -> None:
        example = load_example("batch_job")
        jobs = example.JOBS

        results, streamed = example.run(hub, jobs)

        records = {r["interaction_id"]: r for r in interactions(hub)}
        assert len(jobs) + 1 == len(records)  # One per call: every job, then the streamed answer.
        model = ToyChatModel()
        for job, result in zip(jobs, results, strict=True):
            assert model.complete([{"role": "user", "content": job["text"]}]) == result["summary"]
            assert hub.notice == result["notice"]  # current_interaction() gave it inside the call.
            record = records[result["interaction_id"]]
            assert ("completed", "toy-1") == (record["outcome"], record["model"])
            assert record["call"].endswith("summarise")
            assert job["user_id"] == record["personal"]["input"]["kwargs"]["user_id"]
            assert result == record["personal"]["output"]
        streamed_id = streamed[0].split()[-1].rstrip("]")
        assert streamed[0].startswith(f"[{hub.notice} ")
        assert model.complete([{"role": "user", "content": jobs[-1]["text"]}]) == "".join(streamed[1:])
        assert streamed == records[streamed_id]["personal"]["output"]
        assert records[streamed_id]["call"].endswith("stream_answer")

    def test_subjects_are_pseudonymised_and_their_data_sealed(self, hub: Obligations) -> None:
        example = load_example("batch_job")
        results, _ = example.run(hub, example.JOBS)
        size = hub.ledger.flush()

        stored = [hub.ledger._store.get_record(i)[2] for i in range(size)]
        subjects = {result["interaction_id"]: job["user_id"] for job, result in zip(example.JOBS, results, strict=True)}
        pseudonyms: dict[str, set[str]] = {}
        for raw in stored:
            record = json.loads(raw)
            if record.get("interaction_id") in subjects:
                assert "sealed" in record and "personal" not in record
                pseudonyms.setdefault(subjects[record["interaction_id"]], set()).add(record["subject"])
        for raw in stored:
            for secret in ("user-1001", "user-1002", "tenancy", "notice period"):
                assert secret.encode() not in raw
        # The same person always gets the same pseudonym; two people get two.
        assert {1} == {len(names) for names in pseudonyms.values()}
        assert 2 == len(set().union(*pseudonyms.values()))

    def test_runs_as_a_script(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
        result = subprocess.run([sys.executable, str(EXAMPLES / "batch_job.py"), str(tmp_path / "job")],
                                capture_output=True, text=True, timeout=60, env=env)

        assert 0 == result.returncode, result.stderr
        records = ledger_interactions(tmp_path / "job" / "aiobligations.toml")
        assert 4 == len(records)
        for record in records:
            assert record["interaction_id"] in result.stdout


VLLM_RECIPE = EXAMPLES / "vllm.md"


def recipe_command() -> tuple[str, str]:
    """The environment variable and the ``--middleware`` value of the recipe's ``vllm serve`` command."""
    text = VLLM_RECIPE.read_text()
    command = re.search(r"(\w+)=(\S+) \\\n\s*vllm serve .*\n\s*--middleware (\S+)", text)
    assert command is not None, "examples/vllm.md has no `X=... vllm serve ... --middleware ...` command"
    return command.group(1), command.group(3)


def vllm_like_app() -> Any:
    """A FastAPI app shaped like vLLM's OpenAI server: its routes, CORS and its API-key check."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse

    model = ToyChatModel()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.name, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> Any:
        reply = model.complete(body["messages"])
        return {"object": "chat.completion", "model": body["model"], "usage": model.usage(body["messages"], reply),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}

    class APIKeyCheck:  # Like vLLM's AuthenticationMiddleware: /v1 needs the key.
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            headers = dict(scope.get("headers", ()))
            if scope["type"] == "http" and scope["path"].startswith("/v1") and \
                    headers.get(b"authorization") != b"Bearer sk-test":
                await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    app.add_middleware(CORSMiddleware, allow_origins=["*"])
    app.add_middleware(APIKeyCheck)
    return app


def add_middleware_like_vllm(app: Any, dotted: str) -> None:
    """What ``vllm serve --middleware X`` does with X (vllm/entrypoints/openai/api_server.py, build_app)."""
    module_path, object_name = dotted.rsplit(".", 1)
    imported = getattr(importlib.import_module(module_path), object_name)
    if inspect.isclass(imported):
        app.add_middleware(imported)
    elif inspect.iscoroutinefunction(imported):
        app.middleware("http")(imported)
    else:
        raise ValueError(f"Invalid middleware {dotted}. Must be a function or a class.")


def find_middleware(app: Any) -> ObligationsMiddleware:
    """The ObligationsMiddleware inside a built Starlette middleware stack."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, ObligationsMiddleware):
        layer = getattr(layer, "app", None)
    assert layer is not None, "ObligationsMiddleware is not in the middleware stack"
    return layer


class TestVLLMRecipe:
    @pytest.fixture(name="served")
    def fixture_served(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Path]]:
        variable, dotted = recipe_command()
        config = init_project(tmp_path / "srv-ai")
        monkeypatch.setenv(variable, str(config))
        app = vllm_like_app()
        add_middleware_like_vllm(app, dotted)
        client = TestClient(app)
        yield client, config
        client.close()
        if app.middleware_stack is not None:
            find_middleware(app).obligations.close()

    def test_the_recipe_names_the_middleware_and_the_variable_it_reads(self) -> None:
        variable, dotted = recipe_command()

        assert (CONFIG_ENV, "aiobligations.middleware.ObligationsMiddleware") == (variable, dotted)
        assert "app.add_middleware(ObligationsMiddleware)" in VLLM_RECIPE.read_text()

    def test_added_without_arguments_it_loads_the_profile_and_discloses(
            self, served: tuple[TestClient, Path]) -> None:
        client, config = served
        auth = {"authorization": "Bearer sk-test"}

        answer = client.post("/v1/chat/completions", headers=auth, json={"model": "toy-1", "messages": MESSAGES})
        health, models = client.get("/health"), client.get("/v1/models", headers=auth)

        interaction_id = assert_disclosed(answer.headers)
        assert ToyChatModel().complete(MESSAGES) == answer.json()["choices"][0]["message"]["content"]
        assert interaction_id == answer.json()["ai_disclosure"]["interaction_id"]
        assert "ai-disclosure" not in health.headers and "ai-disclosure" not in models.headers
        hub = find_middleware(client.app).obligations
        assert config.parent / "ledger.db" == hub.profile.ledger.path
        (record,) = interactions(hub)
        assert (interaction_id, "toy-1", "completed") == (record["interaction_id"], record["model"], record["outcome"])

    def test_it_is_the_outermost_layer_so_refusals_are_recorded_too(self, served: tuple[TestClient, Path]) -> None:
        client, _ = served

        refused = client.post("/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES})

        assert 401 == refused.status_code
        # A refusal is no AI content: recorded, named by its id, not disclosed as AI-generated.
        assert "ai-disclosure" not in refused.headers
        interaction_id = refused.headers["ai-interaction-id"]
        (record,) = interactions(find_middleware(client.app).obligations)
        assert (interaction_id, 401, "http_401", False) == (
            record["interaction_id"], record["status"], record["error"], record["disclosure"]["header"])

    def test_the_transparency_page_is_served(self, served: tuple[TestClient, Path]) -> None:
        client, _ = served

        page = client.get("/ai/transparency", params={"lang": "zh"})

        assert 200 == page.status_code
        assert '<html lang="zh-CN">' in page.text

    def test_a_missing_profile_serves_nothing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        variable, dotted = recipe_command()
        missing = tmp_path / "nowhere" / "aiobligations.toml"
        monkeypatch.setenv(variable, str(missing))
        app = vllm_like_app()
        add_middleware_like_vllm(app, dotted)

        # Served with a lifespan (uvicorn's "on"), start-up fails; without one, every request does.
        with pytest.raises(ConfigurationError, match="nowhere"), TestClient(app):
            pass
        client = TestClient(app)
        with pytest.raises(ConfigurationError, match="nowhere"):
            client.post("/v1/chat/completions", headers={"authorization": "Bearer sk-test"},
                        json={"model": "toy-1", "messages": MESSAGES})
        with pytest.raises(ConfigurationError, match="nowhere"):
            client.get("/health")
        client.close()
