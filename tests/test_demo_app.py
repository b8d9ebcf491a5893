"""The demo service: the official ``openai`` client against a real uvicorn, and its error paths."""

from __future__ import annotations

import base64
import io
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _serve import serve

from aiobligations.demo import ToyChatModel, ToyImageModel, build_app, wrap
from aiobligations.demo.app import MAX_BODY_BYTES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STREAM_DELAY = 0.03
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Please summarise the obligations a provider of an AI service has under the law."},
]


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking the signature and every CRC."""
    assert PNG_SIGNATURE == png[:8]
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + data) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, data))
        pos += 12 + length
    assert len(png) == pos
    return chunks


@pytest.fixture(scope="module", name="base_url")
def fixture_base_url() -> Iterator[str]:
    """The unwrapped demo app, served by a real uvicorn on a free loopback port."""
    app = build_app(stream_delay=STREAM_DELAY)
    with serve(app, "demo") as url:
        yield url


@pytest.fixture(name="client")
def fixture_client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="demo", max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture(name="http")
def fixture_http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


class TestToyModels:
    def test_chat_model_is_deterministic_and_short(self) -> None:
        """The same messages give the same reply, in the script of the question, under 60 tokens."""
        model = ToyChatModel()
        for text in ("Hello there", "你好", "What is the capital of France?", "请总结这一段很长的中文文本。" * 20):
            messages = [{"role": "user", "content": text}]
            reply = model.complete(messages)
            assert model.complete(messages) == reply
            assert 0 < model.count_tokens(reply) < 60
            assert "".join(model.tokens(reply)) == reply
        assert model.complete([{"role": "user", "content": "你好"}]).startswith("你好")
        assert model.complete([{"role": "user", "content": "hi!"}]).startswith("Hello")

    def test_tokens_split_words_and_cjk_characters(self) -> None:
        """Words are tokens with their leading space; each CJK character is one token."""
        assert ["Hi", ",", " world", "!", " 你", "好", "。"] == ToyChatModel().tokens("Hi, world! 你好。")

    def test_png_decodes_with_zlib(self) -> None:
        """IDAT inflates to one filter byte plus three bytes per pixel for every row."""
        png = ToyImageModel().generate("a lighthouse at dusk", "512x512")
        chunks = dict(png_chunks(png))
        width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
        raw = zlib.decompress(chunks[b"IDAT"])
        assert (512, 512, 8, 2) == (width, height, depth, colour)
        assert height * (1 + width * 3) == len(raw)
        assert {0} == {raw[y * (1 + width * 3)] for y in range(height)}
        assert b"" == chunks[b"IEND"]

    def test_image_model_refuses_other_sizes(self) -> None:
        """Only OpenAI's square sizes are accepted."""
        with pytest.raises(ValueError, match="size must be one of"):
            ToyImageModel().generate("x", "300x300")


