"""A fuzz suite over every HTTP endpoint of the middleware (issue 11): not one 5xx, bounded memory.

Two parts:

* schemathesis, from the OpenAPI document, in process over ASGI, against every documented
  operation (bounded examples each);
* hand-made hostile requests against every endpoint the middleware serves, documented or not
  (operator and form pages included): JSON nested 100,000 deep, a 10 MB body, number edge cases
  (``1e999``, ``-0``, ``NaN``, huge integers), invalid UTF-8, a UTF-16 body with its BOM, escaped
  lone surrogates, wrong, odd and duplicated content types, and huge headers.

Every answer must be below 500, and the process's resident memory may grow by at most
:data:`RSS_BOUND` over the whole hostile run.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import Counter
from pathlib import Path

import pytest

from aiobligations import Obligations
from aiobligations.demo import build_app, wrap
from aiobligations.keys import init_project
from aiobligations.middleware.openapi import openapi_document

RSS_BOUND = 200 << 20
"""The most the server process's resident set may grow over the hostile run: 200 MiB."""

ME = b"Bearer my-key"
OPERATOR_TOKEN = "a-very-long-operator-token"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIOBLIGATIONS_OPERATOR_TOKENS", f"op-7:{OPERATOR_TOKEN}")
    obligations = Obligations.from_file(init_project(tmp_path))
    yield obligations
    obligations.close()


def _app(hub: Obligations):
    app = wrap(build_app(stream_delay=0), hub)
    # The POSTs are rate limited (429, documented): lift the limits so cases reach the handlers.
    requests = app.endpoints.requests
    requests.subject_limiter = requests.address_limiter = requests.global_limiter = None
    return app


# -- schemathesis --------------------------------------------------------------------------------


def _operations() -> list[str]:
    return [f"{method.upper()} {path}" for path, item in openapi_document()["paths"].items()
            for method in item if method != "parameters"]


@pytest.mark.parametrize("target", _operations())
def test_schemathesis_finds_no_server_error(hub, target: str) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import status_code_conformance

    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.app = _app(hub)
    method, path = target.split(" ", 1)
    operation = schema[path][method]

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case) -> None:
        response = case.call(headers={"Authorization": ME.decode()})
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

    run()


# -- hand-made hostile requests ------------------------------------------------------------------

JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"

BODIES: dict[str, bytes] = {
    "deep-array": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "ten-megabytes": b'{"text": "' + b"x" * (10 << 20) + b'"}',
    "overflow": b'{"interaction_id": 1e999, "question": 1e999, "text": 1e999, "category": 1e999}',
    "minus-zero": b'{"interaction_id": -0, "question": -0.0, "text": -0, "outcome": -0}',
    "nan": b'{"interaction_id": NaN, "question": Infinity, "text": -Infinity, "outcome": NaN}',
    "huge-int": b'{"text": ' + b"9" * 5000 + b', "category": "general"}',
    "invalid-utf8": b'{"text": "\xff\xfe\xc3\x28", "category": "general"}',
    "utf16-bom": '{"text": "你好", "category": "general"}'.encode("utf-16"),
    "utf8-bom": b'\xef\xbb\xbf{"text": "Hello", "category": "general"}',
    "lone-surrogates": b'{"interaction_id": "\\ud800", "question": "\\udfff", "text": "\\ud83d", '
                       b'"category": "general", "outcome": "\\udc00", "reason": "\\ud800"}',
    "nul-bytes": b'{"text": "a\\u0000b", "category": "gen\\u0000eral", "question": "\\u0000"}',
    "wrong-types": b'{"interaction_id": [], "question": {}, "text": true, "category": null, "factors": "x"}',
    "duplicate-keys": b'{"text": "a", "text": "b", "category": "general", "category": "ip"}',
    "array": b'[{"text": "Hello", "category": "general"}]',
    "empty": b"",
    "form": b"interaction_id=%FF%FE&question=%00&text=" + b"%41" * 5000,
    "form-many": b"&".join(b"a%d=1" % i for i in range(5000)),
    "garbage": bytes(range(256)) * 4,
}

CONTENT_TYPES: list[list[bytes]] = [
    [JSON], [FORM], [], [b"text/plain"], [JSON, b"text/plain"], [FORM, FORM],
    [b"application/json; charset=utf-16"], [b"application/json; charset=\xff"], [b"multipart/form-data"],
]


def _endpoints(interaction_id: str, request_id: str, complaint_id: str) -> list[tuple[str, str]]:
    ids = [interaction_id, request_id, "x" * 300, "%00", "..", "\u00e9"]
    paths = [
        ("POST", "/ai/explanations"), ("POST", "/ai/complaints"), ("POST", "/ai/requests"),
        ("GET", "/ai/requests"), ("GET", "/ai/transparency"), ("GET", "/ai/health"), ("GET", "/ai/checkpoint"),
        ("GET", "/ai/openapi.json"), ("GET", "/.well-known/ai-transparency"), ("GET", "/.well-known/security.txt"),
        ("GET", "/ai/operator/requests"), ("GET", "/ai/operator/complaints"),
        ("POST", f"/ai/operator/complaints/{complaint_id}/resolve"),
    ]
    for i in ids:
        paths += [("GET", f"/ai/receipts/{i}"), ("GET", f"/ai/explanations/{i}"),
                  ("POST", f"/ai/explanations/{i}/complaints"), ("GET", f"/ai/requests/{i}"),
                  ("POST", f"/ai/requests/{i}/complaint"), ("GET", f"/ai/operator/requests/{i}")]
        paths += [("POST", f"/ai/operator/requests/{i}/{action}") for action in ("review", "answer", "reject",
                                                                                "resolve")]
    return paths


