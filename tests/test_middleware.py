"""ObligationsMiddleware as pure ASGI: disclosure, capture and evidence, driven message by message."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiobligations import Obligations
from aiobligations.disclosure import parse_dictionary
from aiobligations.keys import init_project
from aiobligations.middleware import ObligationsMiddleware, Route, RoutePolicy


@pytest.fixture
def obligations(tmp_path: Path):
    hub = Obligations.from_file(init_project(tmp_path))
    yield hub
    hub.close()


def records(hub: Obligations, kind: str = "interaction") -> list[dict[str, Any]]:
    size = hub.ledger.flush()
    found = [hub.ledger.read(i) for i in range(size)]
    return [r for r in found if r["kind"] == kind]


async def call(app: Callable, path: str = "/v1/chat/completions", *, method: str = "POST", body: bytes = b"{}",
               headers: list[tuple[bytes, bytes]] | None = None, disconnect_after: int | None = None,
               query: bytes = b"") -> dict[str, Any]:
    """Run one HTTP request through ``app``; return the status, headers, body and messages sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers if headers is not None else [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    sent: list[dict[str, Any]] = []
    requested = False
    disconnected = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if disconnect_after is not None and len(bodies) >= disconnect_after:
            disconnected.set()
            raise OSError("client went away")

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {
        "status": start["status"],
        "headers": {k.decode().lower(): v.decode() for k, v in start["headers"]},
        "header_list": start["headers"],
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        "messages": sent,
    }


def json_app(payload: dict[str, Any], status: int = 200, content_type: bytes = b"application/json") -> Callable:
    body = json.dumps(payload).encode()

    async def app(scope, receive, send):
        while (await receive())["type"] != "http.request":
            pass
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def stream_app(chunks: list[bytes]) -> Callable:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


COMPLETION = {"id": "c1", "object": "chat.completion", "model": "toy-1",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class TestDisclosure:
    def test_json_response_gets_headers_and_a_field(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"toy-1","messages":[]}'))

        headers = result["headers"]
        disclosure = parse_dictionary(headers["ai-disclosure"])
        assert "ai-originated" == disclosure["mode"]
        assert "Example Co" == disclosure["provider"]
        assert isinstance(disclosure["date"], int)
        interaction_id = headers["ai-interaction-id"]
        assert 7 == uuid.UUID(interaction_id).version
        assert '</.well-known/ai-transparency>; rel="describedby"' == headers["link"]
        body = json.loads(result["body"])
        assert {k: v for k, v in body.items() if k != "ai_disclosure"} == COMPLETION
        assert interaction_id == body["ai_disclosure"]["interaction_id"]
        assert "first_contact_notice" in body["ai_disclosure"]
        assert str(len(result["body"])) == headers["content-length"]

    def test_the_interaction_is_recorded_with_sealed_bodies(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)
        result = asyncio.run(call(app, body=b'{"model":"toy-1","messages":[{"role":"user","content":"CANARY-77"}]}'))

        (record,) = records(obligations)

        assert result["headers"]["ai-interaction-id"] == record["interaction_id"]
        assert (200, "completed", "toy-1", "/v1/chat/completions") == (
            record["status"], record["outcome"], record["model"], record["route"])
        assert {"input_tokens": 3, "output_tokens": 1} == record["usage"]
        assert {"header": True, "body": "json-field", "notice": "first-contact"} == {
            k: record["disclosure"][k] for k in ("header", "body", "notice")}
        assert "CANARY-77" in record["personal"]["request"]["text"]
        assert b"CANARY-77" not in obligations.ledger._store.get_record(0)[2]

    def test_event_stream_gets_a_first_comment_and_passes_chunk_by_chunk(self, obligations) -> None:
        chunks = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"usage":{"prompt_tokens":2,'
                  b'"completion_tokens":5}}\n\n', b"data: [DONE]\n\n"]
        app = ObligationsMiddleware(stream_app(chunks), obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"toy-1","stream":true}'))

        bodies = [m["body"] for m in result["messages"] if m["type"] == "http.response.body"]
        assert bodies[0].startswith(b": ") and bodies[0].endswith(chunks[0])
        assert bodies[1:] == chunks[1:] + [b""]
        assert "content-length" not in result["headers"]
        (record,) = records(obligations)
        assert ("sse-comment", True, {"input_tokens": 2, "output_tokens": 5}) == (
            record["disclosure"]["body"], record["stream"], record["usage"])

    def test_html_gets_a_banner_and_meta_with_a_fixed_length(self, obligations) -> None:
        page = "<!doctype html><html><head><title>x</title></head><body class='a'><p>answer</p></body></html>"

        async def app(scope, receive, send):
            body = page.encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        policy = RoutePolicy([Route("/chat", methods=frozenset({"GET"}))])
        wrapped = ObligationsMiddleware(app, obligations=obligations, policy=policy)

        result = asyncio.run(call(wrapped, "/chat", method="GET", body=b""))

        html = result["body"].decode()
        assert html.index("<body class='a'>") < html.index("<aside") < html.index("<p>answer</p>")
        assert '<meta name="ai-disclosure"' in html.split("</head>")[0]
        assert str(len(result["body"])) == result["headers"]["content-length"]

    @pytest.mark.parametrize("status", [204, 304])
    def test_bodiless_statuses_pass_unchanged(self, obligations, status) -> None:
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        result = asyncio.run(call(ObligationsMiddleware(app, obligations=obligations)))

        assert (status, b"") == (result["status"], result["body"])
        assert "ai-disclosure" in result["headers"]

    def test_head_and_non_ai_routes_are_untouched(self, obligations) -> None:
        app = ObligationsMiddleware(json_app({"ok": True}), obligations=obligations)

        plain = asyncio.run(call(app, "/health", method="GET"))

        assert b'{"ok": true}' == plain["body"]
        assert "ai-disclosure" not in plain["headers"]
        assert [] == records(obligations)

    def test_compressed_json_is_not_rewritten(self, obligations) -> None:
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]})
            await send({"type": "http.response.body", "body": b"\x1f\x8b..."})

        result = asyncio.run(call(ObligationsMiddleware(app, obligations=obligations)))

        assert b"\x1f\x8b..." == result["body"]


