"""Hostile request bodies on the request endpoints get a clear 4xx, never a 500 (issue: hostile input).

Each case here once made the server raise: JSON nested deeper than the parser's recursion limit, a
lone surrogate in an id that reaches SQLite, and an operator's factors that JSON cannot carry.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from aiobligations import Obligations
from aiobligations.demo import build_app
from aiobligations.errors import LedgerFull
from aiobligations.keys import init_project
from aiobligations.middleware import ObligationsMiddleware

ME = {"Authorization": "Bearer my-key"}
OPERATOR = {"Authorization": "Bearer a-very-long-operator-token"}
DEEP = b"[" * 30_000 + b"]" * 30_000


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIOBLIGATIONS_OPERATOR_TOKENS", "op-7:a-very-long-operator-token")
    hub = Obligations.from_file(init_project(tmp_path))
    yield ObligationsMiddleware(build_app(stream_delay=0), obligations=hub), hub
    hub.close()


def call(app, method: str, path: str, *, headers: dict[str, str], content: bytes | None = None,
         json: object = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            return await http.request(method, path, headers={"content-type": "application/json", **headers},
                                      content=content, json=json)

    return asyncio.run(go())


def a_request_in_review(app, hub: Obligations) -> str:
    chat = call(app, "POST", "/v1/chat/completions", headers=ME,
                json={"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]})
    hub.ledger.flush()
    asked = call(app, "POST", "/ai/explanations", headers=ME,
                 json={"interaction_id": chat.headers["ai-interaction-id"], "question": "Why?"})
    assert 201 == asked.status_code, asked.text
    request_id = asked.json()["id"]
    assert 200 == call(app, "POST", f"/ai/operator/requests/{request_id}/review", headers=OPERATOR,
                       json={}).status_code
    return request_id


@pytest.mark.parametrize("path", ["/ai/explanations", "/ai/complaints"])
def test_json_nested_deeper_than_the_parser_goes_is_400(app, path: str) -> None:
    wrapped, _ = app
    response = call(wrapped, "POST", path, headers=ME, content=DEEP)
    assert 400 == response.status_code
    assert "invalid_json" == response.json()["error"]["code"]


def test_deep_json_to_an_operator_endpoint_is_400_and_leaves_the_request_as_it_was(app) -> None:
    wrapped, hub = app
    request_id = a_request_in_review(wrapped, hub)
    response = call(wrapped, "POST", f"/ai/operator/requests/{request_id}/answer", headers=OPERATOR, content=DEEP)
    assert 400 == response.status_code
    assert "in_review" == hub.requests.request(request_id).state


def test_a_lone_surrogate_in_an_interaction_id_is_404(app) -> None:
    wrapped, _ = app
    response = call(wrapped, "POST", "/ai/explanations", headers=ME,
                    content=b'{"interaction_id": "\\ud800abc", "question": "Why?"}')
    assert response.status_code in (404, 422), response.text
    assert response.status_code != 500


@pytest.mark.parametrize("factors", [
    b'{"score": NaN}', b'{"score": Infinity}', b'{"score": -Infinity}', b'{"score": 1e999}',
    b'{"why": "\\udc00"}', b'{"deep": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
], ids=["nan", "infinity", "minus-infinity", "overflow", "lone-surrogate", "deep"])
def test_factors_json_cannot_carry_are_422_and_the_request_stays_in_review(app, factors: bytes) -> None:
    wrapped, hub = app
    request_id = a_request_in_review(wrapped, hub)
    body = b'{"text": "Because.", "factors": ' + factors + b"}"
    response = call(wrapped, "POST", f"/ai/operator/requests/{request_id}/answer", headers=OPERATOR, content=body)
    assert response.status_code in (400, 422), response.text
    assert "in_review" == hub.requests.request(request_id).state
    # And a proper answer still goes through.
    fine = call(wrapped, "POST", f"/ai/operator/requests/{request_id}/answer", headers=OPERATOR,
                json={"text": "Because.", "factors": {"score": 0.5}})
    assert 200 == fine.status_code, fine.text


def test_a_receipt_asked_while_the_ledger_cannot_answer_is_503_not_500(app) -> None:
    wrapped, hub = app
    chat = call(wrapped, "POST", "/v1/chat/completions", headers=ME,
                json={"model": "toy-1", "messages": [{"role": "user", "content": "hi"}]})
    interaction_id = chat.headers["ai-interaction-id"]
    hub.ledger.flush()
    writer = hub.ledger._writer

    def refuse(item: object) -> None:
        raise LedgerFull("the ledger queue is full")

    writer.enqueue = refuse  # The flush the endpoint makes first is refused at once.
    try:
        response = call(wrapped, "GET", f"/ai/receipts/{interaction_id}", headers=ME)
    finally:
        del writer.enqueue
    assert 503 == response.status_code, response.text
    assert "evidence_unavailable" == response.json()["error"]["code"]
    assert 200 == call(wrapped, "GET", f"/ai/receipts/{interaction_id}", headers=ME).status_code
