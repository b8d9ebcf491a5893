"""The Art. 39 flow over HTTP: chat with the demo, ask for an explanation, read it, complain."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import openai
import pytest

from aiobligations import Obligations
from aiobligations.demo import build_app, wrap
from aiobligations.keys import init_project
from aiobligations.requests import Explanation

ME = {"Authorization": "Bearer my-key"}
SOMEONE_ELSE = {"Authorization": "Bearer their-key"}


@pytest.fixture
def obligations(tmp_path: Path):
    hub = Obligations.from_file(init_project(tmp_path))
    yield hub
    hub.close()


def test_the_whole_flow_with_the_official_client(obligations) -> None:
    explained = threading.Event()

    @obligations.explainer
    def explain(record: dict) -> Explanation:
        assert "personal" in record  # The explainer sees the interaction's sealed part, opened.
        explained.set()
        return Explanation("The toy model echoes and counts words.", {"model": record.get("model")})

    app = wrap(build_app(stream_delay=0), obligations)

    async def flow() -> dict:
        transport = httpx.ASGITransport(app=app)
        client = openai.AsyncOpenAI(base_url="http://t/v1", api_key="my-key",
                                    http_client=httpx.AsyncClient(transport=transport))
        raw = await client.chat.completions.with_raw_response.create(
            model="toy-1", messages=[{"role": "user", "content": "Why was my loan refused?"}])
        interaction_id = raw.headers["ai-interaction-id"]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            asked = await http.post("/ai/explanations", headers=ME,
                                    json={"interaction_id": interaction_id, "question": "Explain, please."})
            request_id = asked.json()["id"]
            foreign_ask = await http.post("/ai/explanations", headers=SOMEONE_ELSE,
                                          json={"interaction_id": interaction_id, "question": "Mine?"})
            await asyncio.to_thread(explained.wait, 10)
            await asyncio.to_thread(obligations.ledger.flush)
            answered = await wait_for_state(http, request_id, "answered")
            foreign_read = await http.get(f"/ai/explanations/{request_id}", headers=SOMEONE_ELSE)
            unknown_read = await http.get("/ai/explanations/not-a-request", headers=ME)
            complained = await http.post(f"/ai/explanations/{request_id}/complaints", headers=ME,
                                         json={"text": "That does not explain it."})
            general = await http.post("/ai/complaints", headers=ME,
                                      json={"category": "ip", "text": "This copies my poem.", "work": "My poem",
                                            "right_holder": "Me", "output_ref": interaction_id})
            bad = await http.post("/ai/explanations", headers={**ME, "content-type": "application/json"},
                                  content=b"{not json")
        await client.close()
        return {"asked": asked, "foreign_ask": foreign_ask, "answered": answered, "foreign_read": foreign_read,
                "unknown_read": unknown_read, "complained": complained, "general": general, "bad": bad,
                "request_id": request_id}

    async def wait_for_state(http: httpx.AsyncClient, request_id: str, state: str) -> httpx.Response:
        for _ in range(200):  # Bounded: the explainer has already run (the event above).
            response = await http.get(f"/ai/explanations/{request_id}", headers=ME)
            if response.json().get("status") == state:
                return response
            await asyncio.to_thread(obligations.ledger.flush)
        return response

    result = asyncio.run(flow())

    assert 201 == result["asked"].status_code and result["asked"].json()["due"]
    assert "answered" == result["answered"].json()["status"]
    assert "toy model" in result["answered"].json()["answer"]
    assert 404 == result["foreign_ask"].status_code == result["foreign_read"].status_code == result["unknown_read"].status_code
    assert result["foreign_read"].json() == result["unknown_read"].json()
    assert "complained" == result["complained"].json()["status"]
    assert 201 == result["general"].status_code
    assert 400 == result["bad"].status_code
    desk = obligations.requests
    desk.resolve(result["request_id"], "Reviewed by a person; the answer stands.", by="operator-7")
    assert "resolved" == desk.request(result["request_id"]).state


def test_text_that_is_not_unicode_gets_422_not_500(obligations) -> None:
    app = wrap(build_app(stream_delay=0), obligations)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            return await http.post("/ai/complaints", headers={**ME, "content-type": "application/json"},
                                   content=b'{"category": "general", "text": "\\ud800"}')

    response = asyncio.run(post())

    assert 422 == response.status_code
    assert "surrogate" in response.json()["error"]["message"]


def test_operators_sign_in_with_a_token_from_the_environment(obligations, monkeypatch) -> None:
    from aiobligations.middleware import ObligationsMiddleware

    monkeypatch.setenv("AIOBLIGATIONS_OPERATOR_TOKENS", "op-7:a-very-long-operator-token")
    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations)

    async def list_requests(token: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            return await http.get("/ai/operator/requests", headers={"Authorization": f"Bearer {token}"})

    assert 200 == asyncio.run(list_requests("a-very-long-operator-token")).status_code
    assert 403 == asyncio.run(list_requests("wrong-token-but-long-enough")).status_code


def test_the_prefix_moves_the_endpoints_and_the_openapi_document_is_served(obligations) -> None:
    from aiobligations.middleware import ObligationsMiddleware

    app = ObligationsMiddleware(build_app(stream_delay=0), obligations=obligations, prefix="/compliance")

    async def fetch() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            return (await http.get("/compliance/openapi.json"), await http.get("/compliance/transparency"),
                    await http.get("/.well-known/ai-transparency"))

    openapi_doc, page, document = asyncio.run(fetch())

    assert "/compliance/explanations" in openapi_doc.json()["paths"]
    assert 200 == page.status_code
    assert "/compliance/explanations" == document.json()["remedies"]["explanations"]


def test_the_deadline_comes_from_the_profile(tmp_path: Path) -> None:
    config = init_project(tmp_path)
    config.write_text(config.read_text(encoding="utf-8").replace("deadline_days = 15", "deadline_days = 5"),
                      encoding="utf-8")

    with Obligations.from_file(config) as hub:
        assert 5 == hub.requests.deadline_days