class TestSubjects:
    def test_first_contact_sets_a_cookie_and_later_calls_get_the_short_notice(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)

        first = asyncio.run(call(app))
        cookie = first["headers"]["set-cookie"].split(";")[0]
        second = asyncio.run(call(app, headers=[(b"content-type", b"application/json"), (b"cookie", cookie.encode())]))

        assert "HttpOnly" in first["headers"]["set-cookie"]
        assert "set-cookie" not in second["headers"]
        assert "first_contact_notice" not in json.loads(second["body"])["ai_disclosure"]
        one, two = records(obligations)
        assert one["subject"] == two["subject"]
        assert ("first-contact", "short") == (one["disclosure"]["notice"], two["disclosure"]["notice"])

    def test_api_keys_name_the_subject_without_being_stored(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)
        headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-SECRET-123")]

        result = asyncio.run(call(app, headers=headers))
        asyncio.run(call(app, headers=headers))

        assert "set-cookie" not in result["headers"]
        one, two = records(obligations)
        assert one["subject"] == two["subject"]
        assert b"sk-SECRET" not in b"".join(p.read_bytes() for p in obligations.profile.ledger.path.parent.glob("ledger.db*") if p.is_file())

    def test_an_identity_hook_wins(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations,
                                    identity=lambda scope: "user-9")

        asyncio.run(call(app))

        (record,) = records(obligations)
        assert record["subject"] == obligations.ledger._crypto.pseudonym("user:user-9")