def _rss() -> int:
    """The process's resident set now, in bytes (Linux /proc; else the peak, which only grows)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _call(app, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    raw = path.encode("utf-8", "surrogateescape")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": raw, "query_string": b"", "root_path": "",
             "headers": [(b"host", b"t"), (b"content-length", str(len(body)).encode()), *headers],
             "client": ("192.0.2.7", 4000), "server": ("t", 80)}
    chunks = [body[i:i + (1 << 16)] for i in range(0, len(body), 1 << 16)] or [b""]
    position = 0

    async def receive() -> dict:
        nonlocal position
        if position < len(chunks):
            position += 1
            return {"type": "http.request", "body": chunks[position - 1], "more_body": position < len(chunks)}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def test_hostile_requests_to_every_endpoint_get_no_5xx_and_memory_stays_bounded(hub) -> None:
    app = _app(hub)

    async def setup() -> tuple[str, str, str]:
        chat = json.dumps({"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
        statuses = []
        interaction_id = None

        async def send(message: dict) -> None:
            nonlocal interaction_id
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                interaction_id = dict(message["headers"]).get(b"ai-interaction-id", b"").decode()

        async def receive() -> dict:
            return {"type": "http.request", "body": chat, "more_body": False}

        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                   "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                   "query_string": b"", "root_path": "", "client": ("192.0.2.7", 1), "server": ("t", 80),
                   "headers": [(b"host", b"t"), (b"authorization", ME), (b"content-type", JSON)]}, receive, send)
        assert statuses == [200] and interaction_id
        await asyncio.to_thread(hub.ledger.flush)
        request = await asyncio.to_thread(hub.requests.ask, interaction_id, _subject(app), "Why?")
        complaint = await asyncio.to_thread(hub.requests.complaint, "anonymous", "general", "Hello.")
        return interaction_id, request.id, complaint.id

    seen: Counter[int] = Counter()

    async def hostile() -> list[tuple[int, str, str, str, str]]:
        interaction_id, request_id, complaint_id = await setup()
        failures: list[tuple[int, str, str, str, str]] = []
        auths = [[], [(b"authorization", ME)], [(b"authorization", f"Bearer {OPERATOR_TOKEN}".encode())]]
        for method, path in _endpoints(interaction_id, request_id, complaint_id):
            cases: list[tuple[str, bytes, list[bytes]]] = [(name, body, [JSON]) for name, body in BODIES.items()]
            cases += [(f"type{n}", BODIES["utf8-bom"], types) for n, types in enumerate(CONTENT_TYPES)]
            if method == "GET":
                cases = [("get", b"", [])]
            for name, body, types in cases:
                for auth in auths:
                    headers = [*auth, *((b"content-type", t) for t in types)]
                    status = await _call(app, method, path, body, headers)
                    seen[status] += 1
                    if status >= 500 or status == 0:
                        failures.append((status, method, path, name, repr(types)))
            # Huge and odd headers, once per endpoint.
            for extra in ([(b"x-big", b"a" * (1 << 20))], [(b"authorization", b"Bearer " + b"k" * 100_000)],
                          [(b"accept-language", b"zh;q=0.5," * 5000)], [(b"cookie", b"a=" + b"\xff" * 10_000)],
                          [(b"authorization", b"Bearer \xff\xfe")], [(b"content-length", b"-1")]):
                status = await _call(app, method, path, BODIES["utf8-bom"], [(b"content-type", JSON), *extra])
                if status >= 500 or status == 0:
                    failures.append((status, method, path, "header", extra[0][0].decode()))
        return failures

    asyncio.run(hostile())  # A first round: caches, imports and the desk's state settle.
    before = _rss()
    failures = asyncio.run(hostile())
    grown = _rss() - before
    assert not failures, failures[:20]
    print("statuses:", dict(sorted(seen.items())))
    assert sum(seen.values()) > 4000 and {400, 401, 403, 404, 413, 415} <= set(seen)
    assert grown < RSS_BOUND, f"the resident set grew by {grown >> 20} MiB (bound {RSS_BOUND >> 20} MiB)"
    print(f"resident set growth over the hostile run: {grown / (1 << 20):.1f} MiB")


def _subject(app) -> str:
    """The subject the middleware names for ``Authorization: Bearer my-key``."""
    scope = {"type": "http", "headers": [(b"authorization", ME)], "client": ("192.0.2.7", 1)}
    subject = app.endpoints.requests._subject_of(scope)
    assert isinstance(subject, str) and subject
    return subject
