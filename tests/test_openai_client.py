"""The official ``openai`` client, sync and async, against the demo wrapped by ObligationsMiddleware.

The middleware adds an ``ai_disclosure`` field to JSON answers and a first comment to event streams;
the client must parse both unchanged, and every call must leave exactly one interaction record
carrying the id that the ``AI-Interaction-Id`` header gave the client.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from _serve import serve

from aiobligations import Obligations
from aiobligations.demo import ToyChatModel, build_app, wrap
from aiobligations.disclosure import parse_dictionary
from aiobligations.keys import init_project

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Which records must a provider of an AI service keep, and for how long?"},
]
EXPECTED = ToyChatModel().complete(MESSAGES)
USAGE = ToyChatModel().usage(MESSAGES, EXPECTED)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLAVOURS = ["sync", "async"]


class SubmittedRecords:
    """Wraps ``Obligations.submit`` and the ledger's ``submit_deferred`` to let a test wait until the server has handed an interaction over.

    The server submits an interaction's record just after the response's last byte has gone out,
    so a client can finish reading before the record exists; this waits on a condition, not a clock.
    """

    def __init__(self, hub: Obligations) -> None:
        self._submit = hub.submit
        self._submit_deferred = hub.ledger.submit_deferred
        self._ids: list[str] = []
        self._changed = threading.Condition()
        hub.submit = self  # type: ignore[method-assign]
        hub.ledger.submit_deferred = self.deferred  # type: ignore[method-assign]

    def deferred(self, factory: Any, args: tuple[Any, ...]) -> None:
        self._submit_deferred(factory, args)
        with self._changed:
            self._ids.append(args.interaction_id)  # The middleware's InteractionRecord.
            self._changed.notify_all()

    def __call__(self, record: dict[str, Any]) -> None:
        self._submit(record)
        if record.get("kind") != "interaction":
            return  # Label records share the interaction's id but come before its own record.
        with self._changed:
            self._ids.append(record.get("interaction_id", ""))
            self._changed.notify_all()

    def wait_for(self, interaction_id: str, timeout: float = 10) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: interaction_id in self._ids, timeout):
                pytest.fail(f"no record was submitted for interaction {interaction_id}")


class Service:
    def __init__(self, url: str, hub: Obligations, submitted: SubmittedRecords) -> None:
        self.url, self.hub, self.submitted = url, hub, submitted

    def record(self, interaction_id: str) -> dict[str, Any]:
        """The one interaction record with this id (fails if there are none or several)."""
        self.submitted.wait_for(interaction_id)
        size = self.hub.ledger.flush()
        found = [r for r in (self.hub.ledger.read(i) for i in range(size))
                 if r["kind"] == "interaction" and r["interaction_id"] == interaction_id]
        assert 1 == len(found), f"{len(found)} interaction records for {interaction_id}"
        return found[0]

    def interaction_count(self) -> int:
        size = self.hub.ledger.flush()
        return sum(1 for i in range(size) if self.hub.ledger.read(i)["kind"] == "interaction")


@pytest.fixture(scope="module", name="service")
def fixture_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The demo, wrapped, served by a real uvicorn on a free loopback port."""
    hub = Obligations.from_file(init_project(tmp_path_factory.mktemp("openai") / "site"))
    submitted = SubmittedRecords(hub)
    app = wrap(build_app(stream_delay=0.005), hub)
    try:
        with serve(app, "openai-demo") as url:
            yield Service(url, hub, submitted)
    finally:
        hub.close()


def call(flavour: str, service: Service, endpoint: str, **params: Any) -> tuple[Any, Any]:
    """Call ``chat.completions.create`` or ``images.generate`` through ``with_raw_response``.

    Returns the HTTP headers and the parsed result: the object, or the list of chunks of a stream.
    """
    options = {"base_url": f"{service.url}/v1", "api_key": "sk-demo", "max_retries": 0, "timeout": 15}

    def resource(client: Any) -> Any:
        return client.chat.completions if endpoint == "chat" else client.images

    def method(client: Any) -> Any:
        raw = resource(client).with_raw_response
        return raw.create if endpoint == "chat" else raw.generate

    if flavour == "sync":
        with openai.OpenAI(**options) as client:
            raw = method(client)(**params)
            parsed = raw.parse()
            return raw.headers, list(parsed) if params.get("stream") else parsed

    async def run() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(**options) as client:
            raw = await method(client)(**params)
            parsed = raw.parse()  # with_raw_response's parse() is synchronous in both clients.
            return raw.headers, [chunk async for chunk in parsed] if params.get("stream") else parsed

    return asyncio.run(run())