class TestFailures:
    def test_app_exceptions_propagate_and_are_recorded(self, obligations) -> None:
        async def app(scope, receive, send):
            raise RuntimeError("model crashed")

        with pytest.raises(RuntimeError, match="model crashed"):
            asyncio.run(call(ObligationsMiddleware(app, obligations=obligations)))

        (record,) = records(obligations)
        assert ("error", "RuntimeError", None) == (record["outcome"], record["error"], record["status"])

    def test_a_client_that_disconnects_mid_stream_closes_the_record(self, obligations) -> None:
        chunks = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        app = ObligationsMiddleware(stream_app(chunks), obligations=obligations)

        with pytest.raises(OSError):
            asyncio.run(call(app, disconnect_after=2))

        (record,) = records(obligations)
        assert "disconnected" == record["outcome"]

    def test_fail_closed_answers_503_when_the_ledger_cannot_take_records(self, obligations) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations, failure="fail_closed")
        obligations.ledger.close()

        result = asyncio.run(call(app))

        assert 503 == result["status"]
        assert "evidence_unavailable" == json.loads(result["body"])["error"]["code"]

    def test_fail_open_spools_and_replays(self, obligations, tmp_path: Path) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)
        ledger = obligations.ledger
        ledger._writer.queue_size = 0  # Nothing fits: every submit raises LedgerFull.

        result = asyncio.run(call(app))
        assert 200 == result["status"]
        obligations.spool._queue.put(None)
        obligations.spool._thread.join(5)
        assert obligations.spool.path.exists()
        assert b"CANARY" not in obligations.spool.path.read_bytes()
        ledger._writer.queue_size = 65536

        assert 1 == obligations.spool.replay()
        (record,) = records(obligations)
        assert ("LedgerFull", result["headers"]["ai-interaction-id"]) == (record["spooled"], record["interaction_id"])

    def test_the_next_recorded_request_replays_the_spool(self, obligations) -> None:
        """Spooled evidence goes back into the ledger as soon as the request path finds it accepting again."""
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)
        ledger = obligations.ledger
        ledger._writer.queue_size = 0
        spooled = asyncio.run(call(app))
        obligations.spool._queue.put(None)
        obligations.spool._thread.join(5)
        ledger._writer.queue_size = 65536

        recorded = asyncio.run(call(app))  # No replay() here: the request path must start it.
        for thread in [t for t in threading.enumerate() if t.name == "aiobligations-spool-replay"]:
            thread.join(10)

        assert 0 == obligations.spool.pending
        ids = {record["interaction_id"] for record in records(obligations)}
        assert {spooled["headers"]["ai-interaction-id"], recorded["headers"]["ai-interaction-id"]} == ids

    @pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00garbage", b"x" * (3 << 20), b""])
    def test_hostile_request_bodies_pass_through(self, obligations, body) -> None:
        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)

        result = asyncio.run(call(app, body=body, headers=[]))

        assert 200 == result["status"]
        (record,) = records(obligations)
        assert len(body) == record["request_bytes"]
        assert record["personal"]["truncated"] == (len(body) > (1 << 20))

    def test_other_scopes_pass_through(self, obligations) -> None:
        seen = []

        async def app(scope, receive, send):
            seen.append(scope["type"])

        wrapped = ObligationsMiddleware(app, obligations=obligations)
        for kind in ("websocket", "lifespan"):
            asyncio.run(wrapped({"type": kind, "path": "/v1/chat/completions"}, None, None))

        assert ["websocket", "lifespan"] == seen