class TestOpenAIClient:
    def test_models_list(self, client: openai.OpenAI) -> None:
        """Both toy models are listed and retrievable."""
        assert {"toy-1", "toy-image-1"} == {model.id for model in client.models.list()}
        assert "toy-1" == client.models.retrieve("toy-1").id

    def test_chat_completion(self, client: openai.OpenAI) -> None:
        """A non-streamed completion carries the toy model's reply and consistent usage."""
        completion = client.chat.completions.create(model="toy-1", messages=MESSAGES)
        expected = ToyChatModel().complete(MESSAGES)

        assert expected == completion.choices[0].message.content
        assert "assistant" == completion.choices[0].message.role
        assert "stop" == completion.choices[0].finish_reason
        assert completion.id.startswith("chatcmpl-")
        assert ToyChatModel().usage(MESSAGES, expected) == completion.usage.model_dump(
            include={"prompt_tokens", "completion_tokens", "total_tokens"}
        )

    def test_chat_stream_is_incremental(self, client: openai.OpenAI) -> None:
        """Deltas concatenate to the non-streamed reply, and the first token arrives long before the end."""
        started = time.monotonic()
        first = None
        deltas, finish = [], []
        for chunk in client.chat.completions.create(model="toy-1", messages=MESSAGES, stream=True):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
            assert "chat.completion.chunk" == chunk.object
            assert chunk.usage is None
            deltas.append(chunk.choices[0].delta.content or "")
            finish.append(chunk.choices[0].finish_reason)
        total = time.monotonic() - started
        content = "".join(deltas)

        assert ToyChatModel().complete(MESSAGES) == content
        assert len(deltas) >= 3
        assert ["stop"] == [f for f in finish if f]
        # The reply has n tokens sent STREAM_DELAY apart: a buffered body would arrive all at once.
        generation = (ToyChatModel().count_tokens(content) - 1) * STREAM_DELAY
        assert total >= generation
        assert first is not None and first < total / 2

    def test_chat_stream_with_usage(self, client: openai.OpenAI) -> None:
        """include_usage adds a last chunk with no choices and the usage."""
        chunks = list(
            client.chat.completions.create(
                model="toy-1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        assert [] == chunks[-1].choices
        assert ToyChatModel().usage(MESSAGES, content)["total_tokens"] == chunks[-1].usage.total_tokens
        assert all(c.usage is None for c in chunks[:-1])

    def test_image_generation(self, client: openai.OpenAI) -> None:
        """b64_json decodes to a valid PNG of the requested size, the same for the same prompt."""
        result = client.images.generate(model="toy-image-1", prompt="a red fox in the snow", size="512x512", n=2)
        again = client.images.generate(prompt="a red fox in the snow", size="512x512")
        first, second = (base64.b64decode(image.b64_json) for image in result.data)

        assert first == base64.b64decode(again.data[0].b64_json)
        assert first == ToyImageModel().generate("a red fox in the snow", "512x512")
        assert first != second
        chunks = png_chunks(first)
        assert b"IHDR" == chunks[0][0]
        assert (512, 512) == struct.unpack(">II", chunks[0][1][:8])
        assert "a red fox in the snow" == result.data[0].revised_prompt

    def test_errors_surface_as_api_errors(self, client: openai.OpenAI) -> None:
        """The client raises its own typed errors for the demo's 4xx responses."""
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError, match="only b64_json"):
            client.images.generate(prompt="x", response_format="url")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert code == body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


class TestHTTPErrors:
    @pytest.mark.parametrize(
        ("path", "body", "status", "code"),
        [
            ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
            ("/v1/chat/completions", b"\xff\xfe", 400, "invalid_json"),
            ("/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
            ("/v1/chat/completions", b"[]", 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "user", "content": "\\ud800"}]}', 400,
             "invalid_request"),
            ("/v1/images/generations", b'{"prompt": "\\udfff"}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1"}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": 1, "messages": []}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": "hi"}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "x", "content": "hi"}]}', 400,
             "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": ["user"], "content": "a"}]}', 400,
             "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "user", "content": [{"type": "x"}]}]}',
             400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "user", "content": 3}]}', 400,
             "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "user", "content": "a"}], '
             b'"stream": "yes"}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-1", "messages": [{"role": "user", "content": "a"}], '
             b'"stream_options": {"include_usage": true}}', 400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "toy-image-1", "messages": [{"role": "user", "content": "a"}]}',
             400, "invalid_request"),
            ("/v1/chat/completions", b'{"model": "gpt-9", "messages": [{"role": "user", "content": "a"}]}', 404,
             "model_not_found"),
            ("/v1/images/generations", b'{"prompt": "x", "response_format": "url"}', 400,
             "unsupported_response_format"),
            ("/v1/images/generations", b'{"prompt": "x", "size": "300x300"}', 400, "invalid_request"),
            ("/v1/images/generations", b'{"prompt": "x", "n": 5}', 400, "invalid_request"),
            ("/v1/images/generations", b'{"prompt": "x", "n": true}', 400, "invalid_request"),
            ("/v1/images/generations", b'{"prompt": ""}', 400, "invalid_request"),
            ("/v1/images/generations", b"{}", 400, "invalid_request"),
            ("/v1/images/generations", b'{"prompt": "x", "model": "dall-e-9"}', 404, "model_not_found"),
        ],
    )
    def test_bad_requests_are_json_errors(
        self, http: httpx.Client, path: str, body: bytes, status: int, code: str
    ) -> None:
        """Malformed, mistyped or incomplete bodies get a 4xx JSON error, never a 500."""
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert_error(response, status, code)

    def test_oversized_body_is_413(self, http: httpx.Client) -> None:
        """A body over 1 MiB is refused with 413, with or without a declared length."""
        body = b" " * (MAX_BODY_BYTES + 1)
        assert_error(http.post("/v1/chat/completions", content=body), 413, "payload_too_large")
        chunked = http.post("/v1/chat/completions", content=iter([body[:MAX_BODY_BYTES], b"  "]))
        assert_error(chunked, 413, "payload_too_large")

    def test_wrong_method_is_405(self, http: httpx.Client) -> None:
        """GET on a POST route is 405 with an Allow header and a JSON error."""
        response = http.get("/v1/chat/completions")
        assert_error(response, 405, "method_not_allowed")
        assert "POST" in response.headers["allow"]

    def test_unknown_path_is_404(self, http: httpx.Client) -> None:
        """Unknown paths and models get JSON 404s."""
        assert_error(http.get("/v1/nowhere"), 404, "not_found")
        assert_error(http.get("/v1/models/gpt-9"), 404, "model_not_found")

    def test_home_page(self, http: httpx.Client) -> None:
        """The home page is UTF-8 HTML with a body the middleware can put a banner into."""
        response = http.get("/")
        assert 200 == response.status_code
        assert "text/html; charset=utf-8" == response.headers["content-type"]
        assert '<html lang="en">' in response.text
        assert "<body>" in response.text
        assert 'href="/ai/transparency"' in response.text
        assert "toy-image-1" in response.text and "1024x1024 by default" in response.text
        assert "visible caption (AI生成), an invisible\nwatermark, the GB 45438 metadata label and C2PA" in response.text

    def test_max_tokens_truncates(self, http: httpx.Client) -> None:
        """max_tokens cuts the reply and reports finish_reason "length"."""
        response = http.post("/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES, "max_tokens": 3})
        choice = response.json()["choices"][0]
        assert "length" == choice["finish_reason"]
        assert ToyChatModel().tokens(ToyChatModel().complete(MESSAGES))[:3] == ToyChatModel().tokens(
            choice["message"]["content"]
        )


def test_wrap_falls_back_only_while_the_middleware_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """wrap() uses ObligationsMiddleware when importable, else returns the bare app."""
    import types

    app = build_app()
    module = types.ModuleType("aiobligations.middleware")
    monkeypatch.setitem(sys.modules, "aiobligations.middleware", module)
    assert app is wrap(app, obligations=None)  # type: ignore[arg-type]

    class FakeMiddleware:
        def __init__(self, app: Any, *, obligations: Any) -> None:
            self.app, self.obligations = app, obligations

    module.ObligationsMiddleware = FakeMiddleware  # type: ignore[attr-defined]
    wrapped = wrap(app, obligations="hub")  # type: ignore[arg-type]
    assert isinstance(wrapped, FakeMiddleware)
    assert (app, "hub") == (wrapped.app, wrapped.obligations)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_demo_creates_a_profile_serves_wrapped_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    """run_demo writes a profile when missing, serves the wrapped app, and on a signal flushes and exits 0."""
    config = tmp_path / "site" / "aiobligations.toml"
    code = (
        "from pathlib import Path; from aiobligations.demo import run_demo; "
        f"run_demo(config=Path({str(config)!r}), port=0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)  # The process closed stderr: it has exited.

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 15
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail("run_demo did not announce its address:\n" + "".join(seen))
            seen.append(line)
            if "transparency page:" in line:
                url = line.split("transparency page: ")[1].strip().removesuffix("/ai/transparency")
        reply = httpx.post(f"{url}/v1/chat/completions", json={"model": "toy-1", "messages": MESSAGES}, timeout=10)
        assert 200 == reply.status_code
        assert "ai-interaction-id" in reply.headers, "the demo is not wrapped by ObligationsMiddleware"
        process.send_signal(signum)
        assert 0 == process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
        process.stderr.close()
    while not lines.empty():
        seen.append(lines.get() or "")
    output = "".join(seen)
    assert "wrote a development profile" in output
    assert "ledger flushed and closed" in output
    assert config.exists() and (config.parent / "keys" / "ledger.key").exists()
    assert (config.parent / "ledger.db").exists()


# -- the demo as a visitor sees it: wrapped, every label on its images (issue 12, items 2 and 3) --------------


@pytest.fixture(name="demo")
def fixture_demo(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The demo wrapped by the middleware on the profile `aiobligations demo` writes, called in-process."""
    from aiobligations import Obligations
    from aiobligations.keys import init_project

    hub = Obligations.from_file(init_project(tmp_path / "site"))
    try:
        yield wrap(build_app(stream_delay=0), hub), hub
    finally:
        hub.close()


def in_process(app: Any, *requests: tuple[str, str, dict[str, Any] | None]) -> list[httpx.Response]:
    """Send ``(method, path, json)`` requests to an ASGI app, one after the other, in-process."""
    import asyncio

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
            return [await http.request(method, path, json=body) for method, path, body in requests]

    return asyncio.run(run())


def label_records(hub: Any) -> list[dict[str, Any]]:
    size = hub.ledger.flush()
    return [record for record in (hub.ledger.read(i) for i in range(size)) if record["kind"] == "label"]


def test_the_demo_profile_turns_every_label_on(demo: tuple[Any, Any]) -> None:
    _, hub = demo
    settings = hub.label_settings
    assert (True, True, True, True) == (settings.implicit, settings.explicit, settings.watermark, settings.c2pa)


def test_the_demo_image_is_1024_and_carries_every_label(demo: tuple[Any, Any]) -> None:
    """The default image is 1024x1024, captioned, watermarked, with the metadata label and C2PA."""
    import io

    from PIL import Image, ImageChops, ImageStat

    app, hub = demo
    (reply,) = in_process(app, ("POST", "/v1/images/generations", {"prompt": "a red fox in the snow"}))
    assert 200 == reply.status_code, reply.text
    png = base64.b64decode(reply.json()["data"][0]["b64_json"])
    assert (1024, 1024) == struct.unpack(">II", png_chunks(png)[0][1][:8])

    report = hub.labeller.inspect(png)
    assert report["labelled"] is True
    (label,) = report["gb45438"]
    assert label["reserved_code1"].startswith("verified")
    assert report["c2pa"] is not None
    assert report["watermark"]["checked"] is True and report["watermark"]["present"] is True
    assert report["watermark"]["id_matches"] is True
    assert label["fields"]["ProduceID"] == reply.headers["ai-interaction-id"]

    (record,) = label_records(hub)
    caption = dict(record["explicit"])
    left, top, right, bottom = caption.pop("box")  # Where it was drawn, for inspect to look.
    assert {"kind": "caption", "wording": "AI生成", "corner": "bottom-right"} == caption
    assert 512 < left < right <= 1024 and 512 < top < bottom <= 1024
    assert "skipped" not in record["watermark"]
    # The caption is drawn: the bottom-right corner differs from the bare picture, the rest barely.
    bare = Image.open(io.BytesIO(ToyImageModel().generate("a red fox in the snow"))).convert("RGB")
    diff = ImageChops.difference(bare, Image.open(io.BytesIO(png)).convert("RGB")).convert("L")
    corner = ImageStat.Stat(diff.crop((824, 924, 1024, 1024))).mean[0]
    rest = ImageStat.Stat(diff.crop((0, 0, 512, 512))).mean[0]
    assert corner > 20 > 3 > rest, (corner, rest)


@pytest.mark.parametrize(("size", "expected"), [("1536x1024", (1536, 1024)), ("1024x1792", (1024, 1792)),
                                                 ("auto", (1024, 1024)), ("512x512", (512, 512))])
def test_openai_sizes_are_accepted(size: str, expected: tuple[int, int]) -> None:
    (reply,) = in_process(build_app(), ("POST", "/v1/images/generations", {"prompt": "x", "size": size}))
    assert 200 == reply.status_code, reply.text
    png = base64.b64decode(reply.json()["data"][0]["b64_json"])
    assert expected == struct.unpack(">II", png_chunks(png)[0][1][:8])


def test_an_unknown_size_is_a_400_naming_the_valid_ones() -> None:
    (reply,) = in_process(build_app(), ("POST", "/v1/images/generations", {"prompt": "x", "size": "300x300"}))
    assert_error(reply, 400, "invalid_request")
    message = reply.json()["error"]["message"]
    assert "'300x300'" in message
    for size in ("256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792", "auto"):
        assert size in message


def test_an_unknown_model_404_lists_the_models() -> None:
    replies = in_process(
        build_app(),
        ("POST", "/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "a"}]}),
        ("POST", "/v1/images/generations", {"model": "dall-e-9", "prompt": "x"}),
        ("GET", "/v1/models/gpt-9", None),
    )
    for reply in replies:
        assert_error(reply, 404, "model_not_found")
        assert reply.json()["error"]["message"].endswith("the models are toy-1, toy-image-1"), reply.text


def test_a_skipped_label_is_warned_once_per_cause(
    demo: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No usable CJK font: one `label_skipped` warning for four images; a second cause gets its own."""
    from PIL import Image
    from structlog.testing import capture_logs

    not_a_font = tmp_path / "not-a-font.ttf"
    not_a_font.write_text("this is not a font\n")
    monkeypatch.setenv("AIOBLIGATIONS_CJK_FONT", str(not_a_font))
    app, hub = demo
    image = ("POST", "/v1/images/generations", {"prompt": "a fox"})
    small = ("POST", "/v1/images/generations", {"prompt": "a fox", "size": "256x256"})
    tiny = io.BytesIO()
    Image.new("RGB", (100, 60), (90, 120, 150)).save(tiny, "PNG")
    with capture_logs() as logs:
        replies = in_process(app, image, image, small, small)
        for _ in range(2):  # Smaller than any size the demo makes: too small for the watermark.
            hub.label_with_evidence(tiny.getvalue(), "image/png")
    assert [200] * 4 == [reply.status_code for reply in replies]

    warnings = [(e["label"], e["cause"]) for e in logs if e["event"] == "label_skipped"]
    assert [("explicit", "no_cjk_font"), ("watermark", "image_too_small")] == warnings
    (first, *_) = [e for e in logs if e["event"] == "label_skipped"]
    assert "warning" == first["log_level"]
    assert "cannot load the font" in first["reason"]
    # Every skip is still on the record, request by request; the demo's smallest size is marked.
    records = label_records(hub)
    assert 6 == len(records)
    assert all("cannot load the font" in record["explicit"]["skipped"] for record in records)
    assert ["too small" in record["watermark"].get("skipped", "") for record in records] == [False] * 4 + [True] * 2