def check_headers(headers: Any, model: str = "toy-1") -> str:
    """The disclosure headers are there, well formed and name ``model``; return the interaction id."""
    disclosure = parse_dictionary(headers["ai-disclosure"])
    assert ("ai-originated", "Example Co", model) == (disclosure["mode"], disclosure["provider"], disclosure["model"])
    assert '</.well-known/ai-transparency>; rel="describedby"' == headers["link"]
    interaction_id = headers["ai-interaction-id"]
    assert 7 == uuid.UUID(interaction_id).version
    return interaction_id


@pytest.mark.parametrize("flavour", FLAVOURS)
class TestChat:
    def test_completion_parses_with_the_extra_field(self, flavour: str, service: Service) -> None:
        headers, completion = call(flavour, service, "chat", model="toy-1", messages=MESSAGES)

        interaction_id = check_headers(headers)
        assert EXPECTED == completion.choices[0].message.content
        assert ("assistant", "stop") == (completion.choices[0].message.role, completion.choices[0].finish_reason)
        assert USAGE["total_tokens"] == completion.usage.total_tokens
        # The field the middleware added is kept by the client as an extra, not dropped or rejected.
        notice = completion.model_extra["ai_disclosure"]
        assert interaction_id == notice["interaction_id"]
        assert (service.hub.notice, "/.well-known/ai-transparency") == (notice["notice"], notice["transparency"])
        record = service.record(interaction_id)
        assert (200, "completed", "toy-1", "/v1/chat/completions", "json-field") == (
            record["status"], record["outcome"], record["model"], record["route"], record["disclosure"]["body"])
        assert {"input_tokens": USAGE["prompt_tokens"], "output_tokens": USAGE["completion_tokens"]} == record["usage"]

    def test_stream_tolerates_the_comment_and_gives_the_same_text(self, flavour: str, service: Service) -> None:
        headers, chunks = call(flavour, service, "chat", model="toy-1", messages=MESSAGES, stream=True)

        interaction_id = check_headers(headers)
        assert all("chat.completion.chunk" == chunk.object for chunk in chunks)
        assert EXPECTED == "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert ["stop"] == [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices[0].finish_reason]
        record = service.record(interaction_id)
        assert (200, "toy-1", True, "sse-comment") == (
            record["status"], record["model"], record["stream"], record["disclosure"]["body"])
        assert "usage" not in record  # Not asked for, so the stream carried none.

    def test_stream_with_usage(self, flavour: str, service: Service) -> None:
        headers, chunks = call(flavour, service, "chat", model="toy-1", messages=MESSAGES, stream=True,
                               stream_options={"include_usage": True})

        interaction_id = check_headers(headers)
        assert [] == chunks[-1].choices
        assert USAGE == chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
        assert EXPECTED == "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        record = service.record(interaction_id)
        assert ("toy-1", True) == (record["model"], record["stream"])
        assert {"input_tokens": USAGE["prompt_tokens"], "output_tokens": USAGE["completion_tokens"]} == record["usage"]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("usage", [False, True], ids=["plain", "include_usage"])
def test_a_stream_read_to_the_end_is_recorded_as_completed(flavour: str, usage: bool, service: Service) -> None:
    options = {"stream_options": {"include_usage": True}} if usage else {}
    headers, chunks = call(flavour, service, "chat", model="toy-1", messages=MESSAGES, stream=True, **options)

    assert EXPECTED == "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "completed" == service.record(check_headers(headers))["outcome"]