class TestEndpoints:
    def test_transparency_document_page_checkpoint_and_security_txt(self, obligations) -> None:
        app = ObligationsMiddleware(json_app({}), obligations=obligations)
        obligations.ledger.append({"kind": "log"})

        document = asyncio.run(call(app, "/.well-known/ai-transparency", method="GET"))
        page_en = asyncio.run(call(app, "/ai/transparency", method="GET", query=b"lang=en"))
        page_zh = asyncio.run(call(app, "/ai/transparency", method="GET",
                                   headers=[(b"accept-language", b"zh-CN,zh;q=0.9")]))
        checkpoint = asyncio.run(call(app, "/ai/checkpoint", method="GET"))
        security = asyncio.run(call(app, "/.well-known/security.txt", method="GET"))
        refused = asyncio.run(call(app, "/ai/transparency", method="POST"))

        assert obligations.ledger.signer.verifier_key == json.loads(document["body"])["ledger"]["verifier_key"]
        assert b'lang="en"' in page_en["body"] and b'lang="zh' in page_zh["body"]
        assert checkpoint["body"].decode() == obligations.ledger.checkpoint
        assert b"Contact: " in security["body"] and b"Expires: " in security["body"]
        assert 405 == refused["status"]

    def test_health_says_whether_the_ledger_takes_records(self, obligations) -> None:
        """GET /ai/health: 200 while the ledger takes records, 503 when it cannot (a readiness probe)."""
        app = ObligationsMiddleware(json_app({}), obligations=obligations)
        ready = asyncio.run(call(app, "/ai/health", method="GET"))
        assert (200, {"ledger": "accepting"}) == (ready["status"], json.loads(ready["body"]))
        obligations.ledger.close()
        closed = asyncio.run(call(app, "/ai/health", method="GET"))
        assert 503 == closed["status"]
        assert "evidence_unavailable" == json.loads(closed["body"])["error"]["code"]


class TestConcurrency:
    def test_a_thousand_concurrent_streams_are_each_recorded_once(self, obligations) -> None:
        async def app(scope, receive, send):
            request = await receive()
            marker = request["body"]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for _ in range(3):
                await asyncio.sleep(0)
                await send({"type": "http.response.body", "body": b"data: " + marker + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        wrapped = ObligationsMiddleware(app, obligations=obligations)

        async def main() -> list[dict[str, Any]]:
            return await asyncio.gather(*(
                call(wrapped, body=b"req-%d" % i, headers=[(b"authorization", b"Bearer k%d" % i)])
                for i in range(1000)))

        results = asyncio.run(main())

        found = records(obligations)
        assert 1000 == len(found)
        by_id = {r["interaction_id"]: r for r in found}
        assert 1000 == len(by_id)
        for i, result in enumerate(results):
            record = by_id[result["headers"]["ai-interaction-id"]]
            assert b"req-%d" % i in result["body"]
            assert record["personal"]["request"]["text"] == f"req-{i}"
            assert f"req-{i}" in record["personal"]["response"]["text"]
        assert 1000 == len({r["subject"] for r in found})


class TestExtraction:
    """Model, stream flag and usage are read from bodies without parsing them whole."""

    def test_model_after_long_messages_and_escaped_lookalikes(self) -> None:
        from aiobligations.middleware.capture import find_string_field, find_true

        body = b'{"messages":[{"content":"say \\"model\\": \\"fake\\""}],"model":"toy-\\u4e00","stream": true}'

        assert "toy-\u4e00" == find_string_field(body, b"model")
        assert find_true(body, b"stream")
        assert find_string_field(b'{"model": 3}', b"model") is None
        assert not find_true(b'{"stream":false}', b"stream")

    def test_usage_from_objects_and_streams(self) -> None:
        from aiobligations.middleware.capture import find_usage

        nested = b'{"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}'
        stream = b'data: {"usage":{"prompt_tokens":1}}\n\ndata: {"usage": {"prompt_tokens":4,"completion_tokens":9}}\n\n'

        assert {"input_tokens": 3, "output_tokens": 2} == find_usage(nested)
        assert {"input_tokens": 4, "output_tokens": 9} == find_usage(stream)
        assert {} == find_usage(b'{"usage":null}') == find_usage(b"") == find_usage(b'{"usage":{"prompt_tokens":"x"}}')


def test_streamed_html_is_held_only_until_its_body_tag(obligations) -> None:
    parts = [b"<html><head></head>", b"<body><p>first</p>", b"<p>second</p>", b"</body></html>"]
    seen_before_third: list[int] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        for i, part in enumerate(parts):
            if i == 2:
                seen_before_third.append(len(sent_bodies))
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    sent_bodies: list[bytes] = []
    policy = RoutePolicy([Route("/page", methods=frozenset({"GET"}))])
    wrapped = ObligationsMiddleware(app, obligations=obligations, policy=policy)

    async def send(message):
        if message["type"] == "http.response.body":
            sent_bodies.append(message["body"])
        else:
            headers.update({k: v for k, v in message["headers"]})

    headers: dict[bytes, bytes] = {}

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(wrapped({"type": "http", "method": "GET", "path": "/page", "headers": [], "scheme": "http",
                         "query_string": b""}, receive, send))

    assert [1] == seen_before_third  # The page started flowing before the app produced the rest.
    html = b"".join(sent_bodies).decode()
    assert html.index("<body>") < html.index("<aside") < html.index("<p>first</p>")
    assert b"content-length" not in headers


class TestReceipts:
    def test_only_the_subject_gets_the_receipt_of_their_interaction(self, obligations) -> None:
        from aiobligations.ledger.receipts import verify_receipt

        app = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)
        mine = [(b"content-type", b"application/json"), (b"authorization", b"Bearer mine")]
        theirs = [(b"authorization", b"Bearer theirs")]
        interaction_id = asyncio.run(call(app, headers=mine))["headers"]["ai-interaction-id"]

        receipt = asyncio.run(call(app, f"/ai/receipts/{interaction_id}", method="GET", headers=mine))
        foreign = asyncio.run(call(app, f"/ai/receipts/{interaction_id}", method="GET", headers=theirs))
        anonymous = asyncio.run(call(app, f"/ai/receipts/{interaction_id}", method="GET", headers=[]))
        unknown = asyncio.run(call(app, f"/ai/receipts/{uuid.uuid4()}", method="GET", headers=mine))
        garbage = asyncio.run(call(app, "/ai/receipts/../../etc/passwd", method="GET", headers=mine))

        assert 200 == receipt["status"]
        checkpoint = verify_receipt(receipt["body"].decode(), obligations.ledger.signer.verifier_key)
        assert checkpoint.size >= 1
        assert foreign["body"] == anonymous["body"] == unknown["body"] == garbage["body"]
        assert {404} == {foreign["status"], anonymous["status"], unknown["status"], garbage["status"]}


def header_app(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"{}",
               read_request: bool = True) -> Callable:
    """An app answering ``body`` with ``status`` and extra response ``headers``."""
    async def app(scope, receive, send):
        if read_request:
            while (await receive())["type"] != "http.request":
                pass
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    return app


class TestExactEvidence:
    """Issue 12, item 4: the model that served, and errors that are not AI content."""

    def test_the_demo_image_route_names_the_image_model(self, obligations) -> None:
        from aiobligations.demo import build_app

        app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations)
        result = asyncio.run(call(app, "/v1/images/generations",
                                  body=b'{"model":"toy-image-1","prompt":"a fox","size":"256x256"}'))

        assert 200 == result["status"]
        assert "toy-image-1" == parse_dictionary(result["headers"]["ai-disclosure"])["model"]
        (record,) = records(obligations)
        assert ("toy-image-1", True) == (record["model"], record["disclosure"]["header"])

    def test_an_unknown_model_404_is_not_ai_content_and_keeps_the_first_contact(self, obligations) -> None:
        from aiobligations.demo import build_app

        app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations)
        chat = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}'

        missing = asyncio.run(call(app, body=chat % b"gpt-9"))
        cookie = missing["headers"]["set-cookie"].split(";")[0].encode()
        served = asyncio.run(call(app, body=chat % b"toy-1",
                                  headers=[(b"content-type", b"application/json"), (b"cookie", cookie)]))

        assert 404 == missing["status"]
        assert "ai-disclosure" not in missing["headers"] and "link" not in missing["headers"]
        assert "ai_disclosure" not in json.loads(missing["body"])
        # The person's first AI answer, after the error, still carries the full notice.
        assert "first_contact_notice" in json.loads(served["body"])["ai_disclosure"]
        assert "toy-1" == parse_dictionary(served["headers"]["ai-disclosure"])["model"]
        error, ok = records(obligations)
        assert error["subject"] == ok["subject"]
        assert (missing["headers"]["ai-interaction-id"], 404, "http_404", "model_not_found", "gpt-9") == (
            error["interaction_id"], error["status"], error["error"], error["error_code"], error["requested_model"])
        assert {"header": False, "body": "none", "notice": "none"} == {
            k: error["disclosure"][k] for k in ("header", "body", "notice")}
        assert "model" not in error
        assert (200, "toy-1", "first-contact", "json-field") == (
            ok["status"], ok["model"], ok["disclosure"]["notice"], ok["disclosure"]["body"])

    @pytest.mark.parametrize("status", [400, 429, 500, 503])
    def test_app_errors_keep_the_first_contact_of_an_api_key(self, obligations, status) -> None:
        headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-1")]
        failing = ObligationsMiddleware(header_app(status, body=b'{"error":{"code":"x"}}'), obligations=obligations)
        serving = ObligationsMiddleware(json_app(COMPLETION), obligations=obligations)

        asyncio.run(call(failing, headers=headers, body=b'{"model":"toy-1"}'))
        asyncio.run(call(failing, headers=headers, body=b'{"model":"toy-1"}'))
        first = asyncio.run(call(serving, headers=headers, body=b'{"model":"toy-1"}'))
        second = asyncio.run(call(serving, headers=headers, body=b'{"model":"toy-1"}'))

        assert "first_contact_notice" in json.loads(first["body"])["ai_disclosure"]
        assert "first_contact_notice" not in json.loads(second["body"])["ai_disclosure"]
        notices = [(r["status"], r["disclosure"]["notice"]) for r in records(obligations)]
        assert [(status, "none"), (status, "none"), (200, "first-contact"), (200, "short")] == notices

    def test_an_error_stream_start_is_not_disclosed(self, obligations) -> None:
        app = ObligationsMiddleware(header_app(502, [(b"content-type", b"text/event-stream")], b"data: x\n\n"),
                                    obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"toy-1","stream":true}'))

        assert b"data: x\n\n" == result["body"]
        assert "ai-disclosure" not in result["headers"]
        (record,) = records(obligations)
        assert (502, "none", False) == (record["status"], record["disclosure"]["body"], record["disclosure"]["header"])

    def test_the_response_header_names_the_model_before_the_request(self, obligations) -> None:
        app = ObligationsMiddleware(header_app(200, [(b"openai-model", b"toy-1-2026-12")], b'{"id":"x"}'),
                                    obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"toy-1"}'))

        assert "toy-1-2026-12" == parse_dictionary(result["headers"]["ai-disclosure"])["model"]
        (record,) = records(obligations)
        assert "toy-1-2026-12" == record["model"]

    def test_the_response_body_model_is_recorded_the_request_model_disclosed(self, obligations) -> None:
        """The body's model comes after the headers: the header names the request's, the record the body's."""
        app = ObligationsMiddleware(header_app(200, body=b'{"model":"toy-1-2026-12","id":"x"}'),
                                    obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"toy-1"}'))

        assert "toy-1" == parse_dictionary(result["headers"]["ai-disclosure"])["model"]
        assert "toy-1-2026-12" == records(obligations)[0]["model"]

    def test_the_route_model_when_the_request_names_none(self, obligations) -> None:
        policy = RoutePolicy([Route("/v1/images/*", model="toy-image-1")])
        app = ObligationsMiddleware(header_app(200, body=b'{"data":[]}'), obligations=obligations, policy=policy)

        named = asyncio.run(call(app, "/v1/images/generations", body=b'{"model":"other-image","prompt":"x"}'))
        unnamed = asyncio.run(call(app, "/v1/images/generations", body=b'{"prompt":"x"}'))

        assert "other-image" == parse_dictionary(named["headers"]["ai-disclosure"])["model"]
        assert "toy-image-1" == parse_dictionary(unnamed["headers"]["ai-disclosure"])["model"]
        assert ["other-image", "toy-image-1"] == [r["model"] for r in records(obligations)]

    def test_the_profile_default_only_for_a_request_seen_whole_that_names_none(self, obligations) -> None:
        default = obligations.profile.service.model
        assert default
        read = ObligationsMiddleware(header_app(200), obligations=obligations)
        unread = ObligationsMiddleware(header_app(200, read_request=False), obligations=obligations)
        form = [(b"content-type", b"multipart/form-data; boundary=b")]

        names_none = asyncio.run(call(read, body=b'{"prompt":"x"}'))
        not_read = asyncio.run(call(unread, body=b'{"model":"gpt-9"}',
                                    headers=[(b"content-type", b"application/json"), (b"content-length", b"17")]))
        multipart = asyncio.run(call(read, body=b'--b\r\ncontent-disposition: form-data; name="model"\r\n\r\nw-1\r\n--b--',
                                     headers=form))
        uncaptured = ObligationsMiddleware(header_app(200), obligations=obligations,
                                           policy=RoutePolicy([Route("/v1/chat/completions", capture=False)]))
        private = asyncio.run(call(uncaptured, body=b'{"model":"toy-2","messages":[]}'))

        assert default == parse_dictionary(names_none["headers"]["ai-disclosure"])["model"]
        assert "model" not in parse_dictionary(not_read["headers"]["ai-disclosure"])
        assert "model" not in parse_dictionary(multipart["headers"]["ai-disclosure"])
        assert "toy-2" == parse_dictionary(private["headers"]["ai-disclosure"])["model"]
        models = [r.get("model") for r in records(obligations)]
        assert [default, None, None, "toy-2"] == models
        assert "personal" not in records(obligations)[-1]

    def test_a_hostile_model_name_cannot_break_the_header(self, obligations) -> None:
        app = ObligationsMiddleware(header_app(200), obligations=obligations)

        result = asyncio.run(call(app, body=b'{"model":"a\\" , mode=none, x=\\"\\u00e9\\r\\n"}'))

        disclosure = parse_dictionary(result["headers"]["ai-disclosure"])
        assert ("ai-originated", 'a" , mode=none, x="%C3%A9%0D%0A') == (disclosure["mode"], disclosure["model"])

    def test_the_default_header_is_the_profiles(self, obligations) -> None:
        app = ObligationsMiddleware(header_app(200), obligations=obligations)

        result = asyncio.run(call(app, body=b"{}"))

        expected = parse_dictionary(app.endpoints.disclosure_header.decode())
        got = parse_dictionary(result["headers"]["ai-disclosure"])
        assert {k: v for k, v in expected.items() if k != "date"} == {k: v for k, v in got.items() if k != "date"}


def test_the_demo_image_route_names_its_model_when_the_request_names_none(obligations) -> None:
    """The demo's image model is its default there; the app says so, so the profile's toy-1 is not named."""
    from aiobligations.demo import build_app

    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations)
    result = asyncio.run(call(app, "/v1/images/generations", body=b'{"prompt":"a fox","size":"256x256"}'))

    assert (200, "toy-image-1") == (result["status"], parse_dictionary(result["headers"]["ai-disclosure"])["model"])
    (record,) = records(obligations)
    assert "toy-image-1" == record["model"]


def test_find_string_field_fast_path_reads_as_json_does() -> None:
    from aiobligations.records import find_string_field

    assert "模型-1" == find_string_field('{"model":"模型-1"}'.encode(), b"model")
    assert "a\u00a0b" == find_string_field('{"model":"a\u00a0b"}'.encode(), b"model")  # Unprintable: via json.
    assert find_string_field(b'{"model":"a\x01b"}', b"model") is None  # A raw control character is not JSON.
    assert find_string_field(b'{"model":"\xff"}', b"model") is None
    assert 'a"b' == find_string_field(b'{"model":"a\\"b"}', b"model")