def png_size(png: bytes) -> tuple[int, int]:
    """Check a PNG's signature and every chunk's CRC; return its width and height."""
    assert PNG_SIGNATURE == png[:8]
    pos, kinds, size = 8, [], (0, 0)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        assert zlib.crc32(kind + data) == struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])[0]
        if kind == b"IHDR":
            size = struct.unpack(">II", data[:8])
        kinds.append(kind)
        pos += 12 + length
    assert (b"IHDR", b"IEND") == (kinds[0], kinds[-1])
    return size


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_image_b64_json_is_a_png(flavour: str, service: Service) -> None:
    headers, result = call(flavour, service, "images", model="toy-image-1", prompt="a lighthouse at dusk",
                           size="256x256", response_format="b64_json")

    # The model asked for and served, not the profile's default ("toy-1").
    interaction_id = check_headers(headers, "toy-image-1")
    (image,) = result.data
    assert (256, 256) == png_size(base64.b64decode(image.b64_json))
    assert "a lighthouse at dusk" == image.revised_prompt
    assert interaction_id == result.model_extra["ai_disclosure"]["interaction_id"]
    record = service.record(interaction_id)
    assert (200, "completed", "toy-image-1", "/v1/images/generations") == (
        record["status"], record["outcome"], record["model"], record["route"])


def test_the_default_image_is_1024_and_inspect_finds_its_labels(service: Service) -> None:
    """No size asked: OpenAI's default 1024x1024, with the metadata label, C2PA and the watermark."""
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-demo", max_retries=0, timeout=30) as client:
        result = client.images.generate(model="toy-image-1", prompt="a lighthouse at dawn")
    png = base64.b64decode(result.data[0].b64_json)
    assert (1024, 1024) == png_size(png)
    report = service.hub.labeller.inspect(png)
    interaction_id = result.model_extra["ai_disclosure"]["interaction_id"]
    assert [interaction_id] == [entry["fields"]["ProduceID"] for entry in report["gb45438"]]
    assert report["c2pa"] is not None
    assert (True, True, True) == (report["watermark"]["checked"], report["watermark"]["present"],
                                  report["watermark"]["id_matches"])


def test_plain_create_works_and_every_call_is_one_record(service: Service) -> None:
    """Without with_raw_response too; and N calls leave exactly N new interaction records."""
    before = service.interaction_count()
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="sk-demo", max_retries=0, timeout=15) as client:
        completions = [client.chat.completions.create(model="toy-1", messages=MESSAGES) for _ in range(3)]
        stream = client.chat.completions.create(model="toy-1", messages=MESSAGES, stream=True)
        stream_id = check_headers(stream.response.headers)
        chunks = list(stream)
        models = client.models.list()  # Not an AI route: no record.

    ids = [completion.model_extra["ai_disclosure"]["interaction_id"] for completion in completions]
    assert [EXPECTED] * 3 == [completion.choices[0].message.content for completion in completions]
    assert EXPECTED == "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert {"toy-1", "toy-image-1"} == {model.id for model in models}
    assert 4 == len({*ids, stream_id})
    for interaction_id in [*ids, stream_id]:
        service.record(interaction_id)
    assert before + 4 == service.interaction_count()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_unknown_model_is_an_error_not_disclosed_as_ai_content(flavour: str, service: Service) -> None:
    """The client raises NotFoundError; the 404 claims no AI content and is recorded as an error."""
    with pytest.raises(openai.NotFoundError) as caught:
        call(flavour, service, "chat", model="gpt-nonexistent", messages=MESSAGES)

    headers = caught.value.response.headers
    assert "ai-disclosure" not in headers
    assert "ai_disclosure" not in caught.value.response.json()
    assert caught.value.response.json()["error"]["message"].endswith("the models are toy-1, toy-image-1")
    record = service.record(headers["ai-interaction-id"])
    assert (404, "http_404", "model_not_found", "gpt-nonexistent", False, "none") == (
        record["status"], record["error"], record["error_code"], record["requested_model"],
        record["disclosure"]["header"], record["disclosure"]["notice"])
    assert "model" not in record
